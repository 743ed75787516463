//! `cargo xtask bench image`: how long P6OS takes to assemble the tiny image, next to a shell
//! pipeline of the standard tools making the same disk from the same inputs.
//!
//! Both sides run in the same invocation, interleaved (p6os, pipeline, p6os, ...), after one
//! untimed warm-up each; the medians of `P6OS_BENCH_RUNS` (default 5) runs are compared.
//!
//! * p6os: `p6os build recipes/tiny.yaml --quiet` with a warm download cache. It does strictly
//!   more than the pipeline: it unpacks the cached .debs, merges the layers, makes the initramfs,
//!   streams the merged tree as tar into mksquashfs, hashes the root filesystem and the image and
//!   writes the manifest.
//! * pipeline: one `bash` script given the merged root filesystem as a tar file (the exact stream
//!   p6os feeds mksquashfs, from the builder library) and the ESP files (copied out of the
//!   warm-up image): `truncate`, `sfdisk` (the partition table read from p6os's image),
//!   `mkfs.vfat` and `mcopy`, `mksquashfs` and `dd` into slot A, `mkfs.ext4` into the state
//!   partition. mksquashfs and mkfs.ext4 get exactly the arguments and environment p6os gave
//!   them, recorded by stand-ins on the PATH during the warm-up. `sfdisk` rather than `sgdisk`:
//!   sgdisk always calls `sync()` and sleeps one second after writing, even to a regular file.
//!
//! Fair because the pipeline's output is checked (untimed) to be the same disk: `sgdisk -v`
//! clean, byte-identical to p6os's image outside the ESP (GPT, both slots, state), and the same
//! files in the ESP (only the FAT layout differs). Both sides write to the same file system,
//! each timed by wall clock around one child process that waits for all its tools; GNU time,
//! when installed, adds CPU seconds (user + system of all processes: less sensitive than wall
//! time to other load on the machine) and peak RSS (of the largest single process).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use p6os_builder::gpt::{Gpt, Partition};
use p6os_builder::{fetch::Cache, image, recipe};

const RECIPE: &str = crate::TINY_RECIPE;
const IMAGE: &str = "tiny-1.0.0.img";
const GNU_TIME: &str = "/usr/bin/time";
/// sfdisk is util-linux's (Debian package fdisk), installed here when missing, as `deps` does.
const SFDISK: &str = "command -v sfdisk >/dev/null || { test \"$(id -u)\" = 0 && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fdisk >&2; } || \
    { echo 'the benchmark needs sfdisk: apt-get install fdisk (as root)' >&2; exit 1; }";
/// Stands in for a tool during the warm-up: records its arguments and environment, runs it.
const SHIM: &str = r#"#!/bin/sh
n=$(basename "$0")
printf '%s\0' "$@" > "$P6OS_BENCH_LOG/$n.args"
env -0 > "$P6OS_BENCH_LOG/$n.env"
PATH="$P6OS_BENCH_PATH" exec "$n" "$@"
"#;
const RECORDED: [&str; 2] = ["mksquashfs", "mkfs.ext4"];

/// One timed run: wall seconds, then CPU seconds and peak RSS in MiB (from GNU time).
pub(super) struct Sample(pub f64, pub Option<(f64, f64)>);

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    sh(SFDISK, &[])?;
    let agent = crate::agent::build()?;
    let p6os = super::release_cli()?;
    let runs = super::runs()?;
    let work = tempfile::Builder::new().prefix("p6os-bench.").tempdir()?;
    let w = work.path();
    let (inputs, log, warm) = (w.join("inputs"), w.join("log"), w.join("warm-p6os"));
    let p6os_cmd = |out: &Path| {
        let mut c = measured(p6os.as_os_str(), w);
        c.args(["build", RECIPE, "--quiet", "--out"]).arg(out);
        c.arg("--agent").arg(&agent);
        c
    };

    // Untimed: one p6os build (warms the cache, records its tools), then the pipeline's inputs.
    eprintln!("bench: warm-up build, then the pipeline's inputs");
    fs::create_dir(&log)?;
    for tool in RECORDED {
        fs::write(log.join(tool), SHIM)?;
        fs::set_permissions(log.join(tool), fs::Permissions::from_mode(0o755))?;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let mut c = p6os_cmd(&warm);
    c.env("PATH", format!("{}:{path}", log.display()));
    c.env("P6OS_BENCH_PATH", &path).env("P6OS_BENCH_LOG", &log);
    timed(c, w)?;
    let [squash, ext4] = RECORDED.map(|t| recorded(&log, t, &warm));
    let gpt = p6os_builder::gpt::read(&mut File::open(warm.join(IMAGE))?)?;
    let recipe = recipe::load(Path::new(RECIPE)).map_err(|d| anyhow!("{d}"))?;
    let opts = image::BuildOptions::new(inputs.clone(), agent.clone(), Cache::default_location());
    let prepared = image::prepare(&recipe, &opts).map_err(|e| anyhow!("{RECIPE}: {e}"))?;
    let guid = |what| image::derived_guid(&prepared.digest, what);
    ensure!(
        guid("disk") == gpt.disk_guid,
        "the warm-up and prepare disagree"
    );
    fs::create_dir(&inputs)?;
    let tar = BufWriter::new(File::create(inputs.join("rootfs.tar"))?);
    prepared.root.write_tar(tar)?;
    let esp = gpt.by_label("p6os-esp").context("no ESP")?;
    esp_files(&warm.join(IMAGE), esp, &inputs.join("esp"))?;
    let volume_id = u32::from_le_bytes(guid("esp-volume-id").as_bytes()[..4].try_into()?);
    drop(prepared);
    let script = pipeline_script(&gpt, volume_id, &squash?, &ext4?)?;
    eprintln!("bench: the pipeline ($IN: its inputs, $OUT: output directory):\n{script}");
    let pipeline_cmd = |out: &Path| {
        let mut c = measured("bash".as_ref(), w);
        c.arg("-c").arg(&script).env("IN", &inputs).env("OUT", out);
        c
    };

    // The pipeline's warm-up, checked against p6os's.
    let warm_pipe = w.join("warm-pipeline");
    timed(pipeline_cmd(&warm_pipe), w)?;
    let (a, b) = (warm.join(IMAGE), warm_pipe.join(IMAGE));
    verify(&gpt, &a, &b, &inputs.join("esp"))?;
    fs::remove_dir_all(&warm)?;
    fs::remove_dir_all(&warm_pipe)?;

    // Timed runs, interleaved.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let load = || fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load();
    for i in 1..=runs {
        for (side, cmd, samples) in [
            ("p6os", &p6os_cmd as &dyn Fn(&Path) -> Command, &mut ours),
            ("pipeline", &pipeline_cmd, &mut theirs),
        ] {
            let out = w.join(format!("{side}-{i}"));
            let s = timed(cmd(&out), w)?;
            eprintln!("bench: run {i} {side}: {:.3} s", s.0);
            samples.push(s);
            fs::remove_dir_all(&out)?;
        }
    }
    report(&ours, &theirs);
    let (cores, after) = (std::thread::available_parallelism()?, load());
    println!("load average before/after ({cores} cores): {load_before:.14} / {after:.14}");
    Ok(())
}

/// Copies the files of the ESP `esp` of `img` into `dir`.
fn esp_files(img: &Path, esp: &Partition, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let copy = "MTOOLS_SKIP_CHECK=1 mcopy -s -n -i \"$1@@$2\" '::/*' \"$3\"";
    sh(copy, &[&img.display(), &esp.offset(), &dir.display()]).map(drop)
}

/// The command line p6os ran `tool` with in the warm-up, for bash: the environment it changed,
/// then the arguments, with paths in p6os's work directory moved to `$OUT`.
fn recorded(log: &Path, tool: &str, warm: &Path) -> Result<String> {
    let read = |ext: &str| -> Result<Vec<String>> {
        let text = fs::read_to_string(log.join(format!("{tool}.{ext}")));
        let text = text.with_context(|| format!("p6os did not run {tool}"))?;
        Ok(text.split_terminator('\0').map(str::to_owned).collect())
    };
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let skip = |k: &str| k.starts_with("P6OS_BENCH") || ["PATH", "PWD", "SHLVL", "_"].contains(&k);
    let ours: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| !skip(k)).collect();
    let env = read("env")?;
    let theirs: BTreeMap<&str, &str> = env.iter().filter_map(|kv| kv.split_once('=')).collect();
    let mut words = vec!["env".to_owned()];
    let gone = ours.keys().filter(|k| !theirs.contains_key(k.as_str()));
    words.extend(gone.map(|k| format!("-u {}", q(k))));
    for (k, v) in theirs.iter().filter(|(k, _)| !skip(k)) {
        if ours.get(*k).is_none_or(|o| o != v) {
            words.push(q(&format!("{k}={v}")));
        }
    }
    words.push(tool.to_owned());
    let moved = |a: &str| {
        let name = Path::new(a).strip_prefix(warm).ok()?.file_name()?;
        Some(format!("\"$OUT\"/{}", q(&name.to_string_lossy())))
    };
    words.extend(
        read("args")?
            .iter()
            .map(|a| moved(a).unwrap_or_else(|| q(a))),
    );
    Ok(words.join(" "))
}

/// The pipeline, reading `$IN/rootfs.tar` and `$IN/esp/`, writing `$OUT/tiny-1.0.0.img`.
fn pipeline_script(gpt: &Gpt, vol_id: u32, squash: &str, ext4: &str) -> Result<String> {
    let (size, last) = (gpt.size_bytes(), gpt.sectors - 34);
    let mut table = format!("label: gpt\nlabel-id: {}\nunit: sectors\n", gpt.disk_guid);
    table += &format!("first-lba: 34\nlast-lba: {last}\n");
    for p in &gpt.partitions {
        let (start, n) = (p.first_lba, p.size() / 512);
        let (t, u, name) = (p.type_guid, p.guid, &p.label);
        table += &format!("start={start}, size={n}, type={t}, uuid={u}, name={name}\n");
    }
    let esp = gpt.by_label("p6os-esp").context("no ESP")?;
    let (esp_lba, esp_kib, esp_off) = (esp.first_lba, esp.size() / 1024, esp.offset());
    let slot = gpt.by_label("p6os-root-a").context("no slot A")?.offset();
    Ok(format!(
        r#"set -euo pipefail
img="$OUT/image.img"
mkdir -p "$OUT"
truncate -s {size} "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<'EOF'
{table}EOF
mkfs.vfat -a -F 32 -s 1 -S 512 -R 32 -f 2 -h {esp_lba} -i {vol_id:08X} --offset {esp_lba} \
  "$img" {esp_kib} >/dev/null 2>&1
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$img@@{esp_off}" "$IN"/esp/* ::/
{squash} < "$IN/rootfs.tar"
dd if="$OUT/rootfs.img" of="$img" bs=4M seek={slot} oflag=seek_bytes conv=sparse,notrunc \
  status=none
rm "$OUT/rootfs.img"
{ext4}
mv "$img" "$OUT/{IMAGE}""#
    ))
}

/// Untimed check that the pipeline made the same disk as p6os.
fn verify(gpt: &Gpt, ours: &Path, theirs: &Path, files: &Path) -> Result<()> {
    let v = sh("sgdisk -v \"$1\"", &[&theirs.display()])?;
    ensure!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let esp = gpt.by_label("p6os-esp").context("no ESP")?;
    let cmp = "cmp --ignore-initial=$3 ${4:+--bytes=$4} \"$1\" \"$2\"";
    let regions = [
        (0, esp.offset().to_string()),
        (esp.offset() + esp.size(), String::new()),
    ];
    for (from, len) in regions {
        let args: [&dyn Display; 4] = [&ours.display(), &theirs.display(), &from, &len];
        sh(cmp, &args).context("the images differ outside the ESP")?;
    }
    let back = files.with_file_name("esp-back");
    esp_files(theirs, esp, &back)?;
    let dirs: [&dyn Display; 2] = [&files.display(), &back.display()];
    sh("diff -r \"$1\" \"$2\"", &dirs).context("ESP files differ")?;
    fs::remove_dir_all(&back)?;
    eprintln!("bench: checked: the pipeline's image is p6os's outside the ESP, same ESP files");
    Ok(())
}

/// `program`, under GNU time (when installed) writing its CPU seconds and peak RSS to `w/usage`.
pub(super) fn measured(program: &OsStr, w: &Path) -> Command {
    if !Path::new(GNU_TIME).exists() {
        return Command::new(program);
    }
    let mut c = Command::new(GNU_TIME);
    c.args(["-f", "%U %S %M", "-o"]).arg(w.join("usage"));
    c.arg(program);
    c
}

/// Runs `c` (made by [`measured`]), returning its wall time and what GNU time measured.
pub(super) fn timed(mut c: Command, w: &Path) -> Result<Sample> {
    let _ = fs::remove_file(w.join("usage"));
    let start = Instant::now();
    let out = c.stdin(Stdio::null()).output()?;
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{c:?} failed:\n{err}");
    let usage = fs::read_to_string(w.join("usage")).unwrap_or_default();
    let n: Vec<f64> = usage.split_whitespace().flat_map(str::parse).collect();
    let usage = (n.len() == 3).then(|| (n[0] + n[1], n[2] / 1024.0));
    Ok(Sample(secs, usage))
}

/// Runs a bash snippet with `args` as `$1`..., returning its standard output.
fn sh(script: &str, args: &[&dyn Display]) -> Result<String> {
    let mut c = Command::new("bash");
    c.args(["-c", script, "bench"]);
    c.args(args.iter().map(|a| a.to_string()));
    let out = c.output().with_context(|| format!("running {script}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    ensure!(out.status.success(), "{script} failed:\n{o}{e}");
    Ok(o)
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => (v[(n - 1) / 2] + v[n / 2]) / 2.0,
    }
}

fn report(ours: &[Sample], theirs: &[Sample]) {
    let n = ours.len();
    println!("\nassembling {RECIPE}: {n} runs each, interleaved, warm cache\n");
    println!("{:<8} {:>10} {:>14}", "run", "p6os (s)", "pipeline (s)");
    let row = |what: &str, a: f64, b: f64, p: usize| println!("{what:<8} {a:>10.p$} {b:>14.p$}");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        row(&(i + 1).to_string(), a.0, b.0, 3);
    }
    let med = |f: fn(&Sample) -> Option<f64>| {
        let m = |s: &[Sample]| median(s.iter().filter_map(f).collect());
        (m(ours), m(theirs))
    };
    let (a, b) = med(|s| Some(s.0));
    row("median", a, b, 3);
    if ours[0].1.is_some() {
        let ((ca, cb), (ra, rb)) = (med(|s| Some(s.1?.0)), med(|s| Some(s.1?.1)));
        row("CPU s", ca, cb, 3);
        row("RSS MiB", ra, rb, 1);
        println!("(medians; RSS: peak of the largest single process, p6os or a tool it runs)");
    } else {
        println!("(CPU time and peak RSS not measured: install package `time` for {GNU_TIME})");
    }
    println!(
        "\nratio (pipeline/p6os): {:.2}  (>1: p6os is faster)",
        b / a
    );
    println!(
        "note: p6os does more work than the pipeline: it also unpacks the cached .debs, merges the\n\
         layers, makes the initramfs, hashes the root filesystem and the image and writes the\n\
         manifest; the pipeline starts from the merged rootfs tar and the finished ESP files."
    );
}
