//! Every case the guest runs, by suite. The host prints these as skipped when the guest cannot
//! boot, and fails a case the guest never reported (a guest that stopped early or lost a case
//! never looks like a pass).

/// The attack list of the enforce issue, run in both suites (`attack_` + name): the same
/// verdict is expected under the LSM tier and under the fallback tier.
pub const ATTACKS: &[&str] = &[
    "spawn_shell",
    "read_shadow",
    "write_below_bin",
    "drop_and_run_in_tmp",
    "downloader",
    "connect_unlisted",
    "listen_new_port",
    "syscalls_ptrace_mount_unshare_keyctl",
];

/// Cases of the `lsm` suite (booted with the BPF LSM), in the order the guest runs them.
pub const LSM_CASES: &[&str] = &[
    "bpf_lsm_active",
    "tier_probe_attaches",
    "node_tier_is_lsm",
    "doctor_reports_lsm_tier",
    "exec_allowed",
    "v20_denied_entrypoint_eperm",
    "exec_denied_from_shell",
    "open_read_denied",
    "open_write_denied",
    "open_allowed_exact_ids_prefix",
    "connect_denied_and_allowed",
    "bind_denied_and_allowed",
    "ptrace_across_containers",
    "kill_across_containers",
    "mount_denied",
    "monitor_reports_and_allows",
    "other_cgroup_unaffected",
    "v09_busybox_exec_identity",
    "no_events_lost",
    "unregister_stops_guarding",
];

/// Cases of the `nolsm` suite (booted without the BPF LSM: the fallback tier).
pub const NOLSM_CASES: &[&str] = &[
    "tier_probe_refuses_without_bpf_lsm",
    "node_falls_back_with_no_lsm_pin",
    "doctor_reports_fallback_tier",
    "fallback_allows_profiled_exec",
    "fallback_kills_denied_exec",
];

/// The names every boot of `suite` must report.
pub fn expected(suite: &str) -> Vec<String> {
    let own = match suite {
        "lsm" => LSM_CASES,
        "nolsm" => NOLSM_CASES,
        _ => &[],
    };
    own.iter()
        .map(|name| name.to_string())
        .chain(ATTACKS.iter().map(|name| format!("attack_{name}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_suites_run_the_whole_attack_list() {
        for suite in ["lsm", "nolsm"] {
            let names = expected(suite);
            for attack in ATTACKS {
                assert!(
                    names.contains(&format!("attack_{attack}")),
                    "{suite} {attack}"
                );
            }
        }
        assert!(expected("other").len() == ATTACKS.len());
    }
}
