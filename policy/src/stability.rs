//! Confidence per category and the learning → stable promotion.
//!
//! Confidence of a category = duration × quiet × breadth × completeness, each in [0, 1]:
//! - duration: learned seconds (added over containers) / `min_duration_secs`, capped at 1;
//! - quiet: seconds since the category's newest entry first appeared (or since the profile
//!   was created, if the category is empty) / `quiet_period_secs`, capped at 1;
//! - breadth: contributing containers / `min_containers`, capped at 1;
//! - completeness: 1 if no event of the category was lost, else 0.5.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Confidence, Evidence, Profile, State};
use crate::timestamp::Timestamp;

/// The learning keys of the node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningKeys {
    /// Least learning time (seconds, added over containers) before a profile may be stable.
    pub min_duration_secs: u64,
    /// Least time without any new entry before a profile may be stable.
    pub quiet_period_secs: u64,
    /// Least number of containers that must have contributed.
    pub min_containers: u64,
    /// Seconds after the entrypoint starts that count as start-up.
    pub startup_secs: u64,
    /// Promote learning → stable automatically when the conditions hold.
    pub auto_promote: bool,
}

impl Default for LearningKeys {
    fn default() -> Self {
        Self {
            min_duration_secs: 3600,
            quiet_period_secs: 1800,
            min_containers: 1,
            startup_secs: 10,
            auto_promote: true,
        }
    }
}

/// Whether a profile may be promoted, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Unmet conditions, readable (`learned 120 s of 3600 s`); empty when ready.
    pub unmet: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.unmet.is_empty()
    }
}

/// The newest `first_seen` over every entry of the profile, or its creation time.
pub fn last_new_entry(profile: &Profile) -> Timestamp {
    let b = &profile.body;
    [
        newest(&b.syscalls),
        newest(&b.execs),
        newest(&b.files),
        newest(&b.network),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(profile.created)
}

fn newest<K>(map: &BTreeMap<K, Evidence>) -> Option<Timestamp> {
    map.values().map(|e| e.first_seen).max()
}

fn ratio(have: u64, need: u64) -> f64 {
    if need == 0 {
        1.0
    } else {
        (have as f64 / need as f64).min(1.0)
    }
}

/// Confidence per category as of `now`.
pub fn confidence(profile: &Profile, keys: &LearningKeys, now: Timestamp) -> Confidence {
    let cov = &profile.body.coverage;
    let base =
        ratio(cov.seconds, keys.min_duration_secs) * ratio(cov.containers, keys.min_containers);
    let category = |newest: Option<Timestamp>, lost: u64| {
        let quiet = ratio(
            now.secs_since(newest.unwrap_or(profile.created)),
            keys.quiet_period_secs,
        );
        let complete = if lost == 0 { 1.0 } else { 0.5 };
        round(base * quiet * complete)
    };
    let b = &profile.body;
    Confidence {
        syscalls: category(newest(&b.syscalls), cov.lost.syscalls),
        execs: category(newest(&b.execs), cov.lost.execs),
        files: category(newest(&b.files), cov.lost.files),
        network: category(newest(&b.network), cov.lost.network),
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What stands between the profile and `stable`.
pub fn readiness(profile: &Profile, keys: &LearningKeys, now: Timestamp) -> Readiness {
    let cov = &profile.body.coverage;
    let mut unmet = Vec::new();
    if cov.seconds < keys.min_duration_secs {
        unmet.push(format!(
            "learned {} s of {} s",
            cov.seconds, keys.min_duration_secs
        ));
    }
    let quiet = now.secs_since(last_new_entry(profile));
    if quiet < keys.quiet_period_secs {
        unmet.push(format!(
            "last new entry {quiet} s ago, quiet period is {} s",
            keys.quiet_period_secs
        ));
    }
    if cov.containers < keys.min_containers {
        unmet.push(format!(
            "{} of {} containers",
            cov.containers, keys.min_containers
        ));
    }
    if cov.lost.total() > 0 {
        unmet.push(format!(
            "{} events were lost while learning",
            cov.lost.total()
        ));
    }
    Readiness { unmet }
}

/// Recomputes the confidence snapshot and, with `auto_promote`, promotes a ready profile.
/// Returns true when the state changed to stable.
pub fn refresh(profile: &mut Profile, keys: &LearningKeys, now: Timestamp) -> bool {
    profile.confidence = confidence(profile, keys, now);
    let promote = keys.auto_promote
        && profile.state == State::Learning
        && readiness(profile, keys, now).is_ready();
    if promote {
        profile.state = State::Stable;
    }
    promote
}
