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
//! | `easy-note.pem`, `.key` | the all-in-one process: all three names, only on request |
//!
//! With [`Set::split`], each certificate goes into a directory of its own
//! named by its stem (`easy-note-user/easy-note-user.pem`, `.key` and
//! `ca.pem`), so that each service can be given its own directory and
//! nothing else (compose mounts one volume per service); the JWT key then
//! goes into the gateway's.
//!
//! The all-in-one certificate is made only when asked for
//! ([`Set::with_all_in_one`]): it can pass for every service, so a set meant
//! for separate services should not carry one that a single leak turns
//! into every identity at once.
//!
//! Each file is written whole: a `.partial` file beside it, created
//! exclusively and without following a symbolic link (a link planted in a
//! shared directory would otherwise receive the key), then renamed into place.

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

/// The certificate of each service, by file stem, with its DNS name.
const SERVICES: [(&str, &[&str]); 3] = [(GATEWAY, &[GATEWAY]), (USER, &[USER]), (NOTE, &[NOTE])];

/// The all-in-one certificate's stem and names: every service's.
const ALL_IN_ONE_IDENTITY: (&str, &[&str]) = (ALL_IN_ONE, &[GATEWAY, USER, NOTE]);

/// Which certificates a set holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Set {
    all_in_one: bool,
    split: bool,
}

impl Set {
    /// One certificate per service (the default).
    pub fn services() -> Self {
        Self::default()
    }

    /// Also the all-in-one certificate, which carries every service's name.
    pub fn with_all_in_one(self) -> Self {
        Self {
            all_in_one: true,
            ..self
        }
    }

    /// Each certificate, with a copy of the CA, in a directory of its own.
    pub fn split(self) -> Self {
        Self {
            split: true,
            ..self
        }
    }

    /// Where the files of `stem` go in `dir`.
    pub fn dir_of(self, dir: &Path, stem: &str) -> PathBuf {
        if self.split {
            dir.join(stem)
        } else {
            dir.to_path_buf()
        }
    }

    /// Whether `dir` holds a complete set (the CA is written last, into
    /// every directory of a split set).
    pub fn is_complete(self, dir: &Path) -> bool {
        self.identities()
            .all(|(stem, _)| self.dir_of(dir, stem).join("ca.pem").exists())
    }

    /// Where `--jwt-secret` writes the JWT key: beside the gateway's certificate.
    pub fn jwt_secret_file(self, dir: &Path) -> PathBuf {
        self.dir_of(dir, GATEWAY).join(JWT_SECRET_FILE)
    }

    fn identities(self) -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
        SERVICES
            .into_iter()
            .chain(self.all_in_one.then_some(ALL_IN_ONE_IDENTITY))
    }
}

/// The files of `stem` (a registry name, or [`ALL_IN_ONE`]) in `dir`.
pub fn files(dir: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// Writes a new CA and the certificates of `set` into `dir` (created if
/// needed), keys readable by the owner only. Refuses to replace an existing
/// set unless `overwrite`. Returns the files written.
pub fn write(dir: &Path, set: Set, overwrite: bool) -> anyhow::Result<Vec<PathBuf>> {
    let ca_file = set.dir_of(dir, GATEWAY).join("ca.pem");
    if ca_file.exists() && !overwrite {
        anyhow::bail!(
            "{} exists; pass --force to replace the set",
            ca_file.display()
        );
    }
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
    for (stem, names) in set.identities() {
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
        let target = files(&set.dir_of(dir, stem), stem);
        std::fs::create_dir_all(set.dir_of(dir, stem))?;
        write_file(&target.key, key.serialize_pem().as_bytes(), true)?;
        write_file(&target.cert, cert.pem().as_bytes(), false)?;
        written.extend([target.cert, target.key]);
    }
    // The CA last: its presence marks a complete set.
    let mut ca_files: Vec<PathBuf> = set
        .identities()
        .map(|(stem, _)| set.dir_of(dir, stem).join("ca.pem"))
        .collect();
    ca_files.dedup();
    for ca_file in ca_files {
        write_file(&ca_file, ca_cert.pem().as_bytes(), false)?;
        written.push(ca_file);
    }
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
/// and `-`, not starting with a dot (nothing hidden, no `..`), optionally
/// in one directory named the same way (`db/mysql-password`: a group of
/// secrets with the same holders).
pub fn valid_secret_name(name: &str) -> bool {
    let part = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match name.split_once('/') {
        Some((dir, file)) => part(dir) && part(file),
        None => part(name),
    }
}

/// Writes `bytes` to `path` whole (a temporary file renamed into place),
/// mode 0600 when `private`, else 0644.
///
/// The `.partial` file is created exclusively (`O_EXCL`) and not through a
/// symbolic link (`O_NOFOLLOW`): whatever already has that name, a link
/// planted by someone who can write to the directory included, makes the
/// write fail instead of sending the key where the link points. A
/// `.partial` left by an interrupted run is a regular file of ours; it is
/// removed first (removing a link removes the link, not its target).
fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    if let Ok(meta) = std::fs::symlink_metadata(&partial)
        && meta.file_type().is_file()
    {
        std::fs::remove_file(&partial)
            .with_context(|| format!("removing the stale {}", partial.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&partial)
        .with_context(|| {
            format!(
                "creating {} (it must not exist already, nor be a link)",
                partial.display()
            )
        })?;
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
    fn a_set_has_every_service_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), Set::services(), false).unwrap();
        assert_eq!(written.len(), 7);
        for (stem, names) in SERVICES {
            let files = files(dir.path(), stem);
            let pem = std::fs::read(&files.cert).unwrap();
            let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
            assert_eq!(Callers::of_certificate(&cert), Callers::of(names), "{stem}");
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{stem}");
        }
        assert!(
            !files(dir.path(), ALL_IN_ONE).cert.exists(),
            "the all-in-one certificate is made only on request"
        );
        let err = write(dir.path(), Set::services(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        write(dir.path(), Set::services(), true).unwrap();
    }

    #[test]
    fn the_all_in_one_certificate_carries_every_name_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), Set::services().with_all_in_one(), false).unwrap();
        assert_eq!(written.len(), 9);
        let (stem, names) = ALL_IN_ONE_IDENTITY;
        let files = files(dir.path(), stem);
        let pem = std::fs::read(&files.cert).unwrap();
        let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        assert_eq!(Callers::of_certificate(&cert), Callers::of(names));
    }

    #[test]
    fn a_split_set_gives_each_service_a_directory_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let set = Set::services().split();
        assert!(!set.is_complete(dir.path()));
        write(dir.path(), set, false).unwrap();
        assert!(set.is_complete(dir.path()));
        for (stem, _) in SERVICES {
            let mut names: Vec<String> = std::fs::read_dir(dir.path().join(stem))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(
                names,
                [
                    "ca.pem".to_owned(),
                    format!("{stem}.key"),
                    format!("{stem}.pem")
                ]
            );
        }
        assert_eq!(
            set.jwt_secret_file(dir.path()),
            dir.path().join(GATEWAY).join(JWT_SECRET_FILE)
        );
    }

    #[test]
    fn a_link_planted_where_a_partial_file_goes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let stolen = elsewhere.path().join("stolen");
        std::fs::write(&stolen, "").unwrap();
        let key = files(dir.path(), USER).key;
        std::os::unix::fs::symlink(&stolen, key.with_extension("partial")).unwrap();

        let err = write(dir.path(), Set::services(), false).unwrap_err();
        assert!(
            format!("{err:#}").contains("must not exist already, nor be a link"),
            "{err:#}"
        );
        assert_eq!(
            std::fs::read(&stolen).unwrap(),
            b"",
            "the key went through the link"
        );
        assert!(!key.exists());

        let secret = dir.path().join("nacos-password");
        std::os::unix::fs::symlink(&stolen, secret.with_extension("partial")).unwrap();
        assert!(write_secret(&secret).is_err());
        assert_eq!(
            std::fs::read(&stolen).unwrap(),
            b"",
            "the secret went through the link"
        );
    }

    #[test]
    fn a_partial_file_left_by_an_interrupted_run_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("mysql-password");
        std::fs::write(secret.with_extension("partial"), "half").unwrap();
        write_secret(&secret).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap().len(), 96);
        assert!(!secret.with_extension("partial").exists());
    }

    #[test]
    fn secret_names_are_file_names_only() {
        for name in [
            "nacos-token",
            "mysql_password",
            "a.b",
            "X9",
            "db/mysql-password",
        ] {
            assert!(valid_secret_name(name), "{name}");
        }
        for name in [
            "", ".hidden", "../x", "a/../b", "a/b/c", "/a", "a/", "a b", "ä",
        ] {
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
