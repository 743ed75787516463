use std::path::Path;

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::*;

/// The screen as text, `w` x `h`, as a terminal shows it (reverse video is not in the text).
pub(crate) fn screen_sized(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| crate::view::draw(f, app)).unwrap();
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn screen(app: &App) -> String {
    screen_sized(app, 80, 24)
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(app.handle(Key::Char(c)), Step::Continue);
    }
}

fn keys(app: &mut App, keys: &[Key]) {
    for k in keys {
        app.handle(*k);
    }
}

fn go_to(app: &mut App, section: Section, entry: Option<usize>) {
    let at = app
        .pages
        .iter()
        .position(|p| p.section == section && p.entry == entry)
        .unwrap_or_else(|| panic!("no page {section:?} {entry:?}"));
    app.page = at;
    app.field = 0;
}

const SITE: &str = "\
#cloud-config
appliance:
  id: store-0421
  name: Lyon 42
  labels: {region: eu, store: \"0421\"}
hostname: store-0421
timezone: Europe/Paris
ntp: {servers: [ntp.store.example]}
users:
  - name: admin
    groups: [adm]
    sudo: true
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 admin@laptop
    passwd: \"$y$j9T$abcdefgh$0123456789abcdefghijklmnopqrstuvwxyzABCDEF\"
network:
  interfaces:
    - name: enp1s0
      addresses: [192.168.42.10/24]
      gateway: 192.168.42.1
      routes: [{to: 10.9.0.0/16, via: 192.168.42.254}]
  dns: {servers: [192.168.42.1], search: [store.example]}
proxy:
  http_proxy: http://proxy.store.example:3128
  https_proxy: http://proxy.store.example:3128
  no_proxy: localhost,127.0.0.1,.store.example
kubernetes: {pod_cidr: 10.42.0.0/16, service_cidr: 10.43.0.0/16, cluster_dns: 10.43.0.10}
registries:
  mirrors: {docker.io: [\"https://mirror.store.example\"]}
  configs: {docker.io: {username: pull, password: s3cret-registry}}
console:
  endpoint: https://console.example.com
  token: pairing-token-secret
write_files:
  - {path: /etc/motd, content: \"Lyon 42\\n\"}
";

fn site() -> App {
    App::open(Path::new("site.yaml"), Some(SITE))
}

/// Every page of a whole document, as the operator sees it at 80x24.
#[test]
fn every_page_at_80x24() {
    let mut app = site();
    assert!(app.problems.is_empty(), "{:?}", app.problems);
    for i in 0..app.pages.len() {
        app.page = i;
        app.field = 0;
        let p = app.current_page();
        let name = format!(
            "page_{i:02}_{}",
            p.section.title().to_lowercase().replace(' ', "_")
        );
        let shown = screen(&app);
        for secret in ["pairing-token-secret", "s3cret-registry", "$y$j9T"] {
            assert!(!shown.contains(secret), "{name} shows a secret:\n{shown}");
        }
        insta::assert_snapshot!(name, shown);
    }
}

#[test]
fn review_shows_the_changes_and_a_new_document_its_start() {
    let mut app = site();
    go_to(&mut app, Section::Host, None);
    keys(&mut app, &[Key::Ctrl('u')]);
    typed(&mut app, "store-0422");
    keys(&mut app, &[Key::Ctrl('s')]);
    assert_eq!(app.current_page().section, Section::Review);
    keys(&mut app, &[Key::Tab]);
    insta::assert_snapshot!("review_changes", screen(&app));
    let new = App::open(Path::new("new.yaml"), None);
    insta::assert_snapshot!("start_new_document", screen(&new));
}

#[test]
fn a_problem_shows_under_its_field_and_on_the_page_list() {
    let mut app = site();
    go_to(&mut app, Section::Network, Some(0));
    keys(&mut app, &[Key::Tab, Key::Tab, Key::Tab, Key::Ctrl('u')]);
    typed(&mut app, "192.168.42.300/24");
    let shown = screen(&app);
    assert!(shown.contains("! `192.168.42.300/24`"), "{shown}");
    insta::assert_snapshot!("problem_under_field", shown);
    // Saving is refused while it is there, and the review page lists it.
    keys(&mut app, &[Key::Ctrl('s')]);
    assert!(matches!(app.handle(Key::Ctrl('s')), Step::Continue));
    let review = screen(&app);
    assert!(review.contains("not saved: 1 problem"), "{review}");
    assert!(
        app.all_problems()[0].starts_with("Network port 1 / Fixed addresses: `192.168.42.300/24`"),
        "the place in the pages' words: {:?}",
        app.all_problems()
    );
    insta::assert_snapshot!("review_refuses_with_a_problem", review);
}

#[test]
fn cloud_init_keys_of_the_file_opened_are_named_on_the_start_page() {
    let app = App::open(
        Path::new("cloud.yaml"),
        Some("#cloud-config\nhostname: a\nruncmd: [reboot]\npackages: [htop]\n"),
    );
    assert_eq!(app.doc.hostname.as_deref(), Some("a"), "the rest is read");
    let shown = screen(&app);
    assert!(shown.contains("runcmd"), "{shown}");
    insta::assert_snapshot!("start_with_cloud_init_keys", shown);
}

#[test]
fn too_small_a_screen_says_so() {
    let app = site();
    let shown = screen_sized(&app, 60, 20);
    assert!(shown.contains("at least 80x24"), "{shown}");
}

#[test]
fn questions_before_leaving_unsaved_and_removing() {
    let mut app = site();
    go_to(&mut app, Section::Users, Some(0));
    keys(&mut app, &[Key::Ctrl('d')]);
    insta::assert_snapshot!("question_remove", screen(&app));
    keys(&mut app, &[Key::Char('n')]);
    assert_eq!(app.doc.users.len(), 1);
    keys(&mut app, &[Key::Ctrl('d'), Key::Char('y')]);
    assert!(app.doc.users.is_empty());
    assert_eq!(app.handle(Key::Ctrl('q')), Step::Continue, "asks first");
    assert_eq!(app.question, Some(Question::QuitUnsaved));
    assert_eq!(app.handle(Key::Char('y')), Step::Quit);
    // Nothing changed: leaves at once.
    let mut same = site();
    assert_eq!(same.handle(Key::Ctrl('q')), Step::Quit);
}

/// A whole new document typed from scratch, key by key, as over a serial line.
#[test]
fn a_new_document_typed_from_scratch_is_saved_as_typed() {
    let mut app = App::open(Path::new("new.yaml"), None);
    keys(&mut app, &[Key::Ctrl('n'), Key::Ctrl('n')]);
    typed(&mut app, "store-7");
    keys(&mut app, &[Key::Enter]);
    typed(&mut app, "UTC");
    keys(&mut app, &[Key::Ctrl('n'), Key::Ctrl('a')]);
    typed(&mut app, "eth0");
    // Users: add one, name it, give it a key.
    while app.current_page().section != Section::Users {
        app.handle(Key::Ctrl('n'));
    }
    keys(&mut app, &[Key::Ctrl('a')]);
    typed(&mut app, "ops");
    keys(&mut app, &[Key::Tab, Key::Tab]);
    typed(
        &mut app,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 ops",
    );
    // Tab: the key is added and "New SSH key" comes next; then the password hash; then sudo.
    keys(&mut app, &[Key::Tab, Key::Tab, Key::Tab, Key::Char(' ')]);
    assert_eq!(
        app.handle(Key::Ctrl('s')),
        Step::Continue,
        "to the review page"
    );
    let Step::Save(doc) = app.handle(Key::Ctrl('s')) else {
        panic!("not saved: {:?}\n{}", app.all_problems(), screen(&app));
    };
    assert_eq!(
        unattended::to_yaml(&doc),
        "#cloud-config\nhostname: store-7\ntimezone: UTC\nusers:\n- name: ops\n  ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 ops\n  sudo: true\nnetwork:\n  interfaces:\n  - name: eth0\n    dhcp: true\n"
    );
}

#[test]
fn the_extra_check_of_the_appliance_blocks_saving() {
    let mut app =
        App::open(Path::new("console"), Some("hostname: a\n")).with_extra_check(Box::new(|doc| {
            if doc.hostname.as_deref() == Some("a") {
                vec!["the slot refuses a".to_string()]
            } else {
                Vec::new()
            }
        }));
    keys(&mut app, &[Key::Ctrl('s')]);
    assert_eq!(app.handle(Key::Ctrl('s')), Step::Continue);
    assert!(app
        .all_problems()
        .contains(&"the slot refuses a".to_string()));
}

/// Emptying the first of two SSH keys and typing on does not touch the second.
#[test]
fn ssh_keys_change_when_their_field_is_left() {
    let mut app = site();
    go_to(&mut app, Section::Users, Some(0));
    let second =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2nd0000000000000000000000000000000000000000 two";
    app.doc.users[0].ssh_authorized_keys.push(second.into());
    keys(&mut app, &[Key::Tab, Key::Tab, Key::Ctrl('u')]);
    typed(
        &mut app,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO1st0000000000000000000000000000000000000000 one",
    );
    assert_eq!(
        app.doc.users[0].ssh_authorized_keys[1], second,
        "not yet, and never key 2"
    );
    keys(&mut app, &[Key::Tab]);
    assert!(app.doc.users[0].ssh_authorized_keys[0].ends_with(" one"));
    assert_eq!(app.doc.users[0].ssh_authorized_keys[1], second);
}

#[test]
fn a_registry_name_taken_keeps_the_page_and_the_other_registry() {
    let mut app = site();
    keys(&mut app, &[]);
    go_to(&mut app, Section::Registries, Some(0));
    keys(&mut app, &[Key::Ctrl('a')]);
    let page = app.page;
    typed(&mut app, "docker.io");
    assert_eq!(app.page, page, "stays on the new registry's page");
    assert!(screen(&app).contains("has a page of its own already"));
    let r = app.doc.registries.as_ref().unwrap();
    assert_eq!(r.configs["docker.io"].username.as_deref(), Some("pull"));
}

#[test]
fn esc_never_leaves_and_ctrl_w_saves_where_ctrl_s_is_flow_control() {
    let mut app = site();
    assert_eq!(app.handle(Key::Esc), Step::Continue);
    assert_eq!(app.question, None);
    assert_eq!(
        app.handle(Key::Ctrl('w')),
        Step::Continue,
        "to the review page"
    );
    assert!(matches!(app.handle(Key::Ctrl('w')), Step::Save(_)));
}

#[test]
fn a_proxy_login_shows_only_while_its_field_is_edited() {
    let mut app = App::open(
        Path::new("p.yaml"),
        Some("proxy: {http_proxy: \"http://u:hunter2@proxy.example:3128\"}\n"),
    );
    go_to(&mut app, Section::Proxy, None);
    keys(&mut app, &[Key::Tab]);
    let shown = screen(&app);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("http://***@proxy.example:3128"), "{shown}");
}

#[test]
fn name_servers_without_a_port_are_a_problem_on_the_network_page() {
    let mut app = App::open(Path::new("n.yaml"), None);
    go_to(&mut app, Section::Dns, None);
    typed(&mut app, "10.0.0.1");
    go_to(&mut app, Section::Network, None);
    let shown = screen(&app);
    assert!(shown.contains("! missing field `interfaces`"), "{shown}");
    assert!(
        app.all_problems()[0].starts_with("Network port:"),
        "{:?}",
        app.all_problems()
    );
}
