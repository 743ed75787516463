//! Device facts for the console: parsers of /proc and /sys texts (pure, tested) and
//! [`gather`], which reads them. Whatever cannot be read is left empty, never an error: facts
//! are informative, and registration must not fail on an odd machine.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs;
use std::path::Path;

use p6os_protocol::{Disk, Facts, Nic};

use crate::cli::VERSION;

/// `(model name, logical CPU count)` from /proc/cpuinfo.
pub fn parse_cpuinfo(text: &str) -> (String, u32) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model.unwrap_or_default(), count)
}

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `PRETTY_NAME` (or `NAME`) from an os-release file.
pub fn parse_os_release(text: &str) -> Option<String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            values.insert(k.trim(), v.trim().trim_matches('"').trim_matches('\''));
        }
    }
    values
        .get("PRETTY_NAME")
        .or_else(|| values.get("NAME"))
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string())
}

/// Whole disks worth reporting: not loop, ram, zram or device-mapper devices.
pub fn is_reported_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "dm-", "sr", "fd", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

fn disks() -> Vec<Disk> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return out;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_reported_disk(n))
        .collect();
    names.sort();
    for name in names {
        let base = Path::new("/sys/block").join(&name);
        let sectors = read_trimmed(base.join("size")).and_then(|s| s.parse::<u64>().ok());
        out.push(Disk {
            size_bytes: sectors.unwrap_or(0) * 512,
            model: read_trimmed(base.join("device/model")),
            removable: read_trimmed(base.join("removable")).as_deref() == Some("1"),
            name,
        });
    }
    out
}

/// Interfaces (not `lo`) with their MAC and addresses, sorted by name.
fn nics() -> Vec<Nic> {
    let mut by_name: BTreeMap<String, Nic> = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "lo" {
                continue;
            }
            let mac = read_trimmed(e.path().join("address")).filter(|m| m != "00:00:00:00:00:00");
            by_name.insert(
                name.clone(),
                Nic {
                    name,
                    mac,
                    addresses: Vec::new(),
                },
            );
        }
    }
    for (name, address) in addresses() {
        if let Some(nic) = by_name.get_mut(&name) {
            nic.addresses.push(address);
        }
    }
    by_name.into_values().collect()
}

/// `(interface, address/prefix)` from getifaddrs (IPv4 and IPv6).
fn addresses() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases below;
    // every pointer is checked for null before it is read.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            let family = i32::from((*ifa.ifa_addr).sa_family);
            let text = match family {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    let prefix = if ifa.ifa_netmask.is_null() {
                        32
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                        u32::from_be(m.sin_addr.s_addr).count_ones()
                    };
                    format!("{ip}/{prefix}")
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    let prefix = if ifa.ifa_netmask.is_null() {
                        128
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                        u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones()
                    };
                    format!("{ip}/{prefix}")
                }
                _ => continue,
            };
            out.push((name, text));
        }
        libc::freeifaddrs(list);
    }
    out
}

/// What the device is, for pairing. `image` is the slot manifest's name and version.
pub fn gather(appliance: &super::ApplianceFile, image: (&str, &str), slot: &str) -> Facts {
    let (cpu_model, cpu_count) = fs::read_to_string("/proc/cpuinfo")
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or_default();
    let memory_bytes = fs::read_to_string("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or(0);
    let base_os = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            fs::read_to_string(p)
                .ok()
                .and_then(|t| parse_os_release(&t))
        })
        .unwrap_or_else(|| image.0.to_string());
    let uname = rustix::system::uname();
    Facts {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        name: appliance.name.clone(),
        labels: appliance.labels.clone(),
        cpu_model,
        cpu_count,
        memory_bytes,
        disks: disks(),
        nics: nics(),
        arch: std::env::consts::ARCH.to_string(),
        base_os,
        kernel: uname.release().to_string_lossy().into_owned(),
        image_name: image.0.to_string(),
        image_version: image.1.to_string(),
        agent_version: VERSION.to_string(),
        slot: slot.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo() {
        let text = "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\nflags\t: fpu\n\n\
                    processor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n";
        assert_eq!(
            parse_cpuinfo(text),
            ("QEMU Virtual CPU version 2.5+".to_string(), 2)
        );
        assert_eq!(parse_cpuinfo(""), (String::new(), 0));
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo("MemTotal:         492504 kB\nMemFree: 1 kB\n"),
            492504 * 1024
        );
        assert_eq!(parse_meminfo("garbage"), 0);
    }

    #[test]
    fn os_release() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_os_release("NAME=tiny\n").as_deref(), Some("tiny"));
        assert_eq!(parse_os_release("X=1\n"), None);
    }

    #[test]
    fn disks_filter() {
        for name in ["vda", "sda", "nvme0n1", "mmcblk0"] {
            assert!(is_reported_disk(name), "{name}");
        }
        for name in ["loop0", "ram0", "zram0", "dm-1", "sr0", "md127"] {
            assert!(!is_reported_disk(name), "{name}");
        }
    }

    #[test]
    fn gather_on_this_machine_has_the_basics() {
        let facts = gather(
            &super::super::ApplianceFile::default(),
            ("tiny", "1.0"),
            "a",
        );
        assert!(facts.cpu_count >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(!facts.kernel.is_empty());
        assert_eq!(facts.image_version, "1.0");
    }
}
