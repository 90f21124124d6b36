//! A development CA and a certificate per identity, to turn mutual TLS on
//! in one step (`easy-note dev-certs`), for compose's first start, and for
//! the tests. Not for production: the CA's key is thrown away, so a new
//! set is a new CA, and certificates last [`VALIDITY`].
//!
//! Files written to a directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA certificate (`EASYNOTE_TLS_CA`) |
//! | `easy-note-gateway.pem`, `.key` | the gateway |
//! | `easy-note-user.pem`, `.key` | user-service |
//! | `easy-note-note.pem`, `.key` | note-service |
//! | `easy-note.pem`, `.key` | the all-in-one process: all three names |

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsFiles;
use crate::service_name::{GATEWAY, NOTE, USER};

/// How long the certificates are valid.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The file stem of the all-in-one certificate.
pub const ALL_IN_ONE: &str = "easy-note";

/// The certificates written, by file stem, with their DNS names.
const IDENTITIES: [(&str, &[&str]); 4] = [
    (GATEWAY, &[GATEWAY]),
    (USER, &[USER]),
    (NOTE, &[NOTE]),
    (ALL_IN_ONE, &[GATEWAY, USER, NOTE]),
];

/// The files of `stem` (a registry name, or [`ALL_IN_ONE`]) in `dir`.
pub fn files(dir: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// Writes a new CA and the certificates into `dir` (created if needed),
/// keys readable by the owner only. Refuses to replace an existing set
/// unless `overwrite`. Returns the files written.
pub fn write(dir: &Path, overwrite: bool) -> anyhow::Result<Vec<PathBuf>> {
    let ca_file = dir.join("ca.pem");
    if ca_file.exists() && !overwrite {
        anyhow::bail!(
            "{} exists; pass --force to replace the set",
            ca_file.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let now = SystemTime::now();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Easy-Note development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = (now + VALIDITY).into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut written = Vec::new();
    for (stem, names) in IDENTITIES {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, stem);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Each process is a server to its callers and a client of the next hop.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now.into();
        params.not_after = (now + VALIDITY).into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let target = files(dir, stem);
        write_file(&target.key, key.serialize_pem().as_bytes(), true)?;
        write_file(&target.cert, cert.pem().as_bytes(), false)?;
        written.extend([target.cert, target.key]);
    }
    // The CA last: its presence marks a complete set.
    write_file(&ca_file, ca_cert.pem().as_bytes(), false)?;
    written.push(ca_file);
    Ok(written)
}

/// The file `easy-note dev-certs --jwt-secret` writes a random JWT key to
/// ([`write_secret`]), for `EASYNOTE_JWT_SECRET_FILE`: a key of this
/// install, never committed.
pub const JWT_SECRET_FILE: &str = "jwt-secret";

/// Writes a random secret (48 bytes, as 96 hex digits, no newline) to
/// `path`, owner-only, creating its directory. Hex is also valid Base64,
/// which is what Nacos wants of its token key.
pub fn write_secret(path: &Path) -> anyhow::Result<()> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut key = [0u8; 48];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_file(path, hex.as_bytes(), true)
}

/// Whether `name` can name a secret's file: letters, digits, `.`, `_`
/// and `-`, not starting with a dot (no paths, nothing hidden).
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Writes `bytes` to `path` whole (a temporary file renamed into place),
/// mode 0600 when `private`, else 0644.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::tls::Callers;

    #[test]
    fn a_set_has_every_identity_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), false).unwrap();
        assert_eq!(written.len(), 9);
        for (stem, names) in IDENTITIES {
            let files = files(dir.path(), stem);
            let pem = std::fs::read(&files.cert).unwrap();
            let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
            assert_eq!(Callers::of_certificate(&cert), Callers::of(names), "{stem}");
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{stem}");
        }
        let err = write(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        write(dir.path(), true).unwrap();
    }

    #[test]
    fn secret_names_are_file_names_only() {
        for name in ["nacos-token", "mysql_password", "a.b", "X9"] {
            assert!(valid_secret_name(name), "{name}");
        }
        for name in ["", ".hidden", "../x", "a/b", "a b", "ä"] {
            assert!(!valid_secret_name(name), "{name:?}");
        }
    }

    #[test]
    fn jwt_secrets_are_random_and_private() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            a.path().join(JWT_SECRET_FILE),
            b.path().join(JWT_SECRET_FILE),
        );
        write_secret(&a).unwrap();
        write_secret(&b).unwrap();
        let key = std::fs::read_to_string(&a).unwrap();
        assert_eq!(key.len(), 96);
        assert_ne!(key, std::fs::read_to_string(&b).unwrap());
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
