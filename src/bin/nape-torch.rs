//! `nape-torch`: every `nape` command, libtorch linked. The `nape` binary runs `inspect` and
//! `export` itself and hands the other commands here (see `src/main.rs`); it can also be run
//! directly.

use clap::Parser;

/// mimalloc: reading a graph allocates many small strings and vectors, and glibc's allocator was
/// a third of the instructions of `nape inspect` (docs/costs.md, "Reading speed").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = nape::cli::Cli::parse();
    nape::cli::init_logging(&cli);
    std::process::exit(nape::cli::exit_code(nape::cli::run(cli)));
}
