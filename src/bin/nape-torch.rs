//! `nape-torch`: every `nape` command, libtorch linked. The `nape` binary runs `inspect` and
//! `export` itself and hands the other commands here (see `src/main.rs`); it can also be run
//! directly.

use clap::Parser;

fn main() {
    let cli = nape::cli::Cli::parse();
    nape::cli::init_logging(&cli);
    std::process::exit(nape::cli::exit_code(nape::cli::run(cli)));
}
