//! The `nape` command. Thin: parses arguments, sets up logging, runs a subcommand, maps errors
//! to the documented exit codes (0 ok, 1 failure, 2 usage, 3 missing data or I/O, 4 invalid or
//! unsupported ONNX, 5 partial success in a batch).

use clap::Parser;

fn main() {
    let cli = nape::cli::Cli::parse();
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
    let code = match nape::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<nape::Error>().map(|e| e.exit_code()).unwrap_or(1);
            eprintln!("error: {e:#}");
            code
        }
    };
    std::process::exit(code);
}
