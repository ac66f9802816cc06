//! Quoting CRIU's log file on failure, as runc's `logCriuErrors` does: each line
//! containing `Error ` with up to five lines before it, numbered, and `...`
//! between quotes that are not adjacent.

use std::path::Path;

/// How many lines before an error line are quoted with it.
const CONTEXT_BEFORE: usize = 5;

/// Quotes the lines around every error in `log` (the content of `name`).
/// Returns an empty string when there is no error line.
///
/// The result starts with a newline and a header, so it can be appended to a
/// one-line error message.
pub fn quote_errors(name: &str, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = String::new();
    // Number (1-based) of the last line printed, 0 for none yet.
    let mut printed = 0usize;
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("Error ") {
            continue;
        }
        let number = i + 1;
        let first = number.saturating_sub(CONTEXT_BEFORE).max(1);
        if printed == 0 {
            out.push_str(&format!("\n--- quoting {name}"));
        } else if first > printed + 1 {
            out.push_str("\n...");
        }
        for n in first.max(printed + 1)..=number {
            let text = lines[n - 1];
            if !text.is_empty() {
                out.push_str(&format!("\n{n}:{text}"));
            }
        }
        printed = number;
    }
    out
}

/// Reads CRIU's log at `path` and quotes its errors; empty when the file cannot
/// be read (CRIU may have failed before writing it).
pub fn quote_file(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => quote_errors(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        ),
        Err(err) => {
            tracing::debug!(path = %path.display(), "cannot read criu log: {err}");
            String::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_error_no_quote() {
        assert_eq!(quote_errors("x.log", "a\nb\nWarn: fine\n"), "");
    }

    #[test]
    fn quotes_context_and_marks_gaps() {
        let log = (1..=20)
            .map(|n| match n {
                8 => "(00.1) Error (criu/net.c:1): boom".to_string(),
                9 => "(00.2) Error (criu/cr-restore.c:2): restore failed".to_string(),
                18 => "(00.3) Error (criu/files.c:3): later".to_string(),
                n => format!("line {n}"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let quoted = quote_errors("restore.log", &log);
        let want = "\n--- quoting restore.log\
            \n3:line 3\n4:line 4\n5:line 5\n6:line 6\n7:line 7\
            \n8:(00.1) Error (criu/net.c:1): boom\
            \n9:(00.2) Error (criu/cr-restore.c:2): restore failed\
            \n...\
            \n13:line 13\n14:line 14\n15:line 15\n16:line 16\n17:line 17\
            \n18:(00.3) Error (criu/files.c:3): later";
        assert_eq!(quoted, want);
    }

    #[test]
    fn error_on_first_line() {
        assert_eq!(
            quote_errors("d.log", "Error (x): y\nok"),
            "\n--- quoting d.log\n1:Error (x): y"
        );
    }

    #[test]
    fn adjacent_quotes_have_no_gap_marker() {
        let log = "a\nError 1\nb\nc\nd\ne\nf\nError 2";
        let quoted = quote_errors("l", log);
        assert_eq!(
            quoted,
            "\n--- quoting l\n1:a\n2:Error 1\n3:b\n4:c\n5:d\n6:e\n7:f\n8:Error 2"
        );
    }
}
