//! The user-facing facade: load a trained model, predict a batch of ONNX files. Each file is
//! read into a CG (`onnx`), canonicalised and featurised (`features`, in parallel across
//! files), then the model predicts its accuracy and an uncertainty (the membership-weighted
//! spread of the ensemble's heads). A file that cannot be read is reported as such and the
//! batch goes on.

use crate::error::{Error, Result};
use crate::features::sample::Sample;
use crate::onnx::ImportOptions;
use crate::proxies::FeatureScorer;
use crate::train::model::Model;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::Device;

/// Name of the bundled default model (under `models/`): the 5-member ensemble trained on
/// NB-101, NB-201's three datasets and torchvision's ImageNet classifiers (`configs/mix.json`;
/// TransNAS-Bench-101's labels are left out, docs/universal.md says why). It predicts a
/// relative score that ranks networks within a family; `nape-nb101`, the NB-101-only ensemble
/// that predicts CIFAR-10 accuracy under NB-101's recipe, is bundled beside it as
/// [`NB101_MODEL`].
pub const DEFAULT_MODEL: &str = "nape-mix";

/// Name of the bundled NB-101-only model: pretraining on NB-101 and zero-shot NB-201 go
/// through it (`nape pretrain`'s default name).
pub const NB101_MODEL: &str = "nape-nb101";

/// The folder models live in: `$NAPE_MODELS`, else `./models` when it exists, else the
/// `models/` folder of the source tree nape was built from.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NAPE_MODELS") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("models");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A model given by name (a folder under [`models_dir`]) or by path (anything with a `/`).
pub fn model_path(name: &str) -> PathBuf {
    if name.contains('/') || Path::new(name).is_dir() && Path::new(name).join("meta.json").exists()
    {
        PathBuf::from(name)
    } else {
        models_dir().join(name)
    }
}

/// The folder of model `name` for a command given `--models DIR`: a path (with a `/`) as it is;
/// a name DIR holds there; else the name among the bundled models ([`model_path`]), so
/// `--model nape-nb101 --models DIR --save-as mine` reads the bundled model and writes `DIR/mine`.
pub fn resolve_model(name: &str, models: Option<&Path>) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    match models.map(|d| d.join(name)) {
        Some(p) if p.exists() => p,
        _ => model_path(name),
    }
}

/// Featurises one ONNX file with the proxy scores `scorer` gives it.
pub fn featurise_file(path: &Path, opts: &ImportOptions, scorer: &FeatureScorer) -> Result<Sample> {
    crate::features::sample::featurise_file(path, opts, &|cg| scorer.score(cg))
}

/// One file's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Predicted value of the model's target, in its units.
    pub prediction: f64,
    /// Membership-weighted spread of the heads, same units.
    pub uncertainty: f64,
    /// Trainable parameters of the network.
    pub params: f64,
    /// Its FLOPs.
    pub flops: f64,
    /// How close the network is to the model's training networks, in (0, 1]: 1 as close as
    /// 90% of the training family's own; lower shrinks the prediction toward the model's base
    /// line (`train::domain`). `None` for a model without an in-domain reference.
    pub in_domain: Option<f64>,
}

/// A loaded model ready to predict files.
#[derive(Debug)]
pub struct Predictor {
    /// One model, or the members of a deep ensemble (all share family, target and proxies).
    models: Vec<Model>,
    opts: ImportOptions,
    scorer: FeatureScorer,
}

impl Predictor {
    /// Loads the model folder `dir` onto `device`; `data_dir` holds the images of the proxies
    /// the model reads as features (unused by a model without them).
    pub fn load(
        dir: &Path,
        device: Device,
        opts: ImportOptions,
        data_dir: &Path,
    ) -> Result<Predictor> {
        let models = Model::load_members(dir, device)?;
        let Some(first) = models.first() else {
            return Err(Error::Model(format!("{}: no model", dir.display())));
        };
        let scorer = FeatureScorer::new(&first.meta.config.proxies, data_dir)?;
        // a model that reads no proxy never runs the network: the weights' shapes suffice
        let opts = ImportOptions { shapes_only: first.meta.config.proxies.is_empty(), ..opts };
        Ok(Predictor { models, opts, scorer })
    }

    /// The model (the first member of an ensemble: its metadata describes them all).
    pub fn model(&self) -> &Model {
        &self.models[0]
    }

    /// How many models predict (more than 1: a deep ensemble).
    pub fn members(&self) -> usize {
        self.models.len()
    }

    /// What the model predicts, in words.
    pub fn predicts(&self) -> &str {
        &self.model().meta.predicts
    }

    /// Featurises one file.
    pub fn featurise(&self, path: &Path) -> Result<Sample> {
        featurise_file(path, &self.opts, &self.scorer)
    }

    /// Predicts each file; a file that fails gives its error, the others their prediction.
    pub fn predict_files(&self, paths: &[PathBuf]) -> Vec<Result<Prediction>> {
        self.predict_files_with(paths, &|| {})
    }

    /// [`Self::predict_files`], calling `done` as each file is featurised (a progress bar's
    /// tick; from the worker threads). The model sees the whole batch at once, as the CLI's.
    pub fn predict_files_with(
        &self,
        paths: &[PathBuf],
        done: &(dyn Fn() + Sync),
    ) -> Vec<Result<Prediction>> {
        let samples: Vec<Result<Sample>> = {
            let (opts, scorer) = (&self.opts, &self.scorer);
            let one = |p: &PathBuf| {
                let s = featurise_file(p, opts, scorer);
                done();
                s
            };
            paths.par_iter().map(one).collect()
        };
        self.predict_samples(samples)
    }

    /// Predicts one network given as ONNX bytes (`source` names it in messages): what the
    /// Python front's `predict_torch` hands over, exported in memory.
    pub fn predict_bytes(&self, bytes: &[u8], source: &str) -> Result<Prediction> {
        let sample = crate::onnx::load_bytes(bytes, source, &self.opts)
            .map(|cg| Sample::from_cg(&cg, &self.scorer.score(&cg)));
        let mut out = self.predict_samples(vec![sample]);
        out.pop().unwrap_or_else(|| Err(Error::Model("no prediction".into())))
    }

    /// The model's predictions of featurised networks, errors kept in place.
    fn predict_samples(&self, samples: Vec<Result<Sample>>) -> Vec<Result<Prediction>> {
        let ok: Vec<&Sample> = samples.iter().filter_map(|s| s.as_ref().ok()).collect();
        let graphs: Vec<&crate::features::GraphFeatures> = ok.iter().map(|s| &s.features).collect();
        let mut preds = match crate::train::domain::predict_ensemble(&self.models, &graphs) {
            Ok(p) => p.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                return samples
                    .into_iter()
                    .map(|s| s.and_then(|_| Err(Error::Model(msg.clone()))))
                    .collect();
            }
        };
        samples
            .into_iter()
            .map(|s| {
                let s = s?;
                let p = preds
                    .next()
                    .ok_or_else(|| Error::Model("fewer predictions than networks".into()))?;
                Ok(Prediction {
                    prediction: p.value,
                    uncertainty: p.uncertainty,
                    params: s.params,
                    flops: s.flops,
                    in_domain: p.in_domain,
                })
            })
            .collect()
    }
}

impl Predictor {
    /// What `predict --json` says of the model above its predictions.
    pub fn header_json(&self) -> serde_json::Value {
        let meta = &self.model().meta;
        serde_json::json!({
            "schema_version": 1,
            "nape_version": env!("CARGO_PKG_VERSION"),
            "model": meta.name,
            "members": self.members(),
            "predicts": meta.predicts,
            "target": meta.target,
            "trained_on": meta.family,
            "note": "values from a model trained on another family are for ranking within a family; fine-tune for absolute values",
            "in_domain_note": "1 = as close to the model's training networks as 90% of its own family (a mix model: and its members as agreed on it as on 90% of its families' held-out networks; the smaller of the two scores); below, the prediction is pulled toward the model's base line (on FLOPs; a mix model's on FLOPs and depth) in proportion (null: the model has no in-domain reference)",
        })
    }
}

/// One network's entry in `predict --json` (and in the Python front's results): its
/// prediction, or its error with the error's exit code.
pub fn item_json(file: &str, r: &Result<Prediction>) -> serde_json::Value {
    match r {
        Ok(x) => serde_json::json!({"file": file, "ok": true,
            "prediction": x.prediction, "uncertainty": x.uncertainty,
            "in_domain": x.in_domain, "params": x.params, "flops": x.flops}),
        Err(e) => serde_json::json!({"file": file, "ok": false,
            "error": e.to_string(), "exit_code": e.exit_code()}),
    }
}
