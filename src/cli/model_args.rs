//! Arguments shared by the model subcommands (`pretrain`, `finetune`, `eval`): where data,
//! feature caches, models and run folders live, and the device.

use crate::dataset;
use crate::train::flows::Paths;
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
}

impl ModelArgs {
    /// The paths these arguments name.
    pub fn paths(&self) -> Paths {
        Paths {
            data: dataset::data_dir(self.data.as_deref()),
            cache: self.cache.clone(),
            models: self.models.clone().unwrap_or_else(crate::predict::models_dir),
            runs: self.runs.clone(),
        }
    }

    /// A model folder: a path (with a `/`) or a name under the models folder.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        if name.contains('/') {
            PathBuf::from(name)
        } else {
            self.paths().models.join(name)
        }
    }
}
