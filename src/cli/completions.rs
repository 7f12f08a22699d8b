//! `csm-agent completions SHELL` and `csm-agent man`: shell completions (clap_complete)
//! and manual pages (clap_mangen), generated from the same clap definitions as `--help`,
//! so they never drift from the command line. The Debian package and `scripts/install.sh`
//! ship their output.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::error::ErrorKind;

/// `csm-agent completions`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Print a shell completion script for csm-agent on stdout.",
    after_help = "Install (as the Debian package does):\n  \
csm-agent completions bash > /usr/share/bash-completion/completions/csm-agent\n  \
csm-agent completions zsh > /usr/share/zsh/vendor-completions/_csm-agent\n  \
csm-agent completions fish > /usr/share/fish/vendor_completions.d/csm-agent.fish"
)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// `csm-agent man`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Print the csm-agent(1) manual page (roff) on stdout, or, with --dir, write \
one page per command into a directory: csm-agent.1, csm-agent-run.1, csm-agent-manager.1 …",
    after_help = "Examples:\n  csm-agent man | man -l -\n  \
csm-agent man --dir /usr/share/man/man1"
)]
pub struct ManArgs {
    /// Write every page (one per command) into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The command line as clap sees it, named as installed.
fn command() -> clap::Command {
    super::Cli::command()
        .name("csm-agent")
        .bin_name("csm-agent")
}

/// Run `csm-agent completions`; returns the exit status.
pub fn completions(args: &CompletionsArgs) -> i32 {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "csm-agent", &mut out);
    match std::io::stdout().lock().write_all(&out) {
        Ok(()) => 0,
        Err(_) => ErrorKind::Internal.exit_code(),
    }
}

/// Run `csm-agent man`; returns the exit status.
pub fn man(args: &ManArgs) -> i32 {
    let r = match &args.dir {
        Some(dir) => clap_mangen::generate_to(command(), dir),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command())
                .render(&mut out)
                .and_then(|()| std::io::stdout().lock().write_all(&out))
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error[invalid_input]: man: {e}");
            ErrorKind::InvalidInput.exit_code()
        }
    }
}
