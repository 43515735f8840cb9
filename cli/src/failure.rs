//! Failures: one `error: ...` line on stderr, and an exit code that says whose fault it was.
//!
//! Scripts branch on the code: 1 when something out there went wrong (Redis unreachable or
//! refusing, no such queue, job or dead letter), 2 when the command line was wrong (what
//! clap exits with for bad arguments, and what the library's "invalid ..." errors mean),
//! 75 (`EX_TEMPFAIL`) when a bounded queue is full: try again later.

use std::fmt;
use std::process::ExitCode;

/// Something out there went wrong.
const OPERATIONAL: u8 = 1;
/// The command line was wrong.
const USAGE: u8 = 2;
/// A bounded queue had no room: try again later (sysexits' `EX_TEMPFAIL`).
const TRY_LATER: u8 = 75;

/// A command line that parses but makes no sense (an option missing for what was asked,
/// say); exits 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Prints `e` as one line on stderr and returns its exit code.
pub(crate) fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(e));
    ExitCode::from(exit_code(e))
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<stevedore::Error>() {
            return match e {
                stevedore::Error::InvalidUrl { .. }
                | stevedore::Error::InvalidConfig(_)
                | stevedore::Error::InvalidName { .. }
                | stevedore::Error::InvalidInput(_)
                | stevedore::Error::PayloadTooLarge { .. }
                | stevedore::Error::Encode(_) => USAGE,
                stevedore::Error::QueueFull { .. } => TRY_LATER,
                _ => OPERATIONAL,
            };
        }
    }
    OPERATIONAL
}

/// The error and its causes on one line, leaving out a cause whose text the line already
/// holds (the library's errors show their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reports a command line clap refused: help and version go to stdout with exit 0; a bare
/// `stevedore` prints the help on stderr; anything else is one line, exit 2.
pub(crate) fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing can only fail on a closed stream, where nobody reads it anyway.
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(USAGE))
        }
        _ => {
            eprintln!("{}", clap_line(&e.render().to_string()));
            ExitCode::from(USAGE)
        }
    }
}

/// Clap's message without the usage block: its first line, then its notes and tips.
fn clap_line(rendered: &str) -> String {
    let mut line = String::new();
    for part in rendered.lines().map(str::trim) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if part.is_empty() {
            continue;
        }
        if !line.is_empty() {
            let joined = part.starts_with('[') || line.ends_with(':');
            line.push_str(if joined { " " } else { "; " });
        }
        line.push_str(part);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_messages_become_one_line_without_the_usage() {
        let rendered = "error: invalid value 'urgent' for '--priority <PRIORITY>'\n  \
            [possible values: high, normal, low]\n\n\
            For more information, try '--help'.\n";
        assert_eq!(
            clap_line(rendered),
            "error: invalid value 'urgent' for '--priority <PRIORITY>' \
             [possible values: high, normal, low]"
        );
        let rendered = "error: unrecognized subcommand 'jobs'\n\n  \
            tip: a similar subcommand exists: 'job'\n\n\
            Usage: stevedore [OPTIONS] <COMMAND>\n\n\
            For more information, try '--help'.\n";
        assert_eq!(
            clap_line(rendered),
            "error: unrecognized subcommand 'jobs'; tip: a similar subcommand exists: 'job'"
        );
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let e = anyhow::Error::new(Usage("inner".into())).context("outer: inner");
        assert_eq!(one_line(&e), "outer: inner");
        let e = anyhow::Error::new(Usage("multi\nline".into())).context("outer");
        assert_eq!(one_line(&e), "outer: multi line");
        assert_eq!(exit_code(&e), USAGE);
        let e = anyhow::anyhow!("no job");
        assert_eq!(exit_code(&e), OPERATIONAL);
    }
}
