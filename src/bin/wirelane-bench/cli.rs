//! Command-line parsing, by hand.
//!
//! A subcommand and a few `--name value` options each are too little to justify a
//! parsing dependency in a crate whose users do not need one. Every subcommand reads
//! its options through [`Args`], which refuses options it was not asked about, so a
//! typo is an error and never a silently ignored setting.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

/// The exit status for a command line the bench does not understand, as is usual
/// for command-line tools (and distinct from 1, which means a run found a problem).
pub const USAGE_EXIT: u8 = 2;

/// The usage text, printed by `--help` and, to stderr, after a bad command line.
pub const USAGE: &str = "\
usage: wirelane-bench [subcommand] [options]

With no subcommand, runs the main job: a short mixed run (about 5 s) over a 4-node
full mesh on loopback, gossip and private traffic between every pair, then checks
that every private message accepted by `send` arrived exactly once and in order.

subcommands:
  throughput --size N --count M [--lane private|gossip] [--conns K] [--batch B]
             [--capacity C] [--repeat R] [--impl all|wirelane]
        one-way messages from one node to another in this process (K sender nodes
        into one receiver); every payload freshly allocated. Also measures, in the
        same run, the raw loopback TCP limit and the in-process channel limit, and
        prints our ratio to each. --batch sets Config::max_batch_bytes, --capacity
        both lane capacities; each contender runs R times (default 3), best kept.
  latency --size N --count M [--impl wirelane|naive|both]
        ping-pong round trips over one connection; p50, p99, p99.9.
  mesh [--nodes N] [--size S] [--secs T]
        all-to-all gossip and private traffic among N nodes; aggregate msgs/s,
        drops, lost private messages (must be 0). The defaults (4 nodes, 64 bytes,
        5 s) are the main job.
  deadlock [--impl locked|wirelane] [--messages N] [--watchdog SECS]
        the Fabric FAB-10469 scenario: two peers flooding each other with private
        messages through full buffers. `locked` is a reference implementation that
        blocks on a full buffer while holding its connection lock; it deadlocks,
        which a watchdog reports after SECS (default 3) without progress. N
        messages per thread (default 20000). Without --impl both run side by side;
        exits 1 unless wirelane completes with nothing lost or reordered.
  scale [--conns N] [--size S] [--count M] [--repeat R]
        N idle connections (default 1000) into one node: threads, resident memory
        per connection, and the throughput of one active connection (M S-byte
        private messages) alone and among them, best of R runs (default 3).
  soak [--secs T] [--nodes N] [--seed X]
        mixed load among N nodes (default 4) for T seconds (default 30) with random
        disconnects and reconnects (chaos seeded by X, default 1); checks that no
        private message is lost, duplicated or reordered (messages handed back in
        Undelivered count as returned), and that threads and memory stay bounded.
        Exits 1 on any violation.
  serve --listen ADDR --id N [--secs T]
        a node that answers the `load` workloads from another process or host,
        until killed or for T seconds; logs each peer's arrival and departure.
  load --connect ADDR [--id N] [--workload throughput|latency] [--size N] [--count M]
        runs a workload against a `serve` process.
  peer --listen ADDR --id N [--read all|none] [--inbound N] [--max-frame N]
       [--private-capacity N] [--ping-ms N] [--silence-ms N] [--linger-ms N]
        a scriptable peer for the fault tests (tests/fault_*.rs), not a benchmark:
        a node that reports its events on stdout and takes commands on stdin
        (`send COUNT SIZE`, `report PEER`); exits when stdin closes.
  baseline raw|channel|naive --size N [--count M]
        raw: pre-framed bytes over loopback TCP in 64 KiB writes (the transport
        limit). channel: a fresh payload per message through a crossbeam bounded
        channel between two threads (the in-process limit). naive: a thread per
        connection and a Mutex<TcpStream> with one write per message.

options for every subcommand:
  --json     one JSON object per result on stdout instead of a table
  --quiet    no progress on stderr (progress is also off when stderr is not a
             terminal, and for runs of two seconds or less)
  --help     this message

exit status: 0 success, 1 the run found a problem, 2 bad command line
";

/// A command line the bench does not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The first argument names no subcommand.
    UnknownCommand(String),
    /// An option the subcommand does not take.
    UnknownOption(String),
    /// An option without its value.
    MissingValue(String),
    /// A value that does not parse, or is out of range.
    BadValue {
        option: String,
        value: String,
        why: String,
    },
    /// A required option is absent.
    Required(String),
    /// An argument that is not an option.
    Stray(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownCommand(arg) => write!(f, "unknown subcommand `{arg}`"),
            CliError::UnknownOption(arg) => write!(f, "unknown option `--{arg}`"),
            CliError::MissingValue(arg) => write!(f, "option `--{arg}` needs a value"),
            CliError::BadValue { option, value, why } => {
                write!(f, "bad value `{value}` for `--{option}`: {why}")
            }
            CliError::Required(arg) => write!(f, "option `--{arg}` is required"),
            CliError::Stray(arg) => write!(f, "unexpected argument `{arg}`"),
        }
    }
}

impl std::error::Error for CliError {}

/// Options that take no value.
const FLAGS: &[&str] = &["json", "quiet", "help"];

/// A parsed command line: the subcommand, positional words after it, and options.
#[derive(Debug, Default)]
pub struct Args {
    /// The subcommand; empty for the main job.
    pub command: String,
    positional: Vec<String>,
    options: BTreeMap<String, String>,
    flags: Vec<String>,
    /// Options a subcommand has asked about; anything else is an error.
    read: std::cell::RefCell<Vec<String>>,
}

impl Args {
    /// Splits the arguments (program name already skipped).
    ///
    /// # Errors
    ///
    /// Fails on an argument that is not UTF-8 or an option without its value.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, CliError> {
        let mut parsed = Args::default();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            let arg = arg
                .into_string()
                .map_err(|a| CliError::Stray(a.to_string_lossy().into_owned()))?;
            if let Some(name) = arg.strip_prefix("--") {
                if let Some((name, value)) = name.split_once('=') {
                    parsed.options.insert(name.to_owned(), value.to_owned());
                } else if FLAGS.contains(&name) {
                    parsed.flags.push(name.to_owned());
                } else {
                    let value = args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| CliError::MissingValue(name.to_owned()))?;
                    parsed.options.insert(name.to_owned(), value);
                }
            } else if arg == "-h" {
                parsed.flags.push("help".to_owned());
            } else if parsed.command.is_empty() && parsed.positional.is_empty() {
                parsed.command = arg;
            } else {
                parsed.positional.push(arg);
            }
        }
        Ok(parsed)
    }

    /// Whether a flag such as `--json` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The positional word after the subcommand (as in `baseline raw`), if any.
    pub fn word(&self, index: usize) -> Option<&str> {
        self.positional.get(index).map(String::as_str)
    }

    /// An option's value, parsed, or `default` when absent.
    ///
    /// # Errors
    ///
    /// Fails if the value does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, CliError>
    where
        T::Err: fmt::Display,
    {
        Ok(self.get_opt(name)?.unwrap_or(default))
    }

    /// An option's value, parsed, if present.
    ///
    /// # Errors
    ///
    /// Fails if the value does not parse.
    pub fn get_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, CliError>
    where
        T::Err: fmt::Display,
    {
        self.read.borrow_mut().push(name.to_owned());
        match self.options.get(name) {
            None => Ok(None),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|e: T::Err| CliError::BadValue {
                    option: name.to_owned(),
                    value: value.clone(),
                    why: e.to_string(),
                }),
        }
    }

    /// A required option's value.
    ///
    /// # Errors
    ///
    /// Fails if it is absent or does not parse.
    pub fn require<T: FromStr>(&self, name: &str) -> Result<T, CliError>
    where
        T::Err: fmt::Display,
    {
        self.get_opt(name)?
            .ok_or_else(|| CliError::Required(name.to_owned()))
    }

    /// A value that must be one of `choices`.
    ///
    /// # Errors
    ///
    /// Fails on any other value.
    pub fn choice(&self, name: &str, choices: &[&str], default: &str) -> Result<String, CliError> {
        let value: String = self.get(name, default.to_owned())?;
        if choices.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(CliError::BadValue {
                option: name.to_owned(),
                value,
                why: format!("expected one of {}", choices.join(", ")),
            })
        }
    }

    /// Refuses options no one asked about and positional words beyond `words`. Call
    /// once a subcommand has read all its options.
    ///
    /// # Errors
    ///
    /// Names the first stray option or word.
    pub fn finish(&self, words: usize) -> Result<(), CliError> {
        let read = self.read.borrow();
        if let Some(name) = self.options.keys().find(|k| !read.contains(k)) {
            return Err(CliError::UnknownOption(name.clone()));
        }
        match self.positional.get(words) {
            Some(extra) => Err(CliError::Stray(extra.clone())),
            None => Ok(()),
        }
    }
}

/// A positive integer option: a size, a count.
pub fn positive(option: &str, value: u64) -> Result<u64, CliError> {
    if value == 0 {
        Err(CliError::BadValue {
            option: option.to_owned(),
            value: "0".to_owned(),
            why: "must be at least 1".to_owned(),
        })
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::parse(args.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn no_argument_is_the_main_job() {
        let args = parse(&[]);
        assert_eq!(args.command, "");
        assert!(args.finish(0).is_ok());
    }

    #[test]
    fn options_flags_and_words() {
        let args = parse(&["baseline", "raw", "--size", "64", "--json", "--count=10"]);
        assert_eq!(args.command, "baseline");
        assert_eq!(args.word(0), Some("raw"));
        assert!(args.flag("json"));
        assert_eq!(args.get::<u64>("size", 1).unwrap(), 64);
        assert_eq!(args.get::<u64>("count", 1).unwrap(), 10);
        assert!(args.finish(1).is_ok());
    }

    #[test]
    fn unknown_options_and_bad_values_are_errors() {
        let args = parse(&["throughput", "--sise", "64"]);
        let _ = args.get::<u64>("size", 64).unwrap();
        assert_eq!(args.finish(0), Err(CliError::UnknownOption("sise".into())));

        let args = parse(&["throughput", "--size", "big"]);
        assert!(matches!(
            args.get::<u64>("size", 1),
            Err(CliError::BadValue { .. })
        ));

        let args = parse(&["latency", "--impl", "fast"]);
        assert!(args
            .choice("impl", &["wirelane", "naive"], "wirelane")
            .is_err());

        assert_eq!(
            Args::parse(["--size"].iter().map(OsString::from)).unwrap_err(),
            CliError::MissingValue("size".into())
        );
        assert!(positive("count", 0).is_err());
    }
}
