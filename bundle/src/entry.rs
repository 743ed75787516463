//! Boot Loader Specification entries for P6OS slots: the text the builder writes for a fresh
//! image and the agent writes for an upgraded slot (one definition, so they cannot drift).

/// The kernel command line of a slot: the agent finds everything from it.
pub fn options(slot: &str, rootfs_type: &str, extra: &[String]) -> Vec<String> {
    let mut options = vec![
        format!("p6os.slot={slot}"),
        format!("root=PARTLABEL=p6os-root-{slot}"),
        format!("rootfstype={rootfs_type}"),
        "ro".to_string(),
        "console=ttyS0".to_string(),
    ];
    options.extend(extra.iter().cloned());
    options
}

/// The entry text. `sort_version` orders entries (highest boots first; `sort-key p6os` on all).
pub fn render(title: &str, sort_version: &str, slot: &str, options: &[String]) -> String {
    format!(
        "title {title}\nsort-key p6os\nversion {sort_version}\nlinux /p6os/{slot}/vmlinuz\ninitrd /p6os/{slot}/initrd.img\noptions {}\n",
        options.join(" "),
    )
}

/// `P6OS tiny 1.0.0 (slot a)`.
pub fn title(name: &str, version: &str, slot: &str) -> String {
    format!("P6OS {name} {version} (slot {slot})")
}
