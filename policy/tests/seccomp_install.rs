//! Installs compiled filters for real: with libseccomp (the library runc uses) in a child
//! process, and with runc itself on every runc code path (privileged).

mod common;

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::process::Command;

use vigil_policy::seccomp::{compile, Deviations, OciSeccomp};

use common::{body_with, floor};

/// Child mode: install the filter in `VIGIL_SECCOMP_FILTER` and report probe results.
fn child_probe() -> Option<()> {
    let path = std::env::var("VIGIL_SECCOMP_FILTER").ok()?;
    let filter: OciSeccomp = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let lib = Libseccomp::open().expect("libseccomp vanished between parent and child");
    lib.install(&filter).expect("libseccomp refused the filter");
    let out = if std::env::var("VIGIL_SECCOMP_PROBES").as_deref() == Ok("socket") {
        // AF_VSOCK (40) is denied by the existing filter's condition, AF_UNIX (1) is not.
        probe("socket-vsock", libc::SYS_socket, 40) + &probe("socket-unix", libc::SYS_socket, 1)
    } else {
        probe("getppid", libc::SYS_getppid, 0)
            + &probe("getuid", libc::SYS_getuid, 0)
            + &probe("clone3", libc::SYS_clone3, 0)
    };
    // SAFETY: write(2) of a valid buffer to stdout, then _exit; nothing else runs under the
    // filter (the test harness would need syscalls the filter denies).
    unsafe {
        libc::write(1, out.as_ptr().cast(), out.len());
        libc::_exit(0);
    }
}

fn probe(name: &str, nr: libc::c_long, arg: libc::c_long) -> String {
    // SAFETY: raw syscalls without pointers: getppid and getuid take no argument, clone3
    // with a null struct and size 0 fails before touching memory, socket(arg, 0, 0) only
    // creates (and leaks until exit) a descriptor.
    let ret = unsafe { libc::syscall(nr, arg, libc::SOCK_STREAM, 0) };
    if ret < 0 {
        format!(
            "{name} errno {}\n",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    } else {
        format!("{name} ok\n")
    }
}

#[test]
fn seccomp_child_entry() {
    // Does nothing unless started by `run_child` below.
    child_probe();
}

fn run_child(filter: &OciSeccomp) -> String {
    run_child_with(filter, "basic")
}

fn run_child_with(filter: &OciSeccomp, probes: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filter.json");
    std::fs::write(&path, serde_json::to_vec(filter).unwrap()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "seccomp_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VIGIL_SECCOMP_FILTER", &path)
        .env("VIGIL_SECCOMP_PROBES", probes)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

#[test]
fn installed_filter_allows_denies_and_answers_enosys() {
    if Libseccomp::open().is_none() {
        println!(
            "skipping installed_filter_allows_denies_and_answers_enosys: libseccomp.so.2 not found"
        );
        return;
    }
    for extra in [&[][..], &["openat2"][..]] {
        let mut names = vec!["getppid", "write"];
        names.extend_from_slice(extra);
        let compiled = compile(&body_with(&names), &floor(), None, &Deviations::Deny).unwrap();
        let out = run_child(&compiled.seccomp);
        assert!(
            out.contains("getppid ok"),
            "allowed call failed ({extra:?}): {out:?}"
        );
        assert!(
            out.contains("getuid errno 1"),
            "denied call must be EPERM ({extra:?}): {out:?}"
        );
        assert!(
            out.contains("clone3 errno 38"),
            "clone3 must be ENOSYS ({extra:?}): {out:?}"
        );
    }
}

#[test]
fn intersection_keeps_conditional_denials_of_an_allowing_filter() {
    if Libseccomp::open().is_none() {
        println!("skipping intersection_keeps_conditional_denials: libseccomp.so.2 not found");
        return;
    }
    let existing: OciSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}]
    }))
    .unwrap();
    let body = body_with(&["socket", "write"]);
    let compiled = compile(&body, &floor(), Some(&existing), &Deviations::Deny).unwrap();
    let out = run_child_with(&compiled.seccomp, "socket");
    assert!(out.contains("socket-vsock errno 1"), "{out:?}");
    assert!(out.contains("socket-unix ok"), "{out:?}");

    // A conditional denial with another errno is kept too.
    let mut existing = existing;
    existing.syscalls[0].errno_ret = Some(97);
    let compiled = compile(&body, &floor(), Some(&existing), &Deviations::Deny).unwrap();
    let out = run_child_with(&compiled.seccomp, "socket");
    assert!(out.contains("socket-vsock errno 97"), "{out:?}");
    assert!(out.contains("socket-unix ok"), "{out:?}");
}

#[test]
fn runc_starts_enforced_containers_on_every_path() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/base/derive-runc-floor.sh"
    );
    if let Some(reason) = common_privileged_skip() {
        println!("skipping runc_starts_enforced_containers_on_every_path: {reason}");
        return;
    }
    // What busybox sh and id need (strace of `busybox sh -c 'id -u'`); the floor adds runc's.
    let workload = [
        "arch_prctl",
        "brk",
        "clone",
        "close",
        "dup2",
        "execve",
        "exit_group",
        "fcntl",
        "getegid",
        "geteuid",
        "getgid",
        "getpid",
        "getppid",
        "getrandom",
        "getuid",
        "ioctl",
        "mprotect",
        "newfstatat",
        "openat",
        "prctl",
        "prlimit64",
        "read",
        "readlink",
        "rseq",
        "rt_sigaction",
        "rt_sigreturn",
        "set_robust_list",
        "set_tid_address",
        "uname",
        "wait4",
        "write",
        "getcwd",
        "stat",
        "lstat",
        "fstat",
        "rt_sigprocmask",
        "mmap",
        "munmap",
        "clock_nanosleep",
        "nanosleep",
    ];
    // The full floor (what a container without no_new_privs gets) starts every path.
    let text = verify_with_runc(script, &floor(), &workload);
    let want = [
        ("run-root-nnp", "0"),
        ("run-user-nnp", "1000"),
        ("run-root-nonnp", "0"),
        ("run-user-nonnp", "1000"),
        ("exec-user-nnp", "1000"),
        ("exec-user-nonnp", "1000"),
    ];
    for (path, uid) in want {
        let line = format!("{path}\tok\t{uid}");
        assert!(
            text.lines().any(|l| l == line),
            "{path} failed under the filter:\n{text}"
        );
    }

    // The no_new_privs part suffices with no_new_privs; without it runc fails (V01).
    let text = verify_with_runc(script, &floor().for_process(true), &workload);
    for (path, uid) in &want[..2] {
        let line = format!("{path}\tok\t{uid}");
        assert!(
            text.lines().any(|l| l == line),
            "{path} failed under the filter:\n{text}"
        );
    }
    assert!(text.contains("exec-user-nnp\tok\t1000"), "{text}");
    let failed = text
        .lines()
        .find(|l| l.starts_with("run-user-nonnp\t"))
        .unwrap();
    assert!(
        failed.contains("failed"),
        "the nnp floor must not be enough without nnp: {text}"
    );
}

/// Runs the floor script's `--verify` with a filter compiled from `workload` and `floor`.
fn verify_with_runc(script: &str, floor: &vigil_policy::RuntimeFloor, workload: &[&str]) -> String {
    let compiled = compile(&body_with(workload), floor, None, &Deviations::Deny).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seccomp.json");
    std::fs::write(&path, serde_json::to_vec(&compiled.seccomp).unwrap()).unwrap();
    let out = Command::new("bash")
        .arg(script)
        .arg("--verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Why a privileged runc test cannot run here, if it cannot.
fn common_privileged_skip() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    for tool in ["runc", "strace", "jq", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not found on PATH"));
        }
    }
    None
}

/// libseccomp loaded at run time (no -dev package needed), driven as runc drives it.
struct Libseccomp {
    handle: *mut c_void,
}

#[repr(C)]
struct ScmpArgCmp {
    arg: c_uint,
    op: c_int,
    datum_a: u64,
    datum_b: u64,
}

type InitFn = unsafe extern "C" fn(u32) -> *mut c_void;
type ResolveFn = unsafe extern "C" fn(*const c_char) -> c_int;
type RuleAddFn = unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ScmpArgCmp) -> c_int;
type LoadFn = unsafe extern "C" fn(*mut c_void) -> c_int;

impl Libseccomp {
    fn open() -> Option<Self> {
        let name = CString::new("libseccomp.so.2").ok()?;
        // SAFETY: dlopen with a valid C string; a null result is handled.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
        (!handle.is_null()).then_some(Self { handle })
    }

    fn sym<T>(&self, name: &str) -> Result<T, String> {
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: dlsym on a live handle with a valid C string.
        let ptr = unsafe { libc::dlsym(self.handle, cname.as_ptr()) };
        if ptr.is_null() {
            return Err(format!("libseccomp lacks {name}"));
        }
        // SAFETY: T is the function pointer type of the libseccomp 2.5 prototype of `name`,
        // pointer-sized like `ptr`.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&ptr) })
    }

    fn install(&self, filter: &OciSeccomp) -> Result<(), String> {
        let init: InitFn = self.sym("seccomp_init")?;
        let resolve: ResolveFn = self.sym("seccomp_syscall_resolve_name")?;
        let add: RuleAddFn = self.sym("seccomp_rule_add_array")?;
        let load: LoadFn = self.sym("seccomp_load")?;
        let default = action(&filter.default_action, filter.default_errno_ret)?;
        // SAFETY: libseccomp prototypes as declared above; ctx is checked for null and only
        // used with this library.
        unsafe {
            let ctx = init(default);
            if ctx.is_null() {
                return Err("seccomp_init failed".into());
            }
            for rule in &filter.syscalls {
                let act = action(&rule.action, rule.errno_ret)?;
                let args: Vec<ScmpArgCmp> =
                    rule.args.iter().map(arg_cmp).collect::<Result<_, _>>()?;
                for name in &rule.names {
                    let cname = CString::new(name.as_str()).map_err(|e| e.to_string())?;
                    let nr = resolve(cname.as_ptr());
                    if nr < 0 {
                        continue; // runc ignores names libseccomp does not know
                    }
                    let rc = add(ctx, act, nr, args.len() as c_uint, args.as_ptr());
                    if rc != 0 {
                        return Err(format!("seccomp_rule_add {name} failed: {rc}"));
                    }
                }
            }
            match load(ctx) {
                0 => Ok(()),
                rc => Err(format!("seccomp_load failed: {rc}")),
            }
        }
    }
}

fn action(name: &str, errno: Option<u32>) -> Result<u32, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => 0x7fff_0000,
        "SCMP_ACT_ERRNO" => 0x0005_0000 | (errno.unwrap_or(1) & 0xffff),
        "SCMP_ACT_LOG" => 0x7ffc_0000,
        other => return Err(format!("action {other} not supported by this test")),
    })
}

fn arg_cmp(a: &vigil_policy::seccomp::OciArg) -> Result<ScmpArgCmp, String> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => 1,
        "SCMP_CMP_LT" => 2,
        "SCMP_CMP_LE" => 3,
        "SCMP_CMP_EQ" => 4,
        "SCMP_CMP_GE" => 5,
        "SCMP_CMP_GT" => 6,
        "SCMP_CMP_MASKED_EQ" => 7,
        other => return Err(format!("unknown op {other}")),
    };
    Ok(ScmpArgCmp {
        arg: a.index,
        op,
        datum_a: a.value,
        datum_b: a.value_two,
    })
}
