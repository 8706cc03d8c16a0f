//! Arguments shared by the model subcommands (`pretrain`, `finetune`, `eval`): where data,
//! feature caches, models and run folders live, and the device.

use crate::dataset;
use crate::train::flows::{Paths, Source};
use std::path::PathBuf;

/// Locations and device of a model command.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Benchmark data folder (default: $NAPE_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Feature cache folder.
    #[arg(long, value_name = "DIR", default_value = ".nape-cache", env = "NAPE_CACHE")]
    pub cache: PathBuf,
    /// Folder of model folders (default: $NAPE_MODELS, else ./models).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Folder of run folders.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs: PathBuf,
    /// cpu, or cuda (falls back to the CPU with a message when CUDA is unavailable).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How the networks of a labels file are bound.
    #[command(flatten)]
    pub shape: super::ShapeArgs,
}

impl ModelArgs {
    /// The paths these arguments name.
    pub fn paths(&self) -> Paths {
        Paths {
            data: dataset::data_dir(self.data.as_deref()),
            cache: self.cache.clone(),
            models: self.models.clone().unwrap_or_else(crate::predict::models_dir),
            runs: self.runs.clone(),
            import: self.shape.options(),
        }
    }

    /// A model folder: a path (with a `/`), or a name under the models folder; a name that
    /// `--models DIR` does not hold is looked for among the bundled models (so
    /// `--model nape-nb101 --models DIR --save-as mine` reads the bundled model and writes
    /// `DIR/mine`).
    pub fn model_dir(&self, name: &str) -> PathBuf {
        crate::predict::resolve_model(name, self.models.as_deref())
    }
}

/// Where a model command's labelled networks come from: `--family` or `--labels`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Benchmark family (nb101, nb201, tnb-micro).
    #[arg(long, conflicts_with = "labels")]
    pub family: Option<String>,
    /// Your own labelled networks: a CSV with a `file` column (ONNX paths, absolute or relative
    /// to the labels file) and numeric target columns, or the manifest.jsonl `nape export`
    /// writes.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Target: one of the family's, or a column of the labels file (default: the family's
    /// main target, or the labels file's only numeric column).
    #[arg(long)]
    pub target: Option<String>,
}

impl SourceArgs {
    /// The source named, or `default` family when neither is given (none: a usage error).
    pub fn source(&self, default: Option<&str>) -> crate::Result<Source> {
        match (&self.family, &self.labels, default) {
            (Some(f), _, _) => Ok(Source::Family(f.clone())),
            (None, Some(l), _) => Ok(Source::Labels(l.clone())),
            (None, None, Some(f)) => Ok(Source::Family(f.to_string())),
            (None, None, None) => {
                Err(crate::Error::Usage("give --family NAME or --labels FILE".into()))
            }
        }
    }
}

/// Warns about each file a labels file named that could not be read; the exit code of a
/// command that went on without them (5 when any was skipped).
pub fn report_skipped(skipped: &[(String, String)]) -> i32 {
    for (file, why) in skipped {
        eprintln!("warning: skipped {file}: {why}");
    }
    if skipped.is_empty() {
        crate::error::exit::OK
    } else {
        eprintln!("{} labelled file(s) could not be read and were left out", skipped.len());
        crate::error::exit::PARTIAL
    }
}
