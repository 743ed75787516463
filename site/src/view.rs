//! Drawing the screens: 80x24 and up, no colour (reverse video marks the field being edited,
//! `!` marks a problem), ASCII frames so any terminal and serial line shows them.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{App, Question, ReviewView};
use crate::fields::{Field, Kind, Section};
use p6os_config::unattended::redact_userinfo;

use crate::review;

/// The smallest screen the pages are laid out for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

const ASCII: border::Set = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

const LABEL_WIDTH: usize = 19;

fn reversed() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// Draws the whole screen for `app`.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "This screen is {}x{}: the setup needs at least {MIN_WIDTH}x{MIN_HEIGHT}. Make the window larger, or press Ctrl-Q to leave.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [title, body, help, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(10),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, app, title);
    let [nav, main] = Layout::horizontal([Constraint::Length(22), Constraint::Min(40)]).areas(body);
    draw_nav(frame, app, nav);
    let page = app.current_page();
    let block = Block::default()
        .borders(Borders::ALL)
        .border_set(ASCII)
        .title(Span::styled(format!(" {} ", page_title(app)), bold()));
    let inner = block.inner(main);
    frame.render_widget(block, main);
    let help_text = match page.section {
        Section::Start => {
            frame.render_widget(
                Paragraph::new(start_lines(app)).wrap(Wrap { trim: false }),
                inner,
            );
            start_help()
        }
        Section::Review => draw_review(frame, app, inner),
        _ => draw_fields(frame, app, inner),
    };
    frame.render_widget(Paragraph::new(help_text).wrap(Wrap { trim: true }), help);
    let status_text = match app.question {
        Some(Question::QuitUnsaved) => "Leave without saving the changes? (y/n)".to_string(),
        Some(Question::RemoveEntry) => format!("Remove this {}? (y/n)", page.section.entry_name()),
        None => app.message.clone().unwrap_or_default(),
    };
    frame.render_widget(Paragraph::new(status_text).style(bold()), status);
    let key_help = match page.section {
        Section::Review => "^S or ^W save  Tab document/changes  Up/Down scroll  ^P back  ^Q quit",
        _ if page.section.is_list() => {
            "Tab next  ^N/^P page  ^A add  ^D remove  ^S review  ^Q quit"
        }
        _ => "Tab/Enter next field  ^N/^P next/previous page  ^S review and save  ^Q quit",
    };
    frame.render_widget(Paragraph::new(key_help).style(reversed()), keys);
}

fn draw_title(frame: &mut Frame, app: &App, area: Rect) {
    let changed = if app.changed() { " (changed)" } else { "" };
    let left = format!(" P6OS site setup: {}{changed}", app.file.display());
    let right = format!("page {} of {} ", app.page + 1, app.pages.len());
    let pad = (area.width as usize).saturating_sub(left.chars().count() + right.len());
    let line = format!("{left}{}{right}", " ".repeat(pad));
    frame.render_widget(Paragraph::new(line).style(reversed()), area);
}

fn page_title(app: &App) -> String {
    let page = app.current_page();
    let count = crate::fields::entries(&app.doc, page.section);
    match page.entry {
        Some(i) => format!("{} {} of {count}", page.section.title(), i + 1),
        None if page.section.is_list() => format!("{}: none", page.section.title()),
        None => page.section.title().to_string(),
    }
}

fn draw_nav(frame: &mut Frame, app: &App, area: Rect) {
    let lines: Vec<Line> = app
        .pages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p.name();
            let bad = page_has_problems(app, i);
            let mark = match (i == app.page, bad) {
                (true, _) => ">",
                (false, true) => "!",
                (false, false) => " ",
            };
            let text = format!(
                "{mark}{}{name}",
                if bad && i == app.page { "!" } else { " " }
            );
            if i == app.page {
                Line::styled(format!("{text:<20}"), reversed())
            } else {
                Line::raw(text)
            }
        })
        .collect();
    // Keep the current page in sight on a short screen.
    let rows = area.height.saturating_sub(2) as usize;
    let skip = app.page.saturating_sub(rows.saturating_sub(1)) as u16;
    let nav = Paragraph::new(lines).scroll((skip, 0)).block(
        Block::default()
            .borders(Borders::ALL)
            .border_set(ASCII)
            .title(" Pages "),
    );
    frame.render_widget(nav, area);
}

/// Whether a page shows a problem (the nav marks it).
fn page_has_problems(app: &App, index: usize) -> bool {
    let page = app.pages[index];
    if app.unread.keys().any(|(p, _)| *p == page) {
        return true;
    }
    match page.section {
        Section::Start | Section::Review => false,
        _ => crate::fields::fields(&app.doc, page).iter().any(|f| {
            app.problems
                .iter()
                .any(|d| crate::app::is_under(&d.field, &f.path))
        }),
    }
}

fn start_help() -> String {
    "Tab or Enter goes to the next field, Ctrl-N to the next page. Nothing is written until you save on the last page.".into()
}

/// The start page: what this is, how to move, and what of the opened file is not kept.
pub fn start_lines(app: &App) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::raw("These pages set up one site's appliance: its name, network, proxy, management console and accounts."),
        Line::raw(""),
        Line::raw("Each setting is checked as you type: a problem shows under it with a '!', and its page is marked '!' in the list on the left. Settings these pages do not show are kept as they are."),
        Line::raw(""),
        Line::raw("Move with Tab, Enter and the arrow keys. Next page: Ctrl-N or Page Down; back: Ctrl-P or Page Up. Review and save: Ctrl-S (or Ctrl-W). Leave: Ctrl-Q."),
    ];
    if !app.opened_problems.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            "! The file opened has parts that cannot be kept:",
            bold(),
        ));
        for d in app.opened_problems.iter() {
            lines.push(Line::raw(format!("! {}: {}", d.field, d.message)));
            if let Some(h) = &d.hint {
                lines.push(Line::raw(format!("  instead: {h}")));
            }
        }
    }
    lines
}

/// The fields of a page; the help text of the focused one.
fn draw_fields(frame: &mut Frame, app: &App, area: Rect) -> String {
    let fields = app.current_fields();
    let page = app.current_page();
    if fields.is_empty() {
        let text = if page.section.is_list() {
            format!(
                "No {} is set. Press Ctrl-A to add one, or Ctrl-N to go on.",
                page.section.entry_name()
            )
        } else {
            String::new()
        };
        let mut lines = vec![Line::raw(text)];
        for p in app.page_problems() {
            lines.push(Line::raw(format!("! {p}")));
        }
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
        return String::new();
    }
    let focused = app.field.min(fields.len() - 1);
    let value_width = (area.width as usize).saturating_sub(LABEL_WIDTH + 3);
    let mut lines: Vec<Line> = Vec::new();
    let mut focus_line = 0;
    for (i, f) in fields.iter().enumerate() {
        if i == focused {
            focus_line = lines.len();
        }
        lines.push(field_line(app, f, i == focused, value_width));
        for p in app.problems_of(f) {
            lines.push(Line::raw(format!("  ! {p}")));
        }
    }
    for p in app.page_problems() {
        lines.push(Line::raw(format!("! {p}")));
    }
    if let Some(note) = kept_note(app) {
        lines.push(Line::raw(""));
        lines.push(Line::raw(note));
    }
    let rows = area.height as usize;
    let skip = focus_line.saturating_sub(rows.saturating_sub(3)) as u16;
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((skip, 0))
            .wrap(Wrap { trim: false }),
        area,
    );
    fields[focused].help.to_string()
}

/// One field: its label, its value (stars for secrets), the cursor while typing.
fn field_line(app: &App, f: &Field, focused: bool, width: usize) -> Line<'static> {
    let label = format!("{:<w$} ", f.label, w = LABEL_WIDTH);
    if !focused {
        // A secret set shows as eight stars, whatever its length.
        // A URL's login (a proxy's `user:password@`) shows only while its field is edited.
        let shown = match f.kind {
            Kind::Secret if !f.value.is_empty() => "********".to_string(),
            _ if f.value.contains("://") => f
                .value
                .split(", ")
                .map(redact_userinfo)
                .collect::<Vec<_>>()
                .join(", "),
            _ => f.value.clone(),
        };
        let text = fit(&shown, width, 0);
        return Line::from(vec![Span::raw(label), Span::raw(format!("[{text}]"))]);
    }
    let shown: String = match f.kind {
        Kind::Secret => "*".repeat(f.value.chars().count()),
        _ => f.value.clone(),
    };
    let cursor = app.cursor().unwrap_or(shown.chars().count());
    let text = fit(&shown, width, cursor);
    let mut spans = vec![Span::styled(label, bold()), Span::raw("[")];
    // The cursor is a reversed character (a blank at the end), so it shows without colour.
    let start = shown
        .chars()
        .count()
        .saturating_sub(text.chars().count())
        .min(cursor);
    let start = if cursor >= start + width {
        cursor + 1 - width
    } else {
        start
    };
    let visible: Vec<char> = shown.chars().skip(start).take(width).collect();
    let at = cursor - start;
    let before: String = visible.iter().take(at).collect();
    let under: String = visible.get(at).map_or(" ".into(), |c| c.to_string());
    let after: String = visible.iter().skip(at + 1).collect();
    spans.push(Span::styled(before, reversed()));
    spans.push(Span::styled(
        under,
        Style::default().add_modifier(Modifier::REVERSED | Modifier::UNDERLINED | Modifier::BOLD),
    ));
    let used = visible.len().max(at + 1);
    let pad = " ".repeat(width.saturating_sub(used));
    spans.push(Span::styled(format!("{after}{pad}"), reversed()));
    spans.push(Span::raw("]"));
    Line::from(spans)
}

/// `text` cut to `width` characters, keeping `cursor` in sight.
fn fit(text: &str, width: usize, cursor: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return format!("{text:<width$}");
    }
    let start = cursor
        .saturating_sub(width.saturating_sub(1))
        .min(n - width);
    text.chars().skip(start).take(width).collect()
}

/// What a page does not show but keeps.
fn kept_note(app: &App) -> Option<String> {
    let page = app.current_page();
    match (page.section, page.entry) {
        (Section::Network, Some(i)) => {
            let f = app.doc.network.as_ref()?.interfaces.get(i)?;
            (!f.routes.is_empty() || !f.vlans.is_empty())
                .then(|| "Routes and VLANs of this port are kept as in the file.".into())
        }
        (Section::Kubernetes, _) => {
            let k = app.doc.kubernetes.as_ref()?;
            (!k.labels.is_empty() || !k.taints.is_empty() || !k.extra_args.is_empty())
                .then(|| "Node labels, taints and extra arguments are kept as in the file.".into())
        }
        _ => None,
    }
}

/// The review page: problems left, then the document or its changes; its help text.
fn draw_review(frame: &mut Frame, app: &App, area: Rect) -> String {
    let problems = app.all_problems();
    let mut lines: Vec<Line> = Vec::new();
    if problems.is_empty() {
        lines.push(Line::styled(
            format!("No problems. Ctrl-S saves to {}.", app.destination),
            bold(),
        ));
    } else {
        lines.push(Line::styled(
            format!(
                "{} problem{} to fix before saving:",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ),
            bold(),
        ));
        for p in &problems {
            lines.push(Line::raw(format!("! {p}")));
        }
    }
    lines.push(Line::raw(""));
    match app.review {
        ReviewView::Document => {
            lines.push(Line::styled("The document (secrets hidden):", bold()));
            for l in review::document(app).lines() {
                lines.push(Line::raw(format!("  {l}")));
            }
        }
        ReviewView::Changes => {
            lines.push(Line::styled(
                "Changes (- before, + after), secrets hidden:",
                bold(),
            ));
            let changes = review::changes(app);
            if changes.is_empty() {
                lines.push(Line::raw("  (no changes)"));
            }
            for l in changes {
                lines.push(Line::raw(l));
            }
        }
    }
    let max = (lines.len() as u16).saturating_sub(area.height);
    frame.render_widget(Paragraph::new(lines).scroll((app.scroll.min(max), 0)), area);
    "Tab switches between the whole document and the changes. Comments of the file opened are not kept.".into()
}
