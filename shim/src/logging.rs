//! The shim's diagnostic log, written where containerd reads shim logs.
//!
//! containerd creates a fifo named `log` in the bundle before it starts the shim server and
//! copies every line it reads from there into its own log. Lines use logrus' text format
//! (`time="..." level=info msg="..." key=value`), as the Go shims write them. Every value that
//! is not a plain word is quoted, and quotes, backslashes, newlines and all other control
//! characters inside it are escaped, so no message (a path, a runc error, a command line from
//! a container) can end a line early or forge a record of its own.
//!
//! Both `log` records (the containerd-shim crate logs through `log`) and `tracing` events (the
//! shim and the guard log through `tracing`) end up in the same writer.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Longest line written: one `write(2)` of at most `PIPE_BUF` bytes to a fifo is atomic, so
/// lines from different threads never interleave.
const MAX_LINE: usize = 4096;

/// Where log lines go.
enum Sink {
    /// containerd's `log` fifo (server mode), opened non-blocking: a full fifo drops lines
    /// instead of stalling the shim.
    Fifo(File),
    /// Standard error (the `start` and `delete` actions, where containerd reads stderr).
    Stderr,
}

/// Writes formatted lines to the sink; shared by the `log` and `tracing` front ends.
struct LineWriter {
    sink: Mutex<Sink>,
    max_level: Level,
}

static WRITER: OnceLock<LineWriter> = OnceLock::new();

/// Why the logger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    /// The `log` fifo in the bundle could not be opened.
    #[error(
        "open shim log fifo {path}: {source} (containerd creates it before starting the shim)"
    )]
    OpenFifo {
        /// Path that was opened.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A logger was installed before.
    #[error("a logger is already installed in this process")]
    AlreadySet,
}

/// Sends the server's logs to containerd's `log` fifo in the current directory (the bundle).
pub fn init_fifo(path: &Path, debug: bool) -> Result<(), LogInitError> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| LogInitError::OpenFifo {
            path: path.display().to_string(),
            source,
        })?;
    install(Sink::Fifo(file), level_for(debug))
}

/// Sends logs to standard error, for the short-lived `start` and `delete` actions.
pub fn init_stderr(max_level: Level) -> Result<(), LogInitError> {
    install(Sink::Stderr, max_level)
}

fn level_for(debug: bool) -> Level {
    if debug {
        Level::DEBUG
    } else {
        Level::INFO
    }
}

fn install(sink: Sink, max_level: Level) -> Result<(), LogInitError> {
    let writer = LineWriter {
        sink: Mutex::new(sink),
        max_level,
    };
    WRITER.set(writer).map_err(|_| LogInitError::AlreadySet)?;
    tracing::subscriber::set_global_default(TraceBridge::default())
        .map_err(|_| LogInitError::AlreadySet)?;
    log::set_logger(&LOG_BRIDGE).map_err(|_| LogInitError::AlreadySet)?;
    log::set_max_level(to_log_filter(max_level));
    Ok(())
}

fn to_log_filter(level: Level) -> log::LevelFilter {
    match level {
        Level::ERROR => log::LevelFilter::Error,
        Level::WARN => log::LevelFilter::Warn,
        Level::INFO => log::LevelFilter::Info,
        Level::DEBUG => log::LevelFilter::Debug,
        Level::TRACE => log::LevelFilter::Trace,
    }
}

impl LineWriter {
    fn write_line(&self, line: &str) {
        let bytes = truncate(line.as_bytes());
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        // A reader that went away (containerd restarting) or a full fifo loses the line; the
        // shim never blocks on its own diagnostics.
        let _ = match &mut *sink {
            Sink::Fifo(f) => f.write_all(&bytes),
            Sink::Stderr => io::stderr().write_all(&bytes),
        };
    }
}

/// Cuts a line to `MAX_LINE` bytes, keeping the final newline.
fn truncate(line: &[u8]) -> Vec<u8> {
    if line.len() <= MAX_LINE {
        return line.to_vec();
    }
    let mut out = line[..MAX_LINE - 1].to_vec();
    out.push(b'\n');
    out
}

/// One record, before formatting.
pub struct LogRecord<'a> {
    /// Time of the event.
    pub time: OffsetDateTime,
    /// Severity.
    pub level: Level,
    /// Message text, any content.
    pub msg: &'a str,
    /// Structured fields, in order.
    pub fields: &'a [(String, String)],
}

/// Formats one record as a single logrus text line ending in `\n`.
pub fn format_line(rec: &LogRecord<'_>) -> String {
    let mut line = String::with_capacity(128);
    let time = rec.time.format(&Rfc3339).unwrap_or_default();
    let _ = write!(
        line,
        "time={} level={}",
        quote(&time),
        level_name(rec.level)
    );
    let _ = write!(line, " msg={}", quote(rec.msg));
    for (key, value) in rec.fields {
        let _ = write!(line, " {}={}", sanitize_key(key), quote_if_needed(value));
    }
    line.push('\n');
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Keys come from code, but keep them to one token anyway.
fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| if is_plain(c) { c } else { '_' })
        .collect()
}

fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._/@^+:".contains(c)
}

fn quote_if_needed(value: &str) -> String {
    if !value.is_empty() && value.chars().all(is_plain) {
        value.to_string()
    } else {
        quote(value)
    }
}

/// Quotes a value Go-style: the result holds no raw control character, newline or bare quote.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Unicode line and paragraph separators and NEL end lines for some readers.
            '\u{85}' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `log` front end.
struct LogBridge;

static LOG_BRIDGE: LogBridge = LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(writer) = WRITER.get() else {
            return;
        };
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let fields = [("source".to_string(), record.target().to_string())];
        let line = format_line(&LogRecord {
            time: OffsetDateTime::now_utc(),
            level: from_log_level(record.level()),
            msg: &msg,
            fields: &fields,
        });
        writer.write_line(&line);
    }

    fn flush(&self) {}
}

fn from_log_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::ERROR,
        log::Level::Warn => Level::WARN,
        log::Level::Info => Level::INFO,
        log::Level::Debug => Level::DEBUG,
        log::Level::Trace => Level::TRACE,
    }
}

/// `tracing` front end: events only; spans are accepted and ignored.
#[derive(Default)]
struct TraceBridge {
    next_span: AtomicU64,
}

impl Subscriber for TraceBridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        WRITER
            .get()
            .is_some_and(|w| *metadata.level() <= w.max_level)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(writer) = WRITER.get() else {
            return;
        };
        let mut visitor = FieldCollector::default();
        event.record(&mut visitor);
        let line = format_line(&LogRecord {
            time: OffsetDateTime::now_utc(),
            level: *event.metadata().level(),
            msg: &visitor.message,
            fields: &visitor.fields,
        });
        writer.write_line(&line);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Collects an event's message and fields as strings.
#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
}

impl FieldCollector {
    fn push(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.push((field.name().to_string(), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(msg: &str, fields: &[(String, String)]) -> String {
        format_line(&LogRecord {
            time: OffsetDateTime::UNIX_EPOCH,
            level: Level::INFO,
            msg,
            fields,
        })
    }

    #[test]
    fn a_message_cannot_forge_a_second_line() {
        let evil = "ok\"\ntime=\"2030-01-01T00:00:00Z\" level=error msg=\"forged";
        let out = line(evil, &[]);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        // The only unescaped quotes are the ones around time and msg.
        let body = out.replace("\\\\", "").replace("\\\"", "");
        assert_eq!(body.matches('"').count(), 4, "{out}");
        assert!(out.contains(r#"msg="ok\"\ntime=\"2030"#), "{out}");
    }

    #[test]
    fn field_values_are_escaped_too() {
        let fields = [(
            "path".to_string(),
            "/a b\r\nlevel=fatal\u{1b}[2J".to_string(),
        )];
        let out = line("m", &fields);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(!out.contains('\r') && !out.contains('\u{1b}'), "{out}");
        assert!(
            out.contains(r#"path="/a b\r\nlevel=fatal\x1b[2J""#),
            "{out}"
        );
    }

    #[test]
    fn plain_values_stay_unquoted_and_keys_stay_one_token() {
        let fields = [
            ("id".to_string(), "abc-123".to_string()),
            ("bad key=\n".to_string(), "".to_string()),
        ];
        let out = line("created", &fields);
        assert!(out.contains(" id=abc-123"), "{out}");
        assert!(out.contains(" bad_key__=\"\""), "{out}");
        assert!(out.starts_with("time=\"1970-01-01T00:00:00Z\" level=info msg=\"created\""));
    }

    #[test]
    fn unicode_line_separators_are_escaped() {
        assert_eq!(quote("a\u{2028}b\u{85}"), "\"a\\u2028b\\u0085\"");
    }

    #[test]
    fn long_lines_are_cut_and_still_end_in_newline() {
        let long = "x".repeat(10_000);
        let out = truncate(line(&long, &[]).as_bytes());
        assert_eq!(out.len(), MAX_LINE);
        assert_eq!(out.last(), Some(&b'\n'));
    }
}
