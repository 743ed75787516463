//! TLS for `https://` bundle downloads ([`super::http`]): rustls with the ring provider (it
//! builds for the agent's static glibc target), TLS 1.2 and 1.3, the server's certificate checked
//! against its name (a DNS name, or an IP address for an IP host) as usual.
//!
//! Trust anchors: Mozilla's roots (compiled in, from `webpki-roots`), every certificate of the
//! system bundle [`SYSTEM_BUNDLE`] when the file exists (unparsable entries there are skipped),
//! and every certificate of the CA files given (which must all be valid).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

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

/// Why a TLS session could not be established.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{host:?} is not a valid server name for TLS")]
    Name { host: String },
    /// The server's certificate chain was refused; the text says why.
    #[error("{0}")]
    Certificate(String),
    #[error("the TLS handshake failed")]
    Io(#[source] io::Error),
}

/// A client configuration trusting Mozilla's roots, [`SYSTEM_BUNDLE`] and `ca_files`.
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, CaError> {
    config_with(Path::new(SYSTEM_BUNDLE), ca_files)
}

fn config_with(system: &Path, ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, CaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots(system, ca_files)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Mozilla's roots, the certificates of `system` when it exists, and those of `ca_files`.
fn roots(system: &Path, ca_files: &[PathBuf]) -> Result<RootCertStore, CaError> {
    let mut store = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    match std::fs::read(system) {
        Ok(pem) => {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            store.add_parsable_certificates(certs);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CaError::Read {
                path: system.to_path_buf(),
                source,
            })
        }
    }
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
            store.add(cert).map_err(|e| invalid(&e))?;
            count += 1;
        }
        if count == 0 {
            return Err(CaError::Empty { path: path.clone() });
        }
    }
    Ok(store)
}

/// A TLS session over a TCP connection, established (handshake done, certificate checked).
#[derive(Debug)]
pub struct TlsStream(StreamOwned<ClientConnection, TcpStream>);

/// Runs the handshake with `host` (a DNS name or an IP address, without brackets) over `tcp`;
/// the socket's timeouts bound each step.
pub fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
) -> Result<TlsStream, HandshakeError> {
    let name = ServerName::try_from(host)
        .map_err(|_| HandshakeError::Name {
            host: host.to_string(),
        })?
        .to_owned();
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| HandshakeError::Io(io::Error::other(e)))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            let rustls_error = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            return Err(match rustls_error {
                Some(rustls::Error::InvalidCertificate(why)) => {
                    HandshakeError::Certificate(certificate_problem(why))
                }
                _ => HandshakeError::Io(e),
            });
        }
    }
    Ok(TlsStream(StreamOwned::new(conn, tcp)))
}

/// Why the server's certificate was refused, in words.
fn certificate_problem(why: &CertificateError) -> String {
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

impl Read for TlsStream {
    /// Plaintext; a connection closed without TLS `close_notify` reads as an end of stream (the
    /// HTTP layer requires a `Content-Length` and resumes a short body, so a truncation is seen).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn trust_anchors_are_mozillas_the_systems_and_the_files_given() {
        let mozilla = webpki_roots::TLS_SERVER_ROOTS.len();
        let nowhere = Path::new("/nonexistent/ca-certificates.crt");
        assert_eq!(roots(nowhere, &[]).unwrap().len(), mozilla);

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
        let store = roots(system.path(), &[given.path().to_path_buf()]).unwrap();
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
        let error = roots(nowhere, &[missing]).unwrap_err();
        assert!(
            crate::log::error_chain(&error)
                .starts_with("cannot read the CA file /nonexistent/ca.pem: "),
            "{error}"
        );

        let empty = pem_file("not a certificate\n");
        let error = roots(nowhere, &[empty.path().to_path_buf()]).unwrap_err();
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
        let error = roots(nowhere, &[damaged.path().to_path_buf()]).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "the CA file {}: certificate 2 is invalid: ",
                damaged.path().display()
            )),
            "{error}"
        );
    }
}
