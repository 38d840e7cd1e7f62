//! The asynchronous audit writer: a bounded queue that never blocks the caller, one thread
//! that appends JSON lines to the audit log, and an optional HTTP sink behind it.
//!
//! [`AuditHandle::emit`] only ever does a `try_send`: a full queue drops the event, counts it
//! per container, and once the writer has emptied the queue it writes one
//! `vigil: audit overflow` event per container saying how many were lost. A slow or full disk
//! slows the writer thread, never a container's guard.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::{AuditEvent, ContainerAudit, EventBuilder};
use super::http::{HttpOptions, HttpSink, HttpTarget};
use super::AuditError;
use crate::config::NodeConfig;
use crate::mode::fail::AuditHealth;

/// Events taken from the queue per write.
const BATCH: usize = 512;
/// How often the writer checks whether the log file was rotated away.
const REOPEN_CHECK: Duration = Duration::from_secs(1);

/// Where events go and how much may wait.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The audit log; `None` sends lines to the shim log instead.
    pub log_path: Option<PathBuf>,
    /// Also POST each event here (`http://host:port/path`).
    pub http_url: Option<String>,
    /// Events that may wait for the writer before new ones are dropped.
    pub queue_capacity: usize,
    /// Retries, timeouts and queue of the HTTP sink.
    pub http: HttpOptions,
}

impl AuditConfig {
    /// Defaults: 8192 queued events, HTTP as in [`HttpOptions::default`].
    pub fn new(log_path: Option<PathBuf>, http_url: Option<String>) -> AuditConfig {
        AuditConfig {
            log_path,
            http_url,
            queue_capacity: 8192,
            http: HttpOptions::default(),
        }
    }
}

impl From<&NodeConfig> for AuditConfig {
    /// `audit_log` and `audit_http_url` of the node config, default queue and retries.
    fn from(config: &NodeConfig) -> Self {
        AuditConfig::new(
            Some(config.audit_log.clone()),
            config.audit_http_url.clone(),
        )
    }
}

/// Counters of the writer, readable at any time (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    /// Events accepted into the queue.
    pub queued: u64,
    /// Lines appended to the audit log (overflow events included).
    pub written: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// `vigil: audit overflow` events written.
    pub overflow_events: u64,
    /// Lines that could not be written to the log (disk full, I/O error).
    pub write_errors: u64,
    /// Events the HTTP sink delivered (2xx).
    pub http_sent: u64,
    /// Events the HTTP sink gave up on after its retries.
    pub http_failed: u64,
    /// Retries the HTTP sink made.
    pub http_retries: u64,
    /// Events not handed to the HTTP sink because its queue was full.
    pub http_dropped: u64,
}

/// Atomic counters shared by the handle, the writer and the HTTP sink.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub overflow_events: AtomicU64,
    pub write_errors: AtomicU64,
    pub http_sent: AtomicU64,
    pub http_failed: AtomicU64,
    pub http_retries: AtomicU64,
    pub http_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) -> u64 {
        counter.fetch_add(n, Ordering::Relaxed) + n
    }

    fn snapshot(&self) -> AuditStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AuditStats {
            queued: get(&self.queued),
            written: get(&self.written),
            dropped: get(&self.dropped),
            overflow_events: get(&self.overflow_events),
            write_errors: get(&self.write_errors),
            http_sent: get(&self.http_sent),
            http_failed: get(&self.http_failed),
            http_retries: get(&self.http_retries),
            http_dropped: get(&self.http_dropped),
        }
    }
}

enum Message {
    Event(Box<AuditEvent>),
    Flush(SyncSender<()>),
}

/// Lets a paused writer (tests) start.
#[cfg(test)]
pub(crate) type Resume = Box<dyn FnOnce()>;

/// Dropped events not yet reported, per container id.
type Pending = Mutex<BTreeMap<String, (ContainerAudit, u64)>>;

struct Shared {
    counters: Arc<Counters>,
    pending: Pending,
}

/// A cheap, cloneable handle to the node's audit writer.
#[derive(Clone)]
pub struct AuditHandle {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl AuditHandle {
    /// Opens the log (creating its folder) and starts the writer. An unwritable log or a bad
    /// URL is an error here, at start, never later.
    pub fn start(config: AuditConfig) -> Result<AuditHandle, AuditError> {
        let log = config.log_path.as_deref().map(LogFile::open).transpose()?;
        let target = config
            .http_url
            .as_deref()
            .map(HttpTarget::parse)
            .transpose()?;
        Ok(Self::spawn(config, log, target, None))
    }

    /// Like [`AuditHandle::start`], with a writer that waits until the returned function is
    /// called: lets a test fill the queue as a stalled disk would.
    #[cfg(test)]
    pub(crate) fn start_paused(config: AuditConfig) -> Result<(AuditHandle, Resume), AuditError> {
        let log = config.log_path.as_deref().map(LogFile::open).transpose()?;
        let target = config
            .http_url
            .as_deref()
            .map(HttpTarget::parse)
            .transpose()?;
        let (gate_tx, gate_rx) = mpsc::channel();
        let handle = Self::spawn(config, log, target, Some(gate_rx));
        Ok((
            handle,
            Box::new(move || {
                let _ = gate_tx.send(());
            }),
        ))
    }

    /// Like [`AuditHandle::start`], but an unusable log or URL degrades instead of failing:
    /// the writer runs without that sink and the returned [`AuditHealth`] says why, for the
    /// fail policy and a `vigil: audit log unwritable` event.
    pub fn start_or_degrade(config: AuditConfig) -> (AuditHandle, AuditHealth) {
        let mut problems = Vec::new();
        let log = match config.log_path.as_deref().map(LogFile::open).transpose() {
            Ok(log) => log,
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let target = match config
            .http_url
            .as_deref()
            .map(HttpTarget::parse)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let health = if problems.is_empty() {
            AuditHealth::Writable
        } else {
            AuditHealth::Unwritable(problems.join("; "))
        };
        (Self::spawn(config, log, target, None), health)
    }

    fn spawn(
        config: AuditConfig,
        log: Option<LogFile>,
        target: Option<HttpTarget>,
        gate: Option<Receiver<()>>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            pending: Mutex::default(),
        });
        let http = target.map(|t| HttpSink::spawn(t, config.http.clone(), counters));
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let writer = Writer {
            rx,
            log,
            http,
            shared: shared.clone(),
        };
        let spawned = thread::Builder::new()
            .name("vigil-audit".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                writer.run()
            });
        if let Err(e) = spawned {
            // The handle still works: every event counts as dropped and is reported by
            // the shim log below, so nothing vanishes silently.
            tracing::error!(error = %e, "audit writer thread did not start; events are dropped");
        }
        AuditHandle { tx, shared }
    }

    /// Queues an event; never blocks. Returns whether it was queued (a dropped event is
    /// counted and reported later by an overflow event).
    pub fn emit(&self, event: EventBuilder) -> bool {
        let context = event.context().clone();
        match self.tx.try_send(Message::Event(Box::new(event.build()))) {
            Ok(()) => {
                Counters::add(&self.shared.counters.queued, 1);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.note_drop(context);
                false
            }
        }
    }

    fn note_drop(&self, context: ContainerAudit) {
        let total = Counters::add(&self.shared.counters.dropped, 1);
        if total == 1 || total.is_power_of_two() {
            tracing::warn!(dropped = total, "audit queue full: events dropped");
        }
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let id = context.identity().id().to_owned();
        pending.entry(id).or_insert((context, 0)).1 += 1;
    }

    /// Waits until every event queued before this call is written (or failed to be), at most
    /// `timeout`. Returns whether that happened in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Message::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    thread::sleep(Duration::from_millis(2));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// The counters.
    pub fn stats(&self) -> AuditStats {
        self.shared.counters.snapshot()
    }
}

struct Writer {
    rx: Receiver<Message>,
    log: Option<LogFile>,
    http: Option<HttpSink>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(REOPEN_CHECK) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            let mut drained = false;
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            self.write_batch(batch);
            if drained {
                self.report_overflow();
            }
        }
        self.report_overflow();
    }

    fn write_batch(&mut self, batch: Vec<Message>) {
        let mut lines = Vec::with_capacity(batch.len());
        for message in batch {
            match message {
                Message::Event(event) => lines.push(to_line(&event)),
                Message::Flush(ack) => {
                    // Behind a flush are the events before it and the report of every drop
                    // before it.
                    self.write_lines(std::mem::take(&mut lines));
                    self.report_overflow();
                    let _ = ack.try_send(());
                }
            }
        }
        self.write_lines(lines);
    }

    fn write_lines(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let counters = &self.shared.counters;
        let n = lines.len() as u64;
        match &mut self.log {
            Some(log) => match log.append(&lines) {
                Ok(()) => _ = Counters::add(&counters.written, n),
                Err(e) => {
                    let total = Counters::add(&counters.write_errors, n);
                    if total == n || total.is_power_of_two() {
                        let path = log.path.display();
                        tracing::error!(path = %path, error = %e, lost = total,
                            "audit log write failed; events lost");
                    }
                }
            },
            None => lines
                .iter()
                .for_each(|l| tracing::warn!(target: "vigil::audit", "{l}")),
        }
        if let Some(http) = &self.http {
            lines.into_iter().for_each(|l| http.send(l));
        }
    }

    fn report_overflow(&mut self) {
        let pending = {
            let mut map = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *map)
        };
        if pending.is_empty() {
            return;
        }
        let lines: Vec<String> = pending
            .into_values()
            .map(|(ctx, n)| to_line(&ctx.overflow(n).build()))
            .collect();
        Counters::add(&self.shared.counters.overflow_events, lines.len() as u64);
        self.write_lines(lines);
    }
}

/// One event as one line: serde_json escapes every control character, so a line never
/// contains a raw newline.
fn to_line(event: &AuditEvent) -> String {
    let mut line = serde_json::to_string(event).unwrap_or_else(|e| {
        // Only non-finite floats can fail; confidence is clamped, so this is a safety net.
        format!(
            "{{\"rule\":\"vigil: audit serialisation failed\",\"output\":{:?}}}",
            e.to_string()
        )
    });
    line.push('\n');
    line
}

/// The audit log, appended to and reopened when logrotate moves it away.
struct LogFile {
    path: PathBuf,
    file: File,
    identity: (u64, u64),
    checked: Instant,
}

impl LogFile {
    fn open(path: &Path) -> Result<LogFile, AuditError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| AuditError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| AuditError::OpenLog {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            let source = io::Error::other("not a regular file");
            return Err(AuditError::OpenLog {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            identity: (meta.dev(), meta.ino()),
            checked: Instant::now(),
        })
    }

    /// Appends whole lines in one `write(2)` where the kernel takes it all, so shims sharing
    /// the file (O_APPEND) do not split each other's lines.
    fn append(&mut self, lines: &[String]) -> io::Result<()> {
        self.reopen_if_rotated();
        let buf = lines.concat();
        self.file.write_all(buf.as_bytes())
    }

    fn reopen_if_rotated(&mut self) {
        if self.checked.elapsed() < REOPEN_CHECK {
            return;
        }
        self.checked = Instant::now();
        let same = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if same {
            return;
        }
        match LogFile::open(&self.path) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::error!(error = %e, "audit log moved and cannot be reopened"),
        }
    }
}
