//! Results: one [`Record`] per measurement, printed as a table or as JSON lines, and
//! the progress bar a long run shows on stderr.
//!
//! Subcommands use the same keys where they apply (`workload`, `impl`, `size`,
//! `count`, `secs`, `msgs_per_s`, `p50_us`, …), so that scripts read any of them the
//! same way. A record keeps its keys in the order they were set, which is also the
//! order of the table's columns.

use std::process::ExitCode;
use std::time::Duration;

use comfy_table::{presets, CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(Map<String, Value>);

impl Record {
    /// A record for `workload` run by `implementation`.
    pub fn new(workload: &str, implementation: &str) -> Record {
        Record::default()
            .set("workload", workload)
            .set("impl", implementation)
    }

    /// Sets `key`: integers stay integers, and a non-finite float is written as
    /// JSON `null`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Record {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A numeric field, for computing ratios between records.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// `msgs_per_s`, or 0 for a record without it.
    pub fn rate(&self) -> f64 {
        self.number("msgs_per_s").unwrap_or(0.0)
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

/// How a value reads in a table: integers whole, floats to three significant-ish
/// places, so that columns stay narrow.
fn cell(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64().unwrap_or(f64::NAN) {
            v if v.abs() >= 100.0 => format!("{v:.0}"),
            v if v.abs() >= 1.0 => format!("{v:.2}"),
            v => format!("{v:.3}"),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where results go: a table with a title and notes, or JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints records: in JSON mode one object per line; otherwise a table whose
    /// columns are every key, in the order they first appear.
    pub fn records(&self, title: &str, records: &[Record]) {
        let mut keys: Vec<&str> = Vec::new();
        for key in records.iter().flat_map(|r| r.0.keys()) {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
        let columns: Vec<(&str, &str)> = keys.iter().map(|k| (*k, *k)).collect();
        self.table(title, records, &columns);
    }

    /// Prints records: in JSON mode whole, one object per line; otherwise a table of
    /// only these `(key, header)` columns, for records too wide to read whole.
    pub fn table(&self, title: &str, records: &[Record], columns: &[(&str, &str)]) {
        if self.json {
            for record in records {
                println!("{}", record.to_json());
            }
            return;
        }
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_header(columns.iter().map(|c| c.1));
        for record in records {
            table.add_row(
                columns
                    .iter()
                    .map(|(key, _)| record.get(key).map(cell).unwrap_or_default()),
            );
        }
        for (i, (key, _)) in columns.iter().enumerate() {
            let numeric = records
                .iter()
                .any(|r| r.get(key).is_some_and(Value::is_number));
            if let (true, Some(column)) = (numeric, table.column_mut(i)) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        println!("{title}");
        println!("{}", table.trim_fmt());
    }

    /// Ends a checking run: `result: PASS`, or `result: FAIL` and every problem on
    /// stderr; returns the exit status.
    pub fn verdict(&self, problems: &[String]) -> ExitCode {
        if problems.is_empty() {
            self.note("result: PASS");
            return ExitCode::SUCCESS;
        }
        self.note("result: FAIL");
        for problem in problems {
            eprintln!("wirelane-bench: FAIL: {problem}");
        }
        ExitCode::FAILURE
    }

    /// A line of commentary: under the table, or on stderr in JSON mode so that
    /// stdout stays machine-readable.
    pub fn note(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// A progress bar on stderr: `total` steps, or a spinner with the elapsed time.
/// Hidden with `--quiet`, and by indicatif itself when stderr is not a terminal, so
/// that logs and pipes get clean output.
pub fn progress(label: &str, total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg}: {elapsed} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg}: {elapsed} {spinner}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_and_keep_field_order() {
        let r = Record::new("throughput", "wirelane")
            .set("size", 64)
            .set("msgs_per_s", 1.5)
            .set("note", "a \"quoted\"\nline");
        assert_eq!(
            r.to_json(),
            r#"{"workload":"throughput","impl":"wirelane","size":64,"msgs_per_s":1.5,"note":"a \"quoted\"\nline"}"#
        );
        assert_eq!(r.number("size"), Some(64.0));
        assert_eq!(
            Record::default().set("x", f64::NAN).to_json(),
            r#"{"x":null}"#
        );
    }

    #[test]
    fn setting_a_key_twice_replaces_it() {
        let r = Record::new("w", "i").set("count", 1).set("count", 2);
        assert_eq!(r.number("count"), Some(2.0));
        assert_eq!(r.0.len(), 3);
    }
}
