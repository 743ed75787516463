//! `appliance` and `console`: the identity the appliance reports and where it pairs.

use super::{k, Check};
use crate::unattended::types::{Appliance, Console};

impl Check<'_> {
    /// The console's rules (`p6os_protocol`), so a document the agent applies is one the
    /// console accepts.
    pub(super) fn appliance(&mut self, a: &Appliance) {
        if let Some(id) = &a.id {
            if let Err(why) = p6os_protocol::check_id(id) {
                self.err(
                    vec![k("appliance"), k("id")],
                    why,
                    Some("the id the operator registers on the console, e.g. store-12-nuc"),
                );
            }
        }
        if let Some(name) = &a.name {
            if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
                self.err(
                    vec![k("appliance"), k("name")],
                    "the name must be 1 to 128 characters without control characters",
                    None,
                );
            }
        }
        for (key, value) in &a.labels {
            if let Err(why) = p6os_protocol::check_label(key, value) {
                self.err(
                    vec![k("appliance"), k("labels"), k(key)],
                    why,
                    Some("letters, digits, '.', '_', '-' and '/', e.g. site: store-12"),
                );
            }
        }
    }

    pub(super) fn console(&mut self, c: &Console) {
        self.url(vec![k("console"), k("endpoint")], &c.endpoint);
        if c.token.expose().trim().is_empty() {
            self.err(
                vec![k("console"), k("token")],
                "empty pairing token",
                Some("copy the token shown by the console"),
            );
        }
        if let Some(ca) = &c.ca {
            self.pem(vec![k("console"), k("ca")], ca);
        }
    }
}
