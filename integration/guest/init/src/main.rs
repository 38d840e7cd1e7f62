//! PID 1 of the LSM-BPF test guest: prepares the system, runs the benchmark and every case,
//! powers off. Run again as `/init probe ...` or `/init bench ...` inside a test cgroup, it
//! is the helper that performs one operation (see `helper`).
//!
//! The kernel command line selects the suite: `vigil.suite=lsm` (booted with
//! `lsm=...,bpf`) or `vigil.suite=nolsm` (booted without the BPF LSM: the fallback tier).

mod attacks;
mod bench;
mod cases;
mod cgroup;
mod console;
mod helper;
mod setup;
mod world;

use std::process::ExitCode;

use console::Reporter;
use vigil_shim::bpf::{lsm_probe, LsmUnavailable, Tier};
use world::World;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if std::process::id() != 1 {
        return helper::main(&args);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("vigil-guest-init panicked: {info}");
        setup::power_off();
    }));
    let mut report = Reporter::default();
    match setup::mount_all().and_then(|()| setup::loopback_up()) {
        Ok(()) => match setup::suite().as_deref() {
            Some("nolsm") => nolsm_suite(&mut report),
            _ => lsm_suite(&mut report),
        },
        Err(cause) => report.case("guest_setup", Err(cause)),
    }
    report.end();
    setup::power_off();
}

fn lsm_suite(report: &mut Reporter) {
    report.case("bpf_lsm_active", bpf_lsm_active());
    let prepared = world::start_listeners().and_then(|()| cgroup::Cgroup::create("bench"));
    let bench_cgroup = match prepared {
        Ok(cgroup) => cgroup,
        Err(cause) => return report.case("guest_fixture", Err(cause)),
    };
    if let Err(cause) = bench::measure(&[("none", &bench_cgroup)], None, &mut || {}, report) {
        report.case("bench_none", Err(cause));
    }
    report.case(
        "tier_probe_attaches",
        lsm_probe()
            .map(|()| "probe loaded and attached every LSM program".into())
            .map_err(|e| e.to_string()),
    );
    let mut world = match World::open() {
        Ok(world) => world,
        Err(cause) => return report.case("node_open", Err(cause)),
    };
    report.case("node_tier_is_lsm", node_tier_is_lsm(&world));
    report.case(
        "doctor_reports_lsm_tier",
        doctor_tier(vigil_shim::node_caps::Tier::Lsm),
    );
    benchmark(&mut world, &bench_cgroup, report);
    cases::run_all(&mut world, report);
    attacks::run_all(&world.node, attacks::TierKind::Lsm, report);
}

/// What `vigil doctor` and the shim's start-up decide here (node_caps, the same probe).
fn doctor_tier(wanted: vigil_shim::node_caps::Tier) -> Result<String, String> {
    let config = vigil_shim::node_caps::ProbeConfig {
        runc_binary: "runc".into(),
        bpf_pin_root: world::PIN_ROOT.into(),
    };
    let caps = vigil_shim::node_caps::probe(&config);
    let plan = &caps.tier;
    let lsm_check = caps
        .checks
        .iter()
        .find(|c| c.id == vigil_shim::node_caps::CheckId::LsmBpf)
        .map(|c| c.detail.clone())
        .unwrap_or_default();
    if plan.tier != wanted {
        return Err(format!(
            "doctor's tier {:?}, wanted {wanted:?}: {} (LSM-BPF check: {lsm_check})",
            plan.tier, plan.reason
        ));
    }
    Ok(format!("{:?}: {}", plan.tier, plan.reason))
}

fn bpf_lsm_active() -> Result<String, String> {
    let list = setup::active_lsms()?;
    if list.trim().split(',').any(|l| l == "bpf") {
        Ok(format!("active LSMs: {}", list.trim()))
    } else {
        Err(format!("bpf missing from the active LSMs: {}", list.trim()))
    }
}

fn node_tier_is_lsm(world: &World) -> Result<String, String> {
    match world.node.tier() {
        Tier::Lsm => Ok(format!(
            "LSM programs attached, pinned in {}",
            world.node.pin_dir().display()
        )),
        Tier::Fallback { reason } => Err(format!("fallback tier: {reason}")),
    }
}

fn benchmark(world: &mut World, bench_cgroup: &cgroup::Cgroup, report: &mut Reporter) {
    if let Err(cause) = bench::enable_stats() {
        return report.case("bench_stats", Err(cause));
    }
    let enforced = world.enforced.cgroup.clone();
    let settings = [("unregistered", bench_cgroup), ("registered", &enforced)];
    let World { node, enforced, .. } = world;
    let mut drain = || enforced.discard_events();
    if let Err(cause) = bench::measure(&settings, Some(node), &mut drain, report) {
        report.case("bench_with_programs", Err(cause));
    }
}

/// Booted without the BPF LSM: the probe says why, the node loads without any LSM program
/// (none half-attached), and a denied exec is killed by the fallback tier instead.
fn nolsm_suite(report: &mut Reporter) {
    if let Err(cause) = world::start_listeners() {
        return report.case("guest_fixture", Err(cause));
    }
    report.case(
        "tier_probe_refuses_without_bpf_lsm",
        match lsm_probe() {
            Err(why @ LsmUnavailable::NotActive { .. }) => Ok(why.to_string()),
            Err(other) => Err(format!("unexpected reason: {other}")),
            Ok(()) => Err("the probe attached LSM programs on a kernel without the BPF LSM".into()),
        },
    );
    let mut world = match World::open() {
        Ok(world) => world,
        Err(cause) => return report.case("node_open", Err(cause)),
    };
    report.case(
        "node_falls_back_with_no_lsm_pin",
        match world.node.tier() {
            Tier::Fallback { .. } if bench::any_lsm_pin(&world.node) => {
                Err("an LSM pin exists".into())
            }
            Tier::Fallback { reason } => Ok(format!("fallback tier, no LSM pin: {reason}")),
            Tier::Lsm => Err("LSM tier reported without the BPF LSM".into()),
        },
    );
    report.case(
        "doctor_reports_fallback_tier",
        doctor_tier(vigil_shim::node_caps::Tier::Fallback).and_then(|detail| {
            if detail.contains("not in the active LSM list") {
                Ok(detail)
            } else {
                Err(format!(
                    "the reason does not name the inactive BPF LSM: {detail}"
                ))
            }
        }),
    );
    report.case(
        "fallback_allows_profiled_exec",
        cases::fallback_allows(&mut world),
    );
    report.case(
        "fallback_kills_denied_exec",
        cases::fallback_kill(&mut world),
    );
    attacks::run_all(&world.node, attacks::TierKind::Fallback, report);
}
