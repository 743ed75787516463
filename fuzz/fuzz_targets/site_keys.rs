//! The site setup screens (`p6os_site`) under arbitrary keys, as a noisy serial line or a
//! person could type them: the state machine and the drawing never panic (on the appliance they
//! run in PID 1, built with panic=abort), at any screen size; and a document the screens hand
//! over for saving is one `p6os validate unattended` accepts, as written.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use p6os_site::{App, Key, Step};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const SITE: &str = "hostname: store-1\nusers: [{name: ops, ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 ops\"]}]\nnetwork:\n  interfaces: [{name: eth0, dhcp: true}]\nregistries: {mirrors: {docker.io: [\"https://m.example\"]}}\nproxy: {http_proxy: \"http://u:p@proxy.example:3128\"}\n";

fn key(b: u8, next: u8) -> Key {
    match b % 24 {
        0 => Key::Enter,
        1 => Key::Tab,
        2 => Key::BackTab,
        3 => Key::Up,
        4 => Key::Down,
        5 => Key::Left,
        6 => Key::Right,
        7 => Key::Home,
        8 => Key::End,
        9 => Key::PageUp,
        10 => Key::PageDown,
        11 => Key::Backspace,
        12 => Key::Delete,
        13 => Key::Esc,
        14 => Key::Ctrl((b'a' + next % 26) as char),
        // Mostly text, some of it not ASCII.
        15 => Key::Char(char::from_u32(0xa0 + next as u32 * 7).unwrap_or('x')),
        _ => Key::Char((b' ' + next % 95) as char),
    }
}

fuzz_target!(|data: &[u8]| {
    let [start, w, h, rest @ ..] = data else {
        return;
    };
    let text = (start % 2 == 1).then_some(SITE);
    let mut app = App::open(Path::new("fuzz.yaml"), text);
    let size = (10 + (*w as u16) % 190, 3 + (*h as u16) % 70);
    // The test backend cannot fail (its error type is uninhabited).
    let mut term = Terminal::new(TestBackend::new(size.0, size.1)).unwrap_or_else(|e| match e {});
    for (i, pair) in rest.chunks(2).enumerate() {
        let k = key(pair[0], pair.get(1).copied().unwrap_or(0));
        match app.handle(k) {
            Step::Save(doc) => {
                let written = p6os_config::unattended::to_yaml(&doc);
                if let Err(d) = p6os_config::unattended::load(Path::new("saved.yaml"), &written) {
                    panic!("the screens saved a document the validator refuses:\n{d}\n{written}");
                }
            }
            Step::Quit => return,
            Step::Continue => {}
        }
        if i % 8 == 0 {
            let _ = term.draw(|f| p6os_site::view::draw(f, &app));
        }
    }
    let _ = term.draw(|f| p6os_site::view::draw(f, &app));
});
