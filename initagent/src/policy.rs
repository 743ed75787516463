//! Decisions of the PID-1 service mode: what a signal means, when to respawn the shell,
//! how the system announces it is up.
//!
//! Pure: signal numbers, durations and values in, decisions and text out.

use std::time::Duration;

/// How the machine goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Reboot,
    PowerOff,
}

impl Shutdown {
    /// The log line announcing it (after the `p6os-agent: ` prefix).
    pub fn announcement(self) -> &'static str {
        match self {
            Shutdown::Reboot => "rebooting",
            Shutdown::PowerOff => "powering off",
        }
    }
}

/// What a received signal asks of PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGCHLD: reap children.
    ChildExited,
    Shutdown(Shutdown),
    Ignore,
}

/// Signals PID 1 blocks and waits for.
pub const HANDLED_SIGNALS: [i32; 8] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPWR,
];

/// The meaning of a signal, as busybox `reboot`/`poweroff`/`halt` send them:
/// SIGTERM (reboot) or SIGINT (Ctrl-Alt-Del) -> reboot; SIGUSR2 (poweroff) or
/// SIGUSR1 (halt) -> power off. Anything else is ignored.
pub fn event_for_signal(signo: i32) -> Event {
    match signo {
        libc::SIGCHLD => Event::ChildExited,
        libc::SIGTERM | libc::SIGINT => Event::Shutdown(Shutdown::Reboot),
        libc::SIGUSR1 | libc::SIGUSR2 => Event::Shutdown(Shutdown::PowerOff),
        _ => Event::Ignore,
    }
}

/// A shell that lived less than this counts as a quick exit (a broken shell or tty).
pub const QUICK_EXIT: Duration = Duration::from_secs(5);
/// Never more than one spawn per this interval.
pub const MIN_RESPAWN_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of the back-off after repeated quick exits.
pub const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(30);

/// Keeps track of the shell's exits and says how long to wait before the next spawn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Respawn {
    quick_exits: u32,
}

impl Respawn {
    /// Records an exit (or a failed spawn, with `ran_for` zero) and returns the delay,
    /// from now, before the next spawn: at least what keeps spawns one second apart,
    /// doubling per consecutive quick exit up to `MAX_RESPAWN_DELAY`.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= QUICK_EXIT {
            self.quick_exits = 0;
            return MIN_RESPAWN_INTERVAL.saturating_sub(ran_for);
        }
        self.quick_exits = self.quick_exits.saturating_add(1);
        let exponent = self.quick_exits.saturating_sub(1).min(16);
        let backoff = MIN_RESPAWN_INTERVAL.saturating_mul(1u32 << exponent);
        backoff.min(MAX_RESPAWN_DELAY)
    }
}

/// Readable exit status for logs: `exit status 0`, `killed by signal 9`.
pub fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// The line announcing that the system is up (after the `p6os-agent: ` prefix):
/// `ready slot=a version=1.0.0 entry=p6os-1.0.0-a.conf`. Unknown values are `unknown`;
/// the entry comes last, so a name with spaces cannot be mistaken for another field.
pub fn ready_line(slot: &str, version: &str, entry: Option<&str>) -> String {
    format!(
        "ready slot={slot} version={version} entry={}",
        entry.unwrap_or("unknown")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        assert_eq!(
            ready_line("a", "1.0.0", Some("p6os-1.0.0-a.conf")),
            "ready slot=a version=1.0.0 entry=p6os-1.0.0-a.conf"
        );
        assert_eq!(
            ready_line("unknown", "unknown", None),
            "ready slot=unknown version=unknown entry=unknown"
        );
        assert!(ready_line("b", "2.0", None).starts_with("ready slot=b version=2.0 "));
    }

    #[test]
    fn signal_mapping() {
        assert_eq!(event_for_signal(libc::SIGCHLD), Event::ChildExited);
        assert_eq!(
            event_for_signal(libc::SIGTERM),
            Event::Shutdown(Shutdown::Reboot)
        );
        assert_eq!(
            event_for_signal(libc::SIGINT),
            Event::Shutdown(Shutdown::Reboot)
        );
        assert_eq!(
            event_for_signal(libc::SIGUSR2),
            Event::Shutdown(Shutdown::PowerOff)
        );
        assert_eq!(
            event_for_signal(libc::SIGUSR1),
            Event::Shutdown(Shutdown::PowerOff)
        );
        for other in [libc::SIGHUP, libc::SIGQUIT, libc::SIGPWR, 0, -1, 999] {
            assert_eq!(event_for_signal(other), Event::Ignore, "{other}");
        }
    }

    #[test]
    fn every_meaningful_signal_is_blocked() {
        for signo in 1..65 {
            if event_for_signal(signo) != Event::Ignore {
                assert!(HANDLED_SIGNALS.contains(&signo), "{signo}");
            }
        }
    }

    #[test]
    fn announcements() {
        assert_eq!(Shutdown::Reboot.announcement(), "rebooting");
        assert_eq!(Shutdown::PowerOff.announcement(), "powering off");
    }

    #[test]
    fn long_lived_shell_respawns_at_once() {
        let mut r = Respawn::default();
        assert_eq!(r.after_exit(Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(r.after_exit(QUICK_EXIT), Duration::ZERO);
    }

    #[test]
    fn quick_exits_back_off_and_reset() {
        let mut r = Respawn::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| r.after_exit(Duration::from_millis(10)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Never two spawns within a second.
        assert!(delays.iter().all(|d| *d >= 1));
        assert_eq!(r.after_exit(Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(r.after_exit(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn many_quick_exits_do_not_overflow() {
        let mut r = Respawn::default();
        for _ in 0..100 {
            assert!(r.after_exit(Duration::ZERO) <= MAX_RESPAWN_DELAY);
        }
    }

    #[test]
    fn wait_status_descriptions() {
        assert_eq!(describe_wait_status(0), "exit status 0");
        assert_eq!(describe_wait_status(3 << 8), "exit status 3");
        assert_eq!(describe_wait_status(9), "killed by signal 9");
    }
}
