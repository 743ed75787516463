//! URLs as the agent accepts them (pure): `http(s)://host[:port][/path][?query]`, split and
//! checked before anything is sent, and `Location` headers resolved against the request with the
//! redirect rule (never from https to plain http).

use super::HttpError;

/// An `http(s)://host[:port][/path][?query]` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    /// 80, or 443 for https, when the URL names none.
    pub port: u16,
    /// The request target: `/` when empty, query kept, fragment dropped.
    pub target: String,
}

impl Url {
    /// `http(s)://host[:port]`, the port only when it is not the scheme's.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!(
            "{scheme}://{}",
            authority(&self.host, self.port, self.https)
        )
    }

    /// `host:port` (with `[..]` around IPv6), where the TCP connection goes without a proxy.
    pub fn address(&self) -> String {
        address(&self.host, self.port)
    }

    /// The URL as sent: the origin and the target, without the fragment.
    pub fn to_request_url(&self) -> String {
        format!("{}{}", self.origin(), self.target)
    }
}

/// Splits an `http://` or `https://` URL (see [`Url`]).
pub fn parse_url(url: &str) -> Result<Url, HttpError> {
    let bad = |why| HttpError::BadUrl {
        url: url.to_string(),
        why,
    };
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err(bad("expected http(s)://host[:port]/path"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let target = match target.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{target}"),
        Some(_) => target.to_string(),
    };
    if rest.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(bad("spaces and control characters must be percent-encoded"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the url are not supported"));
    }
    let (host, port) = split_host_port(authority).map_err(bad)?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None | Some("") if https => 443,
        None | Some("") => 80,
        Some(p) => parse_port(p).map_err(bad)?,
    };
    Ok(Url {
        https,
        host: host.to_string(),
        port,
        target,
    })
}

/// `host[:port]` or `[v6][:port]` into the host (without brackets) and the port text.
pub(super) fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or("unclosed [ in the host")?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err("unexpected text after the ipv6 address");
        }
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid ipv6 address");
        }
        Ok((host, after.strip_prefix(':')))
    } else {
        Ok(match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        })
    }
}

/// A port number, 1 to 65535, digits only.
pub(super) fn parse_port(text: &str) -> Result<u16, &'static str> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a number");
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err("the port must be 1 to 65535"),
    }
}

/// `host:port` as written in a URL and a `Host` header (`[..]` around IPv6, the scheme's port
/// implied).
pub(super) fn authority(host: &str, port: u16, https: bool) -> String {
    match (port, https) {
        (80, false) | (443, true) => bracketed(host),
        _ => address(host, port),
    }
}

/// `host:port`, with `[..]` around an IPv6 address.
pub(super) fn address(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where a `Location` header sends a request for `base`; https to http is refused.
pub fn resolve(base: &str, location: &str) -> Result<String, HttpError> {
    let base_url = parse_url(base)?;
    let origin = base_url.origin();
    // An absolute URL starts with a scheme (RFC 3986: a letter, then letters, digits, `+-.`).
    let scheme = location.split_once(':').map(|(scheme, _)| scheme);
    let absolute = scheme.is_some_and(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let url = if absolute {
        location.to_string()
    } else if location.starts_with("//") {
        let scheme = if base_url.https { "https" } else { "http" };
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let dir = base_url.target.split('?').next().unwrap_or_default();
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{location}")
    };
    let to = parse_url(&url)?;
    if base_url.https && !to.https {
        return Err(HttpError::Downgrade {
            url: base.to_string(),
            location: url,
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |url: &str| {
            let u = parse_url(url).unwrap();
            (u.https, u.host, u.port, u.target)
        };
        let t = |s, h: &str, p, t: &str| (s, h.to_string(), p, t.to_string());
        assert_eq!(
            ok("http://[::1]:8080/b/x.p6b"),
            t(false, "::1", 8080, "/b/x.p6b")
        );
        assert_eq!(ok("http://[fe80::1]/x"), t(false, "fe80::1", 80, "/x"));
        assert_eq!(
            ok("http://example.org/a/b.p6b?sig=1#frag"),
            t(false, "example.org", 80, "/a/b.p6b?sig=1")
        );
        assert_eq!(ok("HTTP://10.0.0.1:81"), t(false, "10.0.0.1", 81, "/"));
        assert_eq!(ok("http://host?x=1"), t(false, "host", 80, "/?x=1"));
        assert_eq!(ok("http://host:/p"), t(false, "host", 80, "/p"));
        assert_eq!(ok("https://host/p"), t(true, "host", 443, "/p"));
        assert_eq!(ok("HTTPS://[::1]:8443"), t(true, "::1", 8443, "/"));
        assert_eq!(ok("https://h:80/x?y"), t(true, "h", 80, "/x?y"));
        for bad in [
            "http://host:0/x",
            "http://host:65536/x",
            "http://host:8o/x",
            "http://[::1/x",
            "http://[::1]x/y",
            "http://[zz]/y",
            "http:///x",
            "https:///x",
            "http://user:pw@host/x",
            "https://user@host/x",
            "http://host/a b",
            "ftp://host/x",
            "https:/host/x",
            "host/x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(HttpError::BadUrl { .. })),
                "{bad}: {:?}",
                parse_url(bad)
            );
        }
        assert_eq!(authority("::1", 8080, false), "[::1]:8080");
        assert_eq!(authority("h", 80, false), "h");
        assert_eq!(authority("h", 443, false), "h:443");
        assert_eq!(authority("h", 443, true), "h");
        assert_eq!(authority("::1", 80, true), "[::1]:80");
        assert_eq!(address("::1", 443), "[::1]:443");
        assert_eq!(
            parse_url("HTTP://[::1]:80/a?b#c").unwrap().to_request_url(),
            "http://[::1]/a?b"
        );
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://h:81/a/b.p6b?x";
        assert_eq!(resolve(base, "c.p6b").unwrap(), "http://h:81/a/c.p6b");
        assert_eq!(resolve(base, "/c.p6b").unwrap(), "http://h:81/c.p6b");
        assert_eq!(resolve(base, "//m/c.p6b").unwrap(), "http://m/c.p6b");
        assert_eq!(resolve(base, "http://m:82/c").unwrap(), "http://m:82/c");
        assert_eq!(resolve(base, "https://m/c").unwrap(), "https://m/c");
        assert_eq!(
            resolve(base, "c:d").unwrap_err().to_string(),
            "invalid url \"c:d\": expected http(s)://host[:port]/path"
        );
        assert_eq!(resolve(base, "./c:d").unwrap(), "http://h:81/a/./c:d");

        let base = "https://h/a/b.p6b";
        assert_eq!(resolve(base, "c.p6b").unwrap(), "https://h/a/c.p6b");
        assert_eq!(resolve(base, "/c.p6b").unwrap(), "https://h/c.p6b");
        assert_eq!(resolve(base, "//m:8443/c").unwrap(), "https://m:8443/c");
        assert_eq!(resolve(base, "HTTPS://m/c").unwrap(), "HTTPS://m/c");
        assert_eq!(
            resolve("https://h:8443/a", "b").unwrap(),
            "https://h:8443/b"
        );
        for downgrade in ["http://h/a/b.p6b", "HTTP://m/c"] {
            let error = resolve(base, downgrade).unwrap_err();
            assert!(
                matches!(&error, HttpError::Downgrade { url, location }
                    if url == base && location == downgrade),
                "{error:?}"
            );
        }
    }
}
