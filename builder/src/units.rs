//! The agent's systemd units, shipped by the builder into slots whose base runs systemd.
//!
//! The initramfs stage is the same on every base (mount the slot, apply unattended.yaml on the
//! state partition, overlay /etc and /var, switch_root). On a systemd base, systemd is PID 1
//! afterwards and the agent's service-mode jobs run as these units:
//!
//! - `p6os-firstboot.service`: before the network and sshd: SSH host keys made once per device,
//!   the configuration outcome logged to the journal.
//! - `p6os-images.service`: after containerd: preloaded OCI archives imported once.
//! - `p6os-register.service`: pairing and heartbeats with the console (never blocks boot).
//! - `p6os-assess.service`: after multi-user.target: health checks, then bless or fall back.
//!
//! Vendor units live in `/usr/lib/systemd/system` and are enabled by `.wants` links there,
//! so the site's `/etc` overlay can still mask or override them.

use crate::tree::{Entry, Tree};

const UNIT_DIR: &str = "usr/lib/systemd/system";

pub const FIRSTBOOT: &str = "\
[Unit]
Description=P6OS first boot: SSH host keys and the outcome of unattended.yaml
Documentation=file:/usr/share/doc/p6os/unattended.md
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Before=sysinit.target network-pre.target systemd-networkd.service ssh.service containerd.service k3s.service
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/lib/p6os/p6os-agent firstboot

[Install]
WantedBy=sysinit.target
";

pub const IMAGES: &str = "\
[Unit]
Description=P6OS: import the image's preloaded OCI archives into containerd (once)
After=containerd.service
Requires=containerd.service
ConditionPathExists=/usr/lib/p6os/images.json

[Service]
Type=oneshot
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/lib/p6os/p6os-agent import-images

[Install]
WantedBy=multi-user.target
";

pub const REGISTER: &str = "\
[Unit]
Description=P6OS: pair with the management console and report in
After=network.target p6os-firstboot.service
ConditionPathExists=/etc/p6os/console.json

[Service]
ExecStart=/usr/lib/p6os/p6os-agent register
Restart=on-failure
RestartSec=60

[Install]
WantedBy=multi-user.target
";

pub const ASSESS: &str = "\
[Unit]
Description=P6OS boot assessment: health checks, then bless this slot or fall back
After=multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/lib/p6os/p6os-agent assess-boot

[Install]
WantedBy=multi-user.target
";

/// The units and the target each is enabled for.
pub fn units(with_images: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = vec![
        ("p6os-firstboot.service", FIRSTBOOT, "sysinit.target"),
        ("p6os-register.service", REGISTER, "multi-user.target"),
        ("p6os-assess.service", ASSESS, "multi-user.target"),
    ];
    if with_images {
        out.push(("p6os-images.service", IMAGES, "multi-user.target"));
    }
    out
}

/// Whether the merged root runs systemd as init.
pub fn is_systemd(root: &Tree) -> bool {
    root.get("usr/lib/systemd/systemd").is_some() || root.get("lib/systemd/systemd").is_some()
}

/// Adds the units and their `.wants` links to a systemd root.
pub fn install(root: &mut Tree, with_images: bool) {
    for (name, text, target) in units(with_images) {
        root.insert(
            &format!("{UNIT_DIR}/{name}"),
            Entry::file(text.as_bytes().to_vec(), 0o644),
        );
        root.insert(
            &format!("{UNIT_DIR}/{target}.wants/{name}"),
            Entry::symlink(&format!("../{name}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_enabled_by_vendor_links() {
        let mut root = Tree::new();
        root.insert("usr/lib/systemd/systemd", Entry::file(vec![], 0o755));
        assert!(is_systemd(&root));
        install(&mut root, true);
        let listing: Vec<String> = root
            .iter()
            .filter(|(p, _)| p.contains("p6os"))
            .map(|(p, e)| format!("{p} {:?}", e.kind).replace("Symlink(", "-> ("))
            .filter(|l| !l.contains("File("))
            .collect();
        insta::assert_snapshot!(listing.join("\n"));
        for (name, text, _) in units(true) {
            assert!(
                text.contains("ExecStart=/usr/lib/p6os/p6os-agent "),
                "{name}"
            );
            assert!(text.contains("\n[Install]\nWantedBy="), "{name}");
        }
        assert!(!is_systemd(&Tree::new()));
    }
}
