//! Command lines clap refuses, reported like every other failure: kind `invalid_input`,
//! exit 2, one JSON object on stdout under `--json`, and a message that names flags but
//! never quotes a value.
//!
//! clap's own messages quote the offending argument. With `--var token s3cret` (a space
//! for the `=`), that argument is the secret itself, so the message is rebuilt here from
//! clap's structured context, showing an argument only when it looks like a flag.

use std::ffi::OsString;

use clap::error::{ContextKind, ErrorKind as ClapKind};

use crate::error::ErrorKind;

/// Whether the command line asks for JSON output (`--json` before any `--`).
pub(super) fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Print `e` and return the exit code: clap's own output for help and version, a
/// value-free `invalid_input` error for everything else.
pub(super) fn report(e: &clap::Error, json: bool) -> i32 {
    if matches!(
        e.kind(),
        ClapKind::DisplayHelp
            | ClapKind::DisplayVersion
            | ClapKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return e.exit_code();
    }
    let kind = ErrorKind::InvalidInput;
    let message = describe(e);
    if json {
        let obj = serde_json::json!({
            "ok": false,
            "error": {"kind": kind.as_str(), "message": message},
        });
        println!("{obj}");
    } else {
        let usage = e
            .get(ContextKind::Usage)
            .map(|u| format!("\n\n{u}"))
            .unwrap_or_default();
        eprintln!("error[{kind}]: {message}{usage}\n\nFor more information, try '--help'.");
    }
    kind.exit_code()
}

/// A message from clap's context: flag names, valid values and suggestions (all ours), never
/// the user's values.
fn describe(e: &clap::Error) -> String {
    let get = |k: ContextKind| e.get(k).map(|v| v.to_string());
    let arg = get(ContextKind::InvalidArg).unwrap_or_else(|| "an argument".into());
    let mut msg = match e.kind() {
        ClapKind::UnknownArgument => match get(ContextKind::InvalidArg).as_deref().and_then(flag_name) {
            Some(flag) => format!("unexpected argument {flag}"),
            None => "unexpected argument (not shown: it may be a value; values go in NAME=VALUE form, or after --var-file NAME=PATH)".into(),
        },
        // A positional word is not shown: it may be a value.
        ClapKind::InvalidSubcommand => "unrecognized subcommand".into(),
        ClapKind::InvalidValue => match get(ContextKind::ValidValue) {
            Some(valid) if !valid.is_empty() => format!("invalid value for {arg} (valid: {valid})"),
            _ => format!("{arg} needs a value"),
        },
        ClapKind::ValueValidation => match std::error::Error::source(e) {
            Some(why) => format!("invalid value for {arg}: {why}"),
            None => format!("invalid value for {arg}"),
        },
        ClapKind::MissingRequiredArgument => format!("missing required argument: {arg}"),
        ClapKind::ArgumentConflict => match get(ContextKind::PriorArg) {
            Some(prior) => format!("{arg} cannot be used with {prior}"),
            None => format!("{arg} cannot be used with another argument given"),
        },
        ClapKind::MissingSubcommand => "a subcommand is required".into(),
        ClapKind::NoEquals => format!("{arg} takes its value after '='"),
        ClapKind::TooManyValues | ClapKind::TooFewValues | ClapKind::WrongNumberOfValues => {
            format!("wrong number of values for {arg}")
        }
        ClapKind::InvalidUtf8 => "an argument is not valid UTF-8".into(),
        _ => "invalid arguments".into(),
    };
    if let Some(s) =
        get(ContextKind::SuggestedArg).or_else(|| get(ContextKind::SuggestedSubcommand))
    {
        msg.push_str(&format!("; did you mean {s}?"));
    }
    msg
}

/// `arg` up to any `=` if it looks like a flag (`--name`, `-n`), else `None`: anything else
/// may be a value.
fn flag_name(arg: &str) -> Option<&str> {
    let name = arg.split('=').next().unwrap_or(arg);
    let bare = name.trim_start_matches('-');
    let looks = !bare.is_empty()
        && bare.len() <= 40
        && (1..=2).contains(&(name.len() - bare.len()))
        && bare
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    looks.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flag_shaped_arguments_are_shown() {
        assert_eq!(flag_name("--no-such-flag"), Some("--no-such-flag"));
        assert_eq!(flag_name("--vars=token=s3cret"), Some("--vars"));
        assert_eq!(flag_name("-x"), Some("-x"));
        assert_eq!(flag_name("s3cret value"), None);
        assert_eq!(flag_name("Hunter2"), None);
        assert_eq!(flag_name("s3cret"), None);
        assert_eq!(flag_name("---x"), None);
        assert_eq!(flag_name("--"), None);
    }
}
