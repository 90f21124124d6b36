//! Who may call which method, by the identity in the caller's certificate:
//!
//! | service | method | callers |
//! |---|---|---|
//! | user-service | CreateUser, CheckUser, RevokeTokens, CheckToken | the gateway |
//! | user-service | MGetUser | the gateway, note-service |
//! | note-service | every method | the gateway |
//!
//! The health service is open to every caller with a certificate of the CA
//! (probes present the process's own). A refused call gets
//! `PERMISSION_DENIED` and a warning naming the caller and the method.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use rustls::pki_types::{CertificateDer, ServerName};
use tonic::{
    Status,
    body::Body,
    codegen::http::{Request, Response},
    server::NamedService,
};
use tower::Service;

use super::server::Peer;
use crate::service_name::{GATEWAY, NOTE, USER};

/// The registry names an identity can be, in [`Callers`] bit order.
const KNOWN: [&str; 3] = [GATEWAY, USER, NOTE];

/// A set of the suite's identities (a certificate may carry several, as
/// the all-in-one's does).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Callers(u8);

impl Callers {
    /// Nobody.
    pub const NONE: Self = Self(0);

    /// The identities `names` among the suite's registry names.
    pub fn of(names: &[&str]) -> Self {
        Self(
            KNOWN
                .iter()
                .enumerate()
                .filter(|(_, known)| names.contains(known))
                .fold(0, |bits, (i, _)| bits | 1 << i),
        )
    }

    /// The identities a certificate is valid for (its DNS names that are
    /// registry names of the suite).
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Self {
        let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
            return Self::NONE;
        };
        Self(
            KNOWN
                .iter()
                .enumerate()
                .filter(|(_, name)| {
                    ServerName::try_from(**name)
                        .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
                })
                .fold(0, |bits, (i, _)| bits | 1 << i),
        )
    }

    /// Their registry names.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        KNOWN
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name)
    }

    /// Everyone in either set.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether `name` is one of them.
    pub fn contains_name(self, name: &str) -> bool {
        self.intersects(Self::of(&[name]))
    }

    /// Whether the two sets share an identity.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl fmt::Debug for Callers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.names().collect();
        if names.is_empty() {
            f.write_str("nobody")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

/// The callers allowed to call `method` of `service` (registry names).
pub fn allowed(service: &str, method: &str) -> Callers {
    match (service, method) {
        (USER, "MGetUser") => Callers::of(&[GATEWAY, NOTE]),
        (USER, _) | (NOTE, _) => Callers::of(&[GATEWAY]),
        _ => Callers::NONE,
    }
}

/// Wraps a tonic service so that, when `enforce` (TLS is on), each call
/// is let through only from a caller [`allowed`] for its method.
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    service: &'static str,
    enforce: bool,
}

impl<S> Authorized<S> {
    /// `inner`, served as `service`; checks only when `enforce`.
    pub fn new(inner: S, service: &'static str, enforce: bool) -> Self {
        Self {
            inner,
            service,
            enforce,
        }
    }
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

/// The response future: the inner service's, or a refusal.
#[derive(Debug)]
pub enum AuthorizedFuture<F> {
    /// Let through.
    Inner(F),
    /// Refused.
    Denied(Option<Response<Body>>),
}

impl<F> Future for AuthorizedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Inner(inner) => Pin::new(inner).poll(cx),
            Self::Denied(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

impl<S> Service<Request<Body>> for Authorized<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AuthorizedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.enforce {
            let method = request.uri().path().rsplit('/').next().unwrap_or_default();
            let caller = request
                .extensions()
                .get::<Peer>()
                .map_or(Callers::NONE, |peer| peer.callers);
            if !caller.intersects(allowed(self.service, method)) {
                tracing::warn!(service = self.service, method, caller = ?caller,
                    "call refused: caller not allowed");
                let status = Status::permission_denied(format!(
                    "{caller:?} may not call {method} of {}",
                    self.service
                ));
                return AuthorizedFuture::Denied(Some(status.into_http()));
            }
        }
        AuthorizedFuture::Inner(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_table() {
        let gateway = Callers::of(&[GATEWAY]);
        let note = Callers::of(&[NOTE]);
        let user = Callers::of(&[USER]);
        for method in ["CreateUser", "CheckUser"] {
            assert!(gateway.intersects(allowed(USER, method)));
            assert!(!note.intersects(allowed(USER, method)), "{method}");
            assert!(!user.intersects(allowed(USER, method)), "{method}");
        }
        assert!(gateway.intersects(allowed(USER, "MGetUser")));
        assert!(note.intersects(allowed(USER, "MGetUser")));
        for method in [
            "CreateNote",
            "QueryNote",
            "MGetNote",
            "UpdateNote",
            "DeleteNote",
        ] {
            assert!(gateway.intersects(allowed(NOTE, method)));
            assert!(!user.intersects(allowed(NOTE, method)), "{method}");
            assert!(!note.intersects(allowed(NOTE, method)), "{method}");
        }
        assert_eq!(allowed("somebody-else", "Anything"), Callers::NONE);
        assert_eq!(
            format!("{:?}", Callers::of(&[GATEWAY, NOTE])),
            "easy-note-gateway+easy-note-note"
        );
        assert_eq!(format!("{:?}", Callers::NONE), "nobody");
    }
}
