//! `vigil-guest`: boots the LSM-BPF test guest and prints its results.
//!
//! Exit status: 0 every case passed, 1 a case failed or the run broke, 77 the guest cannot boot
//! on this machine or a case could not run (skipped, with the cause printed; never passed).

use std::process::ExitCode;
use std::time::Duration;

use vigil_guest::report::{Line, Outcome};
use vigil_guest::runner::{self, GuestReport, Options, RunOutcome};

/// Exit status of a skipped run (the automake convention).
const EXIT_SKIPPED: u8 = 77;

fn main() -> ExitCode {
    let mut options = Options::for_workspace();
    if let Err(message) = apply_args(&mut options) {
        eprintln!("vigil-guest: {message}");
        eprintln!("usage: vigil-guest [--timeout SECONDS] [--memory MIB]");
        return ExitCode::from(2);
    }
    match runner::run(&options) {
        Ok(RunOutcome::Skipped { cause }) => {
            println!("SKIPPED lsm guest tests: {cause}");
            ExitCode::from(EXIT_SKIPPED)
        }
        Ok(RunOutcome::Ran(report)) => print_report(&report),
        Err(err) => {
            eprintln!("FAILED lsm guest run: {err}");
            ExitCode::FAILURE
        }
    }
}

fn apply_args(options: &mut Options) -> Result<(), String> {
    let mut args = std::env::args().skip(1);
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
        for line in &boot.lines {
            print_line(boot.suite, line);
        }
    }
    for line in &report.host_bench {
        print_line("host", line);
    }
    let (pass, fail, skip) = (
        report.count(Outcome::Pass),
        report.count(Outcome::Fail),
        report.count(Outcome::Skip),
    );
    println!("{pass} passed, {fail} failed, {skip} skipped");
    if fail > 0 || pass == 0 {
        ExitCode::FAILURE
    } else if skip > 0 {
        println!("not every case ran: reporting the run as skipped, not passed");
        ExitCode::from(EXIT_SKIPPED)
    } else {
        ExitCode::SUCCESS
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
