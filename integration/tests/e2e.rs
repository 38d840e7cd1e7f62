//! End-to-end suite (custom runner, `harness = false`): every case against a private
//! containerd. `cargo test -p vigil-integration --test e2e -- [FILTER...]` runs the cases
//! whose name contains a filter; `--list` lists them. Needs root; a missing prerequisite is
//! a skip with its cause. The last line is `e2e: N passed, N failed, N skipped`.
//!
//! To add an area: a module under `tests/e2e/` with `pub fn cases() -> Vec<Case>`, listed in
//! [`registry`].

#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/check.rs"]
mod check;
#[path = "e2e/conformance.rs"]
mod conformance;
#[path = "e2e/cri.rs"]
mod cri;
#[path = "e2e/field.rs"]
mod field;
#[path = "e2e/guard.rs"]
mod guard;
#[path = "e2e/runner.rs"]
mod runner;

/// Every case, by area.
fn registry() -> Vec<runner::Case> {
    [
        conformance::cases(),
        field::cases(),
        bad_input::cases(),
        cri::cases(),
        guard::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        registry().iter().for_each(|c| println!("{}", c.name));
        return;
    }
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let summary = runner::run_all(registry(), &filters);
    println!("{}", summary.line());
    if summary.failed() {
        std::process::exit(1);
    }
}
