//! https for the console: the certificate and key from PEM files as a rustls configuration
//! (ring, TLS 1.2 and 1.3), and the certificates `init --tls-name` makes. Handshakes run in
//! each connection's task, within the connection limits and the client timeout (`serve`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    #[error("cannot read the private key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// The server configuration from a PEM certificate chain (the server's first) and key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            why: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// A private CA and a server certificate it signed for `names` (DNS names or IP addresses):
/// `(ca.pem, chain PEM (server then CA), server key PEM)`. The CA's key is not kept: to add a
/// name, make new ones and give devices the new CA.
pub fn make_certificates(names: &[String]) -> Result<(String, String, String), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    for name in names {
        if name.parse::<IpAddr>().is_err()
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-*".contains(c)))
        {
            return Err(TlsError::Generate(format!(
                "{name:?} is neither a DNS name nor an IP address"
            )));
        }
    }
    // Valid from a day ago (clocks differ) for ten years, not rcgen's 1975 to 4096: a device
    // whose clock is behind must notice (and correct its clock), as with a real CA's.
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (
        now - time::Duration::days(1),
        now + time::Duration::days(3650),
    );
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca.not_before = not_before;
    ca.not_after = not_after;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "p6os-console CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(generate)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(generate)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(names.to_vec()).map_err(generate)?;
    server.not_before = not_before;
    server.not_after = not_after;
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("p6os-console", |n| n),
    );
    let key = KeyPair::generate().map_err(generate)?;
    let cert = server.signed_by(&key, &issuer).map_err(generate)?;
    Ok((
        ca_cert.pem(),
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_certificates_load_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, chain, key) =
            make_certificates(&["127.0.0.1".into(), "console.example".into()]).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        std::fs::write(dir.path().join("tls.crt"), &chain).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        server_config(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        assert!(make_certificates(&["bad name".into()]).is_err());
        // Key and certificate swapped: a clear error naming the file.
        let e = server_config(&dir.path().join("tls.key"), &dir.path().join("tls.crt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key"), "{e}");
    }
}
