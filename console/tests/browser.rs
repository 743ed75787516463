//! The web console in a real browser: Debian's Chromium, headless, driven through WebDriver
//! (`chromedriver`, from `chromium-driver`) against a console on 127.0.0.1. An operator logs
//! in, approves a device's key, starts a rollout and watches it progress as simulated devices
//! report (the page updates itself); a viewer is refused an operator action; a request without
//! the CSRF token is refused; markup in a device's host name shows as text. Screenshots of
//! every page land in `target/browser-screenshots/`.
//!
//! The browser reaches nothing but loopback: `--host-resolver-rules` makes every other name
//! unresolvable, and Chromium's background services are off.

mod common;
mod rollout_fleet;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use p6os_protocol::rollout::RolloutState;
use p6os_protocol::{Appliance, Health, PairResponse};
use rollout_fleet::*;
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// `chromedriver` on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var_os("P6OS_BROWSER_REQUIRED").is_some_and(|v| v == "1")
}

impl Driver {
    /// `None` (after saying so) when Chromium or its driver is missing and the browser tests
    /// are not required (`P6OS_BROWSER_REQUIRED=1`, set by `cargo xtask test`).
    fn start() -> Option<Driver> {
        let missing: Vec<&str> = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
            .into_iter()
            .filter(|p| !std::path::Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{} missing (apt-get install chromium chromium-driver)",
                missing.join(", ")
            );
            assert!(!required(), "{why} and P6OS_BROWSER_REQUIRED is set");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver {
            child,
            url,
            _profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while try_call(&driver.url, "GET", "/status", None, Body::None, &[]).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(driver)
    }

    /// A fresh browser: headless, its own profile, loopback only.
    async fn browser(&self) -> Client {
        let profile = tempfile::tempdir().unwrap().keep();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-default-apps".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--no-proxy-server".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits (at most 20 s) until the element `css` shows `want`.
async fn wait_text(b: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            if e.text().await.is_ok_and(|t| t.contains(want)) {
                return;
            }
        }
        if Instant::now() > deadline {
            let body = text(b, "body").await;
            panic!("{css} never showed {want:?}; the page: {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most 20 s) until nothing matches `css`.
async fn wait_until_gone(b: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.find_all(Locator::Css(css)).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{css} stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn log_in(b: &Client, base: &str, user: &str) {
    b.goto(&format!("{base}/ui/")).await.unwrap();
    // Not signed in: the login page, which comes back here.
    let url = b.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/login", "{url}");
    b.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    b.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    b.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "main h1", "Fleet").await;
}

/// `fetch` from the page (with its cookie): the status.
async fn fetch_status(b: &Client, method: &str, path: &str, with_csrf: bool) -> u64 {
    let script = r#"
        const [method, path, withCsrf, done] = arguments;
        const headers = { "Content-Type": "application/json" };
        if (withCsrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="p6os-csrf"]').content;
        fetch(path, { method, headers, body: "{}", credentials: "same-origin" })
            .then((r) => done(r.status), () => done(0));
    "#;
    b.execute_async(script, vec![json!(method), json!(path), json!(with_csrf)])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_approve_roll_out_and_watch_viewers_are_refused() {
    let Some(driver) = Driver::start() else {
        return;
    };
    // Two ready devices (site=s) and a bundle of 2.0.0.
    let (f, d) = tokio::task::block_in_place(|| Fleet::start(2));
    let base = f.s.url.clone();
    let s = &f.s;
    tokio::task::block_in_place(|| {
        for (name, role) in [("otto", "operator"), ("vera", "viewer")] {
            let r = s.admin(
                "POST",
                &format!("{API}/users"),
                Body::json(&json!({ "name": name, "role": role, "password": PASSWORD })),
            );
            assert_eq!(r.status, 201, "{}", r.text());
        }
        // A device whose key waits for approval, and one whose host name is markup.
        let r = s.admin(
            "POST",
            &format!("{API}/appliances"),
            Body::json(&json!({ "id": "store-7", "labels": { "site": "t" } })),
        );
        assert_eq!(r.status, 201);
        assert_eq!(s.pair("store-7", facts("till-7")).status, 202);
        assert_eq!(s.register("evil", &[]).status, 201);
        let markup = r#"<img src=x onerror="document.title='pwned'"><b>bold</b>"#;
        assert_eq!(s.pair("evil", facts(markup)).status, 200);
    });

    let b = driver.browser().await;
    log_in(&b, &base, "otto").await;
    wait_text(&b, "#summary .total", "4 appliances").await;
    shoot(&b, "fleet").await;

    // Markup a device reported is text.
    b.goto(&format!("{base}/ui/appliances/evil")).await.unwrap();
    wait_text(&b, "#h-facts + dl", "<img src=x onerror=").await;
    assert!(b
        .find_all(Locator::Css("main img"))
        .await
        .unwrap()
        .is_empty());
    assert!(b.find_all(Locator::Css("main b")).await.unwrap().is_empty());
    assert_ne!(b.title().await.unwrap(), "pwned");
    shoot(&b, "appliance").await;

    // Approve the waiting key from the pending page.
    b.goto(&format!("{base}/ui/pending")).await.unwrap();
    let fp = text(&b, "#pending code.fp").await;
    shoot(&b, "pending").await;
    b.find(Locator::Css(r#"button[aria-label="Approve store-7"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "#pending", "No device key is waiting").await;
    tokio::task::block_in_place(|| {
        let a: Appliance = s
            .admin("GET", &format!("{API}/appliances/store-7"), Body::None)
            .json();
        assert_eq!(a.key_fingerprint.as_deref(), Some(fp.as_str()));
        assert!(matches!(
            s.pair("store-7", facts("till-7")).json::<PairResponse>(),
            PairResponse::Ready { .. }
        ));
    });

    // Start a rollout of 2.0.0 to site=s from the form; the page follows to the rollout.
    b.goto(&format!("{base}/ui/rollouts")).await.unwrap();
    b.find(Locator::Id("n-version"))
        .await
        .unwrap()
        .send_keys("2.0.0")
        .await
        .unwrap();
    let selector = b.find(Locator::Id("n-selector")).await.unwrap();
    selector.send_keys("site=s").await.unwrap();
    let waves = b.find(Locator::Id("n-waves")).await.unwrap();
    waves.clear().await.unwrap();
    waves.send_keys("1,100%").await.unwrap();
    b.find(Locator::Css(r#"form[data-api="/api/v1/rollouts"] button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "main h1", "Rollout 1: version 2.0.0").await;
    wait_text(&b, "#rollout", "0 of 2 blessed").await;
    shoot(&b, "rollout-started").await;
    // A mark the page keeps as long as it is not reloaded.
    b.execute("window.p6osMark = 42;", vec![]).await.unwrap();

    // The canary (d-0) upgrades and is blessed; the page shows it by itself.
    tokio::task::block_in_place(|| {
        assert_eq!(f.beat(&d[0], &beat("1.0.0")).as_deref(), Some("2.0.0"));
        f.beat(&d[0], &running("2.0.0", Health::Good));
    });
    wait_text(&b, "#rollout", "1 of 2 blessed").await;
    shoot(&b, "rollout-progress").await;
    tokio::task::block_in_place(|| {
        assert_eq!(f.beat(&d[1], &beat("1.0.0")).as_deref(), Some("2.0.0"));
        f.beat(&d[1], &running("2.0.0", Health::Good));
    });
    wait_text(&b, "#rollout", "completed").await;
    wait_text(&b, "#rollout", "2 of 2 blessed").await;
    wait_until_gone(&b, "#rollout form[data-api$=\"/pause\"]").await;
    let mark = b.execute("return window.p6osMark;", vec![]).await.unwrap();
    assert_eq!(mark, json!(42), "the page updated without a reload");
    shoot(&b, "rollout-completed").await;
    tokio::task::block_in_place(|| assert_eq!(f.rollout(1).state, RolloutState::Completed));

    // A state-changing request without the CSRF token is refused, with it allowed.
    assert_eq!(fetch_status(&b, "POST", "/api/v1/tokens", false).await, 403);
    assert_eq!(
        fetch_status(&b, "POST", "/api/v1/rollouts/1/pause", true).await,
        409,
        "a completed rollout cannot pause: the request got through"
    );

    // The other pages, for the record.
    for (path, name) in [
        ("/ui/bundles", "bundles"),
        ("/ui/rollouts", "rollouts"),
        ("/ui/configs", "configs"),
        ("/ui/users", "users"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        shoot(&b, name).await;
    }
    // A tablet held upright: nothing runs off the side of the page.
    b.set_window_size(800, 1200).await.unwrap();
    for path in ["/ui/", "/ui/rollouts/1", "/ui/appliances/evil"] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        let fits = b
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{path} is wider than a tablet");
    }
    b.goto(&format!("{base}/ui/")).await.unwrap();
    shoot(&b, "fleet-tablet").await;
    b.set_window_size(1280, 900).await.unwrap();
    // Keyboard: the skip link is the first stop and leads to the content.
    b.goto(&format!("{base}/ui/")).await.unwrap();
    let first = b
        .execute(
            "document.activeElement.blur(); return document.querySelector('a.skip').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, json!("Skip to the content"));
    b.find(Locator::Css("button[data-logout]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "main h1", "Log in").await;
    shoot(&b, "login").await;

    // A viewer sees the rollout without its buttons, and the API refuses them the action.
    log_in(&b, &base, "vera").await;
    b.goto(&format!("{base}/ui/rollouts")).await.unwrap();
    assert!(b
        .find_all(Locator::Css(r#"form[data-api="/api/v1/rollouts"]"#))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        fetch_status(&b, "POST", "/api/v1/rollouts/1/pause", true).await,
        403
    );
    b.goto(&format!("{base}/ui/audit")).await.unwrap();
    wait_text(&b, "main h1", "Not allowed").await;
    shoot(&b, "viewer-refused").await;
    b.close().await.unwrap();

    // The admin's audit page shows all of it.
    let b = driver.browser().await;
    tokio::task::block_in_place(|| {
        let r = s.admin(
            "PUT",
            &format!("{API}/users/admin"),
            Body::json(&json!({ "password": PASSWORD })),
        );
        assert_eq!(r.status, 200);
    });
    log_in(&b, &base, "admin").await;
    b.goto(&format!("{base}/ui/audit")).await.unwrap();
    wait_text(&b, "#audit", "POST /api/v1/appliances/{id}/approve").await;
    wait_text(&b, "#audit", "POST /api/v1/rollouts/{id}/pause").await;
    shoot(&b, "audit").await;
    b.close().await.unwrap();
}
