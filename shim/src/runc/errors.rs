//! Errors from driving runc, and how runc's own error text is found.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a runc invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The binary could not be started at all.
    #[error("start OCI runtime {binary}: {source} (set runc_binary in the vigil config)", binary = .binary.display())]
    Spawn {
        /// Binary that was run.
        binary: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// runc ran and exited non-zero; `message` is runc's own error text.
    #[error("{message}")]
    Failed {
        /// The runc verb.
        verb: &'static str,
        /// Exit code (128+signal when killed).
        code: i32,
        /// runc's last error line, or a description of the exit.
        message: String,
    },
    /// runc's output was not what the verb prints.
    #[error("parse output of runc {verb}: {source}")]
    Parse {
        /// The runc verb.
        verb: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Plumbing around the process (pipes, waiting) failed.
    #[error("runc plumbing: {0}")]
    Io(#[source] io::Error),
}

impl RuncError {
    pub(crate) fn failed(verb: &'static str, code: i32, message: Option<String>) -> Self {
        let message = message
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("runc {verb} exited with status {code}"));
        RuncError::Failed {
            verb,
            code,
            message,
        }
    }

    /// Whether runc said the container or process is already gone.
    pub fn is_not_found(&self) -> bool {
        let RuncError::Failed { message, .. } = self else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        [
            "not running",
            "does not exist",
            "no such process",
            "process already finished",
        ]
        .iter()
        .any(|s| m.contains(s))
    }
}

/// The last non-empty line of captured stderr, without runc's logrus prefix.
pub(crate) fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(logrus_msg(line).unwrap_or(line).trim().to_string())
}

/// `msg="..."` of a logrus text line, if the line is one.
fn logrus_msg(line: &str) -> Option<&str> {
    let start = line.find("msg=\"")? + 5;
    let rest = &line[start..];
    let end = rest.rfind('"')?;
    Some(&rest[..end])
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// The message of the last `error` line in a runc JSON log; `None` if there is none.
pub async fn last_log_error(log: &Path) -> Option<String> {
    let text = tokio::fs::read_to_string(log).await.ok()?;
    last_error_in(&text)
}

pub(crate) fn last_error_in(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}
