//! The fleet: the overview (counts and a filtered, paged table), one appliance, and the ids
//! waiting for an operator (pending ids, keys waiting for approval).

use axum::extract::{RawQuery, State};
use maud::{html, Markup};
use p6os_protocol::{Appliance, Health, Status};

use super::layout::{form_error, labels, page, when, Nav, PageError, PageResult};
use crate::api::extract::{Operator, Param};
use crate::api::AppState;
use crate::core::{check_id_field, ListFilter};
use crate::db::{appliances, diagnostics, fleet, siteconfig};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

/// Appliances not heard from for this many heartbeats count as silent.
const SILENT_AFTER_BEATS: u64 = 3;

fn health(a: &Appliance) -> &'static str {
    match a.reported.as_ref().map(|r| r.health) {
        Some(Health::Good) => "good",
        Some(Health::Assessing) => "assessing",
        Some(Health::Unknown) => "unknown",
        None => "-",
    }
}

fn counts(title: &str, rows: &[(String, u64)], link: impl Fn(&str) -> Option<String>) -> Markup {
    html! {
        section.card aria-labelledby=(format!("c-{title}")) {
            h2 id=(format!("c-{title}")) { (title) }
            @if rows.is_empty() {
                p { "none" }
            } @else {
                table.counts {
                    tbody {
                        @for (k, n) in rows {
                            tr {
                                th scope="row" {
                                    @match link(k) {
                                        Some(href) => a href=(href) { (k) },
                                        None => (k),
                                    }
                                }
                                td { (n) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A table of appliances (the overview, pending).
fn appliance_rows(items: &[Appliance], now: u64) -> Markup {
    html! {
        table.list {
            thead {
                tr {
                    th scope="col" { "Id" }
                    th scope="col" { "Host name" }
                    th scope="col" { "Status" }
                    th scope="col" { "Labels" }
                    th scope="col" { "Version" }
                    th scope="col" { "Health" }
                    th scope="col" { "Desired" }
                    th scope="col" { "Last seen" }
                }
            }
            tbody {
                @for a in items {
                    tr {
                        td { a href=(format!("/ui/appliances/{}", a.id)) { (a.id) } }
                        td { (a.facts.as_ref().map_or("-", |f| f.hostname.as_str())) }
                        td { span class=(format!("badge {}", a.status.as_str())) { (a.status.as_str()) } }
                        td { (labels(&a.labels)) }
                        td { (a.reported.as_ref().map_or("-", |r| r.version.as_str())) }
                        td { span class=(format!("badge h-{}", health(a))) { (health(a)) } }
                        td { (a.desired_version.as_deref().unwrap_or("-")) }
                        td { (when(a.last_seen, now)) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/?label=k=v&status=&version=&after=`: counts and the appliances, a page at a time.
pub async fn overview(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> PageResult {
    let mut pairs = query_pairs(query.as_deref())?;
    pairs.retain(|(k, v)| !(v.is_empty() && (k == "status" || k == "version" || k == "label")));
    let page_query = PageQuery::take(&mut pairs)?;
    let mut filter = ListFilter::parse(&pairs)?;
    let label_text = labels(&filter.labels);
    let out_of_scope = who.scope.narrow(&filter.labels).is_err();
    filter.labels = who.scope.narrow(&filter.labels).unwrap_or_default();
    let now = st.clock.now();
    let silent_since = now.saturating_sub(SILENT_AFTER_BEATS * u64::from(st.heartbeat_secs));
    let selector = filter.labels.clone();
    let (summary, (items, next)) = if out_of_scope {
        (fleet::Summary::default(), (Vec::new(), None))
    } else {
        st.db
            .run(move |c| {
                let summary = fleet::summary(c, &selector, silent_since)?;
                let list = appliances::list(c, &filter, &page_query)?;
                Ok::<_, crate::db::DbError>((summary, list))
            })
            .await?
    };
    let status_value = pairs
        .iter()
        .find(|(k, _)| k == "status")
        .map_or("", |(_, v)| v.as_str())
        .to_string();
    let mut base = pairs.clone();
    base.retain(|(k, _)| k != "after");
    let next_href = next.map(|n| {
        let mut q = base.clone();
        q.push(("after".into(), n));
        format!(
            "/ui/?{}",
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    });
    let body = html! {
        form.filters method="get" action="/ui/" role="search" {
            label for="f-label" { "Labels (k=v)" }
            input id="f-label" name="label" type="text" placeholder="site=store-12"
                value=(if label_text == "-" { String::new() } else { label_text.replace(", ", ",") });
            label for="f-status" { "Status" }
            select id="f-status" name="status" {
                option value="" selected[status_value.is_empty()] { "any" }
                @for s in ["ready", "unpaired", "pending"] {
                    option value=(s) selected[status_value == s] { (s) }
                }
            }
            button type="submit" { "Filter" }
        }
        div id="summary" data-live aria-live="polite" {
            p.total { (summary.total) " appliances" @if !who.scope.whole_fleet() {
                " in your scope (" (labels(&who.scope.0)) ")" } }
            div.cards {
                (counts("By status", &summary.by_status, |k| Some(format!("/ui/?status={k}"))))
                (counts("By version", &summary.by_version, |_| None))
                (counts("By health", &summary.by_health, |_| None))
                section.card aria-labelledby="c-silent" {
                    h2 id="c-silent" { "Silent" }
                    p { (summary.silent) " not heard from in "
                        (SILENT_AFTER_BEATS * u64::from(st.heartbeat_secs)) " s" }
                }
            }
        }
        div id="appliances" data-live {
            (appliance_rows(&items, now))
            @if let Some(href) = next_href {
                p { a href=(href) rel="next" { "Next page" } }
            }
        }
    };
    Ok(page(&who, Nav::Fleet, "Fleet", body))
}

/// `GET /ui/pending`: ids devices asked to pair with, and keys waiting for approval.
pub async fn pending(State(st): State<AppState>, Operator(who): Operator) -> PageResult {
    let now = st.clock.now();
    let scope = who.scope.0.clone();
    let (asked, waiting) = st
        .db
        .run(move |c| {
            let pending = ListFilter {
                status: Some(Status::Pending),
                labels: scope.clone(),
                version: None,
            };
            let first = PageQuery {
                limit: 200,
                after: None,
            };
            let (asked, _) = appliances::list(c, &pending, &first)?;
            let unpaired = ListFilter {
                status: Some(Status::Unpaired),
                labels: scope,
                version: None,
            };
            let (waiting, _) = appliances::list(c, &unpaired, &first)?;
            Ok::<_, crate::db::DbError>((asked, waiting))
        })
        .await?;
    let waiting: Vec<Appliance> = waiting
        .into_iter()
        .filter(|a| a.requested_fingerprint.is_some())
        .collect();
    let operator = who.may(p6os_protocol::users::Role::Operator);
    let body = html! {
        div id="pending" data-live {
            section aria-labelledby="h-approve" {
                h2 id="h-approve" { "Keys waiting for approval" }
                @if waiting.is_empty() {
                    p { "No device key is waiting." }
                } @else {
                    table.list {
                        thead { tr {
                            th scope="col" { "Id" } th scope="col" { "Host name" }
                            th scope="col" { "Key fingerprint" } th scope="col" { "Asked" }
                            @if operator { th scope="col" { "Action" } }
                        } }
                        tbody {
                            @for a in &waiting {
                                @let fp = a.requested_fingerprint.clone().unwrap_or_default();
                                tr {
                                    td { a href=(format!("/ui/appliances/{}", a.id)) { (a.id) } }
                                    td { (a.facts.as_ref().map_or("-", |f| f.hostname.as_str())) }
                                    td { code.fp { (fp) } }
                                    td { (when(a.last_seen.or(Some(a.created_at)), now)) }
                                    @if operator {
                                        td {
                                            form data-api=(format!("/api/v1/appliances/{}/approve", a.id))
                                                data-method="POST" {
                                                input type="hidden" name="fingerprint" value=(fp);
                                                button type="submit" aria-label=(format!("Approve {}", a.id)) { "Approve" }
                                                (form_error())
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-asked" {
                h2 id="h-asked" { "Ids no operator registered" }
                p.hint { "A device asked to pair with one of these ids. Register it to let it in." }
                @if asked.is_empty() {
                    p { "None." }
                } @else {
                    (appliance_rows(&asked, now))
                }
            }
        }
        @if operator {
            section aria-labelledby="h-register" {
                h2 id="h-register" { "Register an appliance" }
                form.stack data-api="/api/v1/appliances" data-method="POST" {
                    p {
                        label for="r-id" { "Id" }
                        input id="r-id" name="id" type="text" required;
                    }
                    p {
                        label for="r-labels" { "Labels (k=v,k=v)" }
                        input id="r-labels" name="labels" type="text" data-kind="labels"
                            value=(if who.scope.whole_fleet() { String::new() } else { labels(&who.scope.0).replace(", ", ",") });
                    }
                    p {
                        label for="r-pairing" { "Pairing" }
                        select id="r-pairing" name="pairing" {
                            option value="approve" { "an operator approves the device's key" }
                            option value="first-key" { "the first key that asks is bound" }
                        }
                    }
                    button type="submit" { "Register" }
                    (form_error())
                }
            }
        }
    };
    Ok(page(&who, Nav::Pending, "Pending", body))
}

/// `GET /ui/appliances/{id}`: facts, slots, boot and upgrade history, configuration,
/// diagnostics.
pub async fn appliance(
    State(st): State<AppState>,
    Operator(who): Operator,
    Param(id): Param,
) -> PageResult {
    check_id_field(&id)?;
    let now = st.clock.now();
    let key = id.clone();
    let found = st
        .db
        .run(move |c| {
            let Some(a) = appliances::get(c, &key)? else {
                return Ok(None);
            };
            let last = PageQuery {
                limit: 50,
                after: None,
            };
            let events = fleet::recent_events(c, &key, 50)?;
            let config = c.read(|c| siteconfig::show(c, &key))?;
            let diags = diagnostics::list(c, &key, None, &last)?
                .map(|(d, _)| d)
                .unwrap_or_default();
            Ok::<_, crate::db::DbError>(Some((a, events, config, diags)))
        })
        .await?;
    let Some((a, events, config, diags)) = found else {
        return Err(PageError(ApiError::not_found(format!("no appliance {id}"))));
    };
    let operator = who.may(p6os_protocol::users::Role::Operator);
    let title = format!("Appliance {}", a.id);
    let body = html! {
        div id="detail" data-live {
            div.cards {
                section.card aria-labelledby="h-state" {
                    h2 id="h-state" { "State" }
                    dl {
                        dt { "Status" } dd { (a.status.as_str()) }
                        dt { "Labels" } dd { (labels(&a.labels)) }
                        dt { "Running" } dd { (a.reported.as_ref().map_or("-", |r| r.version.as_str())) }
                        dt { "Slot" } dd { (a.reported.as_ref().map_or("-", |r| r.slot.as_str())) }
                        dt { "Health" } dd { (health(&a)) }
                        dt { "Desired" } dd { (a.desired_version.as_deref().unwrap_or("-")) }
                        dt { "Last seen" } dd { (when(a.last_seen, now)) }
                        dt { "Key" } dd { code.fp { (a.key_fingerprint.as_deref().unwrap_or("-")) } }
                        @if let Some(p) = a.reported.as_ref().and_then(|r| r.progress.as_ref()) {
                            dt { "Upgrade" } dd {
                                (p.version) ": " (crate::core::phase_str(p.phase)) " "
                                (crate::client::format::bytes(p.done_bytes)) " of "
                                (crate::client::format::bytes(p.total_bytes))
                                @if let Some(m) = &p.message { " (" (m) ")" }
                            }
                        }
                        @if let Some(u) = a.reported.as_ref().and_then(|r| r.last_upgrade.as_ref()) {
                            dt { "Last upgrade" } dd {
                                (u.version) ": " (crate::core::outcome_str(u.outcome))
                                @if let Some(slot) = &u.slot { " in slot " (slot) }
                                @if let Some(r) = &u.reason { " (" (r) ")" }
                            }
                        }
                    }
                }
                @if let Some(f) = &a.facts {
                    section.card aria-labelledby="h-facts" {
                        h2 id="h-facts" { "Facts" }
                        dl {
                            dt { "Host name" } dd { (f.hostname) }
                            dt { "Image" } dd { (f.image_name) " " (f.image_version) " (" (f.base_os) ")" }
                            dt { "Kernel" } dd { (f.kernel) }
                            dt { "CPU" } dd { (f.cpu_count) " × " (f.cpu_model) }
                            dt { "Memory" } dd { (crate::client::format::bytes(f.memory_bytes)) }
                            dt { "Disks" } dd {
                                @for d in &f.disks { (d.name) " " (crate::client::format::bytes(d.size_bytes)) " " }
                            }
                            dt { "Network" } dd {
                                @for n in &f.nics { (n.name) " " (n.addresses.join(" ")) br; }
                            }
                            dt { "Agent" } dd { (f.agent_version) }
                        }
                    }
                }
                section.card aria-labelledby="h-config" {
                    h2 id="h-config" { "Site configuration" }
                    @match &config {
                        None => p { "None set from the console." },
                        Some((c, _)) => dl {
                            dt { "Configuration" } dd { "#" (c.config) " (serial " (c.serial.map_or("-".into(), |s| s.to_string())) ")" }
                            dt { "Set" } dd { (when(Some(c.set_at), now)) }
                            dt { "Outcome" } dd { (c.outcome.map_or("not reported yet", |o| o.as_str())) }
                            @for p in &c.problems { dt { "Problem" } dd { (p) } }
                        },
                    }
                }
            }
            section aria-labelledby="h-diag" {
                h2 id="h-diag" { "Diagnostics" }
                @if diags.is_empty() { p { "None asked for." } } @else {
                    table.list {
                        thead { tr { th scope="col" { "#" } th scope="col" { "Status" } th scope="col" { "Asked" } th scope="col" { "Size" } } }
                        tbody {
                            @for d in &diags {
                                tr {
                                    td {
                                        @if d.held && operator {
                                            a href=(format!("/api/v1/diagnostics/{}/content", d.id)) download=(format!("diagnostics-{}-{}.tar.gz", a.id, d.id)) { (d.id) }
                                        } @else { (d.id) }
                                    }
                                    td { (d.status(now).as_str()) }
                                    td { (when(Some(d.requested_at), now)) }
                                    td { (d.size.map_or("-".into(), crate::client::format::bytes)) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-events" {
                h2 id="h-events" { "Events (boots, upgrades, configuration), newest first" }
                @if events.is_empty() { p { "None yet." } } @else {
                    table.list {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "What" } } }
                        tbody {
                            @for e in &events {
                                tr { td { (when(Some(e.at), now)) } td { (e.kind) } td { (e.message) } }
                            }
                        }
                    }
                }
            }
        }
        @if operator {
            section aria-labelledby="h-actions" {
                h2 id="h-actions" { "Actions" }
                form.inline data-api=(format!("/api/v1/appliances/{}/desired", a.id)) data-method="PUT" {
                    label for="d-version" { "Desired version" }
                    input id="d-version" name="version" type="text" data-optional placeholder="empty: none";
                    button type="submit" { "Set" }
                    (form_error())
                }
                form.inline data-api=(format!("/api/v1/appliances/{}/diagnostics", a.id)) data-method="POST" {
                    button type="submit" { "Ask for diagnostics" }
                    (form_error())
                }
            }
        }
    };
    Ok(page(&who, Nav::Fleet, &title, body))
}
