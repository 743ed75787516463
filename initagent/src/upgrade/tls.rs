//! Trust for `https://` ([`super::http`]): which certificate authorities the agent trusts, loaded
//! here and handed to ureq, whose rustls (ring provider, TLS 1.2 and 1.3) runs the handshake
//! and checks the server's certificate against its name (a DNS name, or an IP address for an IP
//! host) as usual.
//!
//! Trust anchors: Mozilla's roots (compiled in, from `webpki-root-certs`), every certificate of
//! the system bundle [`SYSTEM_BUNDLE`] when the file exists (unparsable entries there are
//! skipped), and every certificate of the CA files given (which must all be valid).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

/// The distribution's CA bundle (Debian's `ca-certificates`), used when it exists.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read the CA file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the CA file {} holds no PEM certificate", path.display())]
    Empty { path: PathBuf },
    #[error("the CA file {}: certificate {index} is invalid: {why}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1 for the first certificate of the file.
        index: usize,
        why: String,
    },
}

/// A TLS handshake that failed for another reason than the server's certificate (which is
/// [`certificate_problem`]'s); the source says how.
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake failed")]
pub struct HandshakeFailed(#[source] pub io::Error);

/// The certificates trusted for https: Mozilla's roots, [`SYSTEM_BUNDLE`]'s and `ca_files`'.
pub fn trust_anchors(ca_files: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>, CaError> {
    anchors_with(Path::new(SYSTEM_BUNDLE), ca_files)
}

/// Mozilla's roots, the certificates of `system` when it exists, and those of `ca_files`.
fn anchors_with(
    system: &Path,
    ca_files: &[PathBuf],
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut anchors = webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
    match std::fs::read(system) {
        Ok(pem) => {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            anchors.extend(certs.filter(|cert| as_anchor(cert).is_ok()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CaError::Read {
                path: system.to_path_buf(),
                source,
            })
        }
    }
    anchors.extend(file_anchors(ca_files)?);
    Ok(anchors)
}

/// The certificates of `ca_files` only (each must hold at least one valid certificate).
pub fn file_anchors(ca_files: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut anchors = Vec::new();
    for path in ca_files {
        let pem = std::fs::read(path).map_err(|source| CaError::Read {
            path: path.clone(),
            source,
        })?;
        let mut count = 0;
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let invalid = |why: &dyn fmt::Display| CaError::Invalid {
                path: path.clone(),
                index: i + 1,
                why: why.to_string(),
            };
            let cert = cert.map_err(|e| invalid(&e))?;
            as_anchor(&cert).map_err(|e| invalid(&e))?;
            anchors.push(cert);
            count += 1;
        }
        if count == 0 {
            return Err(CaError::Empty { path: path.clone() });
        }
    }
    Ok(anchors)
}

/// Whether rustls can use `cert` as a trust anchor (ureq skips those it cannot, silently: a CA
/// file given must be refused here instead).
fn as_anchor(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(cert.clone().into_owned())
}

/// Why the server's certificate was refused, in words.
/// What a certificate error says about the clock.
pub fn certificate_dates(why: &CertificateError) -> super::http::CertificateDates {
    use super::http::CertificateDates;
    match why {
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertificateDates::NotValidYet
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            CertificateDates::Expired
        }
        _ => CertificateDates::Fine,
    }
}

pub fn certificate_problem(why: &CertificateError) -> String {
    match why {
        CertificateError::UnknownIssuer => format!(
            "it is not issued by a trusted certificate authority (trusted: Mozilla's roots, \
             {SYSTEM_BUNDLE} and the CA files given)"
        ),
        CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. }
        | CertificateError::Expired
        | CertificateError::ExpiredContext { .. } => {
            format!("{why} (is this machine's clock right?)")
        }
        other => other.to_string(),
    }
}

/// Certificates made at test time and a rustls server configuration (tests only).
#[cfg(test)]
pub(crate) mod testpki {
    use std::sync::{Arc, OnceLock};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConfig;

    /// A CA and a server certificate it issued.
    pub struct Pki {
        /// The CA's certificate, PEM.
        pub ca_pem: String,
        /// A server with the certificate (and its chain) for `names`.
        pub server: Arc<ServerConfig>,
    }

    /// A fresh CA (named `ca_name`) and a server certificate for `names` issued by it.
    pub fn make(ca_name: &str, names: &[&str]) -> Pki {
        make_dated(ca_name, names, None)
    }

    /// [`make`] with the server certificate valid only between two years (1 January each).
    pub fn make_dated(ca_name: &str, names: &[&str], years: Option<(i32, i32)>) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "p6os test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }

    /// The CA of the tests' servers, valid for 127.0.0.1 and localhost (made once).
    pub fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| make("p6os test CA", &["127.0.0.1", "localhost"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn trust_anchors_are_mozillas_the_systems_and_the_files_given() {
        let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len();
        assert!(mozilla > 100, "{mozilla}");
        let nowhere = Path::new("/nonexistent/ca-certificates.crt");
        assert_eq!(anchors_with(nowhere, &[]).unwrap().len(), mozilla);

        let (a, b, c) = (
            testpki::make("CA a", &["127.0.0.1"]),
            testpki::make("CA b", &["127.0.0.1"]),
            testpki::make("CA c", &["127.0.0.1"]),
        );
        // The system bundle: two certificates, a damaged one and text around them.
        let system = pem_file(&format!(
            "# comment\n{}\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{}",
            a.ca_pem, b.ca_pem
        ));
        let given = pem_file(&c.ca_pem);
        let store = anchors_with(system.path(), &[given.path().to_path_buf()]).unwrap();
        assert_eq!(store.len(), mozilla + 3);
    }

    #[test]
    fn certificate_problems_are_explained() {
        assert!(certificate_problem(&CertificateError::UnknownIssuer)
            .starts_with("it is not issued by a trusted certificate authority"));
        let early = CertificateError::NotValidYetContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(10)),
            not_before: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_700_000_000),
            ),
        };
        let text = certificate_problem(&early);
        assert!(
            text.starts_with("certificate not valid yet: verification time 10 (UNIX)")
                && text.ends_with(" (is this machine's clock right?)"),
            "{text}"
        );
    }

    #[test]
    fn a_ca_file_given_must_hold_valid_certificates() {
        let nowhere = Path::new("/nonexistent/ca-certificates.crt");
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let error = anchors_with(nowhere, &[missing]).unwrap_err();
        assert!(
            crate::log::error_chain(&error)
                .starts_with("cannot read the CA file /nonexistent/ca.pem: "),
            "{error}"
        );

        let empty = pem_file("not a certificate\n");
        let error = anchors_with(nowhere, &[empty.path().to_path_buf()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the CA file {} holds no PEM certificate",
                empty.path().display()
            )
        );

        let good = testpki::shared().ca_pem.clone();
        let damaged = pem_file(&format!(
            "{good}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        let error = anchors_with(nowhere, &[damaged.path().to_path_buf()]).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "the CA file {}: certificate 2 is invalid: ",
                damaged.path().display()
            )),
            "{error}"
        );
    }
}
