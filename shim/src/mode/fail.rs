//! The fail policy: what a container gets when the node cannot do what its mode needs.
//!
//! [`decide`] is pure. It takes the resolved request, what the node can honour per mode (from
//! the capability probe), whether the profile is usable and whether the audit log is
//! writable. Under `closed` any shortfall refuses the container with a message naming every
//! missing piece and what to do; under `open` the container starts in the strongest mode that
//! can be honoured (learn when there is no usable profile) and every step down comes back as a
//! [`StartNotice`] for the audit log. Nothing is ever downgraded without a notice.

use std::fmt;

use serde::Serialize;

use super::{FailPolicy, Mode, ModeDecision};

/// One thing the node lacks, and what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// What is missing, with the evidence (`LSM-BPF: bpf(BPF_PROG_LOAD) failed: EPERM`).
    pub piece: String,
    /// What to do about it.
    pub fix: String,
}

impl Missing {
    /// A missing piece and its fix.
    pub fn new(piece: impl Into<String>, fix: impl Into<String>) -> Missing {
        Missing {
            piece: piece.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.piece, self.fix)
    }
}

/// What the node can honour, per guarded mode (`off` needs nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSupport {
    /// Learning: BPF programs, bpffs, cgroup v2.
    pub learn: Result<(), Vec<Missing>>,
    /// Monitoring: learning's needs plus seccomp reporting.
    pub monitor: Result<(), Vec<Missing>>,
    /// Enforcing: an enforcement tier.
    pub enforce: Result<(), Vec<Missing>>,
}

impl NodeSupport {
    /// A node that can do everything (tests, and a reference for what "ok" means).
    pub fn everything() -> NodeSupport {
        NodeSupport {
            learn: Ok(()),
            monitor: Ok(()),
            enforce: Ok(()),
        }
    }

    /// What `mode` lacks on this node (empty: it can be honoured).
    pub fn lacks(&self, mode: Mode) -> &[Missing] {
        let result = match mode {
            Mode::Off => return &[],
            Mode::Learn => &self.learn,
            Mode::Monitor => &self.monitor,
            Mode::Enforce => &self.enforce,
        };
        result.as_ref().err().map_or(&[], Vec::as_slice)
    }
}

/// Whether the chosen profile can be compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileHealth {
    /// Loaded and compiled to a non-empty policy.
    Usable,
    /// No profile for this image (or the named one vanished).
    Missing,
    /// The profile file exists but does not parse or validate; the reason says why.
    Corrupt(String),
    /// The profile compiles to an empty or invalid policy; the reason says why.
    Empty(String),
}

impl ProfileHealth {
    fn shortfall(&self) -> Option<Missing> {
        match self {
            ProfileHealth::Usable => None,
            ProfileHealth::Missing => Some(Missing::new(
                "a profile for this image (the store has none)",
                "run the image in learn mode first, or name a profile with vigil.dev/profile",
            )),
            ProfileHealth::Corrupt(why) => Some(Missing::new(
                format!("a readable profile (it is corrupt: {why})"),
                "restore it from a copy with `vigil profile import`, or delete it and relearn",
            )),
            ProfileHealth::Empty(why) => Some(Missing::new(
                format!("a profile that compiles to a policy ({why})"),
                "relearn the image under real load, then check it with `vigil profile show`",
            )),
        }
    }
}

/// Whether the audit log could be opened for appending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditHealth {
    /// Writable.
    Writable,
    /// Not writable; the reason names the path and the error.
    Unwritable(String),
}

/// Something the audit log must record about how the container started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartNotice {
    /// Started in a weaker mode than requested because of `fail_policy = "open"`.
    FailOpen {
        /// The mode the container asked for.
        requested: Mode,
        /// The mode it runs in.
        effective: Mode,
        /// Why the requested mode could not be honoured.
        missing: Vec<Missing>,
    },
    /// The audit log is not writable; events go to the HTTP sink and the shim log only.
    AuditUnwritable {
        /// Path and error.
        reason: String,
    },
    /// Learning goes on although the existing profile is unusable.
    ProfileUnusable {
        /// Why it is unusable.
        missing: Missing,
    },
}

/// How the container starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The mode it runs in for its whole life.
    pub mode: Mode,
    /// The mode it asked for (after [`super::resolve`]).
    pub requested: Mode,
    /// Events to write before the container's first instruction.
    pub notices: Vec<StartNotice>,
}

/// The container must not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot start the container in {requested} mode: missing {pieces}; fail_policy is closed \
     (set fail_policy = \"open\" in the node config to start it in {fallback} mode instead, \
     with an audit event)"
)]
pub struct Refusal {
    /// The mode it asked for.
    pub requested: Mode,
    /// Every missing piece.
    pub missing: Vec<Missing>,
    /// What `open` would have given, for the message.
    pub fallback: Mode,
    pieces: String,
}

/// Decides the effective mode of a container, or refuses it.
pub fn decide(
    decision: &ModeDecision,
    policy: FailPolicy,
    node: &NodeSupport,
    profile: &ProfileHealth,
    audit: &AuditHealth,
) -> Result<Effective, Refusal> {
    let requested = decision.mode;
    if requested == Mode::Off {
        return Ok(Effective {
            mode: Mode::Off,
            requested,
            notices: Vec::new(),
        });
    }

    let mut missing = shortfalls(requested, node, profile);
    if let AuditHealth::Unwritable(reason) = audit {
        missing.push(Missing::new(
            format!("a writable audit log ({reason})"),
            "fix the folder's permissions or point audit_log in the node config elsewhere",
        ));
    }
    let fallback = fallback(requested, node, profile);
    if !missing.is_empty() && policy == FailPolicy::Closed {
        let pieces = missing
            .iter()
            .map(Missing::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Refusal {
            requested,
            missing,
            fallback,
            pieces,
        });
    }

    Ok(Effective {
        mode: fallback,
        requested,
        notices: notices(requested, fallback, audit, profile, node),
    })
}

/// What `mode` lacks, on this node and with this profile.
fn shortfalls(mode: Mode, node: &NodeSupport, profile: &ProfileHealth) -> Vec<Missing> {
    let mut missing = node.lacks(mode).to_vec();
    if mode.needs_profile() {
        missing.extend(profile.shortfall());
    }
    missing
}

/// The strongest mode at or below `requested` that can be honoured. Without a usable
/// profile, the step below enforce is learn, not monitor.
fn fallback(requested: Mode, node: &NodeSupport, profile: &ProfileHealth) -> Mode {
    let ladder = [Mode::Enforce, Mode::Monitor, Mode::Learn, Mode::Off];
    ladder
        .into_iter()
        .skip_while(|m| *m != requested)
        .find(|m| shortfalls(*m, node, profile).is_empty())
        .unwrap_or(Mode::Off)
}

fn notices(
    requested: Mode,
    effective: Mode,
    audit: &AuditHealth,
    profile: &ProfileHealth,
    node: &NodeSupport,
) -> Vec<StartNotice> {
    let mut notices = Vec::new();
    if let AuditHealth::Unwritable(reason) = audit {
        notices.push(StartNotice::AuditUnwritable {
            reason: reason.clone(),
        });
    }
    if effective != requested {
        let missing = shortfalls(requested, node, profile);
        notices.push(StartNotice::FailOpen {
            requested,
            effective,
            missing,
        });
    } else if let (Mode::Learn, Some(missing)) = (effective, corrupt_shortfall(profile)) {
        // Learning needs no profile, but a corrupt one deserves a line before it is replaced.
        notices.push(StartNotice::ProfileUnusable { missing });
    }
    notices
}

fn corrupt_shortfall(profile: &ProfileHealth) -> Option<Missing> {
    match profile {
        ProfileHealth::Corrupt(_) | ProfileHealth::Empty(_) => profile.shortfall(),
        ProfileHealth::Usable | ProfileHealth::Missing => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ModeSource, ProfileChoice};
    use super::*;

    fn request(mode: Mode) -> ModeDecision {
        ModeDecision {
            mode,
            source: ModeSource::PodAnnotation,
            profile: ProfileChoice::Image,
            profile_state: None,
            container_name: Some("app".into()),
            namespace: Some("dev".into()),
            sandbox: false,
        }
    }

    fn no_lsm() -> Missing {
        Missing::new(
            "an enforcement tier (LSM-BPF: EPERM, exec kill: ok)",
            "boot with lsm=bpf",
        )
    }

    fn no_bpf() -> Missing {
        Missing::new("BPF program loading (EPERM)", "run as root")
    }

    /// Enforce impossible; monitor and learn fine.
    fn no_enforce() -> NodeSupport {
        NodeSupport {
            enforce: Err(vec![no_lsm()]),
            ..NodeSupport::everything()
        }
    }

    /// Nothing but off.
    fn no_bpf_node() -> NodeSupport {
        let all = Err(vec![no_bpf()]);
        NodeSupport {
            learn: all.clone(),
            monitor: all.clone(),
            enforce: all,
        }
    }

    const OK: AuditHealth = AuditHealth::Writable;

    #[test]
    fn decides_per_policy_node_and_profile() {
        use FailPolicy::{Closed, Open};
        use Mode::*;
        use ProfileHealth::{Missing as NoProfile, Usable};
        let corrupt = ProfileHealth::Corrupt("expected value at line 1".into());
        let empty = ProfileHealth::Empty("no syscalls".into());
        let all = NodeSupport::everything();
        let (no_enforce, no_bpf) = (no_enforce(), no_bpf_node());
        // (requested, policy, node, profile, Some(effective) or None for a refusal)
        let table: Vec<(Mode, FailPolicy, &NodeSupport, &ProfileHealth, Option<Mode>)> = vec![
            (Off, Closed, &no_bpf, &NoProfile, Some(Off)),
            (Learn, Closed, &all, &NoProfile, Some(Learn)),
            (Learn, Closed, &no_bpf, &NoProfile, None),
            (Learn, Open, &no_bpf, &NoProfile, Some(Off)),
            (Monitor, Closed, &all, &Usable, Some(Monitor)),
            (Monitor, Closed, &all, &NoProfile, None),
            (Monitor, Open, &all, &NoProfile, Some(Learn)),
            (Monitor, Open, &all, &corrupt, Some(Learn)),
            (Enforce, Closed, &all, &Usable, Some(Enforce)),
            (Enforce, Closed, &no_enforce, &Usable, None),
            (Enforce, Open, &no_enforce, &Usable, Some(Monitor)),
            (Enforce, Open, &all, &NoProfile, Some(Learn)),
            (Enforce, Open, &all, &empty, Some(Learn)),
            (Enforce, Closed, &all, &empty, None),
            (Enforce, Open, &no_enforce, &corrupt, Some(Learn)),
            (Enforce, Open, &no_bpf, &Usable, Some(Off)),
        ];
        for (i, (mode, policy, node, profile, want)) in table.into_iter().enumerate() {
            let got = decide(&request(mode), policy, node, profile, &OK);
            match (want, got) {
                (Some(want), Ok(eff)) => {
                    assert_eq!(eff.mode, want, "row {i}");
                    let said = eff
                        .notices
                        .iter()
                        .any(|n| matches!(n, StartNotice::FailOpen { .. }));
                    assert_eq!(said, want != mode, "row {i}: a step down must be announced");
                }
                (None, Err(refusal)) => assert!(!refusal.missing.is_empty(), "row {i}"),
                (want, got) => panic!("row {i}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_names_every_missing_piece_and_the_way_out() {
        let err = decide(
            &request(Mode::Enforce),
            FailPolicy::Closed,
            &no_enforce(),
            &ProfileHealth::Missing,
            &OK,
        )
        .unwrap_err();
        let msg = err.to_string();
        for needle in [
            "enforce mode",
            "LSM-BPF: EPERM",
            "boot with lsm=bpf",
            "the store has none",
            "learn mode first",
            "fail_policy = \"open\"",
            "in learn mode instead",
        ] {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn fail_open_notice_carries_the_reason() {
        let eff = decide(
            &request(Mode::Enforce),
            FailPolicy::Open,
            &no_enforce(),
            &ProfileHealth::Usable,
            &OK,
        )
        .unwrap();
        assert_eq!(
            eff.notices,
            vec![StartNotice::FailOpen {
                requested: Mode::Enforce,
                effective: Mode::Monitor,
                missing: vec![no_lsm()],
            }]
        );
    }

    #[test]
    fn an_unwritable_audit_log_refuses_when_closed_and_is_announced_when_open() {
        let audit = AuditHealth::Unwritable("/var/log/vigil/audit.jsonl: permission denied".into());
        let all = NodeSupport::everything();
        let err = decide(
            &request(Mode::Learn),
            FailPolicy::Closed,
            &all,
            &ProfileHealth::Missing,
            &audit,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("writable audit log (/var/log/vigil/audit.jsonl"),
            "{err}"
        );

        let eff = decide(
            &request(Mode::Monitor),
            FailPolicy::Open,
            &all,
            &ProfileHealth::Usable,
            &audit,
        )
        .unwrap();
        assert_eq!(eff.mode, Mode::Monitor);
        assert!(
            matches!(&eff.notices[..], [StartNotice::AuditUnwritable { .. }]),
            "{eff:?}"
        );

        // Off never needs the audit log.
        let eff = decide(
            &request(Mode::Off),
            FailPolicy::Closed,
            &all,
            &ProfileHealth::Missing,
            &audit,
        )
        .unwrap();
        assert!(eff.notices.is_empty());
    }

    #[test]
    fn learning_over_a_corrupt_profile_is_announced() {
        let corrupt = ProfileHealth::Corrupt("truncated".into());
        let eff = decide(
            &request(Mode::Learn),
            FailPolicy::Closed,
            &NodeSupport::everything(),
            &corrupt,
            &OK,
        )
        .unwrap();
        assert_eq!(eff.mode, Mode::Learn);
        assert!(
            matches!(&eff.notices[..], [StartNotice::ProfileUnusable { .. }]),
            "{eff:?}"
        );
    }
}
