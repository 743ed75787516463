//! The I/O shell: the screens on a real terminal (crossterm: raw mode, the alternate screen,
//! keys). The terminal is the process's standard input and output; the appliance's agent puts
//! its console there first.
//!
//! A serial line has no window size (the kernel reports 0x0): the size is then asked of the
//! terminal itself (the cursor sent to the far corner, its position read back), and 80x24 when
//! the terminal does not answer.

use std::io::{self, Write};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use p6os_config::unattended::Unattended;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};

use crate::app::{App, Key, Step};
use crate::view;

/// What happens after the driver saved a document.
pub enum AfterSave {
    /// Stay on the screens, with this line shown (e.g. "saved to site.yaml").
    Stay(String),
    /// Leave the screens: the document is taken.
    Leave,
}

/// What the screens do when no key comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Wait for the operator (a workstation).
    Wait,
    /// Leave without saving after this long without a key (an appliance's boot goes on).
    LeaveAfter(std::time::Duration),
}

/// How the screens ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The last document saved (None: nothing was saved).
    Done(Option<Box<Unattended>>),
}

/// Runs `app` on the terminal of standard input and output until the operator leaves.
/// `save` writes a document where it belongs: `Err` is shown and the screens stay.
pub fn run(
    app: &mut App,
    idle: Idle,
    mut save: impl FnMut(&Unattended) -> Result<AfterSave, String>,
) -> io::Result<Outcome> {
    let _raw = RawMode::enter()?;
    let size = screen_size()?;
    // Cleared here, not by ratatui's `clear` (which asks the terminal where its cursor is:
    // a serial line may never answer).
    execute!(io::stdout(), terminal::Clear(terminal::ClearType::All))?;
    let backend = CrosstermBackend::new(io::stdout());
    let mut term = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, size.0, size.1)),
        },
    )?;
    let mut last = None;
    loop {
        term.draw(|f| view::draw(f, app))?;
        let key = match idle {
            Idle::Wait => read_key()?,
            Idle::LeaveAfter(limit) => {
                if !event::poll(limit)? {
                    // Nobody there (or a noisy line opened the screens): leave unsaved.
                    return Ok(Outcome::Done(last));
                }
                read_key()?
            }
        };
        let Some(key) = key else { continue };
        match app.handle(key) {
            Step::Continue => {}
            Step::Quit => return Ok(Outcome::Done(last)),
            Step::Save(doc) => match save(&doc) {
                Ok(AfterSave::Stay(message)) => {
                    app.saved(message);
                    last = Some(doc);
                }
                Ok(AfterSave::Leave) => return Ok(Outcome::Done(Some(doc))),
                Err(why) => app.message = Some(format!("not saved: {why}")),
            },
        }
    }
}

/// Raw mode and the alternate screen, undone when dropped (also on an error).
struct RawMode;

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        terminal::enable_raw_mode()?;
        let guard = RawMode;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
        let _ = io::stdout().flush();
    }
}

/// The terminal's size; asked of the terminal when the kernel does not know it (serial).
fn screen_size() -> io::Result<(u16, u16)> {
    if let Ok((w, h)) = terminal::size() {
        if w > 0 && h > 0 {
            return Ok((w, h));
        }
    }
    let mut out = io::stdout();
    execute!(out, cursor::SavePosition, cursor::MoveTo(998, 998))?;
    let probed = cursor::position();
    execute!(out, cursor::RestorePosition)?;
    Ok(match probed {
        // A terminal that does not clamp the cursor would claim a huge screen: cap it.
        Ok((x, y)) if x >= 10 && y >= 5 => {
            (x.saturating_add(1).min(400), y.saturating_add(1).min(200))
        }
        _ => (view::MIN_WIDTH, view::MIN_HEIGHT),
    })
}

/// The next key (None for other events: a resize redraws).
fn read_key() -> io::Result<Option<Key>> {
    match event::read()? {
        Event::Key(k) if k.kind != KeyEventKind::Release => Ok(key_of(k)),
        _ => Ok(None),
    }
}

/// A crossterm key as the screens' [`Key`].
pub fn key_of(k: KeyEvent) -> Option<Key> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    Some(match k.code {
        KeyCode::Char(c) if ctrl => Key::Ctrl(c.to_ascii_lowercase()),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Delete => Key::Delete,
        KeyCode::Esc => Key::Esc,
        _ => return None,
    })
}
