//! The `csm-agent` binary: parse arguments, run the command, exit with its code.

fn main() {
    std::process::exit(csm_agent::cli::main_from(std::env::args_os()));
}
