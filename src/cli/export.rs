//! `nape export`: benchmark architectures -> ONNX files + manifest.jsonl.
//! (Being written; see the spaces issue.)

/// Arguments of `nape export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Search space: nb101, nb201 or tnb-micro.
    pub space: String,
}

/// Runs `nape export`.
pub fn run(a: &ExportArgs) -> anyhow::Result<i32> {
    anyhow::bail!(crate::Error::Usage(format!("export of '{}' is not available yet", a.space)))
}
