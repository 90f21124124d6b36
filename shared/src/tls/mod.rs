//! Mutual TLS on every internal gRPC hop, and who may call what.
//!
//! When `EASYNOTE_TLS_CERT`, `EASYNOTE_TLS_KEY` and `EASYNOTE_TLS_CA` name
//! PEM files, every gRPC server asks its callers for a certificate from
//! that CA, and every client presents its own and checks the server's. A
//! service's identity is a DNS name of its certificate equal to its
//! registry name (`easy-note-gateway`, `easy-note-user`,
//! `easy-note-note`): clients verify the server they reach by the name
//! they looked up, never by the address the registry gave them, so a fake
//! instance registered in Nacos gets no connection and no password.
//! Servers then allow each method only to the callers [`authz`] names.
//!
//! The files are re-read every `EASYNOTE_TLS_RELOAD_INTERVAL`; a change
//! applies to new connections, so a rotation needs no restart, and a
//! broken set is refused with a warning while the last good one stays.
//!
//! Without the files, internal calls are plaintext and unauthenticated:
//! fine on a laptop, refused in production unless
//! `EASYNOTE_INSECURE_INTERNAL=true` says so on purpose.

pub(crate) mod authz;
mod client;
pub mod devcert;
pub mod server;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::WebPkiClientVerifier,
};

pub use authz::{Callers, allowed};
pub use client::{connector, health_channel};

use crate::config::{ConfigError, Env, Environment};

/// Where the TLS material comes from, and whether plaintext was chosen
/// on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The three PEM files, or none for plaintext.
    pub files: Option<TlsFiles>,
    /// `EASYNOTE_TLS_RELOAD_INTERVAL` (default 5s): how often the files are re-read.
    pub reload_interval: Duration,
    /// `EASYNOTE_INSECURE_INTERNAL` (default false): plaintext accepted in production.
    pub insecure_internal: bool,
}

/// The PEM files of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `EASYNOTE_TLS_CERT`: this process's certificate chain.
    pub cert: PathBuf,
    /// `EASYNOTE_TLS_KEY`: its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// `EASYNOTE_TLS_CA`: the CA certificates peers must chain to.
    pub ca: PathBuf,
}

const TLS_VARS: [&str; 3] = ["EASYNOTE_TLS_CERT", "EASYNOTE_TLS_KEY", "EASYNOTE_TLS_CA"];

impl TlsSettings {
    /// Reads the settings; in production, refuses to go on without TLS
    /// unless `EASYNOTE_INSECURE_INTERNAL=true`.
    pub fn from_env(env: &Env, environment: Environment) -> Result<Self, ConfigError> {
        let [cert, key, ca] = TLS_VARS.map(|var| env.get(var).filter(|v| !v.is_empty()));
        let files = match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
            }),
            (None, None, None) => None,
            _ => {
                let missing = TLS_VARS
                    .iter()
                    .find(|var| env.get(var).is_none_or(str::is_empty))
                    .expect("one of the three is missing");
                return Err(ConfigError::invalid(
                    missing,
                    "is unset while the other EASYNOTE_TLS_* files are set; give all three",
                ));
            }
        };
        let insecure_internal = env.parse("EASYNOTE_INSECURE_INTERNAL", false)?;
        let reload_interval =
            env.duration("EASYNOTE_TLS_RELOAD_INTERVAL", Duration::from_secs(5))?;
        if reload_interval.is_zero() {
            return Err(ConfigError::invalid(
                "EASYNOTE_TLS_RELOAD_INTERVAL",
                "must be more than zero",
            ));
        }
        if files.is_none() && environment == Environment::Production && !insecure_internal {
            return Err(ConfigError::Missing {
                var: "EASYNOTE_TLS_CERT".into(),
                hint: " (and EASYNOTE_TLS_KEY, EASYNOTE_TLS_CA) in production: internal gRPC \
                       needs mutual TLS (`easy-note dev-certs` writes a set to try), or \
                       EASYNOTE_INSECURE_INTERNAL=true to run it in plaintext on purpose"
                    .into(),
            });
        }
        Ok(Self {
            files,
            reload_interval,
            insecure_internal,
        })
    }

    /// Plaintext, as in development without the files.
    pub fn plaintext() -> Self {
        Self {
            files: None,
            reload_interval: Duration::from_secs(5),
            insecure_internal: false,
        }
    }
}

/// Why a set of TLS files is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("reading {var} {path}: {source}")]
    Read {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{var} {path}: {reason}")]
    Content {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The certificate does not carry the identity this process needs.
    #[error(
        "EASYNOTE_TLS_CERT {path} is not valid for {name}: its DNS names must include the registry name"
    )]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// The registry name it should carry.
        name: &'static str,
    },
}

/// The live TLS configuration of one process: its server and client sides,
/// rebuilt when the files change. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<TlsInner>,
}

struct TlsInner {
    files: TlsFiles,
    identity: &'static str,
    current: ArcSwap<Material>,
}

/// One consistent set, built from one reading of the files.
struct Material {
    /// The three files' bytes, to tell whether anything changed.
    read: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.inner.identity)
            .field("cert", &self.inner.files.cert)
            .field("ca", &self.inner.files.ca)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files once, checking that the certificate is valid for
    /// `identity` (the registry name of the process). No reloading.
    pub fn load(files: &TlsFiles, identity: &'static str) -> Result<Self, TlsError> {
        let material = Material::read(files, identity)?;
        Ok(Self {
            inner: Arc::new(TlsInner {
                files: files.clone(),
                identity,
                current: ArcSwap::from_pointee(material),
            }),
        })
    }

    /// What `settings` ask for as `identity`: `None` for plaintext (with a
    /// warning when that was chosen in production), or the loaded files,
    /// re-read every reload interval while a clone of the result lives.
    pub fn start(settings: &TlsSettings, identity: &'static str) -> Result<Option<Self>, TlsError> {
        let Some(files) = &settings.files else {
            if settings.insecure_internal {
                tracing::warn!(
                    service = identity,
                    "internal gRPC is plaintext and unauthenticated (EASYNOTE_INSECURE_INTERNAL=true)"
                );
            }
            return Ok(None);
        };
        let tls = Self::load(files, identity)?;
        tracing::info!(service = identity, cert = %files.cert.display(), "internal gRPC uses mutual TLS");
        watch(Arc::downgrade(&tls.inner), settings.reload_interval);
        Ok(Some(tls))
    }

    /// Re-reads the files and switches to them when they changed and are
    /// usable; `Ok(true)` when it switched.
    pub fn reload(&self) -> Result<bool, TlsError> {
        reload(&self.inner)
    }

    /// The server side, for new connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.current.load().server.clone()
    }

    /// The client side, for new connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.inner.current.load().client.clone()
    }

    /// The registry name this process presents.
    pub fn identity(&self) -> &'static str {
        self.inner.identity
    }
}

fn reload(inner: &TlsInner) -> Result<bool, TlsError> {
    let read = read_files(&inner.files)?;
    if read == inner.current.load().read {
        return Ok(false);
    }
    inner.current.store(Arc::new(Material::build(
        &inner.files,
        read,
        inner.identity,
    )?));
    Ok(true)
}

/// Re-reads the files every `interval` until the [`Tls`] is dropped.
fn watch(inner: Weak<TlsInner>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            match reload(&inner) {
                Ok(true) => {
                    failing = false;
                    tracing::info!(service = inner.identity, "TLS certificates reloaded");
                }
                Ok(false) => failing = false,
                Err(err) => {
                    // Once per spell of failures: a half-written rotation
                    // usually settles by the next tick.
                    if !failing {
                        tracing::warn!(service = inner.identity, error = %err,
                            "TLS files unusable; keeping the previous certificates");
                    }
                    failing = true;
                }
            }
        }
    });
}

fn read_files(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |var: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            var,
            path: path.to_owned(),
            source,
        })
    };
    Ok([
        read("EASYNOTE_TLS_CERT", &files.cert)?,
        read("EASYNOTE_TLS_KEY", &files.key)?,
        read("EASYNOTE_TLS_CA", &files.ca)?,
    ])
}

/// The one crypto provider of the suite's TLS: *ring*, already in the
/// tree for the JWT signatures. rustls now prefers aws-lc-rs for its
/// post-quantum key exchange; that would add a C and CMake build to every
/// image and CI run, for hops that never leave the cluster. TLS 1.3 with
/// X25519 or P-256 it is.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// HTTP/2 is all gRPC speaks.
const ALPN_H2: &[u8] = b"h2";

impl Material {
    fn read(files: &TlsFiles, identity: &'static str) -> Result<Self, TlsError> {
        Self::build(files, read_files(files)?, identity)
    }

    fn build(
        files: &TlsFiles,
        read: [Vec<u8>; 3],
        identity: &'static str,
    ) -> Result<Self, TlsError> {
        let content = |var: &'static str, path: &Path, reason: String| TlsError::Content {
            var,
            path: path.to_owned(),
            reason,
        };
        let [cert_pem, key_pem, ca_pem] = &read;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| content("EASYNOTE_TLS_CERT", &files.cert, err.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(content(
                "EASYNOTE_TLS_CERT",
                &files.cert,
                "holds no CERTIFICATE".into(),
            ));
        };
        if !Callers::of_certificate(leaf).contains_name(identity) {
            return Err(TlsError::Identity {
                path: files.cert.clone(),
                name: identity,
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
            content(
                "EASYNOTE_TLS_KEY",
                &files.key,
                format!("no usable private key ({err})"),
            )
        })?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|err| content("EASYNOTE_TLS_CA", &files.ca, err.to_string()))?;
            roots
                .add(ca)
                .map_err(|err| content("EASYNOTE_TLS_CA", &files.ca, err.to_string()))?;
        }
        if roots.is_empty() {
            return Err(content(
                "EASYNOTE_TLS_CA",
                &files.ca,
                "holds no CERTIFICATE".into(),
            ));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|err| content("EASYNOTE_TLS_CA", &files.ca, err.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            read,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The name a client checks a server's certificate against: the service's
/// registry name.
fn server_name(service: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(service.to_owned()).map_err(|err| TlsError::Content {
        var: "service name",
        path: PathBuf::from(service),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_name;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn production_needs_tls_or_an_explicit_opt_out() {
        let err = TlsSettings::from_env(&env(&[]), Environment::Production).unwrap_err();
        assert!(err.to_string().contains("EASYNOTE_TLS_CERT"), "{err}");
        assert!(
            err.to_string().contains("EASYNOTE_INSECURE_INTERNAL"),
            "{err}"
        );

        let insecure = TlsSettings::from_env(
            &env(&[("EASYNOTE_INSECURE_INTERNAL", "true")]),
            Environment::Production,
        )
        .unwrap();
        assert!(insecure.files.is_none() && insecure.insecure_internal);

        let dev = TlsSettings::from_env(&env(&[]), Environment::Development).unwrap();
        assert_eq!(dev, TlsSettings::plaintext());
    }

    #[test]
    fn the_three_files_go_together() {
        let err = TlsSettings::from_env(
            &env(&[
                ("EASYNOTE_TLS_CERT", "a.pem"),
                ("EASYNOTE_TLS_CA", "ca.pem"),
            ]),
            Environment::Development,
        )
        .unwrap_err();
        assert!(err.to_string().contains("EASYNOTE_TLS_KEY"), "{err}");
    }

    #[tokio::test]
    async fn files_load_for_their_identity_only_and_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        devcert::write(dir.path(), devcert::Set::services(), false).unwrap();
        let files = devcert::files(dir.path(), service_name::USER);
        let tls = Tls::load(&files, service_name::USER).unwrap();
        assert!(!tls.reload().unwrap(), "nothing changed");

        let err = Tls::load(&files, service_name::GATEWAY).unwrap_err();
        assert!(matches!(err, TlsError::Identity { .. }), "{err}");

        // A broken rotation is refused and the last good set stays.
        let before = tls.server_config();
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.server_config()));

        // A new set is taken.
        devcert::write(dir.path(), devcert::Set::services(), true).unwrap();
        assert!(tls.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.server_config()));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        devcert::write(a.path(), devcert::Set::services(), false).unwrap();
        devcert::write(b.path(), devcert::Set::services(), false).unwrap();
        let mut files = devcert::files(a.path(), service_name::NOTE);
        files.key = devcert::files(b.path(), service_name::NOTE).key;
        let err = Tls::load(&files, service_name::NOTE).unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err}");
    }
}
