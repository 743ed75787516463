//! The API as an OpenAPI 3.1 document: paths written here by hand (method, authentication,
//! status codes), schemas generated from the protocol's types with schemars, so the document
//! cannot drift from the bodies the server parses. A test holds it to the router's routes.

use std::sync::OnceLock;

use p6os_protocol as p;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

#[path = "openapi_siteconfig.rs"]
mod siteconfig_ops;
use siteconfig_ops::SITE_CONFIG_OPS;
#[path = "openapi_users.rs"]
mod user_ops;
use user_ops::USER_OPS;

use crate::access::Access;

#[derive(Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    Octets,
}

#[derive(Clone, Copy)]
enum Out {
    Empty,
    Json(&'static str),
    Octets,
    Any,
    Error,
}

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Body,
    query: &'static [(&'static str, &'static str)],
    responses: &'static [(u16, &'static str, Out)],
}

const BAD: (u16, &str, Out) = (400, "bad input: ErrorBody.field names it", Out::Error);
const UNAUTH: (u16, &str, Out) = (
    401,
    "missing or invalid credentials (token or session)",
    Out::Error,
);
const FORBIDDEN: (u16, &str, Out) = (
    403,
    "these credentials may not do this (role; a device token on an operator route; a \
     session request without its CSRF token)",
    Out::Error,
);
const NOT_FOUND: (u16, &str, Out) = (404, "unknown id", Out::Error);
const TOO_LARGE: (u16, &str, Out) = (413, "body over the limit", Out::Error);
const MEDIA: (u16, &str, Out) = (415, "wrong Content-Type", Out::Error);
const IN_ROLLOUT: (u16, &str, Out) = (
    409,
    "an appliance is in an active rollout (named), which decides its version",
    Out::Error,
);

const LIMIT: (&str, &str) = (
    "limit",
    "items per page: 1 to 500 (more is a 400), default 100; `next` in the answer is set when more follow",
);

const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        body: Body::None,
        query: &[],
        responses: &[(200, "the OpenAPI document", Out::Any)],
    },
    Op {
        method: "post",
        path: "/api/v1/appliances/{id}/pair",
        summary: "Pair a device by its key (the pairing token is in the body): without a \
                  proof the answer is a challenge to sign; with one, ready or pending",
        body: Body::Json("PairRequest"),
        query: &[],
        responses: &[
            (
                200,
                "PairResponse status challenge (no proof yet), or status ready with the \
                 device token",
                Out::Json("PairResponse"),
            ),
            (
                202,
                "not paired: the id is not registered, this key is not approved, or the \
                 pending list is full (PairResponse status pending; the answer does not say \
                 which)",
                Out::Json("PairResponse"),
            ),
            (
                400,
                "bad input: no device key, a proof that does not verify (field proof.*)",
                Out::Error,
            ),
            (403, "wrong pairing token (nothing stored)", Out::Error),
            TOO_LARGE,
            MEDIA,
            (
                429,
                "too many requests from this source or for this id (nothing stored)",
                Out::Error,
            ),
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/appliances/{id}/heartbeat",
        summary: "Report the device's state; learn the desired version and its bundle",
        body: Body::Json("Heartbeat"),
        query: &[],
        responses: &[
            (
                200,
                "the desired version and bundle",
                Out::Json("HeartbeatResponse"),
            ),
            BAD,
            UNAUTH,
            (
                403,
                "the admin token, or another appliance's token",
                Out::Error,
            ),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/bundles/{sha256}/content",
        summary: "Download a bundle (Range, If-Range; always Content-Length)",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the whole file", Out::Octets),
            (206, "the requested range, with Content-Range", Out::Octets),
            BAD,
            UNAUTH,
            (404, "unknown bundle", Out::Error),
            (
                416,
                "range not satisfiable (Content-Range: bytes */len)",
                Out::Error,
            ),
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/appliances",
        summary: "Register an appliance id",
        body: Body::Json("RegisterRequest"),
        query: &[],
        responses: &[
            (
                201,
                "registered (a pending id keeps its facts)",
                Out::Json("Appliance"),
            ),
            BAD,
            UNAUTH,
            FORBIDDEN,
            (409, "already registered", Out::Error),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances",
        summary: "List appliances, sorted by id, a page at a time",
        body: Body::None,
        query: &[
            ("status", "pending, unpaired or ready"),
            ("label", "k=v, repeatable: every label must match"),
            ("version", "the reported (running) version"),
            LIMIT,
            ("after", "the previous page's `next` (an id)"),
        ],
        responses: &[
            (200, "a page of the appliances", Out::Json("AppliancePage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}",
        summary: "One appliance",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the appliance", Out::Json("Appliance")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "delete",
        path: "/api/v1/appliances/{id}",
        summary: "Forget an appliance and its events (its device token stops working)",
        body: Body::None,
        query: &[],
        responses: &[
            (204, "deleted", Out::Empty),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "put",
        path: "/api/v1/appliances/{id}/desired",
        summary: "Set or clear one appliance's desired version",
        body: Body::Json("DesiredRequest"),
        query: &[],
        responses: &[
            (200, "the appliance", Out::Json("Appliance")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            IN_ROLLOUT,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/appliances/{id}/approve",
        summary: "Bind the id to the device key with this fingerprint (a pending id is \
                  registered; a paired one moves to the new key and its old token stops \
                  working)",
        body: Body::Json("ApproveRequest"),
        query: &[],
        responses: &[
            (200, "the appliance", Out::Json("Appliance")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "put",
        path: "/api/v1/appliances/{id}/image",
        summary: "Set the image whose bundles the appliance gets (recorded at pairing)",
        body: Body::Json("ImageRequest"),
        query: &[],
        responses: &[
            (200, "the appliance", Out::Json("Appliance")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}/events",
        summary:
            "An appliance's events, oldest first, a page at a time (the newest 1,000 are kept)",
        body: Body::None,
        query: &[LIMIT, ("after", "the previous page's `next` (a seq)")],
        responses: &[
            (200, "a page of the events", Out::Json("EventPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "put",
        path: "/api/v1/desired",
        summary: "Set or clear the desired version of every appliance matching a label selector",
        body: Body::Json("SelectorDesiredRequest"),
        query: &[],
        responses: &[
            (200, "the ids set", Out::Json("DesiredResponse")),
            (
                400,
                "bad input (an empty selector: field selector)",
                Out::Error,
            ),
            UNAUTH,
            FORBIDDEN,
            IN_ROLLOUT,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/bundles",
        summary: "Upload a signed .p6b bundle (verified before it is kept)",
        body: Body::Octets,
        query: &[],
        responses: &[
            (201, "kept", Out::Json("Bundle")),
            (200, "already held (same content)", Out::Json("Bundle")),
            UNAUTH,
            FORBIDDEN,
            (
                409,
                "same name, version and arch with other content",
                Out::Error,
            ),
            (413, "over 16 GiB", Out::Error),
            MEDIA,
            (
                422,
                "refused: not a bundle, unsigned, untrusted key, damaged",
                Out::Error,
            ),
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/bundles",
        summary: "List the bundles held, a page at a time",
        body: Body::None,
        query: &[LIMIT, ("after", "the previous page's `next` (a sha256)")],
        responses: &[
            (200, "a page of the bundles", Out::Json("BundlePage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
];

const CONFLICT_ROLLOUT: (u16, &str, Out) = (
    409,
    "the order makes no sense in the rollout's state (it says why)",
    Out::Error,
);

/// Staged rollouts (`api::rollouts`).
const ROLLOUT_OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/api/v1/rollouts",
        summary: "Create a staged rollout of a version to the appliances a selector matches",
        body: Body::Json("RolloutRequest"),
        query: &[],
        responses: &[
            (201, "created; the first wave started", Out::Json("Rollout")),
            (
                400,
                "bad input (field named), no registered appliance matches (selector), no \
                 bundle of the version (version)",
                Out::Error,
            ),
            UNAUTH,
            FORBIDDEN,
            (
                409,
                "an appliance it matches is in another active rollout (named)",
                Out::Error,
            ),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/rollouts",
        summary: "List the rollouts, by id, a page at a time",
        body: Body::None,
        query: &[
            LIMIT,
            ("after", "the previous page's `next` (a rollout id)"),
        ],
        responses: &[
            (200, "a page of the rollouts", Out::Json("RolloutPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/rollouts/{id}",
        summary: "One rollout, with its totals in all and per wave",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the rollout", Out::Json("Rollout")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/rollouts/{id}/devices",
        summary: "A rollout's members, by id, a page at a time",
        body: Body::None,
        query: &[
            (
                "state",
                "waiting, downloading, installing, trial, blessed, rolled_back or refused",
            ),
            LIMIT,
            ("after", "the previous page's `next` (an appliance id)"),
        ],
        responses: &[
            (200, "a page of the members", Out::Json("RolloutDevicePage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/rollouts/{id}/pause",
        summary: "Pause a running rollout: no member starts (those under way go on)",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "paused", Out::Json("Rollout")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            CONFLICT_ROLLOUT,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/rollouts/{id}/resume",
        summary: "Resume a paused rollout; the failures so far are not counted again",
        body: Body::None,
        query: &[],
        responses: &[
            (
                200,
                "running (or already paused again, or completed)",
                Out::Json("Rollout"),
            ),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            CONFLICT_ROLLOUT,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/rollouts/{id}/abort",
        summary: "Abort a rollout for good: members that have not started get no version",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "aborted", Out::Json("Rollout")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            CONFLICT_ROLLOUT,
        ],
    },
];

/// Remote diagnostics (`p6os_protocol::diagnostics`).
const DIAGNOSTICS_OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/api/v1/appliances/{id}/diagnostics",
        summary: "Ask an appliance for a diagnostics bundle (passed on in its next heartbeat \
                  answer); one request at a time",
        body: Body::Json("DiagnosticsCreate"),
        query: &[],
        responses: &[
            (201, "a new request", Out::Json("Diagnostics")),
            (
                200,
                "the request already outstanding",
                Out::Json("Diagnostics"),
            ),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}/diagnostics",
        summary: "An appliance's diagnostics requests, newest first, a page at a time",
        body: Body::None,
        query: &[
            LIMIT,
            ("after", "the previous page's `next` (a request number)"),
        ],
        responses: &[
            (200, "a page of the requests", Out::Json("DiagnosticsPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/diagnostics/{n}",
        summary: "One diagnostics request: its status, and the size and sha256 of its bundle",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the request", Out::Json("Diagnostics")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/diagnostics/{n}/content",
        summary: "Download a diagnostics bundle (.tar.zst; the ETag is its sha256)",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the bundle", Out::Octets),
            BAD,
            UNAUTH,
            FORBIDDEN,
            (404, "no such request, or it holds no bundle", Out::Error),
        ],
    },
    Op {
        method: "put",
        path: "/api/v1/diagnostics/{n}/content",
        summary: "A device uploads the bundle of an outstanding request of its own",
        body: Body::Octets,
        query: &[],
        responses: &[
            (200, "stored", Out::Json("Diagnostics")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            (404, "no such request for this device", Out::Error),
            (409, "the request is answered or expired", Out::Error),
            (413, "over the request's max_bytes", Out::Error),
            MEDIA,
        ],
    },
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The security requirement of a route, from what the router's table asks of its callers
/// (`api::route_access`), and the role in `x-p6os-role`.
fn security(access: Option<Access>) -> (Value, Option<&'static str>) {
    let operator = [
        json!({ "operatorToken": [] }),
        json!({ "session": [], "csrf": [] }),
    ];
    match access {
        None | Some(Access::Anyone) => (json!([]), None),
        Some(Access::Device) => (json!([{ "deviceToken": [] }]), None),
        Some(Access::DeviceOr(role)) => {
            let mut all = vec![json!({ "deviceToken": [] })];
            all.extend(operator);
            (Value::Array(all), Some(role.as_str()))
        }
        Some(Access::Operator(role)) => (Value::Array(operator.to_vec()), Some(role.as_str())),
    }
}

fn operation(op: &Op, access: Option<Access>) -> Value {
    let mut o = Map::new();
    o.insert("summary".into(), op.summary.into());
    let (security, role) = security(access);
    o.insert("security".into(), security);
    if let Some(role) = role {
        o.insert("x-p6os-role".into(), role.into());
    }
    let mut params: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    for (name, description) in op.query {
        let schema = if *name == "label" {
            json!({ "type": "array", "items": { "type": "string" } })
        } else if *name == "limit" {
            json!({ "type": "integer", "minimum": 1, "maximum": p::MAX_PAGE_LIMIT })
        } else {
            json!({ "type": "string" })
        };
        params.push(json!({ "name": name, "in": "query", "required": false,
                            "description": description, "schema": schema }));
    }
    if op.method == "get" && op.path == "/api/v1/bundles/{sha256}/content" {
        params.push(json!({ "name": "Range", "in": "header", "required": false,
                            "schema": { "type": "string" }, "description": "bytes=a-, bytes=a-b or bytes=-n" }));
        params.push(json!({ "name": "If-Range", "in": "header", "required": false,
                            "schema": { "type": "string" }, "description": "the ETag: a mismatch sends the whole file" }));
    }
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    match op.body {
        Body::None => {}
        Body::Json(name) => {
            o.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } }),
            );
        }
        Body::Octets => {
            o.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/octet-stream":
                    { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } }),
            );
        }
    }
    let mut responses = Map::new();
    for (code, description, out) in op.responses {
        let content = match out {
            Out::Empty => None,
            Out::Json(name) => Some(json!({ "application/json": { "schema": schema_ref(name) } })),
            Out::Octets => {
                Some(json!({ "application/octet-stream": { "schema": { "type": "string" } } }))
            }
            Out::Any => Some(json!({ "application/json": { "schema": { "type": "object" } } })),
            Out::Error => {
                Some(json!({ "application/json": { "schema": schema_ref("ErrorBody") } }))
            }
        };
        let mut r = json!({ "description": description });
        if let Some(content) = content {
            r["content"] = content;
        }
        responses.insert(code.to_string(), r);
    }
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

fn schemas() -> Map<String, Value> {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    // `subschema_for` registers each named type (and the types it uses) as a definition.
    let _ = (
        g.subschema_for::<p::PairRequest>(),
        g.subschema_for::<p::PairResponse>(),
        g.subschema_for::<p::Heartbeat>(),
        g.subschema_for::<p::HeartbeatResponse>(),
        g.subschema_for::<p::RegisterRequest>(),
        g.subschema_for::<p::Appliance>(),
        g.subschema_for::<p::DesiredRequest>(),
        g.subschema_for::<p::ApproveRequest>(),
        g.subschema_for::<p::ImageRequest>(),
        g.subschema_for::<p::SelectorDesiredRequest>(),
        g.subschema_for::<p::DesiredResponse>(),
        g.subschema_for::<p::Bundle>(),
        g.subschema_for::<p::Event>(),
        g.subschema_for::<p::AppliancePage>(),
        g.subschema_for::<p::EventPage>(),
        g.subschema_for::<p::BundlePage>(),
        g.subschema_for::<p::ErrorBody>(),
    );
    let _ = (
        g.subschema_for::<p::rollout::RolloutRequest>(),
        g.subschema_for::<p::rollout::Rollout>(),
        g.subschema_for::<p::rollout::RolloutPage>(),
        g.subschema_for::<p::rollout::RolloutDevicePage>(),
        g.subschema_for::<p::siteconfig::SetConfigRequest>(),
        g.subschema_for::<p::siteconfig::SetConfigResponse>(),
        g.subschema_for::<p::siteconfig::ConfigRejected>(),
        g.subschema_for::<p::siteconfig::ConfigShow>(),
        g.subschema_for::<p::siteconfig::ConfigHistoryPage>(),
        g.subschema_for::<p::siteconfig::ConfigDocument>(),
        g.subschema_for::<p::siteconfig::ConfigReport>(),
    );
    let _ = (
        g.subschema_for::<p::diagnostics::DiagnosticsCreate>(),
        g.subschema_for::<p::diagnostics::Diagnostics>(),
        g.subschema_for::<p::diagnostics::DiagnosticsPage>(),
    );
    let _ = (
        g.subschema_for::<p::users::LoginRequest>(),
        g.subschema_for::<p::users::LoginAnswer>(),
        g.subschema_for::<p::users::Me>(),
        g.subschema_for::<p::users::PasswordChange>(),
        g.subschema_for::<p::users::UserRequest>(),
        g.subschema_for::<p::users::UserUpdate>(),
        g.subschema_for::<p::users::User>(),
        g.subschema_for::<p::users::UserPage>(),
        g.subschema_for::<p::users::TokenRequest>(),
        g.subschema_for::<p::users::TokenCreated>(),
        g.subschema_for::<p::users::TokenPage>(),
        g.subschema_for::<p::users::AuditPage>(),
        g.subschema_for::<p::users::AuditEntry>(),
    );
    g.take_definitions(true)
}

fn build() -> Value {
    let access = crate::api::route_access();
    let mut paths = Map::new();
    for op in OPS
        .iter()
        .chain(ROLLOUT_OPS)
        .chain(SITE_CONFIG_OPS)
        .chain(DIAGNOSTICS_OPS)
        .chain(USER_OPS)
    {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let route = access
            .iter()
            .find(|(m, p, _)| m.as_str() == op.method && *p == op.path)
            .map(|(_, _, a)| *a);
        entry[op.method] = operation(op, route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "P6OS console",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Appliances pair (fleet pairing token in the body), then report with their \
                device token. Operators use a personal API token (the console's admin token is the \
                bootstrap admin's) or a web session; x-p6os-role names the role a route needs \
                (viewer < operator < admin). Every error body is an ErrorBody. JSON bodies: at \
                most 256 KiB, unknown fields refused."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "operatorToken": { "type": "http", "scheme": "bearer", "description": "a personal API token (p6ou_...), or the console's admin token (the bootstrap admin's)" },
                "session": { "type": "apiKey", "in": "cookie", "name": "p6os_session", "description": "a web session (POST /api/v1/login); __Host-p6os_session over https" },
                "csrf": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token", "description": "with a session, every state-changing request carries the csrf the login returned" },
                "deviceToken": { "type": "http", "scheme": "bearer", "description": "the token a device got when it paired" }
            },
            "schemas": schemas()
        }
    })
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// Every (method, path) the document describes.
pub fn documented_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = document()["paths"].as_object() {
        for (path, ops) in paths {
            for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
                out.push((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_documented_and_back() {
        let mut served: Vec<(String, String)> = crate::api::served_routes()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let mut documented = documented_routes();
        served.sort();
        documented.sort();
        assert_eq!(served, documented);
    }

    #[test]
    fn every_referenced_schema_exists() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        assert!(schemas.contains_key("Facts"));
    }
}
