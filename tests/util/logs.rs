//! A logger that keeps every line, so that a test can count what a node logged.
//!
//! A test binary (each file in `tests/`) has one logger for its whole life: the
//! first call to [`capture`] installs it, later calls share it. Lines are told apart
//! by the node that wrote them: every line of a node starts with its id
//! (`peer-1: ...`).

use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};
use wirelane::PeerId;

/// One line as logged.
#[derive(Debug, Clone)]
pub struct Line {
    pub level: Level,
    /// The module that logged it (`wirelane::...`, or a dependency's).
    pub target: String,
    pub text: String,
}

/// Every line logged since the logger was installed.
pub struct Captured {
    lines: Mutex<Vec<Line>>,
}

static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();

/// Installs the capturing logger (once per test binary) at the debug level, so that
/// a refusal logged at debug (a second one within a second) is counted too.
pub fn capture() -> &'static Captured {
    CAPTURED.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::new(Captured {
            lines: Mutex::new(Vec::new()),
        }));
        log::set_logger(captured).expect("no other logger in this test binary");
        log::set_max_level(LevelFilter::Debug);
        captured
    })
}

impl Captured {
    /// The lines `node` has logged so far, oldest first.
    pub fn of(&self, node: PeerId) -> Vec<Line> {
        let prefix = format!("{node}: ");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.text.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// The lines of `node` that report a refused connection.
    pub fn refusals(&self, node: PeerId) -> Vec<Line> {
        self.of(node)
            .into_iter()
            .filter(|line| line.text.contains("refused"))
            .collect()
    }

    /// Warnings and errors logged by anything but the crate (its TLS library, say).
    pub fn foreign_warnings(&self) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.level <= Level::Warn && !line.target.starts_with("wirelane"))
            .cloned()
            .collect()
    }

    /// Checks that `node` has logged exactly one refusal, and no other warning or
    /// error, and that no dependency has warned of anything: a refusal is one line,
    /// whatever part of the node saw it.
    #[track_caller]
    pub fn assert_one_refusal(&self, node: PeerId) -> Line {
        let foreign = self.foreign_warnings();
        assert!(foreign.is_empty(), "{foreign:#?}");
        let refusals = self.refusals(node);
        let loud: Vec<Line> = self
            .of(node)
            .into_iter()
            .filter(|line| line.level <= Level::Warn)
            .collect();
        assert_eq!(refusals.len(), 1, "{node} logged {refusals:#?}");
        assert!(
            loud.iter().all(|line| line.text == refusals[0].text),
            "{node} warned of more than its refusal: {loud:#?}"
        );
        refusals[0].clone()
    }
}

impl Log for Captured {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Debug
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.lines.lock().unwrap().push(Line {
                level: record.level(),
                target: record.target().to_string(),
                text: record.args().to_string(),
            });
        }
    }

    fn flush(&self) {}
}
