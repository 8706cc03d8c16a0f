//! `nape bench`: throughput of each pipeline stage.

/// Arguments of `nape bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs `nape bench`.
pub fn run(_a: &BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not written yet")
}
