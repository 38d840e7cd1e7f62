//! Seccomp compilation: shape (oci-spec, runc's rules), ENOSYS for new syscalls (V02),
//! intersection with an existing filter, notify/log, errors, and real installation.

mod common;

use vigil_policy::model::Body;
use vigil_policy::seccomp::{compile, Deviations, OciSeccomp, ACT_ALLOW, ACT_ERRNO, ACT_LOG};
use vigil_policy::RuntimeFloor;

use common::{body_with, floor, rule_for};

#[test]
fn output_is_an_oci_seccomp_object_runc_accepts() {
    let compiled = compile(
        &body_with(&["read", "getppid"]),
        &floor(),
        None,
        &Deviations::Deny,
    )
    .unwrap();
    let json = compiled.to_json();
    let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(format!("{:?}", parsed.default_action()), "ScmpActErrno");
    assert_eq!(json["defaultErrnoRet"], 1);
    assert!(json.get("flags").is_none(), "runc 1.1.5 rejects flags");
    assert_eq!(
        json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );
    for name in [
        "read",
        "getppid",
        "capset",
        "exit_group",
        "rt_sigreturn",
        "restart_syscall",
    ] {
        let rule = rule_for(&compiled.seccomp, name).unwrap_or_else(|| panic!("{name} absent"));
        assert_eq!(rule.action, ACT_ALLOW, "{name}");
    }
    assert!(
        compiled.allowed.contains("fstatfs"),
        "V01: the floor is part of every filter"
    );
}

#[test]
fn unlearned_new_syscalls_answer_enosys_not_eperm() {
    let compiled = compile(&body_with(&["read"]), &floor(), None, &Deviations::Deny).unwrap();
    let clone3 = rule_for(&compiled.seccomp, "clone3").expect("clone3 needs an explicit rule");
    assert_eq!(
        (clone3.action.as_str(), clone3.errno_ret),
        (ACT_ERRNO, Some(38))
    );
    assert_eq!(compiled.denial_errno("clone3"), 38);
    assert_eq!(compiled.denial_errno("ptrace"), 1);
    assert!(
        rule_for(&compiled.seccomp, "ptrace").is_none(),
        "old syscalls fall to EPERM"
    );
}

#[test]
fn naming_openat2_keeps_clone3_enosys() {
    // V02: openat2 (437) is above clone3 (435); runc's stub alone would leave clone3 EPERM.
    let compiled = compile(
        &body_with(&["read", "openat2"]),
        &floor(),
        None,
        &Deviations::Deny,
    )
    .unwrap();
    assert_eq!(
        rule_for(&compiled.seccomp, "openat2").unwrap().action,
        ACT_ALLOW
    );
    let clone3 = rule_for(&compiled.seccomp, "clone3").unwrap();
    assert_eq!(clone3.errno_ret, Some(38));
    // Everything above the highest allowed syscall answers ENOSYS explicitly too.
    let highest = vigil_policy::syscalls::all().last().unwrap().0;
    assert_eq!(
        rule_for(&compiled.seccomp, highest).unwrap().errno_ret,
        Some(38)
    );
}

fn existing(json: serde_json::Value) -> OciSeccomp {
    serde_json::from_value(json).unwrap()
}

#[test]
fn existing_filter_is_intersected_never_widened() {
    let e = existing(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["read", "write", "personality", "capset", "execve", "exit_group",
                       "exit", "rt_sigreturn", "getppid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    }));
    let body = body_with(&["read", "clone", "getuid", "personality"]);
    let compiled = compile(&body, &floor(), Some(&e), &Deviations::Deny).unwrap();
    assert!(compiled.allowed.contains("read"));
    assert!(
        !compiled.allowed.contains("getuid"),
        "the existing filter denied getuid"
    );
    assert!(
        !compiled.allowed.contains("fstatfs"),
        "floor calls the existing filter denied stay denied"
    );
    let clone = rule_for(&compiled.seccomp, "clone").unwrap();
    assert_eq!(
        clone.args.len(),
        1,
        "argument conditions of the existing filter are kept"
    );
    assert_eq!(
        rule_for(&compiled.seccomp, "clone3").unwrap().errno_ret,
        Some(38)
    );
    assert_eq!(
        compiled.seccomp.architectures,
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    );
    assert!(
        rule_for(&compiled.seccomp, "write").is_some(),
        "write: floor ∩ existing"
    );
}

fn socket_rules(e: &OciSeccomp) -> vigil_policy::Result<Vec<vigil_policy::seccomp::OciSyscall>> {
    let compiled = compile(
        &body_with(&["socket", "read"]),
        &floor(),
        Some(e),
        &Deviations::Deny,
    )?;
    assert_eq!(
        compiled.seccomp.default_action, ACT_ERRNO,
        "our default narrows the rest"
    );
    let rules = compiled
        .seccomp
        .syscalls
        .iter()
        .filter(|r| r.names.iter().any(|n| n == "socket"));
    Ok(rules.cloned().collect())
}

#[test]
fn existing_allow_default_keeps_its_conditional_denials() {
    // An EPERM carve-out becomes an allow rule with the inverted condition.
    let e = existing(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}]
    }));
    let rules = socket_rules(&e).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        (rules[0].action.as_str(), rules[0].args[0].op.as_str()),
        (ACT_ALLOW, "SCMP_CMP_NE")
    );

    // Another errno is kept as it is, beside the inverted allow.
    let e = existing(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
                      "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}]
    }));
    let rules = socket_rules(&e).unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r.errno_ret == Some(97) && r.args.len() == 1),
        "{rules:?}"
    );
    let allow = rules.iter().find(|r| r.action == ACT_ALLOW).unwrap();
    assert_eq!(
        allow.args[0].op, "SCMP_CMP_NE",
        "an unconditional allow would win: {rules:?}"
    );

    // A masked comparison cannot be inverted: an error, never a wider filter.
    let e = existing(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 8, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    let err = socket_rules(&e).unwrap_err().to_string();
    assert!(
        err.contains("socket") && err.contains("cannot invert"),
        "{err}"
    );
}

#[test]
fn notify_rules_are_explicit_and_never_on_write() {
    let deviations = Deviations::Notify {
        listener_path: "/run/vigil/notify.sock".into(),
        listener_metadata: Some("c1".into()),
    };
    let floor_without_write = {
        let mut f = floor();
        f.syscalls.remove("write");
        f
    };
    let compiled = compile(
        &body_with(&["read"]),
        &floor_without_write,
        None,
        &deviations,
    )
    .unwrap();
    let s = &compiled.seccomp;
    assert_eq!(s.default_action, ACT_ERRNO);
    assert_eq!(s.listener_path.as_deref(), Some("/run/vigil/notify.sock"));
    let notify = s
        .syscalls
        .iter()
        .find(|r| r.action == "SCMP_ACT_NOTIFY")
        .unwrap();
    assert!(notify.names.iter().any(|n| n == "ptrace"));
    assert!(notify.names.iter().any(|n| n == "clone3"));
    assert!(!notify.names.iter().any(|n| n == "write"));
    assert!(!notify.names.iter().any(|n| n == "read"));
    let json = serde_json::to_value(s).unwrap();
    let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json).unwrap();
}

#[test]
fn log_mode_logs_everything_outside_the_profile() {
    let compiled = compile(&body_with(&["read"]), &floor(), None, &Deviations::Log).unwrap();
    let log = compiled
        .seccomp
        .syscalls
        .iter()
        .find(|r| r.action == ACT_LOG)
        .unwrap();
    assert!(log.names.iter().any(|n| n == "ptrace"));
    assert!(log.names.iter().any(|n| n == "clone3"));
}

#[test]
fn unusable_profiles_are_errors() {
    let f = floor();
    let err = compile(&Body::default(), &f, None, &Deviations::Deny)
        .unwrap_err()
        .to_string();
    assert!(err.contains("names no syscall"), "{err}");
    let err = compile(&body_with(&["frobnicate"]), &f, None, &Deviations::Deny).unwrap_err();
    assert!(err.to_string().contains("frobnicate"), "{err}");
    let nothing = existing(serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}));
    let err = compile(&body_with(&["read"]), &f, Some(&nothing), &Deviations::Deny).unwrap_err();
    assert!(err.to_string().contains("no syscall in common"), "{err}");
    let relative = Deviations::Notify {
        listener_path: "x.sock".into(),
        listener_metadata: None,
    };
    assert!(compile(&body_with(&["read"]), &f, None, &relative).is_err());
}

#[test]
fn builtin_floors_parse() {
    let floors = RuntimeFloor::builtin().unwrap();
    assert!(!floors.is_empty());
}
