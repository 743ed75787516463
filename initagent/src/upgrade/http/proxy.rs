//! Which proxy a request goes through (pure): the URL and the environment's `http_proxy`,
//! `https_proxy` and `no_proxy` values in, a [`Proxy`] or none out. The rules are curl's:
//!
//! - `http_proxy` for `http://` URLs, `https_proxy` for `https://` ones; the lower-case variable
//!   wins when both cases are set, and a variable set to the empty string means no proxy;
//! - a proxy is `[http://|https://][user:password@]host[:port][/]`, its port 1080 when not given
//!   for `http://` (curl's default), 443 for `https://`; SOCKS proxies are refused;
//! - `no_proxy` is a list separated by commas or blanks: `*` (every host), host names matching
//!   themselves and their subdomains (`example.com` and `.example.com` both match
//!   `example.com` and `a.example.com`, not `notexample.com`), IP addresses and CIDR ranges
//!   (`10.0.0.0/8`, `fd00::/8`) matching the URL's host when it is written as an address. Names
//!   are not resolved: `127.0.0.1` in the list does not cover `localhost`.
//! - Loopback gets no special treatment, as in curl: `localhost` and `127.0.0.1` go through the
//!   proxy unless `no_proxy` lists them.
//!
//! A URL is checked against `no_proxy` before the proxy's value is parsed, so a bad proxy value
//! only fails the requests that would use it.

use std::fmt;
use std::net::IpAddr;

use super::url::{parse_port, split_host_port, Url};

/// The variables read, in each case.
pub const VARIABLES: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The proxy variables among `environment`'s (`/etc/environment`, for a child started with an
/// otherwise clean environment).
pub fn variables_of(environment: &[(String, String)]) -> Vec<(String, String)> {
    environment
        .iter()
        .filter(|(name, _)| VARIABLES.contains(&name.as_str()))
        .cloned()
        .collect()
}

/// One proxy variable as found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyVariable {
    /// The name it was found under (`https_proxy` or `HTTPS_PROXY`...), for messages.
    pub name: &'static str,
    pub value: String,
}

/// The proxy variables of an environment (see the module's doc for the rules); the default has
/// none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http_proxy: Option<ProxyVariable>,
    pub https_proxy: Option<ProxyVariable>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// The variables of this process's environment.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// The variables as `lookup` finds them (a name to its value, `None` when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        // The first name that is set wins, even when set to the empty string (curl's rule).
        let find = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| lookup(name).map(|value| ProxyVariable { name, value }))
        };
        ProxyEnv {
            http_proxy: find(["http_proxy", "HTTP_PROXY"]),
            https_proxy: find(["https_proxy", "HTTPS_PROXY"]),
            no_proxy: find(["no_proxy", "NO_PROXY"]).map(|v| v.value),
        }
    }
}

/// How the agent talks to the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// Plain TCP to the proxy.
    Http,
    /// TLS to the proxy (its certificate checked against the same trust anchors).
    Https,
}

/// A proxy to send a request through. Every request through it, plain http included, is an
/// HTTP `CONNECT` tunnel to the server (that is how ureq uses a proxy).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    /// The variable that named it, for messages.
    pub variable: &'static str,
    pub scheme: ProxyScheme,
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    /// User name and password, percent-decoded (sent as `Proxy-Authorization: Basic`).
    pub credentials: Option<(String, String)>,
}

impl fmt::Display for Proxy {
    /// `http://host:port (https_proxy)`: never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
        };
        let address = super::url::address(&self.host, self.port);
        write!(f, "the proxy {scheme}://{address} ({})", self.variable)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A proxy variable whose value is not a proxy the agent can use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not a usable proxy: {why}")]
pub struct ProxyError {
    pub variable: &'static str,
    /// The value with any password replaced by `***`.
    pub value: String,
    pub why: &'static str,
}

/// The proxy for `url`, or none (see the module's doc).
pub fn proxy_for(url: &Url, env: &ProxyEnv) -> Result<Option<Proxy>, ProxyError> {
    let variable = match url.https {
        true => &env.https_proxy,
        false => &env.http_proxy,
    };
    let Some(variable) = variable.as_ref().filter(|v| !v.value.trim().is_empty()) else {
        return Ok(None);
    };
    if env
        .no_proxy
        .as_deref()
        .is_some_and(|list| bypasses(list, &url.host))
    {
        return Ok(None);
    }
    parse_proxy(variable).map(Some)
}

/// `[scheme://][user:password@]host[:port][/...]`.
fn parse_proxy(variable: &ProxyVariable) -> Result<Proxy, ProxyError> {
    let text = variable.value.trim();
    let error = |why| ProxyError {
        variable: variable.name,
        value: redacted(text),
        why,
    };
    let (scheme, rest) = match text.split_once("://") {
        None => (ProxyScheme::Http, text),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (ProxyScheme::Http, rest),
            "https" => (ProxyScheme::Https, rest),
            s if s.starts_with("socks") => return Err(error("SOCKS proxies are not supported")),
            _ => return Err(error("expected http://host[:port] or https://host[:port]")),
        },
    };
    // A path after the address means nothing to a proxy; curl ignores it too.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let credentials = userinfo
        .map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            match (percent_decode(user), percent_decode(password)) {
                (Some(user), Some(password)) => Ok((user, password)),
                _ => Err(error(
                    "the user name or password is not valid percent-encoded UTF-8",
                )),
            }
        })
        .transpose()?;
    let (host, port) = split_host_port(host_port).map_err(error)?;
    if host.is_empty() || host.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(error("no host"));
    }
    let port = match port {
        None | Some("") => match scheme {
            ProxyScheme::Http => 1080,
            ProxyScheme::Https => 443,
        },
        Some(port) => parse_port(port).map_err(error)?,
    };
    Ok(Proxy {
        variable: variable.name,
        scheme,
        host: host.to_string(),
        port,
        credentials,
    })
}

/// A proxy value for messages: `user:***@host` instead of the password.
fn redacted(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), value),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let at = userinfo.len();
            format!("{scheme}{user}:***{}", &rest[at..])
        }
        _ => value.to_string(),
    }
}

/// `%XX` sequences decoded; `None` for a bad sequence or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether `no_proxy` (the list) keeps the proxy away from `host` (a name, or an address
/// without brackets).
pub fn bypasses(no_proxy: &str, host: &str) -> bool {
    let address = host.parse::<IpAddr>().ok();
    let name = host.strip_suffix('.').unwrap_or(host);
    no_proxy
        .split([',', ' ', '\t'])
        .filter(|entry| !entry.is_empty())
        .any(|entry| match address {
            _ if entry == "*" => true,
            Some(address) => address_matches(entry, address),
            None => name_matches(entry, name),
        })
}

/// `example.com`, `.example.com` (and the common `*.example.com`) match the name itself and its
/// subdomains, ignoring case and a trailing dot.
fn name_matches(entry: &str, name: &str) -> bool {
    let entry = entry.strip_suffix('.').unwrap_or(entry);
    let domain = entry
        .strip_prefix("*.")
        .or_else(|| entry.strip_prefix('.'))
        .unwrap_or(entry);
    if domain.is_empty() || name.len() < domain.len() {
        return false;
    }
    let (head, tail) = name.split_at(name.len() - domain.len());
    tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with('.'))
}

/// An address (`[..]` allowed around IPv6) or a CIDR range containing `address`.
fn address_matches(entry: &str, address: IpAddr) -> bool {
    let (network, bits) = match entry.split_once('/') {
        Some((network, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (network, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let network = network
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(network);
    match (network.parse::<IpAddr>(), address) {
        (Ok(IpAddr::V4(network)), IpAddr::V4(address)) => {
            prefix_matches(network.to_bits().into(), address.to_bits().into(), 32, bits)
        }
        (Ok(IpAddr::V6(network)), IpAddr::V6(address)) => {
            prefix_matches(network.to_bits(), address.to_bits(), 128, bits)
        }
        _ => false,
    }
}

/// Whether the first `bits` (all of them when `None`) of two `width`-bit addresses agree.
fn prefix_matches(network: u128, address: u128, width: u32, bits: Option<u32>) -> bool {
    let bits = bits.unwrap_or(width);
    if bits > width {
        return false;
    }
    let ignored = width - bits;
    // checked_shr: a shift by the full width (a /0 range) leaves nothing to compare.
    network.checked_shr(ignored).unwrap_or(0) == address.checked_shr(ignored).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::url::parse_url;
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The chosen proxy as `scheme://host:port`, or "direct".
    fn route(url: &str, env: &ProxyEnv) -> String {
        match proxy_for(&parse_url(url).unwrap(), env).unwrap() {
            None => "direct".to_string(),
            Some(p) => format!("{:?}://{}:{} {}", p.scheme, p.host, p.port, p.variable),
        }
    }

    #[test]
    fn the_variable_follows_the_scheme_and_lower_case_wins() {
        let both = env(&[
            ("http_proxy", "http://lower:3128"),
            ("HTTP_PROXY", "http://upper:3128"),
            ("HTTPS_PROXY", "upper-tls:8080"),
        ]);
        assert_eq!(route("http://a/x", &both), "Http://lower:3128 http_proxy");
        assert_eq!(
            route("https://a/x", &both),
            "Http://upper-tls:8080 HTTPS_PROXY"
        );
        assert_eq!(route("http://a/x", &env(&[])), "direct");
        assert_eq!(route("https://a/x", &ProxyEnv::default()), "direct");

        let only_http = env(&[("HTTP_PROXY", "http://p:1")]);
        assert_eq!(route("https://a/x", &only_http), "direct");
        // Set but empty: no proxy, and the upper-case one is not looked at (curl).
        let empty = env(&[("http_proxy", ""), ("HTTP_PROXY", "http://p:1")]);
        assert_eq!(route("http://a/x", &empty), "direct");
        let blank = env(&[("http_proxy", "  ")]);
        assert_eq!(route("http://a/x", &blank), "direct");
        let lower_no_proxy = env(&[
            ("http_proxy", "http://p:1"),
            ("no_proxy", "b"),
            ("NO_PROXY", "a"),
        ]);
        assert_eq!(
            route("http://a/x", &lower_no_proxy),
            "Http://p:1 http_proxy"
        );
        assert_eq!(route("http://b/x", &lower_no_proxy), "direct");
    }

    #[test]
    fn proxy_values() {
        let parse = |value: &str| {
            let variable = ProxyVariable {
                name: "https_proxy",
                value: value.to_string(),
            };
            parse_proxy(&variable).map(|p| (p.scheme, p.host, p.port, p.credentials))
        };
        let ok = |scheme, host: &str, port, credentials: Option<(&str, &str)>| {
            Ok((
                scheme,
                host.to_string(),
                port,
                credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            ))
        };
        use ProxyScheme::{Http, Https};
        assert_eq!(
            parse("http://p.example:3128"),
            ok(Http, "p.example", 3128, None)
        );
        assert_eq!(
            parse("HTTP://p.example:3128/"),
            ok(Http, "p.example", 3128, None)
        );
        assert_eq!(parse("p.example:3128"), ok(Http, "p.example", 3128, None));
        assert_eq!(parse(" p.example "), ok(Http, "p.example", 1080, None));
        assert_eq!(
            parse("https://p.example"),
            ok(Https, "p.example", 443, None)
        );
        assert_eq!(parse("http://[::1]:8888"), ok(Http, "::1", 8888, None));
        assert_eq!(
            parse("http://u%40x:p%3Aw@p:1"),
            ok(Http, "p", 1, Some(("u@x", "p:w")))
        );
        assert_eq!(parse("http://u@p:1"), ok(Http, "p", 1, Some(("u", ""))));

        let refused = |value: &str| parse(value).unwrap_err();
        assert_eq!(
            refused("socks5://p:1080").to_string(),
            "https_proxy=\"socks5://p:1080\" is not a usable proxy: SOCKS proxies are not supported"
        );
        assert_eq!(
            refused("ftp://p").why,
            "expected http://host[:port] or https://host[:port]"
        );
        assert_eq!(refused("http://p:99999").why, "the port must be 1 to 65535");
        assert_eq!(refused("http://p:x").why, "the port must be a number");
        assert_eq!(refused("http://:3128").why, "no host");
        assert_eq!(refused("http://[::1:3128").why, "unclosed [ in the host");
        // The password never shows in a message.
        let error = refused("http://user:s%ZZecret@p:1/");
        assert_eq!(error.value, "http://user:***@p:1/");
        assert!(!error.to_string().contains("ecret"), "{error}");
        assert_eq!(redacted("user:pw@p"), "user:***@p");
        assert_eq!(redacted("http://p/a@b:c"), "http://p/a@b:c");
    }

    #[test]
    fn no_proxy_names_suffixes_addresses_and_ranges() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything.example", true),
            (" * ", "10.1.2.3", true),
            ("a.example, *", "b.example", true),
            ("example.com", "example.com", true),
            ("example.com", "www.example.com", true),
            ("example.com", "EXAMPLE.com.", true),
            ("example.com", "notexample.com", false),
            ("example.com", "example.com.org", false),
            (".example.com", "example.com", true),
            (".example.com", "a.b.example.com", true),
            ("*.example.com", "a.example.com", true),
            ("example.com.", "a.example.com", true),
            ("other.org,example.com", "www.example.com", true),
            ("other.org example.com", "www.example.com", true),
            ("other.org\t,, example.com", "www.example.com", true),
            ("", "example.com", false),
            (".", "example.com", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.0/8", "127.200.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.0/24", "192.168.1.77", true),
            ("192.168.1.0/33", "192.168.1.77", false),
            ("192.168.1.0/x", "192.168.1.0", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("::1", "::1", true),
            ("[::1]", "::1", true),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "127.0.0.1", false),
            ("127.0.0.1", "::1", false),
            // Names are not resolved, and addresses do not match as names.
            ("127.0.0.1", "localhost", false),
            ("localhost", "127.0.0.1", false),
            ("0.1", "10.0.0.1", false),
            // Loopback is proxied unless listed (curl).
            ("example.com", "localhost", false),
            ("localhost", "localhost", true),
        ];
        for &(list, host, expected) in cases {
            assert_eq!(
                bypasses(list, host),
                expected,
                "no_proxy={list:?} host={host}"
            );
        }
    }

    #[test]
    fn no_proxy_is_applied_before_the_proxy_value_is_read() {
        let e = env(&[
            ("https_proxy", "socks5://p"),
            ("no_proxy", "console.example,127.0.0.0/8,::1"),
        ]);
        assert_eq!(route("https://console.example/api", &e), "direct");
        assert_eq!(route("https://a.console.example:8443/api", &e), "direct");
        assert_eq!(route("https://127.0.0.1:8443/api", &e), "direct");
        assert_eq!(route("https://[::1]/api", &e), "direct");
        let url = parse_url("https://other.example/x").unwrap();
        assert_eq!(
            proxy_for(&url, &e).unwrap_err().why,
            "SOCKS proxies are not supported"
        );
        // The proxy for loopback when no_proxy does not list it, as curl does.
        let e = env(&[("http_proxy", "http://127.0.0.1:3128"), ("no_proxy", "x")]);
        assert_eq!(
            route("http://localhost:8080/x", &e),
            "Http://127.0.0.1:3128 http_proxy"
        );
    }

    #[test]
    fn the_proxy_variables_of_an_environment() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let environment = [
            pair("LANG", "C"),
            pair("https_proxy", "http://p:3128"),
            pair("NO_PROXY", "localhost"),
            pair("ALL_PROXY", "socks5://p"),
            pair("HTTP_PROXY", "http://p:3128"),
        ];
        assert_eq!(
            variables_of(&environment),
            [
                pair("https_proxy", "http://p:3128"),
                pair("NO_PROXY", "localhost"),
                pair("HTTP_PROXY", "http://p:3128"),
            ]
        );
        // What from_lookup reads is what variables_of keeps.
        let seen = std::cell::RefCell::new(Vec::new());
        ProxyEnv::from_lookup(|name| {
            seen.borrow_mut().push(name.to_string());
            None
        });
        let mut seen = seen.into_inner();
        seen.sort();
        let mut all = VARIABLES.map(str::to_string).to_vec();
        all.sort();
        assert_eq!(seen, all);
    }

    #[test]
    fn a_proxy_shows_without_its_credentials() {
        let variable = ProxyVariable {
            name: "HTTPS_PROXY",
            value: "https://user:secret@[::1]:3129".into(),
        };
        let proxy = parse_proxy(&variable).unwrap();
        assert_eq!(
            proxy.to_string(),
            "the proxy https://[::1]:3129 (HTTPS_PROXY)"
        );
        assert_eq!(format!("{proxy:?}"), proxy.to_string());
    }
}
