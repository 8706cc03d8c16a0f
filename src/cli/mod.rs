//! Command-line interface: one file per subcommand. Data goes to stdout (a table by default,
//! `--json`, `--jsonl` or `--csv`), logs and progress to stderr.

pub mod bench;
pub mod export;
pub mod inspect;
#[cfg(feature = "torch")]
pub mod proxies;
mod util;

use clap::{Parser, Subcommand};

pub use util::{collect_onnx_files, parse_shape, OutputFormat, ShapeArg};

/// nape: predict how accurate a neural network will be after training, from its ONNX file.
#[derive(Debug, Parser)]
#[command(name = "nape", version, about, long_about = None)]
pub struct Cli {
    /// More logging on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Graph summary of ONNX files: ops, parameters, FLOPs, depth (folders and batches accepted).
    Inspect(inspect::InspectArgs),
    /// Write benchmark architectures as ONNX files plus a manifest.jsonl.
    Export(export::ExportArgs),
    /// Throughput of each pipeline stage, as a table.
    Bench(bench::BenchArgs),
    /// Zero-cost proxy scores of ONNX files, folders, manifests or a benchmark family.
    #[cfg(feature = "torch")]
    Proxies(proxies::ProxiesArgs),
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Bench(a) => bench::run(&a),
        #[cfg(feature = "torch")]
        Command::Proxies(a) => proxies::run(&a),
    }
}
