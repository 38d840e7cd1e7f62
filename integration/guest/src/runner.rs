//! The whole host side: build the guest program, fetch a kernel, pack an initramfs, boot it,
//! and turn the console into a report.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cases;
use crate::initramfs::{Image, ImageError};
use crate::kernel::{self, KernelError};
use crate::layout;
use crate::qemu::{self, Boot, BootError};
use crate::report::{self, GarbledLine, Line, Outcome};

/// Environment variable naming a prebuilt static guest program (skips the cargo build).
pub const GUEST_INIT_ENV: &str = "VIGIL_GUEST_INIT";
/// Environment variable naming the cache folder (default `<target>/vigil-guest`).
pub const CACHE_ENV: &str = "VIGIL_GUEST_CACHE";
/// The guest program's package and binary name.
const GUEST_PACKAGE: &str = "vigil-guest-init";
/// Built for the host triple, statically linked, so the guest needs no shared libraries.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// How to run the guest.
#[derive(Clone, Debug)]
pub struct Options {
    pub cache: PathBuf,
    pub workspace: PathBuf,
    pub timeout: Duration,
    pub memory_mb: u32,
}

impl Options {
    /// Defaults for this checkout: cache under the workspace's `target/`, 1 GiB guest, and a
    /// timeout that covers a TCG boot, the tests and the benchmark on a loaded 2-core host.
    pub fn for_workspace() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let workspace = workspace.canonicalize().unwrap_or(workspace);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let cache = std::env::var_os(CACHE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("vigil-guest"));
        Options {
            cache,
            workspace,
            timeout: Duration::from_secs(600),
            memory_mb: 1024,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub enum RunOutcome {
    /// The guest could not boot on this machine; nothing was tested.
    Skipped {
        cause: String,
    },
    Ran(GuestReport),
}

/// One guest boot: which suite ran and what it reported.
#[derive(Debug)]
pub struct BootReport {
    pub suite: &'static str,
    /// The guest's report lines, followed by a failed case for every case of the suite the
    /// guest never reported (see [`crate::cases`]).
    pub lines: Vec<Line>,
    /// Why the boot broke off, when it did (its unreported cases fail with this cause).
    pub error: Option<String>,
    pub elapsed: Duration,
    pub console_log: PathBuf,
}

/// Every boot's report.
#[derive(Debug)]
pub struct GuestReport {
    pub kernel: String,
    pub boots: Vec<BootReport>,
    /// The guest program's benchmark loops run on the host itself (setting `host`), to
    /// translate emulated (TCG) times into native ones; empty when they could not run.
    pub host_bench: Vec<Line>,
}

impl GuestReport {
    /// Number of cases with `outcome`, over every boot.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.boots
            .iter()
            .flat_map(|boot| &boot.lines)
            .filter(|line| matches!(line, Line::Case { outcome: o, .. } if *o == outcome))
            .count()
    }
}

/// The suites, each in its own boot: (suite, `lsm=` list).
pub const SUITES: [(&str, &str); 2] = [
    // The LSM tier: every case and the benchmark.
    ("lsm", "lockdown,capability,bpf"),
    // A kernel that does not run the BPF LSM: the probe's reason and the fallback tier.
    ("nolsm", "lockdown,capability"),
];

/// Why a run that could start failed. Every one of these is a test failure, not a skip.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the cache folder {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the static guest program failed: `{command}` {detail}")]
    Build { command: String, detail: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("{source}; console in {log}")]
    Garbled { source: GarbledLine, log: PathBuf },
    #[error("the guest stopped before reporting its end ({seen} report lines); last console lines:\n{tail}")]
    Incomplete { seen: usize, tail: String },
    #[error("the guest said it printed {said} report lines but {seen} arrived; console in {log}")]
    Lost {
        said: u64,
        seen: usize,
        log: PathBuf,
    },
}

/// Runs the guest tests, or says why they cannot run here.
pub fn run(options: &Options) -> Result<RunOutcome, RunError> {
    if let Err(cause) = qemu::qemu_available() {
        return Ok(RunOutcome::Skipped { cause });
    }
    fs::create_dir_all(&options.cache).map_err(|source| RunError::Cache {
        path: options.cache.clone(),
        source,
    })?;
    let kernel = match kernel::locate(&options.cache) {
        Ok(kernel) => kernel,
        Err(err @ (KernelError::Apt { .. } | KernelError::EnvMissing(_))) => {
            return Ok(RunOutcome::Skipped {
                cause: err.to_string(),
            });
        }
        Err(err) => {
            return Err(RunError::Build {
                command: "kernel".into(),
                detail: err.to_string(),
            })
        }
    };

    let init = guest_program(options)?;
    let initrd = options.cache.join("initramfs.cpio");
    guest_image(&init)?.write_to(&initrd)?;

    let mut boots = Vec::new();
    for (suite, lsm) in SUITES {
        let console_log = options.cache.join(format!("console-{suite}.log"));
        let boot = Boot {
            kernel: kernel.vmlinuz.clone(),
            initrd: initrd.clone(),
            lsm: lsm.to_string(),
            suite: suite.to_string(),
            memory_mb: options.memory_mb,
            timeout: options.timeout,
            console_log: console_log.clone(),
        };
        let started = std::time::Instant::now();
        let booted = qemu::boot(&boot);
        // qemu that fails before the guest prints a byte (no TCG, a host limit, a kernel image
        // it cannot load) means the guest cannot boot here: nothing was tested.
        if let Err(err @ BootError::Qemu { .. }) = &booted {
            let silent = fs::metadata(&console_log).map_or(true, |m| m.len() == 0);
            if boots.is_empty() && silent {
                return Ok(RunOutcome::Skipped {
                    cause: format!("qemu could not start the guest: {err}"),
                });
            }
        }
        let (mut lines, error) = match booted
            .map_err(RunError::from)
            .and_then(|console| parse_console(&console.lines, &console_log))
        {
            Ok(lines) => (lines, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        add_unreported(suite, &mut lines, error.as_deref());
        boots.push(BootReport {
            suite,
            lines,
            error,
            elapsed: started.elapsed(),
            console_log,
        });
    }
    let host_bench = host_yardstick(&init);
    Ok(RunOutcome::Ran(GuestReport {
        kernel: kernel.source,
        boots,
        host_bench,
    }))
}

/// Appends a failed case for every case of `suite` that `lines` does not report.
fn add_unreported(suite: &str, lines: &mut Vec<Line>, error: Option<&str>) {
    let reported: Vec<String> = lines
        .iter()
        .filter_map(|line| match line {
            Line::Case { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    for name in cases::expected(suite) {
        if !reported.contains(&name) {
            let detail = match error {
                Some(cause) => format!("not reported: {cause}"),
                None => "the guest never reported this case".to_owned(),
            };
            lines.push(Line::Case {
                name,
                outcome: Outcome::Fail,
                detail,
            });
        }
    }
}

/// Report lines of a finished guest, checked for completeness.
fn parse_console(console: &[String], log: &Path) -> Result<Vec<Line>, RunError> {
    let mut lines = Vec::new();
    for text in console {
        let parsed = report::parse(text).map_err(|source| RunError::Garbled {
            source,
            log: log.to_owned(),
        })?;
        match parsed {
            Some(Line::End { lines: said }) if said as usize == lines.len() => return Ok(lines),
            Some(Line::End { lines: said }) => {
                return Err(RunError::Lost {
                    said,
                    seen: lines.len(),
                    log: log.to_owned(),
                });
            }
            Some(line) => lines.push(line),
            None => {}
        }
    }
    Err(RunError::Incomplete {
        seen: lines.len(),
        tail: qemu::tail(log, 30),
    })
}

/// Path of the static guest program, built with cargo unless [`GUEST_INIT_ENV`] names one.
fn guest_program(options: &Options) -> Result<PathBuf, RunError> {
    if let Some(path) = std::env::var_os(GUEST_INIT_ENV) {
        return Ok(PathBuf::from(path));
    }
    // A target folder of its own: the static build's flags would otherwise invalidate the
    // shared target folder's artefacts on every switch.
    let target_dir = options.cache.join("cargo");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--package", GUEST_PACKAGE, "--bin", GUEST_PACKAGE])
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        // Without debug info the initramfs is ~20 MB instead of ~190 MB, which TCG unpacks
        // in a fraction of the time.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_DEV_STRIP", "symbols")
        .current_dir(&options.workspace);
    let shown = format!("{command:?}");
    let status = command.status().map_err(|e| RunError::Build {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    if !status.success() {
        return Err(RunError::Build {
            command: shown,
            detail: format!("exited with {status}"),
        });
    }
    Ok(target_dir
        .join(GUEST_TARGET)
        .join("debug")
        .join(GUEST_PACKAGE))
}

/// The guest's root: its init (the test program), busybox with applet links, test files.
fn guest_image(init: &Path) -> Result<Image, ImageError> {
    let mut image = Image::default();
    image.static_exe("/init", init)?;
    image
        .char_dev("/dev/console", 5, 1)
        .char_dev("/dev/null", 1, 3);
    for dir in layout::DIRS {
        image.dir(dir);
    }
    for (path, mode, text) in layout::FILES {
        image.file(path, *mode, text.as_bytes().to_vec());
    }

    let busybox = Path::new("/bin/busybox");
    image.static_exe(layout::BUSYBOX, busybox)?;
    image.static_exe(layout::DROPPER, busybox)?;
    let merged_busybox = format!("{}/usr/bin/busybox", layout::MERGED_ROOT);
    image.static_exe(&merged_busybox, busybox)?;
    image.symlink(&format!("{}/bin", layout::MERGED_ROOT), "usr/bin");
    for applet in layout::APPLETS {
        image.symlink(&format!("/bin/{applet}"), "busybox");
        image.symlink(
            &format!("{}/usr/bin/{applet}", layout::MERGED_ROOT),
            "busybox",
        );
    }
    Ok(image)
}

/// Host loops of the guest program (`bench OP N`, no vigil program involved): the same
/// binary, natively, for a TCG slow-down factor per operation.
fn host_yardstick(init: &Path) -> Vec<Line> {
    [("getppid", 1_000_000u64), ("open", 200_000)]
        .into_iter()
        .filter_map(|(op, iterations)| {
            let output = Command::new(init)
                .args(["bench", op, &iterations.to_string()])
                .output();
            let stdout = String::from_utf8_lossy(&output.ok()?.stdout).into_owned();
            let ns_per_op = stdout.trim().strip_prefix("ns_per_op=")?.parse().ok()?;
            let (op, setting) = (op.to_string(), "host".to_string());
            Some(Line::Bench {
                op,
                setting,
                ns_per_op,
                iterations,
            })
        })
        .collect()
}
