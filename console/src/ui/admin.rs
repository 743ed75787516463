//! People: one's own tokens and password; for admins every account; the audit log.

use axum::extract::{RawQuery, State};
use maud::html;
use p6os_protocol::users::Role;

use super::layout::{form_error, labels, page, when, Nav, PageResult};
use crate::api::extract::Operator;
use crate::api::AppState;
use crate::db::{audit, users};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

/// `GET /ui/users`: my tokens and password; an admin also sees and manages every account.
pub async fn users_page(State(st): State<AppState>, Operator(who): Operator) -> PageResult {
    let now = st.clock.now();
    let admin = who.may(Role::Admin);
    let me = who.user.clone();
    let (tokens, accounts) = st
        .db
        .run(move |c| {
            let first = PageQuery {
                limit: 200,
                after: None,
            };
            let (tokens, _) = users::list_tokens(c, Some(&me), &first)?;
            let accounts = if admin {
                users::list(c, &first)?.0
            } else {
                Vec::new()
            };
            Ok::<_, crate::db::DbError>((tokens, accounts))
        })
        .await?;
    let body = html! {
        section aria-labelledby="h-tokens" {
            h2 id="h-tokens" { "My API tokens" }
            p.hint { "For the command line: " code { "p6os-console --token-file FILE ..." } }
            table.list {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Action" } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { (when(Some(t.expires_at), now)) }
                            td { (when(t.last_used, now)) }
                            td {
                                form.inline data-api=(format!("/api/v1/tokens/{}", t.id)) data-method="DELETE" {
                                    button type="submit" aria-label=(format!("Revoke token {}", t.name)) { "Revoke" }
                                    (form_error())
                                }
                            }
                        }
                    }
                }
            }
            form.inline data-api="/api/v1/tokens" data-method="POST" data-then="show" {
                label for="t-name" { "New token named" }
                input id="t-name" name="name" type="text" required placeholder="laptop";
                label for="t-days" { "days" }
                input id="t-days" name="days" type="number" min="1" max="3650" value="90" data-kind="number";
                button type="submit" { "Create" }
                (form_error())
                output.result {}
            }
        }
        section aria-labelledby="h-password" {
            h2 id="h-password" { "My password" }
            form.stack data-api="/api/v1/me/password" data-method="PUT" data-then="login" {
                p {
                    label for="p-current" { "Current password" }
                    input id="p-current" name="current" type="password" autocomplete="current-password" data-optional;
                }
                p {
                    label for="p-new" { "New password (12 characters or more)" }
                    input id="p-new" name="new" type="password" autocomplete="new-password" minlength="12" required;
                }
                button type="submit" { "Change (you log in again)" }
                (form_error())
            }
        }
        @if admin {
            section aria-labelledby="h-users" {
                h2 id="h-users" { "Accounts" }
                table.list {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Scope" }
                        th scope="col" { "State" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for u in accounts.iter().map(|u| u.view(now)) {
                            tr {
                                td { (u.name) @if u.bootstrap { " (bootstrap)" } }
                                td { (u.role.as_str()) }
                                td { (labels(&u.scope)) }
                                td {
                                    @if u.disabled { "disabled" }
                                    @else if u.locked_until.is_some() { "locked" }
                                    @else { "active" }
                                }
                                td {
                                    @if !u.bootstrap && u.name != who.user {
                                        form.inline data-api=(format!("/api/v1/users/{}", u.name)) data-method="PUT" {
                                            label for=(format!("role-{}", u.name)) { "Role" }
                                            select id=(format!("role-{}", u.name)) name="role" {
                                                @for r in Role::ALL {
                                                    option value=(r.as_str()) selected[r == u.role] { (r.as_str()) }
                                                }
                                            }
                                            button type="submit" { "Set role" }
                                            (form_error())
                                        }
                                        form.inline data-api=(format!("/api/v1/users/{}", u.name)) data-method="PUT" {
                                            input type="hidden" name="disabled" value=(if u.disabled { "false" } else { "true" }) data-kind="bool";
                                            button type="submit" { @if u.disabled { "Enable" } @else { "Disable" } }
                                            (form_error())
                                        }
                                    }
                                    @if u.locked_until.is_some() {
                                        form.inline data-api=(format!("/api/v1/users/{}", u.name)) data-method="PUT" {
                                            input type="hidden" name="unlock" value="true" data-kind="bool";
                                            button type="submit" { "Unlock" }
                                            (form_error())
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h3 { "Add an account" }
                form.stack data-api="/api/v1/users" data-method="POST" {
                    p { label for="u-name" { "Name" } input id="u-name" name="name" type="text" required; }
                    p {
                        label for="u-role" { "Role" }
                        select id="u-role" name="role" {
                            option value="viewer" { "viewer: reads" }
                            option value="operator" { "operator: registers, configures, rolls out" }
                            option value="admin" { "admin: also accounts and tokens" }
                        }
                    }
                    p { label for="u-scope" { "Scope (labels k=v,k=v; empty: whole fleet)" }
                        input id="u-scope" name="scope" type="text" data-kind="labels"; }
                    p { label for="u-password" { "Password (12 characters or more; empty: tokens only)" }
                        input id="u-password" name="password" type="password" autocomplete="new-password" data-optional; }
                    button type="submit" { "Add" }
                    (form_error())
                }
            }
        }
    };
    Ok(page(&who, Nav::Users, "Users and tokens", body))
}

/// `GET /ui/audit?actor=&after=` (admins).
pub async fn audit_page(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> PageResult {
    let mut pairs = query_pairs(query.as_deref())?;
    let page_query = PageQuery::take(&mut pairs)?;
    page_query.below()?;
    let actor = pairs
        .iter()
        .find(|(k, v)| k == "actor" && !v.is_empty())
        .map(|(_, v)| v.clone());
    if let Some((k, _)) = pairs.iter().find(|(k, _)| k != "actor") {
        return Err(ApiError::field(k.clone(), format!("unknown query parameter {k:?}")).into());
    }
    let now = st.clock.now();
    let who_filter = actor.clone();
    let (items, next) = st
        .db
        .run(move |c| audit::list(c, who_filter.as_deref(), &page_query))
        .await?;
    let with_actor = |extra: Vec<(&str, String)>| {
        let mut q: Vec<(&str, String)> = actor.iter().map(|a| ("actor", a.clone())).collect();
        q.extend(extra);
        serde_urlencoded::to_string(&q).unwrap_or_default()
    };
    let export = format!("/api/v1/audit/export?{}", with_actor(vec![]));
    let body = html! {
        form.filters method="get" action="/ui/audit" role="search" {
            label for="a-actor" { "User" }
            input id="a-actor" name="actor" type="text" value=(actor.clone().unwrap_or_default());
            button type="submit" { "Filter" }
            a href=(export) download="p6os-audit.jsonl" { "Export (JSON lines)" }
        }
        div id="audit" data-live {
            table.list {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "How" }
                    th scope="col" { "From" } th scope="col" { "What" } th scope="col" { "On" }
                    th scope="col" { "Answer" }
                } }
                tbody {
                    @for e in &items {
                        tr {
                            td { (when(Some(e.at_ms / 1000), now)) }
                            td { (e.actor) }
                            td { (e.via.map_or("-", audit::via_str)) }
                            td { (e.source) }
                            td { code { (e.action) } }
                            td { code { (e.target) } }
                            td { span class=(if e.status >= 400 { "badge bad" } else { "badge" }) { (e.status) } }
                        }
                    }
                }
            }
            @if let Some(n) = next {
                p { a rel="next" href=(format!("/ui/audit?{}", with_actor(vec![("after", n)]))) { "Older" } }
            }
        }
    };
    Ok(page(&who, Nav::Audit, "Audit log", body))
}
