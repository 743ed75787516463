//! Secure Boot keys: making them (`p6os keygen --secure-boot`), the development keys made on
//! first use, and loading the db key that signs an image's EFI binaries.
//!
//! A key directory holds three RSA-2048 key pairs, each with a self-signed certificate, in the
//! files `openssl` and `sbsign` read (PKCS#8 and X.509 PEM): `PK` (the platform key: who may
//! change the firmware's keys), `KEK` (who may change db), `db` (what signs boot loaders and
//! kernels). Only `db.key` signs images; `PK.crt`, `KEK.crt` and `db.crt` are what a machine
//! enrolls (docs/verified-boot.md). A certificate is made from its key alone (fixed serial,
//! validity and name), so it is the same bytes every time.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use p6os_efi::authenticode::Signer;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

/// The three keys, in the order they are made and enrolled.
pub const KEYS: [&str; 3] = ["PK", "KEK", "db"];
/// The development keys' directory below the user's data directory.
const DEV_DIR: &str = "p6os/dev-keys/secure-boot";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("{0} holds Secure Boot keys already (not overwritten)")]
    Exists(PathBuf),
    #[error("cannot make an RSA key: {0}")]
    Generate(String),
    #[error("{path}: {source}")]
    Signer {
        path: PathBuf,
        #[source]
        source: p6os_efi::EfiError,
    },
}

fn file_err(path: &Path) -> impl Fn(String) -> KeyError + '_ {
    move |problem| KeyError::File {
        path: path.to_path_buf(),
        problem,
    }
}

/// Makes `PK`, `KEK` and `db` in `dir` (created if needed; keys 0600). Refuses to overwrite.
pub fn generate(dir: &Path, owner: &str) -> Result<(), KeyError> {
    if KEYS.iter().any(|k| dir.join(format!("{k}.key")).exists()) {
        return Err(KeyError::Exists(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(|e| file_err(dir)(e.to_string()))?;
    for name in KEYS {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let key_path = dir.join(format!("{name}.key"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(|e| file_err(&key_path)(e.to_string()))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| file_err(&key_path)(e.to_string()))?;
        let cert = certificate(pem.as_str(), &format!("P6OS {name} ({owner})"))
            .map_err(file_err(&key_path))?;
        let cert_path = dir.join(format!("{name}.crt"));
        fs::write(&cert_path, cert).map_err(|e| file_err(&cert_path)(e.to_string()))?;
    }
    Ok(())
}

/// A self-signed CA certificate for a PKCS#8 PEM RSA key: PEM, the same bytes for the same key.
pub fn certificate(key_pem: &str, common_name: &str) -> Result<String, String> {
    let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    params.use_authority_key_identifier_extension = false;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(cert.pem())
}

/// The signer of a key directory: `db.key` and `db.crt`, checked to belong together.
pub fn load_signer(dir: &Path) -> Result<Signer, KeyError> {
    let key_path = dir.join("db.key");
    let cert_path = dir.join("db.crt");
    let key_pem = fs::read_to_string(&key_path).map_err(|e| file_err(&key_path)(e.to_string()))?;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem)
        .map_err(|e| file_err(&key_path)(format!("not a PKCS#8 RSA key in PEM: {e}")))?;
    let key_der = key
        .to_pkcs8_der()
        .map_err(|e| file_err(&key_path)(e.to_string()))?;
    let cert_der = read_certificate(&cert_path)?;
    Signer::new(key_der.as_bytes(), &cert_der).map_err(|source| KeyError::Signer {
        path: cert_path,
        source,
    })
}

/// A PEM (or DER) X.509 certificate file, as DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, KeyError> {
    use x509_cert::der::{DecodePem, Encode};
    let bytes = fs::read(path).map_err(|e| file_err(path)(e.to_string()))?;
    let cert = match bytes.starts_with(b"-----BEGIN") {
        true => x509_cert::Certificate::from_pem(&bytes),
        false => x509_cert::der::Decode::from_der(&bytes),
    }
    .map_err(|e| file_err(path)(format!("not an X.509 certificate: {e}")))?;
    cert.to_der().map_err(|e| file_err(path)(e.to_string()))
}

/// Where development keys live: `$P6OS_DEV_KEYS`, else `$XDG_DATA_HOME/p6os/dev-keys/secure-boot`,
/// else `~/.local/share/p6os/dev-keys/secure-boot`. Outside every repository.
pub fn dev_keys_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("P6OS_DEV_KEYS") {
        return Some(PathBuf::from(dir));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join(DEV_DIR))
}

/// The development keys, made on first use. Returns the directory and whether it was made now.
pub fn dev_keys() -> Result<(PathBuf, bool), KeyError> {
    let dir = dev_keys_dir().ok_or_else(|| KeyError::File {
        path: PathBuf::from("~"),
        problem: "no home directory for development keys: set P6OS_DEV_KEYS".into(),
    })?;
    if dir.join("db.key").exists() {
        return Ok((dir, false));
    }
    // Made in a sibling directory and renamed: two builds starting at once never mix keys.
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| file_err(parent)(e.to_string()))?;
    let temp = tempfile::Builder::new()
        .prefix(".secure-boot.")
        .tempdir_in(parent)
        .map_err(|e| file_err(parent)(e.to_string()))?;
    generate(temp.path(), "development keys, not for production")?;
    match fs::rename(temp.path(), &dir) {
        Ok(()) => Ok((dir, true)),
        // Another build made them first: use those.
        Err(_) if dir.join("db.key").exists() => Ok((dir, false)),
        Err(e) => Err(file_err(&dir)(e.to_string())),
    }
}
