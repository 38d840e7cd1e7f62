//! Following `ctr events` of a private containerd.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::containerd::Containerd;

/// One event line: `TIMESTAMP NAMESPACE TOPIC JSON`.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the test saw it (events arrive in order on one stream).
    pub seen: Instant,
    /// containerd namespace.
    pub namespace: String,
    /// `/tasks/exit`, `/tasks/oom`, ...
    pub topic: String,
    /// The event body.
    pub body: Value,
}

impl Event {
    /// The container the event is about (`container_id`, or `id` for container events).
    pub fn container_id(&self) -> Option<&str> {
        self.body
            .get("container_id")
            .or_else(|| self.body.get("id"))
            .and_then(Value::as_str)
    }
}

/// A running `ctr events`; stopped when dropped.
pub struct Events {
    child: Child,
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    /// Starts following events of `c` (all namespaces).
    pub fn follow(c: &Containerd) -> Result<Events> {
        let mut child = c
            .ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start `ctr events`")?;
        let stdout = child.stdout.take().context("ctr events stdout")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(event) = parse_line(&line) {
                    sink.lock().expect("events lock").push(event);
                }
            }
        });
        // `ctr events` subscribes asynchronously; give it a moment before the test acts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Events { child, seen })
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Event> {
        self.seen.lock().expect("events lock").clone()
    }

    /// Events of `topic` about container `id` so far.
    pub fn of(&self, topic: &str, id: &str) -> Vec<Event> {
        let all = self.all();
        all.into_iter()
            .filter(|e| e.topic == topic && e.container_id() == Some(id))
            .collect()
    }

    /// Waits up to `timeout` for an event of `topic` about `id`.
    pub fn wait(&self, topic: &str, id: &str, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.of(topic, id).into_iter().next() {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `2024-01-01 00:00:00.1 +0000 UTC ns /tasks/exit {...}`.
pub fn parse_line(line: &str) -> Option<Event> {
    let topic_at = line.find(" /")? + 1;
    let (head, rest) = line.split_at(topic_at);
    let namespace = head.split_whitespace().last()?.to_string();
    let (topic, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
    Some(Event {
        seen: Instant::now(),
        namespace,
        topic: topic.to_string(),
        body: serde_json::from_str(json).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_exit_line() {
        let line = r#"2024-05-01 10:00:00.5 +0000 UTC ns1 /tasks/exit {"container_id":"c1","pid":7,"exit_status":137}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.namespace, "ns1");
        assert_eq!(e.topic, "/tasks/exit");
        assert_eq!(e.container_id(), Some("c1"));
        assert_eq!(e.body["exit_status"], 137);
    }
}
