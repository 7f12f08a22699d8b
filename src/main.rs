//! The `csm-agent` binary: parse arguments, set up logging, run the command, exit with its code.

use clap::Parser;

fn main() {
    let cli = csm_agent::cli::Cli::parse();
    std::process::exit(csm_agent::cli::main(cli));
}
