//! Reading a private vigil audit log (JSON lines) as tests and the demo do.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

/// Every event of the log at `path`, in order (none if it does not exist yet); a line that is
/// not a JSON object is an error.
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("audit line {} is not JSON: {line}", n + 1))?;
            ensure!(
                v.is_object(),
                "audit line {} is not an object: {line}",
                n + 1
            );
            Ok(v)
        })
        .collect()
}

/// The events after the first `mark`, once at least `min` arrived (or `wait` passed) and the
/// log has been quiet for half a second (vigil's writer is asynchronous).
pub fn events_since(path: &Path, mark: usize, min: usize, wait: Duration) -> Result<Vec<Value>> {
    let deadline = Instant::now() + wait;
    let mut last = usize::MAX;
    let mut quiet_since = Instant::now();
    loop {
        let all = read(path)?;
        let n = all.len().saturating_sub(mark);
        if n != last {
            last = n;
            quiet_since = Instant::now();
        }
        let quiet = quiet_since.elapsed() >= Duration::from_millis(500);
        if (n >= min && quiet) || Instant::now() >= deadline {
            return Ok(all.into_iter().skip(mark).collect());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
