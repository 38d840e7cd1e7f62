//! `vigil doctor`: what this node can enforce, and why not.
//!
//! Exit 0 only if the configured default mode (and `enforce`, where the node config allows
//! it anywhere) can be honoured, and runc answers; 1 if not; 2 on a usage or config error.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CliError, Context};
use crate::config::{FailPolicy, Mode, NodeConfig};
use crate::mode::fail::{Missing, NodeSupport};
use crate::node_caps::{self, CheckId, NodeCaps, ProbeConfig};

/// `vigil doctor [--json]`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON document instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Whether one mode can be honoured here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Whether the node can honour it.
    pub ok: bool,
    /// What it lacks.
    pub missing: Vec<Missing>,
    /// Whether the node config makes it a requirement of this check.
    pub required: bool,
}

/// The whole answer, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// This node's hostname.
    pub hostname: String,
    /// Every probe.
    #[serde(flatten)]
    pub caps: NodeCaps,
    /// Per mode.
    pub modes: Vec<ModeReport>,
    /// The node config's `fail_policy`.
    pub fail_policy: FailPolicy,
    /// The node config's `default_mode` (`null`: monitor when stable, else learn).
    pub default_mode: Option<Mode>,
    /// Whether every required mode can be honoured.
    pub ok: bool,
}

/// Runs the command.
pub fn run(ctx: &Context, args: DoctorArgs) -> Result<(), CliError> {
    let config = ctx.config.clone().unwrap_or_default();
    let caps = node_caps::probe(&ProbeConfig::from(&config));
    let report = report(caps, &config);
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Input(format!("encode the report as JSON: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", render(&report));
    }
    verdict(&report)
}

/// Modes the node config makes this check require: the default (both learn and monitor when
/// it depends on the profile's state) and enforce when any namespace may ask for it.
fn required(config: &NodeConfig) -> Vec<Mode> {
    let mut modes = match config.default_mode {
        Some(mode) => vec![mode],
        None => vec![Mode::Learn, Mode::Monitor],
    };
    let enforce_allowed = config.allowed_modes.contains(&Mode::Enforce)
        || config
            .namespaces
            .values()
            .any(|ns| ns.allowed_modes.contains(&Mode::Enforce));
    if enforce_allowed && !modes.contains(&Mode::Enforce) {
        modes.push(Mode::Enforce);
    }
    modes
}

/// Builds the report from probed capabilities.
pub fn report(caps: NodeCaps, config: &NodeConfig) -> DoctorReport {
    let support: NodeSupport = caps.support();
    let required = required(config);
    let runc = caps.check(CheckId::Runc);
    let modes: Vec<ModeReport> = Mode::ALL
        .into_iter()
        .map(|mode| {
            let mut missing = support.lacks(mode).to_vec();
            if !runc.ok {
                missing.push(Missing::new(
                    format!("runc: {}", runc.detail),
                    CheckId::Runc.fix(),
                ));
            }
            let required = required.contains(&mode);
            ModeReport {
                mode,
                ok: missing.is_empty(),
                missing,
                required,
            }
        })
        .collect();
    let ok = modes.iter().all(|m| m.ok || !m.required);
    DoctorReport {
        hostname: crate::audit::event::hostname().to_owned(),
        caps,
        modes,
        fail_policy: config.fail_policy,
        default_mode: config.default_mode,
        ok,
    }
}

/// Exit 0 or 1 (the message on stderr names the modes that cannot be honoured).
fn verdict(report: &DoctorReport) -> Result<(), CliError> {
    let failing: Vec<&str> = report
        .modes
        .iter()
        .filter(|m| m.required && !m.ok)
        .map(|m| m.mode.as_str())
        .collect();
    if failing.is_empty() {
        return Ok(());
    }
    Err(CliError::NotTrue(format!(
        "this node cannot honour {} as the node config requires; see the missing pieces above",
        failing.join(", ")
    )))
}

/// The table a person reads.
pub fn render(report: &DoctorReport) -> String {
    let caps = &report.caps;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}, kernel {}",
        report.hostname, caps.kernel_release
    );
    let _ = writeln!(out, "\ncapabilities:");
    for check in &caps.checks {
        let status = if check.ok { "ok" } else { "missing" };
        let _ = writeln!(
            out,
            "  {status:<8} {:<28} {}",
            check.id.label(),
            check.detail
        );
        if !check.ok {
            let _ = writeln!(out, "  {:<8} {:<28} fix: {}", "", "", check.id.fix());
        }
    }

    let plan = &caps.tier;
    let tier = serde_json::to_value(plan.tier).ok();
    let tier = tier.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
    let _ = writeln!(out, "\nenforcement tier: {tier}\n  {}", plan.reason);
    let name = |m: Option<crate::audit::Mechanism>| m.map_or("none", |m| m.as_str());
    let _ = writeln!(
        out,
        "  syscalls: {}, exec: {}, files: {}, network: {}",
        name(plan.syscalls),
        name(plan.exec),
        name(plan.files),
        name(plan.network)
    );

    let _ = writeln!(out, "\nmodes (fail_policy = {}):", report.fail_policy);
    for m in &report.modes {
        let status = if m.ok { "ok" } else { "cannot" };
        let req = if m.required {
            " (required by the node config)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:<8} {status}{req}", m.mode.as_str());
        for missing in &m.missing {
            let _ = writeln!(out, "           missing {}", missing);
        }
    }
    let default = report
        .default_mode
        .map_or("monitor when stable, else learn".into(), |m| m.to_string());
    let verdict = if report.ok { "ok" } else { "NOT OK" };
    let _ = writeln!(out, "\ndefault mode: {default}\nresult: {verdict}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamespacePolicy;
    use crate::node_caps::Check;

    fn caps(missing: &[CheckId]) -> NodeCaps {
        let checks = CheckId::ALL
            .iter()
            .map(|id| Check {
                id: *id,
                ok: !missing.contains(id),
                detail: "probe said so".into(),
            })
            .collect();
        NodeCaps::from_checks("6.18.0".into(), checks)
    }

    fn config(default_mode: Option<Mode>, allowed: &[Mode]) -> NodeConfig {
        NodeConfig {
            default_mode,
            allowed_modes: allowed.to_vec(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn passes_when_the_fallback_tier_covers_enforce() {
        let r = report(caps(&[CheckId::LsmBpf]), &NodeConfig::default());
        assert!(r.ok);
        assert!(verdict(&r).is_ok());
        let text = render(&r);
        assert!(text.contains("enforcement tier: fallback"), "{text}");
        assert!(text.contains("missing  LSM-BPF programs"), "{text}");
        assert!(
            text.contains("exec: signal, files: fanotify, network: cgroup-sock"),
            "{text}"
        );
        assert!(text.ends_with("result: ok\n"), "{text}");
    }

    #[test]
    fn fails_when_a_required_mode_cannot_be_honoured() {
        let no_tier = caps(&[CheckId::LsmBpf, CheckId::Fanotify]);
        let r = report(no_tier.clone(), &NodeConfig::default());
        assert!(!r.ok);
        let err = verdict(&r).unwrap_err();
        assert!(matches!(err, CliError::NotTrue(_)));
        assert!(err.to_string().contains("cannot honour enforce"), "{err}");

        // Enforce allowed nowhere: the same node passes.
        let r = report(
            no_tier.clone(),
            &config(None, &[Mode::Learn, Mode::Monitor, Mode::Off]),
        );
        assert!(r.ok, "{:?}", r.modes);

        // ... unless one namespace may ask for it.
        let mut c = config(None, &[Mode::Learn, Mode::Monitor]);
        let ns = NamespacePolicy {
            allowed_modes: vec![Mode::Enforce],
        };
        c.namespaces.insert("payments".into(), ns);
        assert!(!report(no_tier, &c).ok);

        // The default mode itself.
        let no_bpf = caps(&[CheckId::BpfPrograms]);
        let r = report(
            no_bpf,
            &config(Some(Mode::Learn), &[Mode::Learn, Mode::Off]),
        );
        assert!(!r.ok);
        assert!(render(&r).contains("learn    cannot (required by the node config)"));

        // Off needs only runc.
        let r = report(
            caps(&[CheckId::BpfPrograms]),
            &config(Some(Mode::Off), &[Mode::Off]),
        );
        assert!(r.ok);
        let r = report(
            caps(&[CheckId::Runc]),
            &config(Some(Mode::Off), &[Mode::Off]),
        );
        assert!(!r.ok, "without runc no container starts");
    }

    #[test]
    fn json_names_every_check_and_mode() {
        let r = report(caps(&[CheckId::LsmBpf]), &NodeConfig::default());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["tier"]["tier"], "fallback");
        assert_eq!(v["checks"].as_array().unwrap().len(), CheckId::ALL.len());
        assert_eq!(v["checks"][6]["id"], "lsm-bpf");
        assert_eq!(v["checks"][6]["ok"], false);
        assert_eq!(v["modes"].as_array().unwrap().len(), 4);
        assert_eq!(v["modes"][2]["mode"], "enforce");
        assert_eq!(v["fail_policy"], "closed");
        assert_eq!(v["ok"], true);
    }
}
