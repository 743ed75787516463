//! Runs `netconf` steps with the classic network ioctls (no netlink library in a static
//! binary that must stay small): SIOCSIFMTU, SIOCSIFFLAGS, SIOCSIFADDR/SIOCSIFNETMASK (IPv4,
//! `in6_ifreq` for IPv6) and SIOCADDRT (`rtentry`, `in6_rtmsg`).

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use p6os_config::unattended::IpNet;

use crate::netconf::{Link, NetStep};

/// Interfaces in /sys/class/net with their MAC addresses, sorted by name.
pub fn links() -> Vec<Link> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut links: Vec<Link> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mac = fs::read_to_string(e.path().join("address")).unwrap_or_default();
            Some(Link {
                name,
                mac: mac.trim().to_ascii_lowercase(),
            })
        })
        .collect();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

pub fn run(step: &NetStep) -> io::Result<()> {
    match step {
        NetStep::SetMtu { dev, mtu } => {
            let sock = socket(libc::AF_INET)?;
            let mut req = ifreq(dev)?;
            req.ifr_ifru.ifru_mtu = i32::from(*mtu);
            ioctl(&sock, libc::SIOCSIFMTU, &mut req)
        }
        NetStep::Up { dev } => {
            let sock = socket(libc::AF_INET)?;
            let mut req = ifreq(dev)?;
            ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
            // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
            unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
            ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
        }
        NetStep::AddAddress { dev, label, cidr } => match cidr {
            IpNet::V4(net) => {
                let sock = socket(libc::AF_INET)?;
                let mut req = ifreq(label)?;
                req.ifr_ifru.ifru_addr = sockaddr_v4(net.addr());
                ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
                let mut req = ifreq(label)?;
                req.ifr_ifru.ifru_netmask = sockaddr_v4(net.netmask());
                ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)
            }
            IpNet::V6(net) => {
                let sock = socket(libc::AF_INET6)?;
                let mut req = libc::in6_ifreq {
                    ifr6_addr: in6(net.addr()),
                    ifr6_prefixlen: u32::from(net.prefix_len()),
                    ifr6_ifindex: ifindex(dev)?,
                };
                ioctl(&sock, libc::SIOCSIFADDR, &mut req)
            }
        },
        NetStep::AddRoute { dev, to, via } => add_route(dev, to, *via),
    }
}

fn add_route(dev: &str, to: &IpNet, via: IpAddr) -> io::Result<()> {
    match (to, via) {
        (IpNet::V4(dst), IpAddr::V4(gw)) => {
            let sock = socket(libc::AF_INET)?;
            let name = CString::new(dev)?;
            // SAFETY: rtentry is plain data; all-zero is its empty value.
            let mut rt: libc::rtentry = unsafe { mem::zeroed() };
            rt.rt_dst = sockaddr_v4(dst.network());
            rt.rt_gateway = sockaddr_v4(gw);
            rt.rt_genmask = sockaddr_v4(dst.netmask());
            rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
            rt.rt_dev = name.as_ptr() as *mut libc::c_char;
            ioctl(&sock, libc::SIOCADDRT, &mut rt)
        }
        (IpNet::V6(dst), IpAddr::V6(gw)) => {
            let sock = socket(libc::AF_INET6)?;
            let mut rt = In6Rtmsg {
                dst: in6(dst.network()),
                src: in6(Ipv6Addr::UNSPECIFIED),
                gateway: in6(gw),
                kind: 0,
                dst_len: u16::from(dst.prefix_len()),
                src_len: 0,
                metric: 1,
                info: 0,
                flags: libc::RTF_UP as u32 | libc::RTF_GATEWAY as u32,
                ifindex: ifindex(dev)?,
            };
            ioctl(&sock, libc::SIOCADDRT, &mut rt)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "route and gateway are of different IP versions",
        )),
    }
}

/// `struct in6_rtmsg` of linux/ipv6_route.h (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn socket(family: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(sock: &OwnedFd, request: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure this request expects, valid for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data; all-zero is its empty value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ifindex(dev: &str) -> io::Result<i32> {
    let name = CString::new(dev)?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index as i32)
}

fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes); plain data.
    unsafe {
        let mut sin: libc::sockaddr_in = mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
        mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

fn in6(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: addr.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_bounded() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("sixteen-chars-xx").is_err());
    }
}
