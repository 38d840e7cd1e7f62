//! Small assertions and waits shared by the e2e areas.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use vigil_integration::cmd::Output;

/// The field cases' hang deadlines are asserted at five times the stated figure.
pub const HANG_FACTOR: u32 = 5;

/// `secs` seconds times [`HANG_FACTOR`].
pub fn hang(secs: u64) -> Duration {
    Duration::from_secs(secs) * HANG_FACTOR
}

/// Fails unless `out` exited with `rc` within its deadline.
pub fn rc(out: &Output, rc: i32) -> Result<()> {
    ensure!(
        !out.timed_out && out.rc == rc,
        "expected rc {rc}: {}",
        out.describe()
    );
    Ok(())
}

/// Fails unless `out` exited with `rc` and printed exactly `stdout`.
pub fn rc_stdout(out: &Output, code: i32, stdout: &str) -> Result<()> {
    rc(out, code)?;
    ensure!(
        out.stdout == stdout,
        "expected stdout {stdout:?}: {}",
        out.describe()
    );
    Ok(())
}

/// Fails unless `out` failed (rc != 0, not timed out) with stderr containing every `needle`
/// (case-insensitive).
pub fn error_names(out: &Output, needles: &[&str]) -> Result<()> {
    ensure!(
        !out.timed_out,
        "timed out instead of failing: {}",
        out.describe()
    );
    ensure!(
        out.rc != 0,
        "succeeded but should have failed: {}",
        out.describe()
    );
    let text = format!("{}\n{}", out.stderr, out.stdout).to_lowercase();
    for needle in needles {
        ensure!(
            text.contains(&needle.to_lowercase()),
            "error does not name {needle:?}: {}",
            out.describe()
        );
    }
    Ok(())
}

/// Polls `probe` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has a handler (or ignore disposition, with `ignored`) for `signal`.
pub fn signal_disposition(pid: i32, signal: i32, ignored: bool) -> bool {
    let field = if ignored { "SigIgn:" } else { "SigCgt:" };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// Terminal output made comparable between runs: `/dev/pts/<n>` becomes `/dev/pts/N`, carriage
/// returns, `script`'s echo of its stdin's EOF (`^@`, `^D`) and ctr's own log lines (its
/// "resize pty" race with a stopped process) are dropped.
pub fn normalize_tty(text: &str) -> String {
    let text = text.replace('\r', "").replace("^@", "").replace("^D", "");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("resize pty") && !l.contains("level="))
        .collect();
    let text = kept.join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("/dev/pts/") {
        out.push_str(&rest[..at + 9]);
        rest = rest[at + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

use vigil_integration::{Image, Run, Task};

use crate::runner::Env;

/// A generous deadline for one `ctr` command that should be quick.
pub const CTR: Duration = Duration::from_secs(60);

impl Env {
    /// `ctr run --rm` of busybox as `BASE-<runtime>`.
    pub fn run(&self, base: &str) -> Run {
        Run::new(self.rt, Image::Busybox, &self.id(base))
    }

    /// Starts `sh -c SCRIPT` detached (no stdio) and waits until it runs.
    pub fn start_detached(&self, base: &str, script: &str) -> Result<Task> {
        let run = self.run(base).detach().flags(&["--null-io"]).sh(script);
        rc(&self.c.run(&run, CTR)?, 0)?;
        self.c.wait_task_status(&run.id, "RUNNING", hang(2))
    }

    /// `ctr task kill -s SIGNAL ID` (plus `--exec-id` when given); fails unless it answers 0.
    pub fn kill(&self, id: &str, signal: &str, exec_id: Option<&str>) -> Result<()> {
        let mut args = vec!["task", "kill", "-s", signal];
        if let Some(exec) = exec_id {
            args.extend(["--exec-id", exec]);
        }
        args.push(id);
        rc(&self.c.ctr(&args)?, 0)
    }

    /// `ctr task delete ID` and the exit status it reports (ctr 1.6 exits 0 and warns
    /// "exit with non-zero exit code N" on stderr).
    pub fn delete_status(&self, id: &str) -> Result<i32> {
        let out = self.c.ctr(&["task", "delete", id])?;
        rc(&out, 0)?;
        Ok(exit_code_warning(&out.stderr).unwrap_or(0))
    }

    /// Pids `ctr task ps ID` lists.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let out = self.c.ctr(&["task", "ps", id])?.ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }
}

/// The N of ctr's "exit with non-zero exit code N" warning.
pub fn exit_code_warning(stderr: &str) -> Option<i32> {
    let at = stderr.find("non-zero exit code ")? + "non-zero exit code ".len();
    let digits: String = stderr[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
