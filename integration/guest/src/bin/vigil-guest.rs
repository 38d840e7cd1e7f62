//! `vigil-guest`: boots the LSM-BPF test guest and prints its results.
//!
//! ```text
//! vigil-guest [run] [--timeout SECONDS] [--memory MIB]
//! ```
//!
//! Prints one line per case (`PASS|FAIL|SKIP [suite] name: detail`), the benchmark with its
//! ratios, and a last line `guest: N passed, N failed, N skipped`.
//!
//! Exit status: 0 every case passed; 1 a case failed or the run broke; 77 nothing could run
//! here (the guest cannot boot: every case is printed as skipped with the cause; never
//! passed); 2 usage.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use vigil_guest::cases;
use vigil_guest::report::{Line, Outcome};
use vigil_guest::runner::{self, GuestReport, Options, RunOutcome, SUITES};

/// Exit status of a skipped run (the automake convention).
const EXIT_SKIPPED: u8 = 77;

fn main() -> ExitCode {
    let mut options = Options::for_workspace();
    if let Err(message) = apply_args(&mut options) {
        eprintln!("vigil-guest: {message}");
        eprintln!("usage: vigil-guest [run] [--timeout SECONDS] [--memory MIB]");
        return ExitCode::from(2);
    }
    match runner::run(&options) {
        Ok(RunOutcome::Skipped { cause }) => {
            println!("guest: cannot boot the test guest here: {cause}");
            let count = every_case(|suite, name| println!("SKIP [{suite}] {name}: {cause}"));
            summary(0, 0, count);
            ExitCode::from(EXIT_SKIPPED)
        }
        Ok(RunOutcome::Ran(report)) => print_report(&report),
        Err(err) => {
            println!("guest: the run broke: {err}");
            let count = every_case(|suite, name| {
                println!("FAIL [{suite}] {name}: not run, the guest run broke (above)")
            });
            summary(0, count, 0);
            ExitCode::FAILURE
        }
    }
}

/// Calls `each(suite, case)` for every case of every suite; returns how many.
fn every_case(mut each: impl FnMut(&str, &str)) -> usize {
    let mut count = 0;
    for (suite, _) in SUITES {
        for name in cases::expected(suite) {
            each(suite, &name);
            count += 1;
        }
    }
    count
}

fn summary(pass: usize, fail: usize, skip: usize) {
    println!("guest: {pass} passed, {fail} failed, {skip} skipped");
}

fn apply_args(options: &mut Options) -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("run") {
        args.next();
    }
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--timeout" => options.timeout = Duration::from_secs(number),
            "--memory" => options.memory_mb = number as u32,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(())
}

fn print_report(report: &GuestReport) -> ExitCode {
    println!("guest kernel {}", report.kernel);
    for boot in &report.boots {
        let secs = boot.elapsed.as_secs_f64();
        println!(
            "[{}] boot took {secs:.1} s; console in {}",
            boot.suite,
            boot.console_log.display()
        );
        if let Some(error) = &boot.error {
            println!("[{}] the boot broke off: {error}", boot.suite);
        }
        for line in &boot.lines {
            print_line(boot.suite, line);
        }
    }
    for line in &report.host_bench {
        print_line("host", line);
    }
    print_ratios(report);
    let (pass, fail, skip) = (
        report.count(Outcome::Pass),
        report.count(Outcome::Fail),
        report.count(Outcome::Skip),
    );
    summary(pass, fail, skip);
    if fail > 0 || pass == 0 {
        ExitCode::FAILURE
    } else if skip > 0 {
        println!("guest: not every case ran: the run counts as skipped, not passed");
        ExitCode::from(EXIT_SKIPPED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The benchmark as ratios to the `none` setting of the same run (the emulated guest's
/// absolute times mean little), with the getppid control beside them.
fn print_ratios(report: &GuestReport) {
    let mut by_op: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for line in report.boots.iter().flat_map(|boot| &boot.lines) {
        if let Line::Bench {
            op,
            setting,
            ns_per_op,
            ..
        } = line
        {
            by_op.entry(op).or_default().insert(setting, *ns_per_op);
        }
    }
    for (op, settings) in &by_op {
        let Some(none) = settings.get("none").filter(|v| **v > 0.0) else {
            continue;
        };
        let ratio = |setting: &str| {
            settings
                .get(setting)
                .map_or("n/a".to_owned(), |v| format!("{:.2}x", v / none))
        };
        println!(
            "RATIO {op:<8} unregistered/none {:>6}  registered/none {:>6}",
            ratio("unregistered"),
            ratio("registered")
        );
    }
}

fn print_line(suite: &str, line: &Line) {
    match line {
        Line::Case {
            name,
            outcome,
            detail,
        } => {
            let tag = match outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            println!("{tag} [{suite}] {name}: {detail}");
        }
        Line::Bench {
            op,
            setting,
            ns_per_op,
            iterations,
        } => {
            println!("BENCH {op:<8} {setting:<13} {ns_per_op:>10.0} ns/op ({iterations} ops)");
        }
        Line::BpfStats {
            program,
            run_cnt,
            run_time_ns,
        } => {
            let mean = *run_time_ns as f64 / (*run_cnt).max(1) as f64;
            println!("STATS {program:<40} {run_cnt:>8} runs {mean:>8.0} ns/run");
        }
        Line::End { .. } => {}
    }
}
