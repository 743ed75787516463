//! `p6os-agent`: `/init` of the P6OS initramfs, then PID 1 of the minimal base.
//!
//! Pure core (`cli`, `cmdline`, `uevent`, `bootdisk`, `efivar`, `gpt`, `modules`,
//! `manifest`, `mountinfo`, `plan`, `policy`), thin shell (`sys` does syscalls; `loader`
//! reads the boot loader's EFI variables; `boot` and `service` run the plans; `fatal`
//! turns errors and panics into a logged reboot).

#[macro_use]
mod log;

mod boot;
mod bootdisk;
mod cli;
mod cmdline;
mod efivar;
mod fatal;
mod firstboot;
mod health;
mod loader;
mod modules;
mod mountinfo;
mod net;
mod netconf;
mod plan;
mod policy;
mod register;
mod service;
mod slots;
mod sys;
mod sysconfig;
mod uevent;
mod units;
mod upgrade;

use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use cli::Mode;

fn main() {
    log::mark_start();
    fatal::install_panic_hook();
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match panic::catch_unwind(AssertUnwindSafe(|| run(&args))) {
        Ok(code) => code,
        // The hook has logged it (and, as PID 1, rebooted).
        Err(_) => fatal::die("panic escaped to main"),
    };
    if sys::is_pid1() {
        fatal::die(&format!("pid 1 would exit with status {code}"));
    }
    std::process::exit(code)
}

fn run(args: &[OsString]) -> i32 {
    let mut mode = cli::mode_from_args(args);
    if sys::is_pid1() {
        mode = cli::mode_as_pid1(mode);
    }
    match mode {
        Mode::Initramfs => match boot::run(&cli::init_args(args)) {
            Err(e) => fatal::die(&log::error_chain(&e)),
            Ok(never) => match never {},
        },
        Mode::Service => service::run(),
        Mode::Upgrade(a) => upgrade::upgrade(&a),
        Mode::Status(f) => upgrade::status(f),
        Mode::Rollback(after) => upgrade::rollback(after),
        Mode::InstallInto(a) => upgrade::install_into(&a),
        Mode::AssessBoot => {
            if log::attach_kmsg().is_err() {
                log::forget_pending();
            }
            upgrade::assess::at_boot();
            0
        }
        Mode::Register => {
            if log::attach_kmsg().is_err() {
                log::forget_pending();
            }
            register::main()
        }
        Mode::FirstBoot => units::firstboot(),
        Mode::ImportImages => units::import_images(),
        Mode::Version => {
            let _ = writeln!(std::io::stdout(), "p6os-agent {}", cli::VERSION);
            0
        }
        Mode::Help => {
            let _ = write!(std::io::stdout(), "{}", cli::USAGE);
            0
        }
        Mode::Usage(problem) => {
            let _ = write!(std::io::stderr(), "p6os-agent: {problem}\n\n{}", cli::USAGE);
            2
        }
    }
}
