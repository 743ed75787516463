//! What the agent says of a failed download in its own words, for the console
//! ([`HttpError::summary`]), and server text made fit for the local log ([`for_log`]).

use super::{progress, CertificateDates, HttpError};

impl HttpError {
    /// What went wrong in the agent's own words, for the console: no text the server chose
    /// (reason phrases, bodies, header values, locations, certificate names), only what the
    /// agent knows: the kind of failure, status codes and byte counts.
    pub fn summary(&self) -> String {
        match self {
            HttpError::BadUrl { .. } => "the bundle's address is not a valid http(s) URL".into(),
            HttpError::Request { .. } => "the request could not be sent".into(),
            HttpError::Proxy { .. } | HttpError::ProxyRefused { .. } => {
                "the proxy could not be used".into()
            }
            HttpError::Connect { .. } => "cannot connect to the console".into(),
            HttpError::Ca { .. } => "cannot load the trusted certificates".into(),
            HttpError::Certificate { dates, .. } => match dates {
                CertificateDates::NotValidYet => {
                    "the console's certificate is not valid yet by this machine's clock".into()
                }
                CertificateDates::Expired => {
                    "the console's certificate has expired by this machine's clock".into()
                }
                CertificateDates::Fine => "the console's certificate is refused".into(),
            },
            HttpError::Tls { .. } => "no TLS session with the console".into(),
            HttpError::Io { .. } => "the connection failed".into(),
            HttpError::Malformed { .. } => "the answer is not valid HTTP".into(),
            HttpError::Status { status, .. } => format!("the console answered HTTP {status}"),
            HttpError::NoLength { .. } => {
                "the answer has neither a content-length nor chunked encoding".into()
            }
            HttpError::TooManyRedirects { .. } => "more than 5 redirects".into(),
            HttpError::Downgrade { .. } => {
                "redirected from https to plain http, which is refused".into()
            }
            HttpError::OffOrigin { .. } => {
                "redirected to another server, which is refused (the console's downloads stay \
                 on its origin)"
                    .into()
            }
            HttpError::Changed { .. } => "the file changed on the server while downloading".into(),
            HttpError::Unrecognisable { .. } => {
                "the connection broke and the download cannot be resumed (the answer named \
                 neither the file's size nor an etag or last-modified)"
                    .into()
            }
            HttpError::GaveUp {
                received,
                total,
                resumes,
                ..
            } => format!(
                "download abandoned after {resumes} reconnections: received {}",
                progress(*received, *total)
            ),
        }
    }
}

/// Server-chosen text for the local log: control characters escaped, at most 300 characters.
pub fn for_log(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    match escaped.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped,
    }
}
