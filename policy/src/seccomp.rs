//! Compiling a profile into an OCI `linux.seccomp` section (as runc 1.1.5 accepts it).
//!
//! Rules (docs/profile-format.md explains why):
//! - the default action is `SCMP_ACT_ERRNO` with errno EPERM;
//! - allowed = the profile's syscalls ∪ the runtime floor, intersected with a filter that was
//!   already in config.json (never widened);
//! - syscalls outside the allowed set answer ENOSYS instead of EPERM when they are newer than
//!   Linux 3.17 (number ≥ 317: clone3, faccessat2, ...) or newer than the highest allowed
//!   one, because libc falls back to older calls only on ENOSYS and runc's own ENOSYS stub
//!   covers only numbers above the highest syscall the filter names;
//! - optionally every syscall outside the allowed set goes to `SCMP_ACT_NOTIFY` (explicit
//!   rules, never `write`) or `SCMP_ACT_LOG` instead, for monitor and denial reporting;
//! - `flags` are never emitted (runc 1.1.5 rejects them).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::floor::RuntimeFloor;
use crate::model::Body;
use crate::syscalls;

pub const ACT_ALLOW: &str = "SCMP_ACT_ALLOW";
pub const ACT_ERRNO: &str = "SCMP_ACT_ERRNO";
pub const ACT_NOTIFY: &str = "SCMP_ACT_NOTIFY";
pub const ACT_LOG: &str = "SCMP_ACT_LOG";
pub const EPERM: u32 = 1;
pub const ENOSYS: u32 = 38;
/// Syscalls from this number on (seccomp, Linux 3.17) answer ENOSYS when not allowed.
pub const ENOSYS_FROM: u32 = 317;
/// The architectures the filter applies to: the profile's syscalls are x86_64 ones; 32-bit
/// and x32 calls meet libseccomp's bad-architecture action.
pub const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64"];

/// An OCI runtime-spec `linux.seccomp` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSeccomp {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<OciSyscall>,
}

/// One rule of `linux.seccomp.syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OciArg>,
}

/// An argument condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// What happens to a syscall outside the allowed set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Deviations {
    /// EPERM, or ENOSYS for new syscalls (see the module rules).
    #[default]
    Deny,
    /// An explicit `SCMP_ACT_NOTIFY` rule per syscall (never `write`); the listener decides
    /// (answer with [`CompiledSeccomp::denial_errno`] to enforce, continue to monitor).
    Notify {
        listener_path: String,
        listener_metadata: Option<String>,
    },
    /// `SCMP_ACT_LOG`: allowed and logged by the kernel (monitor only).
    Log,
}

/// A compiled filter with what the caller needs to answer or report denials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSeccomp {
    pub seccomp: OciSeccomp,
    /// Syscalls allowed unconditionally or under the existing filter's argument conditions.
    pub allowed: BTreeSet<String>,
    /// Syscalls outside the profile that answer ENOSYS rather than EPERM.
    pub enosys: BTreeSet<String>,
}

impl CompiledSeccomp {
    /// The errno a denial of `name` answers with (for a notify listener in enforce).
    pub fn denial_errno(&self, name: &str) -> u32 {
        if self.enosys.contains(name) {
            ENOSYS
        } else {
            EPERM
        }
    }

    /// The `linux.seccomp` JSON value to put into config.json.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.seccomp).unwrap_or(serde_json::Value::Null)
    }
}

/// A rule for one syscall before grouping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    action: String,
    errno_ret: Option<u32>,
    args: Vec<OciArg>,
}

impl Rule {
    fn plain(action: &str, errno_ret: Option<u32>) -> Self {
        Rule {
            action: action.to_string(),
            errno_ret,
            args: Vec::new(),
        }
    }

    fn allows(&self) -> bool {
        is_allowing(&self.action)
    }

    /// Whether this rule does what the default action does (libseccomp refuses such rules).
    fn is_default(&self) -> bool {
        self.action == ACT_ERRNO && self.errno_ret.unwrap_or(EPERM) == EPERM
    }
}

fn is_allowing(action: &str) -> bool {
    matches!(action, ACT_ALLOW | ACT_LOG)
}

/// Compiles `profile` (with the runtime `floor`) into a seccomp section, intersected with
/// `existing` when config.json already had one.
pub fn compile(
    profile: &Body,
    floor: &RuntimeFloor,
    existing: Option<&OciSeccomp>,
    deviations: &Deviations,
) -> Result<CompiledSeccomp> {
    let wanted = allowed_set(profile, floor)?;
    check_deviations(deviations)?;
    let existing = existing.map(ExistingFilter::new).transpose()?;
    let highest = wanted
        .iter()
        .filter_map(|n| syscalls::number(n))
        .max()
        .unwrap_or(0);

    let mut plan: BTreeMap<&str, Vec<Rule>> = BTreeMap::new();
    let mut enosys = BTreeSet::new();
    for (name, nr) in syscalls::all() {
        let (rules, answers_enosys) =
            plan_syscall(name, nr, &wanted, highest, existing.as_ref(), deviations)?;
        if answers_enosys {
            enosys.insert(name.to_string());
        }
        if !rules.is_empty() {
            plan.insert(name, rules);
        }
    }
    let allowed: BTreeSet<String> = plan
        .iter()
        .filter(|(name, rules)| wanted.contains(**name) && rules.iter().any(Rule::allows))
        .map(|(name, _)| name.to_string())
        .collect();
    if allowed.is_empty() {
        return Err(PolicyError::Seccomp(
            "the profile and the existing filter have no syscall in common; the container \
             could not run at all"
                .into(),
        ));
    }
    let seccomp = assemble(plan, existing.as_ref(), deviations);
    Ok(CompiledSeccomp {
        seccomp,
        allowed,
        enosys,
    })
}

fn allowed_set(profile: &Body, floor: &RuntimeFloor) -> Result<BTreeSet<String>> {
    if profile.syscalls.is_empty() {
        return Err(PolicyError::Seccomp(
            "the profile names no syscall; learn the image first (vigil.dev/mode: learn)".into(),
        ));
    }
    let mut wanted = BTreeSet::new();
    for name in profile
        .syscalls
        .keys()
        .map(String::as_str)
        .chain(floor.syscalls())
    {
        if syscalls::number(name).is_none() {
            return Err(PolicyError::UnknownSyscall(name.to_string()));
        }
        wanted.insert(name.to_string());
    }
    Ok(wanted)
}

fn check_deviations(deviations: &Deviations) -> Result<()> {
    if let Deviations::Notify { listener_path, .. } = deviations {
        if !listener_path.starts_with('/') {
            return Err(PolicyError::Seccomp(format!(
                "notify listener path {listener_path:?} must be an absolute socket path"
            )));
        }
    }
    Ok(())
}

/// The rules for one syscall, and whether a denial answers ENOSYS.
fn plan_syscall(
    name: &str,
    nr: u32,
    wanted: &BTreeSet<String>,
    highest: u32,
    existing: Option<&ExistingFilter>,
    deviations: &Deviations,
) -> Result<(Vec<Rule>, bool)> {
    let answers_enosys = !wanted.contains(name) && (nr >= ENOSYS_FROM || nr > highest);
    let Some(existing) = existing else {
        return Ok(if wanted.contains(name) {
            (vec![Rule::plain(ACT_ALLOW, None)], false)
        } else {
            let rules = deviation_rules(name, answers_enosys, deviations);
            (rules, answers_enosys)
        });
    };
    let theirs = existing.rules_for(name);
    if wanted.contains(name) {
        return Ok((existing.keep_for_allowed(name, theirs)?, false));
    }
    // Outside the profile: the existing filter's denials stay as they are (those equal to
    // our default action are implied); where it allowed the call for every argument, our
    // deviation handling applies.
    if theirs.iter().any(|r| !r.allows()) {
        let denials = theirs
            .iter()
            .filter(|r| !r.allows() && !r.is_default())
            .cloned();
        return Ok((denials.collect(), false));
    }
    Ok(if existing.ever_allows(theirs) {
        let rules = deviation_rules(name, answers_enosys, deviations);
        (rules, answers_enosys)
    } else {
        (Vec::new(), false)
    })
}

fn deviation_rules(name: &str, answers_enosys: bool, deviations: &Deviations) -> Vec<Rule> {
    match deviations {
        Deviations::Notify { .. } if name != "write" => vec![Rule::plain(ACT_NOTIFY, None)],
        Deviations::Log => vec![Rule::plain(ACT_LOG, None)],
        _ if answers_enosys => vec![Rule::plain(ACT_ERRNO, Some(ENOSYS))],
        _ => Vec::new(),
    }
}

/// Groups per-syscall rules into OCI rules (one per action, errno and argument set).
fn assemble(
    plan: BTreeMap<&str, Vec<Rule>>,
    existing: Option<&ExistingFilter>,
    deviations: &Deviations,
) -> OciSeccomp {
    let mut groups: BTreeMap<Rule, Vec<String>> = BTreeMap::new();
    for (name, rules) in plan {
        for rule in rules {
            groups.entry(rule).or_default().push(name.to_string());
        }
    }
    let mut syscalls: Vec<OciSyscall> = groups
        .into_iter()
        .map(|(rule, names)| OciSyscall {
            names,
            action: rule.action,
            errno_ret: rule.errno_ret,
            args: rule.args,
        })
        .collect();
    // Allow rules first: easier to read, and libseccomp orders by syscall anyway.
    syscalls.sort_by_key(|s| (s.action != ACT_ALLOW, s.action.clone(), s.errno_ret));
    let (listener_path, listener_metadata) = match deviations {
        Deviations::Notify {
            listener_path,
            listener_metadata,
        } => (Some(listener_path.clone()), listener_metadata.clone()),
        _ => (None, None),
    };
    OciSeccomp {
        default_action: ACT_ERRNO.to_string(),
        default_errno_ret: Some(EPERM),
        architectures: existing
            .map(|e| e.architectures.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| ARCHITECTURES.iter().map(|a| a.to_string()).collect()),
        flags: Vec::new(),
        listener_path,
        listener_metadata,
        syscalls,
    }
}

/// A filter found in config.json, split per syscall.
struct ExistingFilter {
    default_allows: bool,
    architectures: Vec<String>,
    rules: BTreeMap<String, Vec<Rule>>,
}

impl ExistingFilter {
    fn new(filter: &OciSeccomp) -> Result<Self> {
        if filter.default_action == ACT_NOTIFY {
            return Err(PolicyError::Seccomp(
                "the existing filter in config.json has SCMP_ACT_NOTIFY as default action, \
                 which runc rejects; fix the pod's seccomp profile"
                    .into(),
            ));
        }
        let mut rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for rule in &filter.syscalls {
            for name in &rule.names {
                rules.entry(name.clone()).or_default().push(Rule {
                    action: rule.action.clone(),
                    errno_ret: rule.errno_ret,
                    args: rule.args.clone(),
                });
            }
        }
        Ok(Self {
            default_allows: is_allowing(&filter.default_action),
            architectures: filter.architectures.clone(),
            rules,
        })
    }

    fn rules_for(&self, name: &str) -> &[Rule] {
        self.rules.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the existing filter allows the call at least for some arguments.
    fn ever_allows(&self, theirs: &[Rule]) -> bool {
        if theirs.is_empty() {
            return self.default_allows;
        }
        theirs.iter().any(Rule::allows)
            || (self.default_allows && theirs.iter().all(|r| !r.args.is_empty()))
    }

    /// The rules for a syscall the profile allows, so that it is allowed exactly where the
    /// existing filter allowed it: its rules are kept with their argument conditions; a
    /// syscall it did not name is allowed only if its default allowed.
    fn keep_for_allowed(&self, name: &str, theirs: &[Rule]) -> Result<Vec<Rule>> {
        let kept = theirs.iter().filter(|r| !r.is_default()).map(|r| {
            let mut r = r.clone();
            if r.action == ACT_LOG {
                r.action = ACT_ALLOW.to_string();
            }
            r
        });
        let mut rules: Vec<Rule> = kept.collect();
        if !self.default_allows || theirs.iter().any(|r| r.allows() && r.args.is_empty()) {
            return Ok(rules);
        }
        // Its default allowed the calls that match none of its conditional denials. An
        // unconditional allow beside them would win in libseccomp, so the allow gets the
        // inverted condition instead.
        let denials: Vec<&Rule> = theirs.iter().filter(|r| !r.allows()).collect();
        match denials.as_slice() {
            [] => rules.push(Rule::plain(ACT_ALLOW, None)),
            [one] if theirs.len() == 1 => rules.push(negated(name, one)?),
            _ => return Err(unsupported(name)),
        }
        Ok(rules)
    }
}

/// An allow rule for the calls a denial with one argument condition does not match.
fn negated(name: &str, rule: &Rule) -> Result<Rule> {
    let [arg] = rule.args.as_slice() else {
        return Err(unsupported(name));
    };
    let op = match arg.op.as_str() {
        "SCMP_CMP_EQ" => "SCMP_CMP_NE",
        "SCMP_CMP_NE" => "SCMP_CMP_EQ",
        "SCMP_CMP_LT" => "SCMP_CMP_GE",
        "SCMP_CMP_GE" => "SCMP_CMP_LT",
        "SCMP_CMP_LE" => "SCMP_CMP_GT",
        "SCMP_CMP_GT" => "SCMP_CMP_LE",
        _ => return Err(unsupported(name)),
    };
    Ok(Rule {
        action: ACT_ALLOW.to_string(),
        errno_ret: None,
        args: vec![OciArg {
            op: op.to_string(),
            ..arg.clone()
        }],
    })
}

fn unsupported(name: &str) -> PolicyError {
    PolicyError::Seccomp(format!(
        "the existing filter allows {name} by default but denies it under argument \
         conditions vigil cannot invert (several rules, several arguments, or a masked \
         comparison); give the pod a filter whose default action denies, or none"
    ))
}
