//! The remote reconfiguration endpoints in `/openapi.json`.

use super::{Body, Op, Out, BAD, FORBIDDEN, LIMIT, MEDIA, NOT_FOUND, TOO_LARGE, UNAUTH};

/// Remote reconfiguration (`api::siteconfig`).
pub(super) const SITE_CONFIG_OPS: &[Op] = &[
    Op {
        method: "put",
        path: "/api/v1/config",
        summary: "Set a site configuration (unattended.yaml, checked like `p6os validate \
                  unattended`; optionally its `p6os config sign` signature) for one appliance \
                  (id) or every registered appliance matching a label selector",
        body: Body::Json("SetConfigRequest"),
        query: &[],
        responses: &[
            (200, "stored and set", Out::Json("SetConfigResponse")),
            (
                400,
                "bad input; a document with problems lists every one with its line and column \
                 (ConfigRejected, an ErrorBody with problems); nothing stored",
                Out::Json("ConfigRejected"),
            ),
            UNAUTH,
            FORBIDDEN,
            (
                404,
                "unknown id, or no appliance matches the selector",
                Out::Error,
            ),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}/config",
        summary: "The site configuration set last for an appliance and its report, the \
                  document with every secret redacted",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the configuration", Out::Json("ConfigShow")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            (404, "unknown id, or no configuration set", Out::Error),
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}/config/history",
        summary: "An appliance's site configurations and reports, newest first, a page at a \
                  time (the newest 100 are kept)",
        body: Body::None,
        query: &[LIMIT, ("after", "the previous page's `next` (a seq)")],
        responses: &[
            (200, "a page of the history", Out::Json("ConfigHistoryPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/appliances/{id}/config/{config}",
        summary: "The document announced in the heartbeat's answer (HeartbeatResponse.config), \
                  for the device it was set for last only",
        body: Body::None,
        query: &[],
        responses: &[
            (
                200,
                "the document and its signature",
                Out::Json("ConfigDocument"),
            ),
            BAD,
            UNAUTH,
            (
                403,
                "a device token of another appliance, or the admin token",
                Out::Error,
            ),
            (
                404,
                "not the configuration set last for this appliance",
                Out::Error,
            ),
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/appliances/{id}/config/report",
        summary: "Report on the configuration set last: applied, unchanged or refused (with \
                  the problems)",
        body: Body::Json("ConfigReport"),
        query: &[],
        responses: &[
            (204, "stored", Out::Empty),
            BAD,
            UNAUTH,
            (
                403,
                "a device token of another appliance, or the admin token",
                Out::Error,
            ),
            (
                409,
                "not the configuration set last (a newer one was set)",
                Out::Error,
            ),
            TOO_LARGE,
            MEDIA,
        ],
    },
];
