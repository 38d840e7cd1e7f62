//! The e2e runner: named cases, substring filters, one line per case, a summary line.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use anyhow::Result;
use vigil_integration::{prereq, Containerd, Image, Options, Runtime};

/// A case's way of saying "cannot run here", with the cause.
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

/// An error that makes the case count as skipped.
pub fn skip(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Skipped(reason.into()))
}

/// Named observable results of one runtime's run, compared between runtimes.
pub type Observed = BTreeMap<String, String>;

/// What a case does.
pub enum Kind {
    /// Runs once per runtime on its own private containerd; vigil's [`Observed`] must equal
    /// the reference's (runc's). Each run also asserts the right values itself.
    Compare(fn(&Env) -> Result<Observed>),
    /// Runs once per runtime; no comparison (each run asserts its own values).
    EachRuntime(fn(&Env) -> Result<()>),
    /// Runs once with the vigil runtime only.
    VigilOnly(fn(&Env) -> Result<()>),
    /// Runs once, sets up what it needs itself (no area uses it yet).
    #[allow(dead_code)]
    Plain(fn() -> Result<()>),
}

/// One named case.
pub struct Case {
    /// `area/name`.
    pub name: &'static str,
    /// What it runs.
    pub kind: Kind,
    /// Images imported before it runs.
    pub images: &'static [Image],
    /// Extra lines for the private vigil config: [`MODE_OFF`] unless the case says otherwise
    /// with [`Case::with_vigil_config`] (which replaces it).
    pub vigil_config: &'static str,
    /// A known bug of the reference that makes its run fail (a [`Kind::Compare`] case): its
    /// failure is then reported as a skip with this cause and the error, and vigil's run is
    /// judged by its own checks alone.
    pub reference_fails: Option<&'static str>,
}

/// The vigil config line every case gets by default: the shim's task service in `off` mode,
/// where vigil must behave exactly as the runc shim (the lifecycle contract of issue 2).
/// Cases about learn, monitor and enforce ask for their mode with `vigil.dev/mode`
/// annotations (which override it) or replace it with [`Case::with_vigil_config`].
pub const MODE_OFF: &str = "default_mode = \"off\"";

impl Case {
    /// A case comparing vigil with runc on busybox.
    pub const fn compare(name: &'static str, f: fn(&Env) -> Result<Observed>) -> Case {
        Case {
            name,
            kind: Kind::Compare(f),
            images: &[Image::Busybox],
            vigil_config: MODE_OFF,
            reference_fails: None,
        }
    }

    /// A case run on each runtime on busybox.
    pub const fn each(name: &'static str, f: fn(&Env) -> Result<()>) -> Case {
        Case {
            name,
            kind: Kind::EachRuntime(f),
            images: &[Image::Busybox],
            vigil_config: MODE_OFF,
            reference_fails: None,
        }
    }

    /// A vigil-only case on busybox.
    pub const fn vigil(name: &'static str, f: fn(&Env) -> Result<()>) -> Case {
        Case {
            name,
            kind: Kind::VigilOnly(f),
            images: &[Image::Busybox],
            vigil_config: MODE_OFF,
            reference_fails: None,
        }
    }

    /// Declares a known failure of the reference (see [`Case::reference_fails`]).
    pub const fn reference_bug(mut self, why: &'static str) -> Case {
        self.reference_fails = Some(why);
        self
    }

    /// Uses these images instead of busybox alone.
    pub const fn with_images(mut self, images: &'static [Image]) -> Case {
        self.images = images;
        self
    }

    /// Adds lines to the private vigil config.
    pub const fn with_vigil_config(mut self, lines: &'static str) -> Case {
        self.vigil_config = lines;
        self
    }

    /// A case that sets itself up.
    #[allow(dead_code)]
    pub const fn plain(name: &'static str, f: fn() -> Result<()>) -> Case {
        Case {
            name,
            kind: Kind::Plain(f),
            images: &[],
            vigil_config: MODE_OFF,
            reference_fails: None,
        }
    }
}

/// What a per-runtime case gets: its private containerd and the runtime under test.
pub struct Env {
    /// The private containerd (torn down after the case).
    pub c: Containerd,
    /// The runtime this run uses.
    pub rt: Runtime,
}

impl Env {
    /// A container id unique to this run: `BASE-runc` / `BASE-vigil`.
    pub fn id(&self, base: &str) -> String {
        format!("{base}-{}", self.rt.label())
    }
}

/// Counts of the run.
#[derive(Default)]
pub struct Summary {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// Runs every case whose name contains one of `filters` (all when empty).
pub fn run_all(cases: Vec<Case>, filters: &[String]) -> Summary {
    let mut summary = Summary::default();
    let chosen = cases
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())));
    for case in chosen {
        run_case(&case, &mut summary);
    }
    summary
}

impl Summary {
    /// The closing line, exactly `e2e: N passed, N failed, N skipped`.
    pub fn line(&self) -> String {
        format!(
            "e2e: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// Whether anything failed.
    pub fn failed(&self) -> bool {
        self.failed > 0
    }
}

enum Verdict {
    Ok,
    Failed(String),
    Skipped(String),
}

fn report(summary: &mut Summary, name: &str, started: Instant, verdict: Verdict) {
    let secs = started.elapsed().as_secs_f64();
    match verdict {
        Verdict::Ok => {
            summary.passed += 1;
            println!("test {name} ... ok ({secs:.1}s)");
        }
        Verdict::Failed(why) => {
            summary.failed += 1;
            println!("test {name} ... FAILED ({secs:.1}s)");
            for line in why.lines() {
                println!("    {line}");
            }
        }
        Verdict::Skipped(why) => {
            summary.skipped += 1;
            println!("test {name} ... skipped ({why})");
        }
    }
    let _ = std::io::stdout().flush();
}

fn run_case(case: &Case, summary: &mut Summary) {
    match &case.kind {
        Kind::Plain(f) => {
            let started = Instant::now();
            report(summary, case.name, started, verdict_of(guarded(f)));
        }
        Kind::Compare(f) => run_compare(case, *f, summary),
        Kind::EachRuntime(f) => {
            for rt in Runtime::BOTH {
                let started = Instant::now();
                let verdict = verdict_of(with_env(case, rt, f));
                report(
                    summary,
                    &format!("{}@{}", case.name, rt.label()),
                    started,
                    verdict,
                );
            }
        }
        Kind::VigilOnly(f) => {
            let started = Instant::now();
            let verdict = verdict_of(with_env(case, Runtime::Vigil, f));
            report(summary, &format!("{}@vigil", case.name), started, verdict);
        }
    }
}

fn run_compare(case: &Case, f: fn(&Env) -> Result<Observed>, summary: &mut Summary) {
    let started = Instant::now();
    let reference = with_env(case, Runtime::Runc, &f);
    let reference_obs = reference.as_ref().ok().cloned();
    let verdict = match (reference, case.reference_fails) {
        (Ok(_), None) => Verdict::Ok,
        (Ok(_), Some(bug)) => {
            println!("    note: the reference passed although a known bug was declared: {bug}");
            Verdict::Ok
        }
        (Err(e), Some(bug)) if e.downcast_ref::<Skipped>().is_none() => Verdict::Skipped(format!(
            "reference fails, known bug: {bug}; its error: {e:#}"
        )),
        (Err(e), _) => verdict_of::<()>(Err(e.context("the reference (runc.v2 shim) fails"))),
    };
    report(summary, &format!("{}@runc", case.name), started, verdict);

    let started = Instant::now();
    let ours = with_env(case, Runtime::Vigil, &f);
    let verdict = match (ours, reference_obs) {
        (Err(e), _) => verdict_of::<()>(Err(e)),
        (Ok(ours), Some(theirs)) => compare(&theirs, &ours),
        (Ok(_), None) if case.reference_fails.is_some() => Verdict::Ok,
        (Ok(_), None) => Verdict::Failed(
            "vigil passed its own checks, but the reference failed, so nothing to compare".into(),
        ),
    };
    report(summary, &format!("{}@vigil", case.name), started, verdict);
}

/// Keys starting with this hold seconds and compare equal within [`SECS_TOLERANCE`].
pub const SECS_PREFIX: &str = "secs:";
/// The field cases' "within ±2 s of REF", at five times the figure.
const SECS_TOLERANCE: f64 = 10.0;

fn compare(reference: &Observed, ours: &Observed) -> Verdict {
    let keys: std::collections::BTreeSet<&String> = reference.keys().chain(ours.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| !same(k, reference.get(*k), ours.get(*k)))
        .map(|k| {
            format!(
                "{k}: runc {:?} vs vigil {:?}",
                reference.get(k),
                ours.get(k)
            )
        })
        .collect();
    if diffs.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Failed(format!(
            "differs from io.containerd.runc.v2:\n{}",
            diffs.join("\n")
        ))
    }
}

fn same(key: &str, a: Option<&String>, b: Option<&String>) -> bool {
    let secs = |v: Option<&String>| v.and_then(|s| s.parse::<f64>().ok());
    match (key.starts_with(SECS_PREFIX), secs(a), secs(b)) {
        (true, Some(a), Some(b)) => (a - b).abs() <= SECS_TOLERANCE,
        _ => a == b,
    }
}

fn with_env<T>(case: &Case, rt: Runtime, f: &dyn Fn(&Env) -> Result<T>) -> Result<T> {
    prereq::containers().map_err(skip)?;
    if rt == Runtime::Vigil {
        prereq::vigil_shim().map_err(skip)?;
    }
    guarded(|| {
        let opts = Options {
            vigil_config: case.vigil_config.to_string(),
            images: case.images.to_vec(),
            raw_vigil_config: None,
        };
        let env = Env {
            c: Containerd::start(&opts)?,
            rt,
        };
        f(&env)
    })
}

/// Runs `f`, turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(anyhow::anyhow!("panicked: {msg}"))
        }
    }
}

fn verdict_of<T>(result: Result<T>) -> Verdict {
    match result {
        Ok(_) => Verdict::Ok,
        Err(e) => match e.downcast_ref::<Skipped>() {
            Some(s) => Verdict::Skipped(s.0.clone()),
            None => Verdict::Failed(format!("{e:#}")),
        },
    }
}
