//! A small OCI image archive made by the test itself (an OCI image layout in a tar: `oci-layout`,
//! `index.json`, `blobs/sha256/...`), for the air-gapped preload scenario. Same name, same bytes.

use std::io::Write;

use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn append(tar: &mut tar::Builder<&mut Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .expect("writing to memory");
}

/// The archive of an image named `name` (e.g. `docker.io/p6os/hello:1.0`) whose one layer
/// holds `/hello.txt` with `text`. Returns the archive bytes.
pub fn archive(name: &str, text: &str) -> Vec<u8> {
    let mut layer = Vec::new();
    {
        let mut t = tar::Builder::new(&mut layer);
        append(&mut t, "hello.txt", text.as_bytes(), 0o644);
        t.finish().expect("writing to memory");
    }
    let layer_sha = sha(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/hello.txt"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_sha}")] },
    }))
    .expect("json");
    let config_sha = sha(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_sha}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_sha}"),
            "size": layer.len(),
        }],
    }))
    .expect("json");
    let manifest_sha = sha(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_sha}"),
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    }))
    .expect("json");
    let mut out = Vec::new();
    {
        let mut t = tar::Builder::new(&mut out);
        append(
            &mut t,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        );
        append(&mut t, "index.json", &index, 0o644);
        for (digest, data) in [
            (&layer_sha, &layer),
            (&config_sha, &config),
            (&manifest_sha, &manifest),
        ] {
            append(&mut t, &format!("blobs/sha256/{digest}"), data, 0o644);
        }
        t.finish().expect("writing to memory");
    }
    out.flush().expect("memory");
    out
}

/// The hex sha256 of `data`.
pub fn sha256(data: &[u8]) -> String {
    sha(data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn archives_are_reproducible_and_self_consistent() {
        let a = super::archive("docker.io/p6os/hello:1.0", "hi\n");
        assert_eq!(a, super::archive("docker.io/p6os/hello:1.0", "hi\n"));
        let mut names = Vec::new();
        for e in tar::Archive::new(a.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            if let Some(d) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(d, super::sha256(&data), "blob named by its digest");
            }
            names.push(path);
        }
        assert_eq!(names[..2], ["oci-layout", "index.json"]);
        assert_eq!(names.len(), 5);
    }
}
