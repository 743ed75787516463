//! The shared syntax rules of `unattended.yaml` values, as pure predicates and parsers: host
//! and account names, URLs, CIDRs, MAC addresses, interface names, time zones, PEM, paths and
//! modes, SSH keys, password hashes. The checks in `checks/` decide where each applies and what
//! the message says; the agent reuses some of them (URLs, CIDRs) on the checked document.

use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;

/// An address or network with its prefix, `a.b.c.d/n` or `x::y/n`, as the user wrote it: the
/// address keeps its host bits (`192.168.1.10/24` is an interface's address), and
/// [`IpNet::network`] or [`IpNet::trunc`] give the network where one is meant (routes, pod and
/// service ranges). The address is read by the standard library's rules, as every other address
/// in the document (no leading zeros in IPv4 octets), the prefix as decimal digits only.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    IpNet::new(addr, prefix.parse().ok()?).ok()
}

/// Whether two networks share an address (a network of another IP version shares none).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Scheme, host and port of an `http(s)://[user[:pass]@]host[:port][/…]` URL; `None` if malformed.
/// IPv6 hosts must be bracketed; ports are 1..=65535.
pub fn parse_http_url(url: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (v6, after) = inner.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.contains(':') && !hostport.starts_with('[') {
        return None;
    }
    if !hostport.starts_with('[')
        && !valid_hostname(host)
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        Some(_) => return None,
    };
    Some((scheme, host, port))
}

/// `http://user:secret@host` -> `http://***@host`.
pub fn redact_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// base64 as `base64` wraps it: newlines and spaces are ignored.
pub fn strip_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// User and group names: lowercase letters, digits, `_` and `-`, starting with a letter or `_`.
pub fn valid_account_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

pub fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub(super) fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(super) fn valid_ssh_key(key: &str) -> bool {
    // One authorized_keys line: a control character (a newline) would smuggle in another.
    if key.chars().any(char::is_control) {
        return false;
    }
    let mut it = key.split_whitespace();
    let (Some(kind), Some(blob)) = (it.next(), it.next()) else {
        return false;
    };
    let known =
        kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(blob) else {
        return false;
    };
    // The blob starts with the key type as an SSH string: length, then the name.
    let named = raw.len() > 4 && {
        let n = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        raw.get(4..4 + n) == Some(kind.as_bytes())
    };
    known && named
}

/// A crypt(3) hash (`$y$`, `$6$`, `$5$`, bcrypt, scrypt) or a locked account (`!`, `*`);
/// never a plain password.
pub(super) fn valid_password_hash(p: &str) -> bool {
    ["$y$", "$6$", "$5$", "$2b$", "$2y$", "$7$"]
        .iter()
        .any(|pre| p.starts_with(pre))
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "./$=,".contains(c))
        || p == "!"
        || p == "*"
}

/// A kernel interface name: at most 15 bytes, not `.` or `..`, no `/`, `:` or blanks.
pub(super) fn valid_interface_name(name: &str) -> bool {
    !(name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// An IANA time zone name as a relative path under /usr/share/zoneinfo (`Europe/Paris`, `UTC`).
pub(super) fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && !tz.starts_with('/')
        && !tz.contains("..")
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
}

/// Text that holds a whole PEM certificate block.
pub(super) fn is_pem_certificate(pem: &str) -> bool {
    pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----")
}

/// An absolute, normalised path of a file below `/etc` or `/var` (the writable overlays): no
/// empty, `.` or `..` components, and not the directory itself.
pub(super) fn in_writable_overlay(path: &str) -> bool {
    let comps: Vec<&str> = path.split('/').skip(1).collect();
    let clean = path.starts_with('/')
        && comps.len() >= 2
        && comps
            .iter()
            .all(|c| !c.is_empty() && *c != "." && *c != "..");
    clean && matches!(comps.first(), Some(&"etc") | Some(&"var"))
}

/// An octal file mode as text (`"0644"`), at most `07777`.
pub(super) fn valid_octal_mode(p: &str) -> bool {
    let digits = !p.is_empty() && p.bytes().all(|b| (b'0'..=b'7').contains(&b));
    digits && u32::from_str_radix(p, 8).is_ok_and(|m| m <= 0o7777)
}

/// `user` or `user:group`, each of letters, digits, `_` and `-`.
pub(super) fn valid_owner(o: &str) -> bool {
    o.split(':').count() <= 2
        && !o.is_empty()
        && o.split(':').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        })
}
