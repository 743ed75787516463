//! The setup screens' state and what each key does: a pure state machine (keys in, the
//! document and what to show out), driven by a terminal on a workstation or on the appliance's
//! console and by the tests.
//!
//! After every change the whole document is checked with the code of `p6os validate
//! unattended` (and, on the appliance, the agent's own rendering against its slot), and each
//! problem is shown beside the field it is about. Saving is possible only without a problem, so
//! the screens cannot produce a document the validator refuses (nor, on the appliance, one its
//! slot refuses; a workstation does not know the slot it is for).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use p6os_config::diag::{Diagnostic, Diagnostics};
use p6os_config::unattended::{self, Unattended};

use crate::fields::{self, Field, FieldId, Kind, Page, Section};

/// A key, as the terminal reads it. Over a serial line only these are sure to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    /// Ctrl and a letter (lowercase).
    Ctrl(char),
    Enter,
    Tab,
    BackTab,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
    Backspace,
    Delete,
    Esc,
}

/// What the screens ask of their driver after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Continue,
    /// Save this document (its text is [`unattended::to_yaml`] of it).
    Save(Box<Unattended>),
    /// Leave without saving.
    Quit,
}

/// Problems the document has besides the checks of `p6os validate` (on the appliance: its
/// rendering against the slot, e.g. a file owner the slot does not have).
pub type ExtraCheck = Box<dyn Fn(&Unattended) -> Vec<String>>;

/// How the review page shows the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewView {
    Document,
    Changes,
}

/// A question on the bottom line waiting for y or n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    QuitUnsaved,
    RemoveEntry,
}

pub struct App {
    /// The name problems are reported under (the file, or the device's console).
    pub file: PathBuf,
    /// What the file held when opened (for the changes view and "unsaved changes").
    pub original: Unattended,
    /// The text the file held, if there was one.
    pub original_text: Option<String>,
    /// Problems of the file as opened: parts that could not be read and are not kept.
    pub opened_problems: Diagnostics,
    pub doc: Unattended,
    pub pages: Vec<Page>,
    pub page: usize,
    pub field: usize,
    /// The text being typed into the focused field, and the cursor in it (in characters).
    pub editing: Option<(String, usize)>,
    /// Texts that could not be read (a port that is not a number), by page and field: shown
    /// as typed, with the reason; saving waits until they are fixed.
    pub unread: HashMap<(Page, FieldId), (String, String)>,
    /// The document's problems, as of the last change.
    pub problems: Vec<Diagnostic>,
    pub extra: Vec<String>,
    extra_check: Option<ExtraCheck>,
    pub review: ReviewView,
    pub scroll: u16,
    pub question: Option<Question>,
    /// One line for the operator (saved, refused...), cleared by the next key.
    pub message: Option<String>,
    /// Where Save writes, for the review page to say.
    pub destination: String,
}

impl App {
    /// Screens for `text` read from `file` (None: a new document).
    pub fn open(file: &Path, text: Option<&str>) -> App {
        let (doc, opened_problems) = match text {
            Some(t) => unattended::load_for_editing(file, t),
            None => (Unattended::default(), Diagnostics::default()),
        };
        let mut app = App {
            file: file.to_path_buf(),
            original: doc.clone(),
            original_text: text.map(str::to_string),
            opened_problems,
            pages: fields::pages(&doc),
            doc,
            page: 0,
            field: 0,
            editing: None,
            unread: HashMap::new(),
            problems: Vec::new(),
            extra: Vec::new(),
            extra_check: None,
            review: ReviewView::Document,
            scroll: 0,
            question: None,
            message: None,
            destination: file.display().to_string(),
        };
        app.check();
        app
    }

    /// Adds the checks of the place the document is for (the appliance's slot).
    pub fn with_extra_check(mut self, check: ExtraCheck) -> App {
        self.extra_check = Some(check);
        self.check();
        self
    }

    pub fn current_page(&self) -> Page {
        self.pages[self.page]
    }

    /// The fields of the current page, with the text being typed in place of its value.
    pub fn current_fields(&self) -> Vec<Field> {
        let page = self.current_page();
        let mut out = fields::fields(&self.doc, page);
        for (i, f) in out.iter_mut().enumerate() {
            if let Some((text, _)) = self.unread.get(&(page, f.id)) {
                f.value = text.clone();
            }
            if i == self.field {
                if let Some((text, _)) = &self.editing {
                    f.value = text.clone();
                }
            }
        }
        out
    }

    /// Problems about `field` (at its path or below it), and a text that could not be read.
    pub fn problems_of(&self, field: &Field) -> Vec<String> {
        let mut out: Vec<String> = self
            .unread
            .get(&(self.current_page(), field.id))
            .map(|(_, why)| why.clone())
            .into_iter()
            .collect();
        for d in &self.problems {
            if is_under(&d.field, &field.path) {
                out.push(d.message.clone());
            }
        }
        out
    }

    /// Problems of the current page that no field shows (a missing setting of the section).
    pub fn page_problems(&self) -> Vec<String> {
        let fields = self.current_fields();
        let page = self.current_page();
        let prefix = page_path(&self.doc, page);
        self.problems
            .iter()
            .filter(|d| {
                prefix.as_deref().is_some_and(|p| is_under(&d.field, p))
                    && !fields.iter().any(|f| is_under(&d.field, &f.path))
            })
            .map(|d| d.message.clone())
            .collect()
    }

    /// Every problem that stands in the way of saving, as lines for the review page.
    pub fn all_problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unread
            .iter()
            .map(|((page, _), (text, why))| format!("{}: `{text}`: {why}", page.name()))
            .collect();
        out.sort();
        for d in &self.problems {
            let hint = d
                .hint
                .as_deref()
                .map_or(String::new(), |h| format!(" ({h})"));
            out.push(format!("{}: {}{hint}", self.place(&d.field), d.message));
        }
        out.extend(self.extra.iter().cloned());
        out
    }

    /// Where a problem at a document path is, in the pages' words (`Account 1 / Groups`); the
    /// path itself for a setting no page shows.
    pub fn place(&self, path: &str) -> String {
        for page in &self.pages {
            if let Some(f) = fields::fields(&self.doc, *page)
                .iter()
                .find(|f| is_under(path, &f.path))
            {
                return format!("{} / {}", page.name(), f.label);
            }
        }
        for page in &self.pages {
            if page_path(&self.doc, *page).is_some_and(|p| is_under(path, &p)) {
                return page.name();
            }
        }
        if path.is_empty() {
            "the document".to_string()
        } else {
            format!("setting {path} (not on these pages)")
        }
    }

    /// Whether the document differs from the one opened.
    pub fn changed(&self) -> bool {
        self.doc != self.original
    }

    /// The document as it will be written.
    pub fn text(&self) -> String {
        unattended::to_yaml(&self.doc)
    }

    /// Runs every check on the document as it is now.
    fn check(&mut self) {
        self.problems = match unattended::load(&self.file, &self.text()) {
            Ok(_) => Vec::new(),
            Err(d) => d.0,
        };
        self.extra = match (&self.extra_check, self.problems.is_empty()) {
            (Some(check), true) => check(&self.doc),
            _ => Vec::new(),
        };
        self.pages = fields::pages(&self.doc);
        self.page = self.page.min(self.pages.len() - 1);
    }

    /// What a key does.
    pub fn handle(&mut self, key: Key) -> Step {
        self.message = None;
        if let Some(q) = self.question.take() {
            return self.answer(q, key);
        }
        match key {
            // Not Esc: over a serial line a lone Esc is also the start of an arrow key.
            Key::Ctrl('q') | Key::Ctrl('x') => {
                self.commit();
                if self.changed() {
                    self.question = Some(Question::QuitUnsaved);
                    return Step::Continue;
                }
                return Step::Quit;
            }
            Key::Ctrl('n') | Key::PageDown => self.go_to_page(self.page + 1),
            Key::Ctrl('p') | Key::PageUp => self.go_to_page(self.page.saturating_sub(1)),
            // Ctrl-W too: a terminal with software flow control keeps Ctrl-S (XOFF) to itself.
            Key::Ctrl('s') | Key::Ctrl('w') => {
                let on_review = self.current_page().section == Section::Review;
                self.go_to_page(self.pages.len() - 1);
                if on_review {
                    return self.save();
                }
            }
            Key::Ctrl('a') => self.add_entry(),
            Key::Ctrl('d') => {
                let page = self.current_page();
                if page.section.is_list() && page.entry.is_some() {
                    self.question = Some(Question::RemoveEntry);
                } else {
                    self.message = Some(
                        "Ctrl-D removes a network port, registry or account on its page".into(),
                    );
                }
            }
            _ if self.current_page().section == Section::Review => self.review_key(key),
            _ => self.field_key(key),
        }
        Step::Continue
    }

    fn answer(&mut self, q: Question, key: Key) -> Step {
        let yes = matches!(key, Key::Char('y') | Key::Char('Y'));
        match (q, yes) {
            (Question::QuitUnsaved, true) => Step::Quit,
            (Question::RemoveEntry, true) => {
                let page = self.current_page();
                if let Some(i) = page.entry {
                    self.editing = None;
                    fields::remove_entry(&mut self.doc, page.section, i);
                    self.unread.retain(|(p, _), _| p.section != page.section);
                    self.field = 0;
                    self.check();
                    self.message = Some(format!("{} removed", page.section.entry_name()));
                }
                Step::Continue
            }
            (_, false) => {
                self.message = Some("nothing changed".into());
                Step::Continue
            }
        }
    }

    fn save(&mut self) -> Step {
        let problems = self.all_problems();
        if !problems.is_empty() {
            self.message = Some(format!(
                "not saved: {} problem{} to fix first (listed above)",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ));
            return Step::Continue;
        }
        Step::Save(Box::new(self.doc.clone()))
    }

    /// After the driver saved: the saved document is the new original.
    pub fn saved(&mut self, what: String) {
        self.original = self.doc.clone();
        self.original_text = Some(self.text());
        self.message = Some(what);
    }

    fn add_entry(&mut self) {
        self.commit();
        let section = self.current_page().section;
        if !section.is_list() {
            self.message =
                Some("Ctrl-A adds a network port, registry or account on its page".into());
            return;
        }
        match fields::add_entry(&mut self.doc, section) {
            Ok(i) => {
                self.check();
                if let Some(at) = self
                    .pages
                    .iter()
                    .position(|p| p.section == section && p.entry == Some(i))
                {
                    self.page = at;
                }
                self.field = 0;
                self.message = Some(format!("{} added", section.entry_name()));
            }
            Err(why) => self.message = Some(why),
        }
    }

    fn go_to_page(&mut self, to: usize) {
        self.commit();
        self.page = to.min(self.pages.len() - 1);
        self.field = 0;
        self.scroll = 0;
    }

    fn review_key(&mut self, key: Key) {
        match key {
            Key::Tab | Key::BackTab | Key::Char('c') | Key::Char('d') => {
                self.review = match self.review {
                    ReviewView::Document => ReviewView::Changes,
                    ReviewView::Changes => ReviewView::Document,
                };
                self.scroll = 0;
            }
            Key::Down | Key::Enter => self.scroll = self.scroll.saturating_add(1),
            Key::Up => self.scroll = self.scroll.saturating_sub(1),
            Key::End => self.scroll = u16::MAX / 2,
            Key::Home => self.scroll = 0,
            _ => {}
        }
    }

    fn field_key(&mut self, key: Key) {
        let fields = self.current_fields();
        if fields.is_empty() {
            if matches!(key, Key::Enter | Key::Tab | Key::Down) {
                self.go_to_page(self.page + 1);
            }
            return;
        }
        let field = fields[self.field.min(fields.len() - 1)].clone();
        match key {
            Key::Tab | Key::Down | Key::Enter => {
                self.commit();
                let n = self.current_fields().len();
                if self.field + 1 < n {
                    self.field += 1;
                } else if key != Key::Down {
                    self.go_to_page(self.page + 1);
                }
            }
            Key::BackTab | Key::Up => {
                self.commit();
                self.field = self.field.saturating_sub(1);
            }
            _ if field.kind == Kind::Kept => {
                self.message =
                    Some("this setting is kept as in the file; edit the file to change it".into());
            }
            _ if field.kind == Kind::YesNo => {
                let now = field.value == "yes";
                let to = match key {
                    Key::Char(' ') | Key::Left | Key::Right => !now,
                    Key::Char('y') | Key::Char('Y') => true,
                    Key::Char('n') | Key::Char('N') => false,
                    _ => return,
                };
                self.apply(&field, if to { "yes" } else { "no" });
            }
            _ => self.edit(&field, key),
        }
    }

    /// A key typed into a text field.
    fn edit(&mut self, field: &Field, key: Key) {
        let (mut text, mut cursor) = self
            .editing
            .take()
            .unwrap_or_else(|| (field.value.clone(), field.value.chars().count()));
        let len = text.chars().count();
        let byte = |t: &str, c: usize| t.char_indices().nth(c).map_or(t.len(), |(b, _)| b);
        match key {
            Key::Char(c) if !c.is_control() => {
                let at = byte(&text, cursor);
                text.insert(at, c);
                cursor += 1;
            }
            Key::Backspace if cursor > 0 => {
                let at = byte(&text, cursor - 1);
                text.remove(at);
                cursor -= 1;
            }
            Key::Delete if cursor < len => {
                let at = byte(&text, cursor);
                text.remove(at);
            }
            Key::Left => cursor = cursor.saturating_sub(1),
            Key::Right => cursor = (cursor + 1).min(len),
            Key::Home | Key::Ctrl('b') => cursor = 0,
            Key::End | Key::Ctrl('e') => cursor = len,
            Key::Ctrl('u') => {
                text.clear();
                cursor = 0;
            }
            _ => {}
        }
        self.editing = Some((text.clone(), cursor));
        // Live: the document follows every key, and so do the problems shown. An SSH key is
        // set when the field is left: adding or emptying one adds or removes a field, and the
        // fields after it would move under the cursor.
        if !matches!(field.id, FieldId::UserKey(_)) {
            self.apply(field, &text);
        }
    }

    /// Sets `field` from `text` and checks the document again.
    fn apply(&mut self, field: &Field, text: &str) {
        let page = self.current_page();
        let set = fields::set(&mut self.doc, page, field.id, text);
        let moved = set.is_ok() && field.id == FieldId::RegistryHost;
        match set {
            Ok(()) => {
                self.unread.remove(&(page, field.id));
            }
            Err(why) => {
                self.unread
                    .insert((page, field.id), (text.to_string(), why));
            }
        }
        self.check();
        // A renamed registry moves to its new place among the pages.
        if moved {
            if let Some(i) = fields::registry_hosts(&self.doc)
                .iter()
                .position(|h| h == text.trim())
            {
                if let Some(at) = self
                    .pages
                    .iter()
                    .position(|p| p.section == Section::Registries && p.entry == Some(i))
                {
                    self.page = at;
                }
            }
        }
    }

    /// Leaves the field being typed into: its text is applied and shown as the document has it.
    fn commit(&mut self) {
        if let Some((text, _)) = self.editing.take() {
            let fields = self.current_fields();
            if let Some(field) = fields.get(self.field) {
                if matches!(field.id, FieldId::UserKey(_)) {
                    self.apply(field, &text);
                }
            }
        }
    }

    /// The cursor's column within the focused field's text, while typing.
    pub fn cursor(&self) -> Option<usize> {
        self.editing.as_ref().map(|(_, c)| *c)
    }
}

/// The document path of a page's entry or section (`users[1]`), for problems no field shows.
fn page_path(doc: &Unattended, page: Page) -> Option<String> {
    Some(match (page.section, page.entry) {
        (Section::Appliance, _) => "appliance".into(),
        (Section::Host, _) => "ntp".into(),
        (Section::Network, Some(i)) => format!("network.interfaces[{i}]"),
        // No port yet: a problem of the network section as a whole (name servers without a port).
        (Section::Network, None) => "network".into(),
        (Section::Dns, _) => "network.dns".into(),
        (Section::Proxy, _) => "proxy".into(),
        (Section::Kubernetes, _) => "kubernetes".into(),
        (Section::Registries, Some(i)) => {
            let host = fields::registry_hosts(doc)
                .get(i)
                .cloned()
                .unwrap_or_default();
            format!("registries.configs.{host}")
        }
        (Section::Console, _) => "console".into(),
        (Section::Users, Some(i)) => format!("users[{i}]"),
        _ => return None,
    })
}

/// Whether a problem at `path` is about `field` (the same place or inside it).
pub(crate) fn is_under(path: &str, field: &str) -> bool {
    match path.strip_prefix(field) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => {
            // A registry's host field stands for both of its entries.
            field.strip_prefix("registries.*.").is_some_and(|host| {
                path == format!("registries.mirrors.{host}")
                    || path == format!("registries.configs.{host}")
            })
        }
    }
}

#[cfg(test)]
mod tests;
