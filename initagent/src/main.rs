//! `p6os-agent`: `/init` of the P6OS initramfs, then PID 1 of the minimal base, or a command.
//! Everything is in the library ([`p6os_agent`]); this binary only calls it.

fn main() {
    p6os_agent::main()
}
