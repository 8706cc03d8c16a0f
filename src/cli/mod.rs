//! Command-line interface: one file per subcommand. Data goes to stdout (a table by default,
//! `--json`, `--jsonl` or `--csv`), logs and progress to stderr.

pub mod bench;
#[cfg(feature = "torch")]
pub mod eval;
pub mod export;
#[cfg(feature = "torch")]
pub mod finetune;
pub mod inspect;
#[cfg(feature = "torch")]
mod model_args;
#[cfg(feature = "torch")]
pub mod predict;
#[cfg(feature = "torch")]
pub mod pretrain;
#[cfg(feature = "torch")]
pub mod proxies;
mod util;

use clap::{Parser, Subcommand};

pub use util::{collect_onnx_files, parse_shape, OutputFormat, ShapeArg, ShapeArgs};

/// nape: predict how accurate a neural network will be after training, from its ONNX file.
#[derive(Debug, Parser)]
// the reader's digest (build.rs) says which reading of files a cache or a report came from
#[command(
    name = "nape",
    version = concat!(env!("CARGO_PKG_VERSION"), " (reader ", env!("NAPE_READER_DIGEST"), ")"),
    about,
    long_about = None
)]
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
    /// Contrastive + supervised training on a benchmark family -> models/NAME.
    #[cfg(feature = "torch")]
    Pretrain(pretrain::PretrainArgs),
    /// Few-shot adaptation to a family: before/after on the rest, over seeds.
    #[cfg(feature = "torch")]
    Finetune(finetune::FinetuneArgs),
    /// A model's metrics on a family, beside the #params and FLOPs baselines.
    #[cfg(feature = "torch")]
    Eval(eval::EvalArgs),
    /// Predicted accuracy (and uncertainty) of ONNX files or folders.
    #[cfg(feature = "torch")]
    Predict(predict::PredictArgs),
}

/// Runs the commands that need no libtorch (`inspect`, `export`, and `bench` in a build without
/// the torch feature); `None` for the others, which
/// the `nape` binary hands to `nape-torch` (so reading a file never pays libtorch's start-up:
/// 0.27 CPU-s and 120 MB before `main`).
pub fn run_light(cli: &Cli) -> Option<anyhow::Result<i32>> {
    match &cli.command {
        Command::Inspect(a) => Some(inspect::run(a)),
        Command::Export(a) => Some(export::run(a)),
        #[cfg(not(feature = "torch"))]
        Command::Bench(a) => Some(bench::run(a)),
        #[allow(unreachable_patterns)] // (a build without torch has no other command)
        _ => None,
    }
}

/// Sets up logging on stderr for `cli`'s `--verbose`/`--quiet` (or `NAPE_LOG`).
pub fn init_logging(cli: &Cli) {
    let filter = if cli.verbose {
        "nape=debug"
    } else if cli.quiet {
        "error"
    } else {
        "nape=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NAPE_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// The documented exit code of a command's result; errors are printed on stderr.
pub fn exit_code(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<crate::Error>().map(|e| e.exit_code()).unwrap_or(1);
            eprintln!("error: {e:#}");
            code
        }
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    #[cfg(feature = "torch")]
    let quiet = cli.quiet;
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Bench(a) => bench::run(&a),
        #[cfg(feature = "torch")]
        Command::Proxies(a) => proxies::run(&a),
        #[cfg(feature = "torch")]
        Command::Pretrain(a) => pretrain::run(&a, quiet),
        #[cfg(feature = "torch")]
        Command::Finetune(a) => finetune::run(&a, quiet),
        #[cfg(feature = "torch")]
        Command::Eval(a) => eval::run(&a),
        #[cfg(feature = "torch")]
        Command::Predict(a) => predict::run(&a),
    }
}
