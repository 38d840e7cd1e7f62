//! Helpers shared by the policy tests.
#![allow(dead_code)]

use vigil_policy::model::{Body, Evidence, Origin, Phase};
use vigil_policy::seccomp::{OciSeccomp, OciSyscall};
use vigil_policy::{RuntimeFloor, Timestamp};

pub fn floor() -> RuntimeFloor {
    RuntimeFloor::for_runc("1.1.5").unwrap()
}

pub fn body_with(syscalls: &[&str]) -> Body {
    let mut body = Body::default();
    for name in syscalls {
        let ev = Evidence::once(Timestamp(0), Phase::Steady, Origin::Main);
        body.syscalls.insert(name.to_string(), ev);
    }
    body
}

/// The first rule naming `name`.
pub fn rule_for<'a>(s: &'a OciSeccomp, name: &str) -> Option<&'a OciSyscall> {
    s.syscalls
        .iter()
        .find(|r| r.names.iter().any(|n| n == name))
}
