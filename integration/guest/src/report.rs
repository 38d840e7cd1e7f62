//! The lines the guest prints on its serial console and the host parses.
//!
//! Each line is `VIGIL-GUEST ` followed by one JSON object. The guest writes a line with a
//! single `write(2)` so kernel messages cannot split it; the host still rejects a line that
//! carries the prefix but does not parse, rather than ignoring it.

use serde::{Deserialize, Serialize};

/// Prefix of every machine-readable line on the guest console.
pub const LINE_PREFIX: &str = "VIGIL-GUEST ";

/// Result of one guest test case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// The case could not run; `detail` says why. Never counted as passed.
    Skip,
}

/// One line of the guest's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A test case finished.
    Case {
        name: String,
        outcome: Outcome,
        detail: String,
    },
    /// A benchmark figure: mean cost of one operation in one setting.
    Bench {
        op: String,
        setting: String,
        ns_per_op: f64,
        iterations: u64,
    },
    /// `bpf_stats` of one program (kernel.bpf_stats_enabled=1 during the benchmark).
    BpfStats {
        program: String,
        run_cnt: u64,
        run_time_ns: u64,
    },
    /// The guest finished; `lines` counts the lines printed before this one.
    End { lines: u64 },
}

impl Line {
    /// The console line for `self`, newline included.
    pub fn render(&self) -> String {
        let json = serde_json::to_string(self).expect("a report line always serialises");
        format!("{LINE_PREFIX}{json}\n")
    }
}

/// Why a console line carrying [`LINE_PREFIX`] was rejected.
#[derive(Debug, thiserror::Error)]
#[error("garbled guest report line {line:?}: {source}")]
pub struct GarbledLine {
    pub line: String,
    #[source]
    pub source: serde_json::Error,
}

/// Parses one console line: `Ok(None)` for lines that are not report lines (kernel messages,
/// test program output).
pub fn parse(console_line: &str) -> Result<Option<Line>, GarbledLine> {
    let trimmed = console_line.trim_end_matches(['\r', '\n']);
    let Some(start) = trimmed.find(LINE_PREFIX) else {
        return Ok(None);
    };
    let json = &trimmed[start + LINE_PREFIX.len()..];
    serde_json::from_str(json)
        .map(Some)
        .map_err(|source| GarbledLine {
            line: trimmed.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_line_parses_back() {
        let line = Line::Case {
            name: "exec_denied".into(),
            outcome: Outcome::Pass,
            detail: "EPERM, \"quoted\"\nnewline".into(),
        };
        let text = line.render();
        assert_eq!(text.matches('\n').count(), 1, "one console line: {text:?}");
        assert_eq!(parse(&text).unwrap(), Some(line));
    }

    #[test]
    fn console_noise_is_not_a_report_line() {
        assert_eq!(
            parse("[    1.234] random: crng init done\r\n").unwrap(),
            None
        );
    }

    #[test]
    fn a_split_report_line_is_an_error() {
        let text = Line::End { lines: 3 }.render();
        let cut = &text[..text.len() - 4];
        assert!(parse(cut).is_err());
    }
}
