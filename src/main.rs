//! The `nape` command. Thin: parses arguments, sets up logging, runs a subcommand, maps errors
//! to the documented exit codes (0 ok, 1 failure, 2 usage, 3 missing data or I/O, 4 invalid or
//! unsupported ONNX, 5 partial success in a batch).
//!
//! `inspect` and `export` run here, in a binary that never calls into libtorch, so the linker
//! leaves libtorch out of it. The commands that train, predict or run networks are handed, with
//! the same arguments, to `nape-torch` beside this binary (`src/bin/nape-torch.rs`).

use clap::Parser;

/// mimalloc: reading a graph allocates many small strings and vectors, and glibc's allocator was
/// a third of the instructions of `nape inspect` (docs/costs.md, "Reading speed").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = nape::cli::Cli::parse();
    nape::cli::init_logging(&cli);
    if let Some(result) = nape::cli::run_light(&cli) {
        std::process::exit(nape::cli::exit_code(result));
    }
    std::process::exit(hand_over());
}

/// Replaces this process with `nape-torch` (same directory, same arguments); returns only when
/// that fails, with the exit code of a failure.
fn hand_over() -> i32 {
    use std::os::unix::process::CommandExt;
    let name = format!("nape-torch{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(&name)));
    let Some(exe) = exe.filter(|p| p.is_file()) else {
        eprintln!(
            "error: this command needs {name} beside nape, which is missing (build both with \
             `cargo build --release`; a build without the torch feature has only inspect and export)"
        );
        return 1;
    };
    let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    eprintln!("error: could not start {}: {err}", exe.display());
    1
}
