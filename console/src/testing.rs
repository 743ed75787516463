//! An in-process console for tests (feature `testing`): the real app on 127.0.0.1 over a real
//! SQLite file, on its own runtime thread, stopped gracefully on drop; its `tracing` output
//! captured per server. Shared by the console's integration tests and the agent's
//! registration tests (a dev-dependency only).

pub mod pg;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::Config;

/// How a [`TestConsole`] listens and logs.
#[derive(Debug, Clone)]
pub struct Listen {
    /// 0: any free port.
    pub port: u16,
    /// https with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `EnvFilter` syntax (`info`, `trace`) for the captured log.
    pub log_filter: String,
    /// Connections and timeouts; by default those of this process's file limit.
    pub limits: crate::serve::Limits,
    /// The console's clock; the system's by default.
    pub clock: Option<std::sync::Arc<dyn crate::clock::Clock>>,
}

impl Default for Listen {
    /// Plain http on any port, the production log level.
    fn default() -> Listen {
        Listen {
            port: 0,
            tls: None,
            log_filter: "info".into(),
            limits: crate::serve::Limits::for_this_process(),
            clock: None,
        }
    }
}

/// A running console; stopped (gracefully) on drop.
pub struct TestConsole {
    pub addr: SocketAddr,
    pub https: bool,
    /// What it logged through `tracing`.
    pub log: Arc<Mutex<String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    /// A runtime thread's subscriber, set when it starts and dropped when it stops.
    static LOG_GUARD: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

impl TestConsole {
    /// Opens the database of `config` and serves it. Panics on failure: it is a test fixture.
    pub fn start(config: Config, listen: Listen) -> TestConsole {
        let log = Arc::new(Mutex::new(String::new()));
        let dispatch = capture(&listen.log_filter, log.clone());
        let listener = TcpListener::bind(("127.0.0.1", listen.port)).expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let app = match listen.clock.clone() {
            Some(clock) => crate::app_with_clock(config, clock),
            None => crate::app(config),
        }
        .expect("the console opens its database");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let https = listen.tls.is_some();
        let thread = std::thread::spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            let on_start = dispatch.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || {
                    LOG_GUARD.with(|g| {
                        *g.borrow_mut() = Some(tracing::dispatcher::set_default(&on_start))
                    })
                })
                .on_thread_stop(|| LOG_GUARD.with(|g| drop(g.borrow_mut().take())))
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let stopped = async {
                    let _ = stopped.await;
                };
                let tls = listen
                    .tls
                    .map(|(cert, key)| crate::tls::server_config(&cert, &key).expect("TLS files"));
                crate::run(app, listener, tls, listen.limits, stopped)
                    .await
                    .expect("the console runs");
            });
        });
        TestConsole {
            addr,
            https,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Stops the console and waits for it.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestConsole {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A `tracing` subscriber like the binary's (`fmt`, no colours) whose lines go to `buf`. Set
/// per thread (on the server's runtime threads), so parallel tests each see their own server's
/// log only.
pub fn capture(filter: &str, buf: Arc<Mutex<String>>) -> tracing::Dispatch {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || LogWriter(buf.clone()))
        .finish()
        .into()
}

struct LogWriter(Arc<Mutex<String>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("log")
            .push_str(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
