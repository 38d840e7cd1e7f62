use super::*;
use crate::config::Mode;

fn checks(missing: &[(CheckId, &str)]) -> Vec<Check> {
    CheckId::ALL
        .iter()
        .map(|id| match missing.iter().find(|(m, _)| m == id) {
            Some((_, why)) => Check {
                id: *id,
                ok: false,
                detail: why.to_string(),
            },
            None => Check {
                id: *id,
                ok: true,
                detail: "ok".into(),
            },
        })
        .collect()
}

const LSM_EPERM: (CheckId, &str) = (
    CheckId::LsmBpf,
    "lsm/bprm_check_security program: bpf(BPF_PROG_LOAD) failed: EPERM",
);

#[test]
fn chooses_the_tier_from_the_checks() {
    let plan = decide_tier(&checks(&[]));
    assert_eq!(plan.tier, Tier::Lsm);
    assert_eq!(
        (plan.exec, plan.files),
        (Some(Mechanism::Lsm), Some(Mechanism::Lsm))
    );

    // This test host: LSM-BPF refused at load.
    let plan = decide_tier(&checks(&[LSM_EPERM]));
    assert_eq!(plan.tier, Tier::Fallback);
    assert!(
        plan.reason.contains("EPERM") && plan.reason.contains("sched_process_exec"),
        "{plan:?}"
    );
    assert_eq!(plan.exec, Some(Mechanism::Signal));
    assert_eq!(plan.files, Some(Mechanism::Fanotify));
    assert_eq!(plan.network, Some(Mechanism::CgroupSock));
    assert_eq!(plan.syscalls, Some(Mechanism::Seccomp));

    let plan = decide_tier(&checks(&[(CheckId::LsmActive, "bpf is not in the list")]));
    assert_eq!(plan.tier, Tier::Fallback);
    assert!(
        plan.reason.contains("bpf is not in the list"),
        "{}",
        plan.reason
    );

    let plan = decide_tier(&checks(&[LSM_EPERM, (CheckId::Fanotify, "EINVAL")]));
    assert_eq!(plan.tier, Tier::None);
    assert!(
        plan.reason.contains("fanotify permission events"),
        "{}",
        plan.reason
    );
    assert_eq!((plan.exec, plan.files), (None, None));

    // LSM loads but sock_addr does not: no tier covers the network.
    let plan = decide_tier(&checks(&[(CheckId::CgroupSockAddr, "EPERM")]));
    assert_eq!(plan.tier, Tier::None);
}

#[test]
fn support_says_what_each_mode_lacks() {
    let caps = NodeCaps::from_checks("6.18".into(), checks(&[LSM_EPERM]));
    assert_eq!(caps.support(), NodeSupport::everything());

    let caps = NodeCaps::from_checks(
        "6.18".into(),
        checks(&[LSM_EPERM, (CheckId::Fanotify, "x")]),
    );
    let support = caps.support();
    assert!(support.learn.is_ok() && support.monitor.is_ok());
    let enforce = support.lacks(Mode::Enforce);
    assert_eq!(enforce.len(), 1);
    assert!(
        enforce[0].piece.contains("an enforcement tier"),
        "{enforce:?}"
    );

    let no_bpf = (
        CheckId::BpfPrograms,
        "tracepoint program: bpf(BPF_PROG_LOAD) failed: EPERM",
    );
    let caps = NodeCaps::from_checks("6.18".into(), checks(&[no_bpf]));
    let support = caps.support();
    let learn = support.lacks(Mode::Learn);
    assert_eq!(learn.len(), 1);
    assert!(
        learn[0]
            .piece
            .starts_with("BPF programs: tracepoint program"),
        "{learn:?}"
    );
    assert!(learn[0].fix.contains("root"), "{learn:?}");
    assert!(support.lacks(Mode::Enforce).len() >= 2);
    assert!(support.lacks(Mode::Off).is_empty());

    let no_notify = (
        CheckId::SeccompUserNotif,
        "user_notif is not in actions_avail",
    );
    let caps = NodeCaps::from_checks("6.18".into(), checks(&[no_notify]));
    assert!(caps.support().learn.is_ok());
    assert_eq!(caps.support().lacks(Mode::Monitor).len(), 1);

    // A check that was never made is missing, never assumed.
    let caps = NodeCaps::from_checks("6.18".into(), Vec::new());
    assert!(!caps.check(CheckId::Btf).ok);
    assert!(caps.support().learn.is_err());
}

#[test]
fn probes_this_node_for_real() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping probes_this_node_for_real: needs root for BPF loads");
        return;
    }
    let config = ProbeConfig {
        runc_binary: PathBuf::from("runc"),
        bpf_pin_root: PathBuf::from("/sys/fs/bpf/vigil-probe-test"),
    };
    let caps = probe_cached(&config);
    eprintln!("{}", serde_json::to_string_pretty(&*caps).unwrap());
    assert!(
        Arc::ptr_eq(&caps, &probe_cached(&config)),
        "the probe is cached per process"
    );

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(caps.kernel_release, release.trim());
    assert_eq!(
        caps.checks.iter().map(|c| c.id).collect::<Vec<_>>(),
        CheckId::ALL
    );
    assert_eq!(caps.tier, decide_tier(&caps.checks));
    assert!(
        caps.check(CheckId::BpfPrograms).ok,
        "root loads a tracepoint program"
    );
    assert!(caps.check(CheckId::SeccompFilter).ok);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(caps.cgroup2_mount, probe::cgroup2_mount(&mountinfo));

    // Where the kernel refuses the LSM load (this test host: EPERM), the check and the tier's
    // reason name the errno.
    let lsm = caps.check(CheckId::LsmBpf);
    if !lsm.ok && caps.check(CheckId::Btf).ok {
        assert!(
            lsm.detail.contains("bpf(BPF_PROG_LOAD) failed: E"),
            "{lsm:?}"
        );
        assert_ne!(caps.tier.tier, Tier::Lsm);
        let start = format!("LSM-BPF unavailable ({}", lsm.detail);
        assert!(caps.tier.reason.starts_with(&start), "{}", caps.tier.reason);
    }
}
