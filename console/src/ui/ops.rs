//! Fleet operations: bundles, rollouts (live progress per wave), site configurations.

use axum::extract::{RawQuery, State};
use maud::{html, Markup};
use p6os_protocol::rollout::{Rollout, RolloutState, Totals};
use p6os_protocol::users::Role;

use super::layout::{form_error, labels, page, when, Nav, PageError, PageResult};
use crate::api::extract::{Operator, Param};
use crate::api::AppState;
use crate::db::{bundles, rollouts};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

fn next_link(base: &str, next: Option<String>) -> Markup {
    html! {
        @if let Some(n) = next {
            p { a rel="next" href=(format!("{base}?after={}", serde_urlencoded::to_string([("", n.as_str())]).unwrap_or_default().trim_start_matches('='))) { "Next page" } }
        }
    }
}

/// `GET /ui/bundles?after=`.
pub async fn bundles_page(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> PageResult {
    let page_query = PageQuery::only(query_pairs(query.as_deref())?)?;
    let now = st.clock.now();
    let (items, next) = st
        .db
        .run(move |c| bundles::list(c, &page_query))
        .await?
        .ok_or_else(|| ApiError::field("after", "no such bundle: follow the Next link"))?;
    let body = html! {
        @if who.may(Role::Operator) {
            section aria-labelledby="h-upload" {
                h2 id="h-upload" { "Upload a bundle" }
                form.inline data-api="/api/v1/bundles" data-method="POST" data-kind="file" {
                    label for="b-file" { "Bundle file (.p6b, signed)" }
                    input id="b-file" name="file" type="file" accept=".p6b" required;
                    button type="submit" { "Upload" }
                    (form_error())
                }
            }
        }
        table.list {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Arch" }
                th scope="col" { "Size" } th scope="col" { "Signed by" } th scope="col" { "Uploaded" }
                th scope="col" { "sha256" }
            } }
            tbody {
                @for b in &items {
                    tr {
                        td { (b.name) } td { (b.version) } td { (b.arch) }
                        td { (crate::client::format::bytes(b.size)) }
                        td { code { (b.key_id) } }
                        td { (when(Some(b.uploaded_at), now)) }
                        td { code.fp { (b.sha256.get(..16).unwrap_or(&b.sha256)) "…" } }
                    }
                }
            }
        }
        (next_link("/ui/bundles", next))
    };
    Ok(page(&who, Nav::Bundles, "Bundles", body))
}

/// A progress bar of `t`: blessed and failed among the members.
fn progress(t: &Totals, label: &str) -> Markup {
    let done = t.blessed;
    let failed = t.rolled_back + t.refused;
    let busy = t.downloading + t.installing + t.trial;
    let max = t.devices.max(1);
    html! {
        div.progress {
            progress max=(max) value=(done) aria-label=(label) {}
            span {
                (done) " of " (t.devices) " blessed"
                @if busy > 0 { ", " (busy) " under way" }
                @if failed > 0 { ", " strong.bad { (failed) " failed" } }
                @if t.waiting > 0 { ", " (t.waiting) " waiting" }
            }
        }
    }
}

fn state_badge(s: RolloutState) -> Markup {
    html! { span class=(format!("badge r-{}", s.as_str())) { (s.as_str()) } }
}

/// `GET /ui/rollouts?after=`: every rollout in the user's scope, newest last, and a form to
/// start one.
pub async fn rollouts_page(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> PageResult {
    let page_query = PageQuery::only(query_pairs(query.as_deref())?)?;
    let after = match &page_query.after {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::field("after", "not a rollout id"))?,
    };
    let now = st.clock.now();
    let (items, next) = st
        .db
        .run(move |c| rollouts::list(c, after, &page_query))
        .await?;
    let items: Vec<Rollout> = items
        .into_iter()
        .filter(|r| who.scope.covers(&r.request.selector))
        .collect();
    let body = html! {
        div id="rollouts" data-live aria-live="polite" {
            @if items.is_empty() { p { "No rollout yet." } } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "#" } th scope="col" { "Version" } th scope="col" { "Selector" }
                        th scope="col" { "State" } th scope="col" { "Wave" } th scope="col" { "Progress" }
                        th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for r in &items {
                            tr {
                                td { a href=(format!("/ui/rollouts/{}", r.id)) { "Rollout " (r.id) } }
                                td { (r.request.version) }
                                td { (labels(&r.request.selector)) }
                                td { (state_badge(r.state)) }
                                td { (r.wave + 1) " of " (r.waves.len()) }
                                td { (progress(&r.totals, &format!("rollout {} progress", r.id))) }
                                td { (when(Some(r.updated_at), now)) }
                            }
                        }
                    }
                }
            }
            (next_link("/ui/rollouts", next))
        }
        @if who.may(Role::Operator) {
            section aria-labelledby="h-new" {
                h2 id="h-new" { "Start a rollout" }
                form.stack data-api="/api/v1/rollouts" data-method="POST" data-then="follow" {
                    p {
                        label for="n-version" { "Version (a bundle of it must be uploaded)" }
                        input id="n-version" name="version" type="text" required;
                    }
                    p {
                        label for="n-selector" { "Appliances (labels k=v,k=v; empty: all)" }
                        input id="n-selector" name="selector" type="text" data-kind="labels"
                            value=(if who.scope.whole_fleet() { String::new() } else { labels(&who.scope.0).replace(", ", ",") });
                    }
                    p {
                        label for="n-waves" { "Waves (cumulative: counts or percentages)" }
                        input id="n-waves" name="waves" type="text" data-kind="waves" value="1,10%,100%";
                    }
                    p {
                        label for="n-threshold" { "Pause after this many failures" }
                        input id="n-threshold" name="failure_threshold" type="number" min="1" value="1" data-kind="number";
                    }
                    button type="submit" { "Start" }
                    (form_error())
                }
            }
        }
    };
    Ok(page(&who, Nav::Rollouts, "Rollouts", body))
}

/// `GET /ui/rollouts/{id}`: progress per wave, the members, and pause, resume, abort.
pub async fn rollout_page(
    State(st): State<AppState>,
    Operator(who): Operator,
    Param(id): Param,
) -> PageResult {
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no rollout {id}")))?;
    let now = st.clock.now();
    let found = st
        .db
        .run(move |c| {
            let Some(r) = rollouts::get(c, n)? else {
                return Ok(None);
            };
            let members = rollouts::devices(
                c,
                n,
                None,
                &PageQuery {
                    limit: 200,
                    after: None,
                },
            )?
            .unwrap_or_default();
            Ok::<_, crate::db::DbError>(Some((r, members)))
        })
        .await?;
    let Some((r, (members, more))) = found else {
        return Err(PageError(ApiError::not_found(format!("no rollout {n}"))));
    };
    let operator = who.may(Role::Operator);
    let act = |what: &str, label: &str| {
        html! {
            form.inline data-api=(format!("/api/v1/rollouts/{n}/{what}")) data-method="POST" {
                button type="submit" { (label) }
                (form_error())
            }
        }
    };
    let title = format!("Rollout {n}: version {}", r.request.version);
    let body = html! {
        div id="rollout" data-live aria-live="polite" {
            p {
                (state_badge(r.state))
                @if let Some(reason) = &r.reason { " " span.reason { (reason) } }
            }
            @if operator {
                div.actions {
                    @match r.state {
                        RolloutState::Running => { (act("pause", "Pause")) (act("abort", "Abort")) },
                        RolloutState::Paused => { (act("resume", "Resume")) (act("abort", "Abort")) },
                        _ => {},
                    }
                }
            }
            p { "Appliances: " (labels(&r.request.selector)) ". Failures counted: "
                (r.counted_failures) " of " (r.request.failure_threshold) " allowed." }
            (progress(&r.totals, "whole rollout progress"))
            h2 { "Waves" }
            ol.waves {
                @for (i, w) in r.waves.iter().enumerate() {
                    li class=(if i as u32 == r.wave { "current" } else { "" }) {
                        "Wave " (i + 1) ": "
                        (progress(w, &format!("wave {} progress", i + 1)))
                    }
                }
            }
            h2 { "Members" }
            table.list {
                thead { tr { th scope="col" { "Appliance" } th scope="col" { "Wave" } th scope="col" { "State" } th scope="col" { "Why" } th scope="col" { "Updated" } } }
                tbody {
                    @for m in &members {
                        tr {
                            td { a href=(format!("/ui/appliances/{}", m.id)) { (m.id) } }
                            td { (m.wave + 1) }
                            td { span class=(format!("badge d-{}", m.state.as_str())) { (m.state.as_str()) } }
                            td { (m.reason.as_deref().unwrap_or("")) }
                            td { (when(Some(m.updated_at), now)) }
                        }
                    }
                }
            }
            @if more.is_some() { p { "More members: see " code { "p6os-console rollouts show " (n) } "." } }
        }
    };
    Ok(page(&who, Nav::Rollouts, &title, body))
}

/// `GET /ui/configs`: set a site configuration (unattended.yaml) for one appliance or a
/// selector; the problems come back with their lines.
pub async fn configs_page(Operator(who): Operator) -> PageResult {
    let body = html! {
        p { "A configuration is checked like " code { "p6os validate unattended" }
            " before it is stored; each appliance applies it at its next heartbeat with the \
             first-boot transaction and reports back (see the appliance's page). Secrets in it \
             are never shown again." }
        @if who.may(Role::Operator) {
            form.stack data-api="/api/v1/config" data-method="PUT" data-then="show" {
                fieldset {
                    legend { "For" }
                    p {
                        label for="c-id" { "One appliance (id)" }
                        input id="c-id" name="id" type="text" data-optional;
                    }
                    p {
                        label for="c-selector" { "or every appliance with labels (k=v,k=v)" }
                        input id="c-selector" name="selector" type="text" data-kind="labels" data-optional;
                    }
                }
                p {
                    label for="c-doc" { "unattended.yaml" }
                    textarea id="c-doc" name="document" rows="16" required spellcheck="false" {}
                }
                p {
                    label for="c-sig" { "Signature (.sig from p6os config sign), if the image needs one" }
                    textarea id="c-sig" name="signature" rows="3" data-optional spellcheck="false" {}
                }
                button type="submit" { "Check and set" }
                (form_error())
                output.result {}
            }
        } @else {
            p { "Your role reads configurations on each appliance's page." }
        }
    };
    Ok(page(&who, Nav::Configs, "Site configurations", body))
}
