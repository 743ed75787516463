//! The time from a server whose certificate is not valid yet by this machine's clock (a clock
//! years behind after a dead CMOS battery): the server is authenticated as usual — the chain
//! up to a trusted anchor, the host name, the handshake signature — except that the dates are
//! checked at the moment its certificate became valid instead of now; its `Date` header is
//! then accepted only if the certificate chain is valid at that date too. Used once, to set
//! the clock forward before the real exchange is retried with the normal checks.
//!
//! ureq has no hook for a certificate verifier, so this module brings its own TLS connector
//! (the shape of ureq's own rustls connector) for the probe's agent only.

use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, Error, RootCertStore,
    SignatureScheme, StreamOwned,
};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Verifies like rustls' WebPKI verifier, at the certificate's start when `now` is before it;
/// keeps the chain to check the server's date against it afterwards.
pub struct ProbeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

struct Seen {
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    name: ServerName<'static>,
}

impl fmt::Debug for ProbeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeVerifier")
    }
}

impl ProbeVerifier {
    pub fn new(anchors: &[CertificateDer<'static>]) -> Result<Arc<ProbeVerifier>, Error> {
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots.add(anchor.clone())?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| Error::General(e.to_string()))?;
        Ok(Arc::new(ProbeVerifier {
            inner,
            seen: Mutex::new(None),
        }))
    }

    /// Whether the verified server's certificate chain is valid at `date` (the time it gave).
    pub fn valid_at(&self, date: UnixTime) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.as_ref().is_some_and(|s| {
            self.inner
                .verify_server_cert(&s.end_entity, &s.intermediates, &s.name, &[], date)
                .is_ok()
        })
    }
}

impl ServerCertVerifier for ProbeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verify = |at: UnixTime| {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, at)
        };
        let verified = match verify(now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidYetContext {
                not_before,
                ..
            })) => verify(not_before)?,
            other => other?,
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Seen {
            end_entity: end_entity.clone().into_owned(),
            intermediates: intermediates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
            name: server_name.to_owned(),
        });
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS with the [`ProbeVerifier`], in ureq's connector chain (after TCP and the proxy's
/// CONNECT).
#[derive(Debug)]
pub struct ProbeTls {
    config: Arc<ClientConfig>,
}

impl ProbeTls {
    pub fn new(verifier: Arc<ProbeVerifier>) -> Result<ProbeTls, Error> {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
        Ok(ProbeTls {
            config: Arc::new(config),
        })
    }
}

impl<In: Transport> Connector<In> for ProbeTls {
    type Out = Either<In, ProbeTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::Tls("no connection to wrap in TLS"));
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::Tls("no host to verify"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("not a host name or address"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(ProbeTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

pub struct ProbeTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for ProbeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeTransport")
    }
}

impl Transport for ProbeTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
