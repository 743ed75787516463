//! `p6os-site`: the site operator's setup screens, which write `unattended.yaml` without anyone
//! writing YAML. The same screens run in `p6os site` on a workstation and on an appliance's
//! console at boot (`p6os-agent`).
//!
//! Layout: `fields` (pages, fields, and how each reads and writes the document: pure), `app`
//! (the state machine of keys: pure), `view` (drawing with ratatui), `review` (the document and
//! its changes, secrets hidden), `terminal` (the I/O shell: a real terminal through crossterm).
//! The document type, its checks and its text are `p6os_config::unattended`'s: the screens
//! cannot produce a document `p6os validate unattended` refuses (on the appliance, nor one its
//! slot refuses: the agent's rendering is checked too).

pub mod app;
pub mod fields;
pub mod review;
pub mod terminal;
pub mod view;

pub use app::{App, ExtraCheck, Key, Step};
