//! `vigil profile list | show | diff | export | import`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use vigil_policy::diff::{describe_exec, describe_net, diff};
use vigil_policy::export::{export, Format};
use vigil_policy::import::read_profile_file;
use vigil_policy::model::{Confidence, Evidence, Origin, Phase};
use vigil_policy::stability::{confidence, readiness};
use vigil_policy::store::Listed;
use vigil_policy::{Profile, RuntimeFloor, State, Store, Timestamp};

use super::{CliError, Context};

/// Profile subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Table of every profile: name, digest, state, confidence, entries, size
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One profile, readable (REF = image name, digest or unique digest prefix)
    Show {
        #[arg(value_name = "REF")]
        reference: String,
        /// Print the profile document itself
        #[arg(long)]
        json: bool,
    },
    /// What B allows that A does not, and back (A and B: REF or a profile file, such as a
    /// saved `show --json`)
    Diff {
        #[arg(value_name = "A")]
        a: String,
        #[arg(value_name = "B")]
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// A profile in a format clusters use
    Export {
        #[arg(value_name = "REF")]
        reference: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// runc version whose runtime floor to include (default: the one the profile was
        /// learned with, else 1.1)
        #[arg(long, value_name = "VERSION")]
        runc_version: Option<String>,
    },
    /// Load a reviewed or shared profile file (merged into a stored one of the same digest)
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    OciSeccomp,
    K8sSpo,
    FalcoRules,
}

/// Runs one profile subcommand, printing to stdout.
pub fn run(ctx: &Context, cmd: ProfileCommand) -> Result<(), CliError> {
    let store = Store::at(&ctx.state_dir);
    match cmd {
        ProfileCommand::List { json } => list(ctx, &store, json),
        ProfileCommand::Show { reference, json } => show(ctx, &store, &reference, json),
        ProfileCommand::Diff { a, b, json } => diff_cmd(&store, &a, &b, json),
        ProfileCommand::Export {
            reference,
            format,
            runc_version,
        } => export_cmd(&store, &reference, format, runc_version.as_deref()),
        ProfileCommand::Import { file } => import(&store, &file),
    }
}

fn load(store: &Store, reference: &str) -> Result<Profile, CliError> {
    let digest = store.resolve(reference)?;
    store.load(&digest)?.ok_or_else(|| {
        CliError::Input(format!(
            "no profile file for {digest} in {}; `vigil profile list` shows what is stored",
            store.dir().display()
        ))
    })
}

fn list(ctx: &Context, store: &Store, json: bool) -> Result<(), CliError> {
    let listed = store.list()?;
    let now = Timestamp::now();
    let broken: Vec<String> = listed
        .iter()
        .filter_map(|l| l.profile.as_ref().err().map(|e| e.to_string()))
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = listed
            .iter()
            .filter_map(|l| list_json(ctx, l, now))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", list_table(ctx, &listed, now));
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::Input(broken.join("\nvigil: ")))
    }
}

fn list_json(ctx: &Context, l: &Listed, now: Timestamp) -> Option<serde_json::Value> {
    let p = l.profile.as_ref().ok()?;
    let b = &p.body;
    Some(serde_json::json!({
        "names": b.names,
        "digest": p.digest,
        "state": p.state,
        "confidence": confidence(p, &ctx.learning, now),
        "entries": {"syscalls": b.syscalls.len(), "execs": b.execs.len(),
                    "files": b.files.len(), "network": b.network.len()},
        "lost_events": b.coverage.lost.total(),
        "size": l.size,
        "path": l.path,
    }))
}

fn list_table(ctx: &Context, listed: &[Listed], now: Timestamp) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "DIGEST".into(),
        "STATE".into(),
        "CONFIDENCE sys/exe/fil/net".into(),
        "ENTRIES sys/exe/fil/net".into(),
        "SIZE".into(),
    ]];
    for l in listed {
        let Ok(p) = &l.profile else { continue };
        let b = &p.body;
        rows.push([
            first_name(p),
            p.digest.short().to_string(),
            state_word(p.state).into(),
            confidence_text(&confidence(p, &ctx.learning, now)),
            format!(
                "{}/{}/{}/{}",
                b.syscalls.len(),
                b.execs.len(),
                b.files.len(),
                b.network.len()
            ),
            human_size(l.size),
        ]);
    }
    if rows.len() == 1 {
        return format!(
            "no profiles in {}\n",
            Store::at(&ctx.state_dir).dir().display()
        );
    }
    table(&rows)
}

fn first_name(p: &Profile) -> String {
    let mut names = p.body.names.iter();
    match (names.next(), p.body.names.len()) {
        (None, _) => "-".into(),
        (Some(n), 1) => n.clone(),
        (Some(n), count) => format!("{n} (+{})", count - 1),
    }
}

fn state_word(state: State) -> &'static str {
    match state {
        State::Learning => "learning",
        State::Stable => "stable",
    }
}

fn confidence_text(c: &Confidence) -> String {
    format!(
        "{:.2}/{:.2}/{:.2}/{:.2}",
        c.syscalls, c.execs, c.files, c.network
    )
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// Left-aligned columns separated by two spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn show(ctx: &Context, store: &Store, reference: &str, json: bool) -> Result<(), CliError> {
    let p = load(store, reference)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
    } else {
        print!("{}", render(ctx, &p, Timestamp::now()));
    }
    Ok(())
}

/// The readable form of `vigil profile show`.
pub fn render(ctx: &Context, p: &Profile, now: Timestamp) -> String {
    let b = &p.body;
    let mut o = String::new();
    let _ = writeln!(o, "profile  {}", p.digest);
    let names: Vec<&str> = b.names.iter().map(String::as_str).collect();
    let _ = writeln!(
        o,
        "images   {}",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    let _ = writeln!(o, "state    {}", state_word(p.state));
    let ready = readiness(p, &ctx.learning, now);
    if p.state == State::Learning {
        let why = if ready.is_ready() {
            "ready to be stable".into()
        } else {
            ready.unmet.join("; ")
        };
        let _ = writeln!(o, "         {why}");
    }
    let _ = writeln!(o, "created  {}   updated {}", p.created, p.updated);
    let runtime: Vec<&str> = b.runtime.iter().map(String::as_str).collect();
    let _ = writeln!(
        o,
        "runtime  {}",
        if runtime.is_empty() {
            "-".into()
        } else {
            runtime.join(", ")
        }
    );
    let cov = &b.coverage;
    let lost = if cov.lost.total() == 0 {
        "no events lost".to_string()
    } else {
        let l = &cov.lost;
        format!(
            "EVENTS LOST: {} syscall, {} exec, {} file, {} network",
            l.syscalls, l.execs, l.files, l.network
        )
    };
    let _ = writeln!(
        o,
        "learned  {} s over {} container(s), {} events, {lost}",
        cov.seconds, cov.containers, cov.events
    );
    let c = confidence(p, &ctx.learning, now);
    let _ = writeln!(
        o,
        "confidence  syscalls {:.2}  execs {:.2}  files {:.2}  network {:.2}",
        c.syscalls, c.execs, c.files, c.network
    );
    render_syscalls(&mut o, &b.syscalls);
    render_entries(
        &mut o,
        "execs",
        b.execs.iter().map(|(k, e)| (describe_exec(k), e)),
    );
    let files = b
        .files
        .iter()
        .map(|(k, e)| (format!("{:<6} {}", k.access.as_str(), k.path), e));
    render_entries(&mut o, "files", files);
    render_entries(
        &mut o,
        "network",
        b.network.iter().map(|(k, e)| (describe_net(k), e)),
    );
    o
}

fn render_syscalls(o: &mut String, syscalls: &BTreeMap<String, Evidence>) {
    let _ = writeln!(o, "\nsyscalls ({}):", syscalls.len());
    let mut line = String::from(" ");
    for name in syscalls.keys() {
        if line.len() + name.len() + 1 > 98 {
            let _ = writeln!(o, "{line}");
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(name);
    }
    if line.trim().is_empty() {
        let _ = writeln!(o, "  (none)");
    } else {
        let _ = writeln!(o, "{line}");
    }
}

fn render_entries<'a>(
    o: &mut String,
    title: &str,
    entries: impl Iterator<Item = (String, &'a Evidence)>,
) {
    let entries: Vec<(String, &Evidence)> = entries.collect();
    let _ = writeln!(o, "\n{title} ({}):", entries.len());
    if entries.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for (what, e) in entries {
        let _ = writeln!(
            o,
            "  {what}\n      count {}, containers {}, {}, {}..{}",
            e.count,
            e.containers,
            contexts(&e.phases, &e.origins),
            e.first_seen,
            e.last_seen
        );
    }
}

fn contexts(phases: &BTreeSet<Phase>, origins: &BTreeSet<Origin>) -> String {
    let phase: Vec<&str> = phases
        .iter()
        .map(|p| match p {
            Phase::Startup => "start-up",
            Phase::Steady => "steady",
        })
        .collect();
    let origin: Vec<&str> = origins
        .iter()
        .map(|o| match o {
            Origin::Main => "main",
            Origin::Exec => "exec",
        })
        .collect();
    format!("{}/{}", phase.join("+"), origin.join("+"))
}

/// A profile from the store, or from a file when `reference` names an existing file.
fn load_ref_or_file(store: &Store, reference: &str) -> Result<Profile, CliError> {
    let path = std::path::Path::new(reference);
    if path.is_file() {
        return Ok(read_profile_file(path)?);
    }
    load(store, reference)
}

fn diff_cmd(store: &Store, a: &str, b: &str, json: bool) -> Result<(), CliError> {
    let (pa, pb) = (load_ref_or_file(store, a)?, load_ref_or_file(store, b)?);
    let d = diff(&pa.body, &pb.body);
    if json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    } else {
        println!(
            "A = {a} ({})\nB = {b} ({})",
            pa.digest.short(),
            pb.digest.short()
        );
        print!("{d}");
    }
    Ok(())
}

fn export_cmd(
    store: &Store,
    reference: &str,
    format: ExportFormat,
    runc_version: Option<&str>,
) -> Result<(), CliError> {
    let p = load(store, reference)?;
    let learned_with = p.body.runtime.iter().find_map(|r| r.strip_prefix("runc "));
    let floor = RuntimeFloor::for_runc(runc_version.or(learned_with).unwrap_or("1.1"))?;
    let format = match format {
        ExportFormat::OciSeccomp => Format::OciSeccomp,
        ExportFormat::K8sSpo => Format::K8sSpo,
        ExportFormat::FalcoRules => Format::FalcoRules,
    };
    print!("{}", export(&p, &floor, format)?);
    Ok(())
}

fn import(store: &Store, file: &std::path::Path) -> Result<(), CliError> {
    let incoming = read_profile_file(file)?;
    let store = Store::open(store.dir().parent().unwrap_or(store.dir()))?;
    let existed = store.load(&incoming.digest)?.is_some();
    let stored = store.import(&incoming)?;
    let how = if existed {
        "merged into the stored profile"
    } else {
        "stored"
    };
    println!(
        "imported {} ({}) from {}: {how}, {} entries, state {}",
        stored.digest,
        first_name(&stored),
        file.display(),
        stored.body.entry_count(),
        state_word(stored.state)
    );
    Ok(())
}
