//! `ctr run` and `ctr task` helpers on a private [`Containerd`].

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Background, Output};
use crate::containerd::Containerd;
use crate::images::Image;
use crate::runtime::Runtime;

/// How `ctr run` treats the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Wait for the task and remove the container afterwards (`--rm`).
    Remove,
    /// Return once the task started (`-d`).
    Detach,
    /// Wait for the task and keep the container.
    Keep,
}

/// One `ctr run` invocation.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which shim runs it.
    pub runtime: Runtime,
    /// Image name.
    pub image: String,
    /// Container id.
    pub id: String,
    /// `--rm`, `-d` or neither.
    pub mode: RunMode,
    /// Extra `ctr run` flags (`--memory-limit`, `--annotation`, `-t`, ...).
    pub flags: Vec<String>,
    /// The command and its arguments (empty: the image's default).
    pub args: Vec<String>,
}

impl Run {
    /// `ctr run --rm` of `image` as `id` with `runtime`.
    pub fn new(runtime: Runtime, image: Image, id: &str) -> Run {
        Run {
            runtime,
            image: image.name().to_string(),
            id: id.to_string(),
            mode: RunMode::Remove,
            flags: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Returns once started (`-d`).
    pub fn detach(mut self) -> Run {
        self.mode = RunMode::Detach;
        self
    }

    /// Waits but keeps the container.
    pub fn keep(mut self) -> Run {
        self.mode = RunMode::Keep;
        self
    }

    /// Adds `ctr run` flags.
    pub fn flags(mut self, flags: &[&str]) -> Run {
        self.flags.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    /// Sets the command.
    pub fn cmd(mut self, args: &[&str]) -> Run {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs `sh -c SCRIPT`.
    pub fn sh(self, script: &str) -> Run {
        self.cmd(&["sh", "-c", script])
    }

    /// The `ctr` arguments after `-a SOCK -n NS`.
    pub fn ctr_args(&self, c: &Containerd) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        match self.mode {
            RunMode::Remove => args.push("--rm".into()),
            RunMode::Detach => args.push("-d".into()),
            RunMode::Keep => {}
        }
        args.extend(["--runtime".into(), self.runtime.runtime_type().into()]);
        args.extend([
            "--fifo-dir".into(),
            c.fifo_dir().to_string_lossy().into_owned(),
        ]);
        if self.runtime == Runtime::Runc {
            args.extend([
                "--runc-root".into(),
                c.runc_root().to_string_lossy().into_owned(),
            ]);
        }
        args.extend(self.flags.iter().cloned());
        args.extend([self.image.clone(), self.id.clone()]);
        args.extend(self.args.iter().cloned());
        args
    }
}

/// A row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Container id.
    pub id: String,
    /// Init pid (0 once stopped).
    pub pid: i32,
    /// `RUNNING`, `STOPPED`, `PAUSED`, `CREATED`, ...
    pub status: String,
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Containerd {
    /// Runs `run` and waits up to `timeout`.
    pub fn run(&self, run: &Run, timeout: Duration) -> Result<Output> {
        self.ctr_timeout(&strs(&run.ctr_args(self)), timeout)
    }

    /// Runs `run` with `stdin` piped to the container.
    pub fn run_stdin(&self, run: &Run, stdin: &[u8], timeout: Duration) -> Result<Output> {
        self.ctr_stdin(&strs(&run.ctr_args(self)), stdin, timeout)
    }

    /// Runs `run` under a pseudo-terminal (`script`); add `-t` to its flags for a TTY.
    pub fn run_tty(&self, run: &Run, timeout: Duration) -> Result<Output> {
        self.ctr_tty(&strs(&run.ctr_args(self)), timeout)
    }

    /// Starts `run` in the background (for tasks that are killed or outlive containerd).
    pub fn run_background(&self, run: &Run) -> Result<Background> {
        cmd::spawn_background(&mut self.ctr_command(&strs(&run.ctr_args(self))))
    }

    /// `ctr task exec --exec-id EXEC ID ARGS...`; `flags` go before the id (`-t`, `-d`, ...).
    pub fn exec_args(&self, id: &str, exec_id: &str, flags: &[&str], args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ["task", "exec", "--exec-id", exec_id, "--fifo-dir"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(self.fifo_dir().to_string_lossy().into_owned());
        v.extend(flags.iter().map(|s| s.to_string()));
        v.push(id.to_string());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr task exec` and wait up to `timeout`.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        self.ctr_timeout(&strs(&self.exec_args(id, exec_id, &[], args)), timeout)
    }

    /// The `ctr task exec` command, to run in the background or under `script`.
    pub fn exec_command(&self, id: &str, exec_id: &str, flags: &[&str], args: &[&str]) -> Command {
        self.ctr_command(&strs(&self.exec_args(id, exec_id, flags, args)))
    }

    /// Parses `ctr task ls`.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        let out = self
            .ctr_timeout(&["task", "ls"], Duration::from_secs(30))?
            .ok()?;
        Ok(parse_task_ls(&out.stdout))
    }

    /// The task `id`, if containerd lists it.
    pub fn task(&self, id: &str) -> Result<Option<Task>> {
        Ok(self.tasks()?.into_iter().find(|t| t.id == id))
    }

    /// Polls `ctr task ls` until task `id` has `status`, up to `timeout`.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Task> {
        let deadline = Instant::now() + timeout;
        loop {
            let task = self.task(id)?;
            match task {
                Some(t) if t.status == status => return Ok(t),
                _ if Instant::now() >= deadline => {
                    bail!("task {id} is {task:?}, not {status}, after {timeout:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The shim serving task `id`: the parent of the task's init process (runc leaves it
    /// with the shim, its subreaper).
    pub fn shim_pid(&self, id: &str) -> Result<i32> {
        let task = self
            .task(id)?
            .with_context(|| format!("task {id} is not listed"))?;
        if task.pid <= 0 {
            bail!("task {id} has no process ({})", task.status);
        }
        crate::procs::ppid(task.pid)
            .with_context(|| format!("parent of task {id} pid {}", task.pid))
    }

    /// Kills the shim serving task `id` with SIGKILL (it must be gone within `gone`), then
    /// waits up to `stop` for containerd to stop listing the task as RUNNING; returns whether
    /// it did.
    pub fn kill_shim(&self, id: &str, gone: Duration, stop: Duration) -> Result<bool> {
        let shim = self.shim_pid(id)?;
        crate::procs::kill(shim, nix::sys::signal::Signal::SIGKILL);
        if !crate::procs::wait_gone(&[shim], gone).is_empty() {
            bail!("shim {shim} survived SIGKILL");
        }
        let deadline = Instant::now() + stop;
        loop {
            let stopped = self
                .task(id)
                .is_ok_and(|t| t.is_none_or(|t| t.status != "RUNNING"));
            if stopped || Instant::now() >= deadline {
                return Ok(stopped);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Force-removes container `id` (kill, delete task, remove container), ignoring errors:
    /// for clean-up between steps.
    pub fn remove(&self, id: &str) {
        let t = Duration::from_secs(20);
        let _ = self.ctr_timeout(&["task", "kill", "-s", "KILL", id], t);
        let _ = self.ctr_timeout(&["task", "delete", "-f", id], t);
        let _ = self.ctr_timeout(&["container", "rm", id], t);
    }
}

/// Parses the `TASK PID STATUS` table of `ctr task ls`.
pub fn parse_task_ls(text: &str) -> Vec<Task> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let id = cols.next()?.to_string();
            let pid = cols.next()?.parse().ok()?;
            let status = cols.next()?.to_string();
            Some(Task { id, pid, status })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_table() {
        let text =
            "TASK    PID      STATUS    \nv1      4242     RUNNING\nv2      0        STOPPED\n";
        let tasks = parse_task_ls(text);
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            tasks[0],
            Task {
                id: "v1".into(),
                pid: 4242,
                status: "RUNNING".into()
            }
        );
        assert_eq!(tasks[1].status, "STOPPED");
    }
}
