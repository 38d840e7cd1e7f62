//! `vigil audit tail [-f] [--json] [--file PATH] [-n N]`: the audit log, readable by a person.
//!
//! Prints the last N events, then with `-f` follows the file as it grows, across logrotate
//! (rename or truncation). A line is printed only once it is complete. Every character that
//! could move the terminal's cursor or fake a line (control characters, Unicode line and
//! bidi separators) is shown escaped: a container cannot write to the operator's terminal.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{CliError, Context};
use crate::config::NodeConfig;

/// How often `-f` looks for new lines.
const POLL: Duration = Duration::from_millis(200);
/// Bytes read per step when looking for the last lines.
const CHUNK: u64 = 64 * 1024;

/// `vigil audit ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the last events of the audit log, and follow it with -f
    Tail(TailArgs),
}

/// `vigil audit tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Keep following the log as it grows (across rotation)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the JSON lines unchanged instead of a table
    #[arg(long)]
    pub json: bool,
    /// The audit log (default: audit_log of the node config)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// How many of the last events to print first
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub lines: usize,
}

/// Runs the command.
pub fn run(ctx: &Context, cmd: AuditCommand) -> Result<(), CliError> {
    let AuditCommand::Tail(args) = cmd;
    let path = args.file.clone().unwrap_or_else(|| {
        ctx.config
            .as_ref()
            .map_or_else(|| NodeConfig::default().audit_log, |c| c.audit_log.clone())
    });
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let format = if args.json {
        Format::Json
    } else {
        Format::Table
    };
    let result = tail(&path, args.lines, args.follow, format, &mut out, &|| false);
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Input(format!(
            "read audit log {}: {e}; check the path (--file or audit_log in the node config)",
            path.display()
        ))),
        Ok(()) => Ok(()),
    }
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One aligned line per event for a person.
    Table,
    /// The JSON line as written.
    Json,
}

/// Prints the last `n` lines of `path`, then follows it while `follow` and not `stop()`.
pub fn tail(
    path: &Path,
    n: usize,
    follow: bool,
    format: Format,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut tailer = match Tailer::open_at_last(path, n) {
        Ok(t) => t,
        Err(e) if follow && e.kind() == io::ErrorKind::NotFound => Tailer::waiting(path),
        Err(e) => return Err(e),
    };
    loop {
        for line in tailer.poll()? {
            writeln!(out, "{}", format_line(&line, format))?;
        }
        out.flush()?;
        if !follow || stop() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Reads complete new lines from a file that grows and may be rotated.
struct Tailer {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    ino: u64,
    partial: Vec<u8>,
}

impl Tailer {
    fn open_at_last(path: &Path, n: usize) -> io::Result<Tailer> {
        let mut file = File::open(path)?;
        let ino = file.metadata()?.ino();
        let pos = start_of_last_lines(&mut file, n)?;
        Ok(Tailer {
            path: path.to_path_buf(),
            file: Some(file),
            pos,
            ino,
            partial: Vec::new(),
        })
    }

    fn waiting(path: &Path) -> Tailer {
        Tailer {
            path: path.to_path_buf(),
            file: None,
            pos: 0,
            ino: 0,
            partial: Vec::new(),
        }
    }

    /// New complete lines; follows a rotation to the new file from its start.
    fn poll(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut lines = self.read_new()?;
        let rotated = match std::fs::metadata(&self.path) {
            Ok(m) => self.file.is_none() || m.ino() != self.ino,
            Err(_) => false,
        };
        if rotated {
            // Whatever the old file still had is read above; now the new one from byte 0.
            if let Ok(file) = File::open(&self.path) {
                self.ino = file.metadata()?.ino();
                self.file = Some(file);
                self.pos = 0;
                self.partial.clear();
                lines.extend(self.read_new()?);
            }
        }
        Ok(lines)
    }

    fn read_new(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        if file.metadata()?.len() < self.pos {
            // Truncated in place (copytruncate): start over.
            self.pos = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        self.pos += file.read_to_end(&mut buf)? as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }
}

/// Byte offset where the last `n` complete lines start.
fn start_of_last_lines(file: &mut File, n: usize) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut newlines = 0;
    let mut buf = vec![0; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            // The newline that ends the file (or the last complete line) does not count.
            if *b != b'\n' || start + i as u64 + 1 == len {
                continue;
            }
            newlines += 1;
            if newlines > n {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(if n == 0 { len } else { 0 })
}

/// One line as printed.
pub fn format_line(line: &[u8], format: Format) -> String {
    let text = String::from_utf8_lossy(line);
    match (format, serde_json::from_str::<Value>(&text)) {
        (Format::Json, _) => text.into_owned(),
        (Format::Table, Ok(event)) => table_row(&event),
        (Format::Table, Err(_)) => format!("(not an audit event) {}", printable(&text, 200)),
    }
}

/// `2026-12-04 11:00:00.123Z  Critical  c0ffee123456 shop/web  killed   <output>`.
fn table_row(event: &Value) -> String {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let f = &event["output_fields"];
    let time = s(&event["time"])
        .map(|t| short_time(&t))
        .unwrap_or_else(|| "-".into());
    let priority = s(&event["priority"]).unwrap_or_else(|| "-".into());
    let id = s(&f["container.id"]).unwrap_or_else(|| "-".into());
    let id: String = id.chars().take(12).collect();
    let pod = match (s(&f["k8s.ns.name"]), s(&f["k8s.pod.name"])) {
        (Some(ns), Some(pod)) => format!(" {ns}/{pod}"),
        _ => String::new(),
    };
    let action = s(&f["vigil.action"]).unwrap_or_else(|| "-".into());
    let output = s(&event["output"]).unwrap_or_default();
    // The table shows the container already; drop the output's trailing identity.
    let output = output
        .split(" (container=")
        .next()
        .unwrap_or(&output)
        .to_owned();
    format!(
        "{}  {:<13} {:<8} {}  {}",
        printable(&time, 40),
        printable(&priority, 13),
        printable(&action, 8),
        printable(&format!("{id}{pod}"), 80),
        printable(&output, 4096)
    )
}

/// `2026-12-04T11:00:00.123456789Z` → `2026-12-04 11:00:00.123Z`.
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..23)) {
        (Some(day), Some(clock)) if t.len() > 23 && t.ends_with('Z') => format!("{day} {clock}Z"),
        _ => t.to_owned(),
    }
}

/// Escapes whatever a terminal would act on, and cuts at `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible_separator(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Line/paragraph separators and bidi overrides, which can reorder or fake what is shown.
fn is_invisible_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    const EVENT: &str = r#"{"time":"2026-12-04T11:00:00.123456789Z","rule":"vigil: unexpected exec","priority":"Critical","source":"vigil","hostname":"node-1","tags":["vigil","process","enforce"],"output":"killed exec of /bin/nc by nc (pid 42)\u001b[2J\nforged (container=c0ffee0123456789 image=x pod=shop/web mode=enforce mechanism=signal)","output_fields":{"container.id":"c0ffee0123456789","k8s.ns.name":"shop","k8s.pod.name":"web","vigil.action":"killed"}}"#;

    fn event(n: usize) -> String {
        EVENT.replace("(pid 42)", &format!("(pid {n})"))
    }

    #[test]
    fn a_row_is_readable_and_escapes_terminal_tricks() {
        let row = format_line(EVENT.as_bytes(), Format::Table);
        assert_eq!(
            row,
            "2026-12-04 11:00:00.123Z  Critical      killed   c0ffee012345 shop/web  \
             killed exec of /bin/nc by nc (pid 42)\\u{1b}[2J\\nforged"
        );
        assert_eq!(format_line(EVENT.as_bytes(), Format::Json), EVENT);
        let junk = format_line(b"garbage\x1b]0;title\x07", Format::Table);
        assert_eq!(junk, "(not an audit event) garbage\\u{1b}]0;title\\u{7}");
        assert_eq!(printable("a\u{202e}b\u{2028}", 10), "a\\u{202e}b\\u{2028}");
    }

    #[test]
    fn prints_the_last_lines_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let body: String = (1..=30).map(|i| event(i) + "\n").collect();
        std::fs::write(&path, body + "{\"partial\":").unwrap();
        let mut out = Vec::new();
        tail(&path, 3, false, Format::Json, &mut out, &|| true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [event(28), event(29), event(30)]);

        let mut out = Vec::new();
        tail(&path, 0, false, Format::Json, &mut out, &|| true).unwrap();
        assert!(out.is_empty());
        let mut out = Vec::new();
        tail(&path, 100, false, Format::Table, &mut out, &|| true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 30);
        let missing = tail(
            &dir.path().join("nope"),
            1,
            false,
            Format::Json,
            &mut Vec::new(),
            &|| true,
        );
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    /// Collects what a follower prints, on its own thread.
    struct Follower {
        out: Arc<Mutex<Vec<u8>>>,
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<io::Result<()>>,
    }

    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn follow(path: &Path) -> Follower {
        let (out, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (o, s, p) = (out.clone(), stop.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || {
            tail(&p, 0, true, Format::Json, &mut Shared(o), &|| {
                s.load(Ordering::SeqCst)
            })
        });
        Follower { out, stop, thread }
    }

    fn wait_for_lines(f: &Follower, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let text = String::from_utf8(f.out.lock().unwrap().clone()).unwrap();
            if text.lines().count() >= n {
                return text.lines().map(str::to_owned).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("follower printed fewer than {n} lines");
    }

    #[test]
    fn follows_growth_partial_writes_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, event(1) + "\n").unwrap();
        let f = follow(&path);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let second = event(2);
        file.write_all(&second.as_bytes()[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(f.out.lock().unwrap().is_empty(), "a partial line must wait");
        file.write_all((second[20..].to_owned() + "\n").as_bytes())
            .unwrap();
        assert_eq!(wait_for_lines(&f, 1), [event(2)]);

        // logrotate: rename away, new file.
        std::fs::rename(&path, path.with_extension("1")).unwrap();
        file.write_all((event(3) + "\n").as_bytes()).unwrap();
        std::fs::write(&path, event(4) + "\n").unwrap();
        assert_eq!(wait_for_lines(&f, 3), [event(2), event(3), event(4)]);

        f.stop.store(true, Ordering::SeqCst);
        f.thread.join().unwrap().unwrap();
    }

    #[test]
    fn follows_a_log_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.jsonl");
        let f = follow(&path);
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&path, event(7) + "\n").unwrap();
        assert_eq!(wait_for_lines(&f, 1), [event(7)]);
        f.stop.store(true, Ordering::SeqCst);
        f.thread.join().unwrap().unwrap();
    }
}
