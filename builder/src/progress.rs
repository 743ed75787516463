//! Progress of long work (layer builds, downloads, image writing) for people and for CI:
//! a spinner with the current step on a terminal, plain lines otherwise, JSON lines with
//! `--json-progress`, nothing but errors with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A spinner on a terminal, timestamped lines when stderr is not one.
    Human,
    /// One JSON object per line on stderr: `{"elapsed_s":1.2,"step":"..."}`.
    Json,
    Quiet,
}

/// Makes the progress sink the builder calls with one line per step.
pub fn sink(mode: ProgressMode) -> Box<dyn Fn(&str)> {
    let start = Instant::now();
    match mode {
        ProgressMode::Quiet => Box::new(|_| {}),
        ProgressMode::Json => Box::new(move |s| {
            eprintln!(
                "{}",
                serde_json::json!({
                    "elapsed_s": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    "step": s,
                })
            )
        }),
        ProgressMode::Human if std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Box::new(move |s| {
                // Finished steps stay on screen above the spinner.
                bar.println(format!(
                    "p6os: [{:5.1}s] {s}",
                    start.elapsed().as_secs_f64()
                ));
                bar.set_message(s.to_string());
                if s.starts_with("done in ") {
                    bar.finish_and_clear();
                }
            })
        }
        ProgressMode::Human => {
            Box::new(move |s| eprintln!("p6os: [{:5.1}s] {s}", start.elapsed().as_secs_f64()))
        }
    }
}
