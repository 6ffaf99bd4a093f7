//! Command-line parsing, by hand.
//!
//! The bench takes a subcommand and, later, a few options each; that is too little
//! to justify a parsing dependency in a crate whose users do not need one. New
//! subcommands get a [`Command`] variant, a match arm in [`parse`] and a line in
//! [`USAGE`].

use std::ffi::OsString;
use std::fmt;

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// No argument: the main job, a short mixed run over a 4-node mesh.
    Mesh,
    /// `--help`, `-h` or `help`: print the usage and exit successfully.
    Help,
}

/// The exit status for a command line the bench does not understand, as is usual
/// for command-line tools (and distinct from 1, which means a run found a problem).
pub const USAGE_EXIT: u8 = 2;

/// The usage text, printed by `--help` and, to stderr, after a bad command line.
pub const USAGE: &str = "\
usage: wirelane-bench [subcommand]

With no subcommand, runs a short mixed run (about 5 s) over a 4-node full mesh on
loopback: gossip and private traffic between every pair, then checks that every
private message accepted by `send` arrived exactly once and in order. Exits with
status 1 if any was lost, duplicated or reordered.

subcommands:
  --help, -h, help    print this message

exit status: 0 success, 1 the run found a problem, 2 bad command line
";

/// A command line the bench does not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The first argument names no subcommand.
    UnknownCommand(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownCommand(arg) => write!(f, "unknown subcommand `{arg}`"),
        }
    }
}

impl std::error::Error for CliError {}

/// Reads the subcommand from the arguments (the program name already skipped).
///
/// Takes `OsString`s so that an argument that is not UTF-8 is reported as unknown
/// instead of panicking, as `std::env::args` would.
///
/// # Errors
///
/// [`CliError::UnknownCommand`] if the first argument is not a subcommand.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Ok(Command::Mesh);
    };
    match first.to_str() {
        Some("--help" | "-h" | "help") => Ok(Command::Help),
        _ => Err(CliError::UnknownCommand(
            first.to_string_lossy().into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_argument_runs_the_main_job() {
        assert_eq!(parse_strs(&[]), Ok(Command::Mesh));
    }

    #[test]
    fn help_in_every_spelling() {
        for arg in ["--help", "-h", "help"] {
            assert_eq!(parse_strs(&[arg]), Ok(Command::Help));
        }
    }

    #[test]
    fn anything_else_is_an_unknown_subcommand() {
        assert_eq!(
            parse_strs(&["--fast"]),
            Err(CliError::UnknownCommand("--fast".into()))
        );
    }
}
