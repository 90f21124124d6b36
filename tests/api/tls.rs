//! Mutual TLS on the internal hops, with real servers and certificates
//! written by `easy-note dev-certs`' code: the walkthrough over it, callers
//! without a certificate or with one from another CA refused, each
//! method open only to its callers, servers checked by name, a rotation
//! picked up without a restart, and the `healthcheck` subcommand over TLS.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use easynote_shared::{
    proto::{
        note::v1::{QueryNoteRequest, note_service_client::NoteServiceClient},
        user::v1::{CheckUserRequest, MGetUserRequest, user_service_client::UserServiceClient},
    },
    service_name::{GATEWAY, NOTE, USER},
    tls::{self, Tls, devcert},
};
use easynote_testkit::TestDatabase;
use reqwest::StatusCode;
use tonic::{Code, transport::Channel};

use crate::helpers::TestApp;

/// A channel to `addr` as `identity` (a certificate of `dir`), expecting
/// the server to be `service`.
async fn channel_as(
    dir: &Path,
    identity: &'static str,
    service: &str,
    addr: SocketAddr,
) -> anyhow::Result<Channel> {
    let tls = Tls::load(&devcert::files(dir, identity), identity)?;
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_with_connector(tls::connector(&tls, service)?)
            .await?,
    )
}

/// Whether `status` is a refusal by the transport (the handshake or the
/// connection failed), as opposed to an answer of the service.
fn refused_by_transport(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        // A connection the server closed mid-request.
        Code::Unknown => status.message().contains("transport error"),
        _ => false,
    }
}

/// A CheckUser call on `channel` that reached the service (any answer of
/// the service itself counts); a connection refused during the handshake
/// shows as an error of the call.
async fn check_user(channel: Channel) -> Result<(), tonic::Status> {
    UserServiceClient::new(channel)
        .check_user(CheckUserRequest {
            username: "nobody".into(),
            password: "password123".into(),
        })
        .await
        .map(drop)
        .or_else(|status| match status.code() {
            // Refused by the service itself: authenticated and authorised.
            Code::InvalidArgument | Code::NotFound | Code::Unauthenticated => Ok(()),
            _ => Err(status),
        })
}

/// A QueryNote call on `channel` (user 1's first page).
async fn query_notes(channel: Channel) -> Result<(), tonic::Status> {
    NoteServiceClient::new(channel)
        .query_note(QueryNoteRequest {
            user_id: 1,
            search_key: None,
            offset: 0,
            limit: 10,
            cursor: None,
        })
        .await
        .map(drop)
}

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    devcert::write(dir.path(), devcert::Set::services(), false).expect("dev certs");
    dir
}

#[tokio::test]
async fn the_walkthrough_runs_over_mutual_tls() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    // Register and login: the gateway to user-service.
    let token = app.signed_up("alice").await;
    // Create, then read with the author's name: gateway to note-service,
    // note-service to user-service.
    let id = app.create_note(&token, "Over TLS", "every hop").await;
    let (status, body) = app.get(&format!("/v1/note/{id}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user_name"], "alice", "{body}");
    let (status, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["total"], 1, "{body}");
    let (status, body) = app.delete(&format!("/v1/note/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn callers_without_a_certificate_of_the_ca_are_refused() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    let user = app.user.addr;

    // Plaintext gRPC to a TLS server.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{user}"))
        .expect("URI")
        .connect()
        .await;
    if let Ok(channel) = plain {
        let status = check_user(channel).await.expect_err("plaintext is refused");
        assert!(refused_by_transport(&status), "{status:?}");
    }

    // TLS that trusts the server but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(certs.path().join("ca.pem")).expect("ca.pem");
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.expect("a CA certificate")).expect("added");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let anonymous = tonic::transport::Endpoint::from_shared(format!("http://{user}"))
        .expect("URI")
        .connect_with_connector(tower::service_fn(move |uri: tonic::codegen::http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp =
                    tokio::net::TcpStream::connect(uri.authority().expect("addr").as_str()).await?;
                let name = rustls::pki_types::ServerName::try_from(USER).expect("a name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await;
    if let Ok(channel) = anonymous {
        let status = check_user(channel)
            .await
            .expect_err("no certificate is refused");
        assert!(refused_by_transport(&status), "{status:?}");
    }

    // A gateway certificate from another CA.
    let other = self::certs();
    let foreign = channel_as(other.path(), GATEWAY, USER, user).await;
    if let Ok(channel) = foreign {
        let status = check_user(channel)
            .await
            .expect_err("another CA is refused");
        assert!(refused_by_transport(&status), "{status:?}");
    }

    // The real gateway identity is let in.
    let gateway = channel_as(certs.path(), GATEWAY, USER, user)
        .await
        .expect("the gateway connects");
    check_user(gateway)
        .await
        .expect("the gateway may call CheckUser");
}

#[tokio::test]
async fn each_method_is_open_only_to_its_callers() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    let (user, note) = (app.user.addr, app.note.addr);

    // note-service's identity: MGetUser yes, CheckUser no.
    let as_note = channel_as(certs.path(), NOTE, USER, user)
        .await
        .expect("note-service connects");
    UserServiceClient::new(as_note.clone())
        .m_get_user(MGetUserRequest { user_ids: vec![1] })
        .await
        .expect("note-service may call MGetUser");
    let status = check_user(as_note)
        .await
        .expect_err("note-service may not call CheckUser");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");

    // user-service's identity may not call note-service, nor itself.
    let as_user = channel_as(certs.path(), USER, NOTE, note)
        .await
        .expect("connects");
    let status = query_notes(as_user)
        .await
        .expect_err("user-service may not call note-service");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    let as_user = channel_as(certs.path(), USER, USER, user)
        .await
        .expect("connects");
    let status = check_user(as_user).await.expect_err("not even itself");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");

    // The gateway may query notes.
    let as_gateway = channel_as(certs.path(), GATEWAY, NOTE, note)
        .await
        .expect("connects");
    query_notes(as_gateway)
        .await
        .expect("the gateway may query notes");
}

#[tokio::test]
async fn servers_are_checked_by_their_registry_name() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    // An instance registered as user-service must prove it: note-service's
    // certificate, reached at an address said to be user-service, is refused
    // by the client before any request (and so any password) is sent.
    let err = channel_as(certs.path(), GATEWAY, USER, app.note.addr)
        .await
        .expect_err("note-service is not user-service");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("NotValidForName") || chain.contains("not valid for name"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_rotated_certificate_set_is_used_without_a_restart() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    let user = app.user.addr;
    let old = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(certs.path()).expect("certs") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), old.path().join(entry.file_name())).expect("copy");
    }

    // A new CA and new certificates, written over the files the servers read.
    devcert::write(certs.path(), devcert::Set::services(), true).expect("rotate");
    easynote_testkit::eventually(
        Duration::from_secs(10),
        "user-service takes the new CA",
        || async {
            let channel = channel_as(certs.path(), GATEWAY, USER, user)
                .await
                .map_err(|err| format!("{err:#}"))?;
            check_user(channel).await.map_err(|s| s.to_string())
        },
    )
    .await;
    // The old CA's certificates are now refused on new connections.
    if let Ok(channel) = channel_as(old.path(), GATEWAY, USER, user).await {
        let status = check_user(channel).await.expect_err("the old CA is gone");
        assert!(refused_by_transport(&status), "{status:?}");
    }
    // And the suite keeps working end to end with the new set: the gateway
    // and note-service reconnect with their new certificates.
    easynote_testkit::eventually(Duration::from_secs(10), "login after rotation", || async {
        let (status, body) = app.register("bob", "password123").await;
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(format!("{status}: {body}")),
        }
    })
    .await;
}

#[tokio::test]
async fn the_healthcheck_subcommand_speaks_tls() {
    let certs = certs();
    let app = TestApp::spawn_with_tls(TestDatabase::sqlite(), certs.path()).await;
    let probe = |identity: &str, with_tls: bool| {
        let files = devcert::files(certs.path(), identity);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_easy-note"));
        command
            .args(["healthcheck", "user-service"])
            .env_clear()
            .env("EASYNOTE_GRPC_ADDR", app.user.addr.to_string());
        if with_tls {
            command
                .env("EASYNOTE_TLS_CERT", &files.cert)
                .env("EASYNOTE_TLS_KEY", &files.key)
                .env("EASYNOTE_TLS_CA", &files.ca);
        }
        // Off the test's runtime, which serves the in-process servers.
        tokio::task::spawn_blocking(move || command.output().expect("run easy-note healthcheck"))
    };
    let healthy = probe(USER, true).await.expect("the probe ran");
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let plaintext = probe(USER, false).await.expect("the probe ran");
    assert!(!plaintext.status.success(), "a plaintext probe cannot pass");
}

/// `easy-note dev-certs` as compose's `certs` one-shot runs it: the set,
/// the JWT key and each `--secret` file (owner-only, random) on the first
/// run; on a later run with `--if-missing`, only the secrets that are
/// missing, so an install keeps its passwords; a path as a name refused.
#[test]
fn dev_certs_writes_each_missing_secret_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, secrets) = (dir.path().join("certs"), dir.path().join("secrets"));
    let run = |names: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_easy-note"));
        command
            .env_clear()
            .arg("dev-certs")
            .arg("--out")
            .arg(&certs);
        command.args(["--if-missing", "--jwt-secret", "--secrets-out"]);
        command.arg(&secrets);
        for name in names {
            command.args(["--secret", name]);
        }
        command.output().expect("run easy-note dev-certs")
    };
    let read = |path: &Path| std::fs::read_to_string(path).expect("a secret file");

    let first = run(&["db-password", "nacos-token"]);
    assert!(first.status.success(), "{first:?}");
    let password = read(&secrets.join("db-password"));
    let token = read(&secrets.join("nacos-token"));
    assert_eq!(password.len(), 96, "48 random bytes as hex");
    assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(password, token, "each secret is drawn on its own");
    for file in [
        secrets.join("db-password"),
        certs.join(devcert::JWT_SECRET_FILE),
    ] {
        let mode = std::fs::metadata(&file)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let ca = std::fs::read(certs.join("ca.pem")).expect("the CA");
    let jwt = read(&certs.join(devcert::JWT_SECRET_FILE));

    // A later start: what exists is kept, what is new is added.
    let again = run(&["db-password", "nacos-token", "nacos-password"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(read(&secrets.join("db-password")), password);
    assert_eq!(read(&secrets.join("nacos-token")), token);
    assert_eq!(read(&certs.join(devcert::JWT_SECRET_FILE)), jwt);
    assert_eq!(std::fs::read(certs.join("ca.pem")).expect("the CA"), ca);
    assert_eq!(read(&secrets.join("nacos-password")).len(), 96);

    let refused = run(&["../escape"]);
    assert!(!refused.status.success(), "a path is not a secret's name");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("optionally in one directory"),
        "{refused:?}"
    );
    assert!(!dir.path().join("escape").exists());

    // One directory level groups secrets with the same holders.
    let grouped = run(&["db/mysql-password"]);
    assert!(grouped.status.success(), "{grouped:?}");
    assert_eq!(read(&secrets.join("db").join("mysql-password")).len(), 96);
}

/// `--split`, as compose runs it: each service's directory holds its own
/// certificate and key and the CA, the gateway's also the JWT key, and
/// nothing else; no all-in-one certificate unless asked for.
#[test]
fn dev_certs_split_gives_each_service_only_its_own_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_easy-note"))
            .env_clear()
            .arg("dev-certs")
            .arg("--out")
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("run easy-note dev-certs")
    };
    let split = run(&["--split", "--jwt-secret"]);
    assert!(split.status.success(), "{split:?}");
    for (stem, extra) in [
        (GATEWAY, Some(devcert::JWT_SECRET_FILE)),
        (USER, None),
        (NOTE, None),
    ] {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(stem))
            .expect("a directory per service")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        let mut wanted = vec![
            "ca.pem".to_owned(),
            format!("{stem}.key"),
            format!("{stem}.pem"),
        ];
        wanted.extend(extra.map(str::to_owned));
        wanted.sort();
        assert_eq!(names, wanted, "{stem}");
    }
    assert!(!dir.path().join("easy-note.pem").exists());
    assert!(
        !dir.path().join("ca.pem").exists(),
        "nothing shared at the top"
    );
    let again = run(&["--split", "--if-missing", "--jwt-secret"]);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already there"),
        "a complete split set is kept: {again:?}"
    );
}
