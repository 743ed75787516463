//! Shared by the rollout tests: a console with a clock the tests drive, restartable on the
//! same database, with paired devices and a bundle.
#![allow(dead_code)]

use p6os_console::db::DbLocation;
use std::sync::Arc;

use crate::common::*;
use p6os_console::clock::ManualClock;
use p6os_console::testing::{Listen, TestConsole};
use p6os_console::Config;
use p6os_protocol::rollout::{Rollout, RolloutDevice, RolloutDevicePage};
use p6os_protocol::{
    Bundle, Health, Heartbeat, HeartbeatResponse, OutcomeKind, Phase, Progress, UpgradeOutcome,
};

/// 2026-01-05 (a Monday) 10:00 UTC.
pub const MONDAY_10H: u64 = 1_767_571_200 + 10 * 3600;

/// A console with a manual clock; restartable on the same database.
pub struct Fleet {
    pub s: Server,
    pub clock: Arc<ManualClock>,
}

fn config(dir: &std::path::Path, db: &DbLocation, admin: &str, pairing: &str) -> Config {
    Config {
        db: db.clone(),
        bundles: dir.join("bundles"),
        admin_token: admin.into(),
        pairing_token: pairing.into(),
        trusted_keys: vec![trusted_key().public()],
        heartbeat_secs: 60,
        pending_retry_secs: 30,
        max_pending: 1000,
        pairing_rate: p6os_console::limit::DEFAULT_PAIRING_RATE,
    }
}

fn listen(clock: &Arc<ManualClock>) -> Listen {
    Listen {
        clock: Some(clock.clone()),
        ..Listen::default()
    }
}

impl Fleet {
    /// A console with `n` paired devices `d-0..` labelled `site=s` running 1.0.0, and a bundle
    /// of tiny 2.0.0.
    pub fn start(n: usize) -> (Fleet, Vec<(String, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let admin = p6os_console::auth::new_token().unwrap();
        let pairing = p6os_console::auth::new_token().unwrap();
        let clock = ManualClock::at(MONDAY_10H);
        let db = p6os_console::testing::pg::test_db(dir.path());
        let console = TestConsole::start(config(dir.path(), &db, &admin, &pairing), listen(&clock));
        let s = Server {
            url: console.url(),
            dir,
            db,
            admin,
            pairing,
            console,
        };
        let f = Fleet { s, clock };
        let devices: Vec<(String, String)> = (0..n)
            .map(|i| {
                let id = format!("d-{i}");
                let token = f.s.paired(&id, &[("site", "s")]);
                (id, token)
            })
            .collect();
        f.upload("2.0.0", 1);
        (f, devices)
    }

    /// Stops the console and starts another on the same database.
    pub fn restart(self) -> Fleet {
        let Fleet { s, clock } = self;
        let Server {
            dir,
            db,
            admin,
            pairing,
            console,
            ..
        } = s;
        console.stop();
        let console = TestConsole::start(config(dir.path(), &db, &admin, &pairing), listen(&clock));
        Fleet {
            s: Server {
                url: console.url(),
                dir,
                db,
                admin,
                pairing,
                console,
            },
            clock,
        }
    }

    pub fn upload(&self, version: &str, seed: u8) -> Bundle {
        let r = self.s.call(
            "POST",
            &format!("{API}/bundles"),
            Some(&self.s.admin),
            Body::Bytes(
                "application/octet-stream",
                bundle(&trusted_key(), "tiny", version, seed),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    pub fn create(&self, body: serde_json::Value) -> Reply {
        self.s
            .admin("POST", &format!("{API}/rollouts"), Body::json(&body))
    }

    pub fn rollout(&self, id: u64) -> Rollout {
        let r = self
            .s
            .admin("GET", &format!("{API}/rollouts/{id}"), Body::None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn member(&self, rollout: u64, id: &str) -> RolloutDevice {
        let r = self.s.admin(
            "GET",
            &format!("{API}/rollouts/{rollout}/devices?limit=500"),
            Body::None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json::<RolloutDevicePage>()
            .items
            .into_iter()
            .find(|d| d.id == id)
            .unwrap()
    }

    pub fn order(&self, rollout: u64, action: &str) -> Reply {
        self.s.admin(
            "POST",
            &format!("{API}/rollouts/{rollout}/{action}"),
            Body::None,
        )
    }

    /// A heartbeat; the desired version in the answer.
    pub fn beat(&self, (id, token): &(String, String), beat: &Heartbeat) -> Option<String> {
        let r = self.s.heartbeat(id, token, beat);
        assert_eq!(r.status, 200, "{}", r.text());
        let answer: HeartbeatResponse = r.json();
        assert_eq!(answer.desired_version.is_some(), answer.bundle.is_some());
        answer.desired_version
    }
}

pub fn downloading(from: &str, to: &str) -> Heartbeat {
    let mut b = beat(from);
    b.progress = Some(Progress {
        version: to.into(),
        phase: Phase::Downloading,
        done_bytes: 1,
        total_bytes: 10,
        message: None,
    });
    b
}

pub fn running(version: &str, health: Health) -> Heartbeat {
    let mut b = beat(version);
    b.health = health;
    b
}

pub fn after(version: &str, outcome: OutcomeKind, reason: &str) -> Heartbeat {
    let mut b = beat("1.0.0");
    b.last_upgrade = Some(UpgradeOutcome {
        version: version.into(),
        outcome,
        slot: Some("b".into()),
        reason: Some(reason.into()),
    });
    b
}
