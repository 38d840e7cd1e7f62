//! Report lines on the serial console, one `write(2)` each, counted for the final line.

use std::io::Write;

use vigil_guest::report::{Line, Outcome};

/// Writes [`Line`]s to stdout (the kernel's console) and counts them.
#[derive(Default)]
pub struct Reporter {
    printed: u64,
}

impl Reporter {
    pub fn line(&mut self, line: Line) {
        let text = line.render();
        let mut stdout = std::io::stdout().lock();
        // One write_all on an unbuffered tty fd: a single write(2) for lines this short.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
        self.printed += 1;
    }

    /// Reports one case from its result: `Ok(detail)` passes, `Err(detail)` fails.
    pub fn case(&mut self, name: &str, result: Result<String, String>) {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.line(Line::Case {
            name: name.into(),
            outcome,
            detail,
        });
    }

    /// Prints the final line, which tells the host how many lines came before it.
    pub fn end(mut self) {
        let printed = self.printed;
        self.line(Line::End { lines: printed });
    }
}
