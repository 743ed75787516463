//! The operator commands: a blocking HTTP client of the API (ureq), and their output
//! (`format`: tables and readable details, pure).

mod diagnostics;
pub mod format;
pub mod rollouts;
pub mod siteconfig;
pub mod users;

pub use diagnostics::diagnostics;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use p6os_protocol::{
    Appliance, AppliancePage, ApproveRequest, Bundle, BundlePage, DesiredRequest, DesiredResponse,
    ErrorBody, EventPage, ImageRequest, PairingPolicy, RegisterRequest, SelectorDesiredRequest,
    API, MAX_PAGE_LIMIT,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli::{AppliancesCommand, BundlesCommand, DesireArgs};
use crate::core::parse_label_term;

/// Why a command failed; the exit status follows from it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A usage mistake found after parsing (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The console refused (exit 1): its message.
    #[error("{0}")]
    Api(String),
    /// Could not talk to the console, or read a file (exit 1).
    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Api(_) | Failure::Other(_) => 1,
        }
    }
}

/// The operator's token: the file (trimmed), else `P6OS_CONSOLE_TOKEN` (a personal token),
/// else `P6OS_CONSOLE_ADMIN_TOKEN` (the console's admin token).
pub fn operator_token(file: Option<&Path>) -> Result<String, Failure> {
    if file.is_none() {
        if let Ok(t) = crate::read_token(None, "P6OS_CONSOLE_TOKEN", "--token-file") {
            return Ok(t);
        }
    }
    crate::read_token(file, "P6OS_CONSOLE_ADMIN_TOKEN", "--token-file").map_err(|e| {
        Failure::Usage(if file.is_some() {
            e
        } else {
            "no token: give --token-file FILE, or set P6OS_CONSOLE_TOKEN (a personal token) \
             or P6OS_CONSOLE_ADMIN_TOKEN"
                .into()
        })
    })
}

/// A client of one console.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the console at `url`; for https, `ca` (a PEM file) replaces Mozilla's roots.
    pub fn new(url: &str, token: String, ca: Option<&Path>) -> Result<Client, Failure> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| Failure::Usage(format!("cannot read --ca {}: {e}", ca.display())))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Failure::Usage(format!(
                    "--ca {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token,
            agent: config.build().into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The body of a 2xx as `T`; anything else is the console's error message.
    fn finish<T: DeserializeOwned>(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, Failure> {
        let mut response =
            result.map_err(|e| Failure::Other(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| Failure::Other(format!("cannot read the console's answer: {e}")))?;
        if !status.is_success() {
            let message = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(ErrorBody {
                    error,
                    field: Some(field),
                }) => format!("{field}: {error}"),
                Ok(ErrorBody { error, field: None }) => error,
                Err(_) => "no error message".to_string(),
            };
            return Err(Failure::Api(format!(
                "the console answered {}: {message}",
                status.as_u16()
            )));
        }
        let body = if body.is_empty() {
            b"null".to_vec()
        } else {
            body
        };
        serde_json::from_slice(&body)
            .map_err(|e| Failure::Other(format!("the console's answer is not understood: {e}")))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let r = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call();
        self.finish(r)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        let r = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .send_json(body);
        self.finish(r)
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        let r = self
            .agent
            .put(self.url(path))
            .header("Authorization", self.auth())
            .send_json(body);
        self.finish(r)
    }

    pub fn delete(&self, path: &str) -> Result<(), Failure> {
        let r = self
            .agent
            .delete(self.url(path))
            .header("Authorization", self.auth())
            .call();
        self.finish::<serde_json::Value>(r).map(|_| ())
    }

    /// Uploads a bundle file (streamed, with its length).
    pub fn upload(&self, file: &Path) -> Result<Bundle, Failure> {
        let f = std::fs::File::open(file)
            .map_err(|e| Failure::Other(format!("cannot open {}: {e}", file.display())))?;
        let r = self
            .agent
            .post(self.url(&format!("{API}/bundles")))
            .header("Authorization", self.auth())
            .header("Content-Type", "application/octet-stream")
            .send(f);
        self.finish(r)
    }
}

/// Every item of a paged list at `path` (with its `query`), page after page, or the first
/// `limit` of them.
pub(crate) fn all_pages<P: DeserializeOwned, T>(
    client: &Client,
    path: &str,
    query: &[(String, String)],
    limit: Option<usize>,
    parts: impl Fn(P) -> (Vec<T>, Option<String>),
) -> Result<Vec<T>, Failure> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let want = limit.map_or(MAX_PAGE_LIMIT, |n| (n - all.len()).min(MAX_PAGE_LIMIT));
        let mut q = query.to_vec();
        q.push(("limit".into(), want.to_string()));
        if let Some(a) = &after {
            q.push(("after".into(), a.clone()));
        }
        let q = serde_urlencoded::to_string(&q).unwrap_or_default();
        let (items, next) = parts(client.get(&format!("{path}?{q}"))?);
        all.extend(items);
        match next {
            Some(n) if limit.is_none_or(|l| all.len() < l) => after = Some(n),
            _ => return Ok(all),
        }
    }
}

pub(crate) fn labels(terms: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    terms
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| parse_label_term(t.trim()).map_err(|e| Failure::Usage(format!("label: {e}"))))
        .collect()
}

pub(crate) fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub fn appliances(client: &Client, command: AppliancesCommand) -> Result<(), Failure> {
    let now = crate::api::now();
    match command {
        AppliancesCommand::Register {
            id,
            name,
            labels: l,
            fingerprint,
            pairing,
        } => {
            let req = RegisterRequest {
                id,
                name,
                labels: labels(&l)?,
                fingerprint,
                pairing: PairingPolicy::parse(&pairing).unwrap_or_default(),
            };
            let a: Appliance = client.post(&format!("{API}/appliances"), &req)?;
            println!("registered {} ({})", a.id, a.status.as_str());
            if let Some(fp) = &a.requested_fingerprint {
                println!(
                    "a device asked to pair as {} with key {fp}: check it on the device \
                     (`p6os-agent status`) and approve it with `appliances approve {} \
                     --fingerprint {fp}`",
                    a.id, a.id
                );
            }
        }
        AppliancesCommand::Approve { id, fingerprint } => {
            let a: Appliance = client.post(
                &format!("{API}/appliances/{id}/approve"),
                &ApproveRequest { fingerprint },
            )?;
            println!(
                "{} is bound to the device key {} ({})",
                a.id,
                a.key_fingerprint.as_deref().unwrap_or("?"),
                a.status.as_str()
            );
        }
        AppliancesCommand::SetImage {
            id,
            image_name,
            arch,
        } => {
            let a: Appliance = client.put(
                &format!("{API}/appliances/{id}/image"),
                &ImageRequest { image_name, arch },
            )?;
            println!("{} gets bundles of {:?}", a.id, a.image);
        }
        AppliancesCommand::List {
            status,
            labels: l,
            limit,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(("status".to_string(), s));
            }
            for (k, v) in labels(&l)? {
                query.push(("label".to_string(), format!("{k}={v}")));
            }
            let all = all_pages(
                client,
                &format!("{API}/appliances"),
                &query,
                limit,
                |p: AppliancePage| (p.items, p.next),
            )?;
            if json {
                print_json(&all);
            } else {
                print!("{}", format::appliance_table(&all, now));
            }
        }
        AppliancesCommand::Show { id, json } => {
            let a: Appliance = client.get(&format!("{API}/appliances/{id}"))?;
            if json {
                print_json(&a);
            } else {
                print!("{}", format::appliance_details(&a, now));
            }
        }
        AppliancesCommand::Delete { id } => {
            client.delete(&format!("{API}/appliances/{id}"))?;
            println!("deleted {id}");
        }
        AppliancesCommand::Events { id, limit, json } => {
            let events = all_pages(
                client,
                &format!("{API}/appliances/{id}/events"),
                &[],
                limit,
                |p: EventPage| (p.items, p.next),
            )?;
            if json {
                print_json(&events);
            } else {
                print!("{}", format::events(&events));
            }
        }
    }
    Ok(())
}

pub fn bundles(client: &Client, command: BundlesCommand) -> Result<(), Failure> {
    match command {
        BundlesCommand::Add { files } => {
            for file in files {
                let b = client.upload(&file).map_err(|e| match e {
                    Failure::Api(m) => Failure::Api(format!("{}: {m}", file.display())),
                    other => other,
                })?;
                println!(
                    "{}: {} {} {} sha256 {}",
                    file.display(),
                    b.name,
                    b.version,
                    b.arch,
                    b.sha256
                );
            }
        }
        BundlesCommand::List { limit, json } => {
            let all = all_pages(
                client,
                &format!("{API}/bundles"),
                &[],
                limit,
                |p: BundlePage| (p.items, p.next),
            )?;
            if json {
                print_json(&all);
            } else {
                print!("{}", format::bundle_table(&all));
            }
        }
    }
    Ok(())
}

pub fn desire(client: &Client, args: DesireArgs) -> Result<(), Failure> {
    let version = if args.clear { None } else { args.version };
    if let Some(v) = &version {
        p6os_protocol::check_version(v).map_err(|e| Failure::Usage(format!("--version: {e}")))?;
    }
    let allow_downgrade = args.allow_downgrade;
    let shown = match (version.as_deref(), allow_downgrade) {
        (Some(v), true) => format!("{v} (downgrade allowed)"),
        (Some(v), false) => v.to_string(),
        (None, _) => "(none)".to_string(),
    };
    match (args.id, args.selector) {
        (Some(id), _) => {
            let a: Appliance = client.put(
                &format!("{API}/appliances/{id}/desired"),
                &DesiredRequest {
                    version,
                    allow_downgrade,
                },
            )?;
            println!("{}: desired version {shown}", a.id);
        }
        (None, Some(selector)) => {
            let selector = labels(&[selector])?;
            let r: DesiredResponse = client.put(
                &format!("{API}/desired"),
                &SelectorDesiredRequest {
                    selector,
                    version,
                    allow_downgrade,
                },
            )?;
            println!("desired version {shown} for {} appliances", r.matched.len());
            for id in r.matched {
                println!("  {id}");
            }
        }
        (None, None) => return Err(Failure::Usage("--id or --selector is required".into())),
    }
    Ok(())
}
