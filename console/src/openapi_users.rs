//! Sessions, users, tokens and the audit log in `/openapi.json`.

use super::{Body, Op, Out, BAD, FORBIDDEN, LIMIT, MEDIA, NOT_FOUND, TOO_LARGE, UNAUTH};

const NO_CONTENT: (u16, &str, Out) = (204, "done", Out::Empty);

/// `api::session` and `api::users`.
pub(super) const USER_OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/api/v1/login",
        summary: "Log in to the web console: sets the session cookie (HttpOnly, \
                  SameSite=Strict, Secure over https) and returns the CSRF token",
        body: Body::Json("LoginRequest"),
        query: &[],
        responses: &[
            (200, "logged in", Out::Json("LoginAnswer")),
            BAD,
            (
                401,
                "wrong user name or password (which is not said)",
                Out::Error,
            ),
            (
                429,
                "too many failed logins for this account, or logins from this address",
                Out::Error,
            ),
            (503, "busy checking other passwords", Out::Error),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "post",
        path: "/api/v1/logout",
        summary: "End this web session and clear its cookie",
        body: Body::None,
        query: &[],
        responses: &[NO_CONTENT, UNAUTH, FORBIDDEN],
    },
    Op {
        method: "get",
        path: "/api/v1/me",
        summary: "Who the caller is: user, role, scope and how they are authenticated",
        body: Body::None,
        query: &[],
        responses: &[(200, "the caller", Out::Json("Me")), UNAUTH, FORBIDDEN],
    },
    Op {
        method: "put",
        path: "/api/v1/me/password",
        summary: "Change one's own password (the current one first, unless there is none); \
                  every session of the user ends",
        body: Body::Json("PasswordChange"),
        query: &[],
        responses: &[NO_CONTENT, BAD, UNAUTH, FORBIDDEN, TOO_LARGE, MEDIA],
    },
    Op {
        method: "post",
        path: "/api/v1/users",
        summary: "Create an operator account (role viewer, operator or admin; optional label \
                  scope; optional password for the web console)",
        body: Body::Json("UserRequest"),
        query: &[],
        responses: &[
            (201, "created", Out::Json("User")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            (409, "the name is taken", Out::Error),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/users",
        summary: "Operator accounts, by name, a page at a time",
        body: Body::None,
        query: &[LIMIT, ("after", "the previous page's `next` (a name)")],
        responses: &[
            (200, "a page", Out::Json("UserPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/users/{name}",
        summary: "One operator account",
        body: Body::None,
        query: &[],
        responses: &[
            (200, "the account", Out::Json("User")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
        ],
    },
    Op {
        method: "put",
        path: "/api/v1/users/{name}",
        summary: "Change an account: role, scope, password, disabled, unlock (absent fields \
                  stay); a new password, a narrower role or scope, or disabling ends its \
                  sessions",
        body: Body::Json("UserUpdate"),
        query: &[],
        responses: &[
            (200, "the account", Out::Json("User")),
            (
                400,
                "bad input, or a change the bootstrap admin or one's own account may not have",
                Out::Error,
            ),
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "delete",
        path: "/api/v1/users/{name}",
        summary: "Delete an account with its tokens and sessions (not the bootstrap admin, \
                  not oneself)",
        body: Body::None,
        query: &[],
        responses: &[NO_CONTENT, BAD, UNAUTH, FORBIDDEN, NOT_FOUND],
    },
    Op {
        method: "post",
        path: "/api/v1/tokens",
        summary: "A personal API token for the caller (an admin: for any user); the secret \
                  is in this answer only",
        body: Body::Json("TokenRequest"),
        query: &[],
        responses: &[
            (201, "created", Out::Json("TokenCreated")),
            BAD,
            UNAUTH,
            FORBIDDEN,
            NOT_FOUND,
            (409, "the user holds the most tokens allowed", Out::Error),
            TOO_LARGE,
            MEDIA,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/tokens",
        summary: "Tokens, newest first: the caller's; an admin's everyone's or one user's",
        body: Body::None,
        query: &[
            ("user", "only this user's (admins; others: their own only)"),
            LIMIT,
            ("after", "the previous page's `next` (an id)"),
        ],
        responses: &[
            (200, "a page", Out::Json("TokenPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
    Op {
        method: "delete",
        path: "/api/v1/tokens/{id}",
        summary: "Revoke a token (one's own; an admin any)",
        body: Body::None,
        query: &[],
        responses: &[NO_CONTENT, BAD, UNAUTH, FORBIDDEN, NOT_FOUND],
    },
    Op {
        method: "get",
        path: "/api/v1/audit",
        summary: "The audit log, newest first: every operator action and login attempt (who, \
                  what, when, from where, the answer's status)",
        body: Body::None,
        query: &[
            ("actor", "only this user's entries"),
            LIMIT,
            ("after", "the previous page's `next` (a seq)"),
        ],
        responses: &[
            (200, "a page", Out::Json("AuditPage")),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
    Op {
        method: "get",
        path: "/api/v1/audit/export",
        summary: "The whole audit log (or one actor's), newest first, as JSON lines of \
                  AuditEntry",
        body: Body::None,
        query: &[("actor", "only this user's entries")],
        responses: &[
            (200, "application/x-ndjson", Out::Any),
            BAD,
            UNAUTH,
            FORBIDDEN,
        ],
    },
];
