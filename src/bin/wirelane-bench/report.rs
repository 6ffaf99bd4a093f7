//! Results: one [`Record`] per measurement, printed as a table or as JSON lines.
//!
//! Every subcommand builds records with the same keys where they apply (`workload`,
//! `impl`, `size`, `count`, `secs`, `msgs_per_s`, `mb_per_s`, `p50_us`, `p99_us`,
//! `p999_us`, `dropped`, `lost`, `rss_kib`, `threads`), so that scripts can read any
//! of them the same way.

use std::fmt::Write as _;

use crate::table::{Align, Table};

/// One value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    Text(String),
}

impl Value {
    fn cell(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) if v.abs() >= 100.0 => format!("{v:.0}"),
            Value::Float(v) if v.abs() >= 1.0 => format!("{v:.2}"),
            Value::Float(v) => format!("{v:.3}"),
            Value::Text(v) => v.clone(),
        }
    }

    fn json(&self, out: &mut String) {
        match self {
            Value::Int(v) => write!(out, "{v}").expect("writing to a String"),
            Value::Float(v) if v.is_finite() => write!(out, "{v}").expect("writing to a String"),
            Value::Float(_) => out.push_str("null"),
            Value::Text(v) => {
                out.push('"');
                for c in v.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if (c as u32) < 0x20 => {
                            write!(out, "\\u{:04x}", c as u32).expect("writing to a String")
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
        }
    }

    /// The value as a number, for ratios.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }
}

/// One result: ordered key/value pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    fields: Vec<(&'static str, Value)>,
}

impl Record {
    /// A record for `workload` run by `implementation`.
    pub fn new(workload: &str, implementation: &str) -> Record {
        Record {
            fields: vec![
                ("workload", Value::Text(workload.to_owned())),
                ("impl", Value::Text(implementation.to_owned())),
            ],
        }
    }

    fn set(mut self, key: &'static str, value: Value) -> Record {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    pub fn int(self, key: &'static str, value: u64) -> Record {
        self.set(key, Value::Int(value))
    }

    pub fn float(self, key: &'static str, value: f64) -> Record {
        self.set(key, Value::Float(value))
    }

    pub fn text(self, key: &'static str, value: impl Into<String>) -> Record {
        self.set(key, Value::Text(value.into()))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A numeric field, for computing ratios between records.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::number)
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "\"{key}\": ").expect("writing to a String");
            value.json(&mut out);
        }
        out.push('}');
        out
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
        if self.json {
            for record in records {
                println!("{}", record.to_json());
            }
            return;
        }
        println!("{title}");
        let mut keys: Vec<&'static str> = Vec::new();
        for record in records {
            for (key, _) in &record.fields {
                if !keys.contains(key) {
                    keys.push(key);
                }
            }
        }
        let columns: Vec<(&str, Align)> = keys
            .iter()
            .map(|k| {
                let numeric = records
                    .iter()
                    .any(|r| matches!(r.get(k), Some(Value::Int(_) | Value::Float(_))));
                (*k, if numeric { Align::Right } else { Align::Left })
            })
            .collect();
        let mut table = Table::new(&columns);
        for record in records {
            table.row(
                keys.iter()
                    .map(|k| record.get(k).map(Value::cell).unwrap_or_default())
                    .collect(),
            );
        }
        print!("{table}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_and_keep_field_order() {
        let r = Record::new("throughput", "wirelane")
            .int("size", 64)
            .float("msgs_per_s", 1.5)
            .text("note", "a \"quoted\"\nline");
        assert_eq!(
            r.to_json(),
            r#"{"workload": "throughput", "impl": "wirelane", "size": 64, "msgs_per_s": 1.5, "note": "a \"quoted\"\u000aline"}"#
        );
        assert_eq!(r.number("size"), Some(64.0));
    }

    #[test]
    fn setting_a_key_twice_replaces_it() {
        let r = Record::new("w", "i").int("count", 1).int("count", 2);
        assert_eq!(r.get("count"), Some(&Value::Int(2)));
        assert_eq!(r.fields.len(), 3);
    }
}
