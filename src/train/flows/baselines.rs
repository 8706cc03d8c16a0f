//! The baselines every report puts beside the model, on the same networks: the free counts
//! (#params of the file and of the canonical graph, FLOPs), the published zero-cost proxies
//! where the benchmark has them, and three classical models fitted on the same labelled rows
//! as the model ([`Fitted`]): a ridge on the graph-level features, a ridge on log10 #params and
//! log10 FLOPs, and a random forest on GRAF-style graph counts.

use super::super::data::Sample;
use super::super::score_ranking;
use crate::dataset::Record;
use crate::ensemble::baseline::{self, Baseline};
use crate::ensemble::forest::{Forest, ForestParams};
use crate::error::{write_atomic, Error, Result};
use crate::features::graf::graf_features;
use crate::features::GraphFeatures;
use crate::metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The classical models fitted on a model's training rows, saved beside it (`baselines.json`)
/// so that evaluating the model later scores them on the same rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fitted {
    /// Ridge on the graph-level features.
    pub ridge: Baseline,
    /// Ridge on log10 #params and log10 FLOPs.
    pub ridge_logs: Baseline,
    /// Random forest on GRAF-style features.
    pub forest: Forest,
    /// Rows they were fitted on.
    pub n: usize,
}

/// The file of [`Fitted`] baselines in a model folder.
pub const FITTED_FILE: &str = "baselines.json";

impl Fitted {
    /// Fits the three on `samples` with targets `y` (seeded forest).
    pub fn fit(samples: &[&Sample], y: &[f64], seed: u64) -> Result<Fitted> {
        let g: Vec<&GraphFeatures> = samples.iter().map(|s| &s.features).collect();
        let forest = ForestParams { seed, ..Default::default() }.check()?.fit(&graf(&g), y)?;
        Ok(Fitted {
            ridge: baseline::fit(&globals(&g), y)?,
            ridge_logs: baseline::fit(&logs(samples), y)?,
            forest,
            n: y.len(),
        })
    }

    /// Their predictions of `samples`, by name.
    pub fn predict(&self, samples: &[&Sample]) -> Result<Vec<(String, Vec<f64>)>> {
        let g: Vec<&GraphFeatures> = samples.iter().map(|s| &s.features).collect();
        Ok(vec![
            ("ridge".into(), self.ridge.predict(&globals(&g))?),
            ("ridge_logs".into(), self.ridge_logs.predict(&logs(samples))?),
            ("forest_graf".into(), self.forest.predict(&graf(&g))?),
        ])
    }

    /// Saves them in `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::Model(format!("cannot serialise the baselines: {e}")))?;
        write_atomic(&dir.join(FITTED_FILE), &bytes)
    }

    /// Loads them from `dir`, if the model has them.
    pub fn load(dir: &Path) -> Result<Option<Fitted>> {
        let p = dir.join(FITTED_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| Error::BadData {
                path: p,
                line: 0,
                msg: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }
}

/// The classical models fitted on (`train`, `y`), their predictions of `test` by name; a
/// model that cannot be fitted is left out with a warning.
pub fn fitted_predictions(
    train: &[&Sample],
    y: &[f64],
    test: &[&Sample],
    seed: u64,
) -> Vec<(String, Vec<f64>)> {
    Fitted::fit(train, y, seed).and_then(|f| f.predict(test)).unwrap_or_else(|e| {
        tracing::warn!("classical baselines not fitted: {e}");
        Vec::new()
    })
}

/// Each baseline's predictions scored as a ranking of `truth`, by name.
pub fn score_each(
    preds: &[(String, Vec<f64>)],
    truth: &[f64],
) -> Vec<(String, BTreeMap<String, f64>)> {
    preds.iter().map(|(k, v)| (k.clone(), score_ranking(v, truth))).collect()
}

/// The graphs' graph-level features as a matrix, a row per graph (the ridge's input).
pub fn globals(gs: &[&GraphFeatures]) -> ndarray::Array2<f64> {
    let d = gs.first().map_or(0, |g| g.global.len());
    ndarray::Array2::from_shape_fn((gs.len(), d), |(r, c)| gs[r].global[c] as f64)
}

/// log10(1 + #params) and log10(1 + FLOPs) of the files, a row per network.
fn logs(samples: &[&Sample]) -> ndarray::Array2<f64> {
    ndarray::Array2::from_shape_fn((samples.len(), 2), |(r, c)| {
        (1.0 + if c == 0 { samples[r].params } else { samples[r].flops }).log10()
    })
}

fn graf(gs: &[&GraphFeatures]) -> Vec<Vec<f64>> {
    gs.iter().map(|g| graf_features(g)).collect()
}

/// The free counts every evaluation reports beside the model, on the same records: the file's
/// parameter count, the canonical graph's (what the output depends on), FLOPs, and the
/// parameter-free rank ensemble of the model with the canonical count (the mean of the two
/// ranks; a ranking, not an accuracy).
pub fn counts(
    pred: &[f64],
    samples: &[&Sample],
    truth: &[f64],
) -> Vec<(String, BTreeMap<String, f64>)> {
    let eff: Vec<f64> = samples.iter().map(|s| s.params_effective).collect();
    let params: Vec<f64> = samples.iter().map(|s| s.params).collect();
    let flops: Vec<f64> = samples.iter().map(|s| s.flops).collect();
    let (rp, re) = (metrics::ranks(pred), metrics::ranks(&eff));
    let mean_rank: Vec<f64> = rp.iter().zip(&re).map(|(a, b)| 0.5 * (a + b)).collect();
    vec![
        ("params".into(), score_ranking(&params, truth)),
        ("params_eff".into(), score_ranking(&eff, truth)),
        ("flops".into(), score_ranking(&flops, truth)),
        ("model+params_eff".into(), score_ranking(&mean_rank, truth)),
    ]
}

/// The zero-cost proxy scores the data files publish with the records (NAS-Bench-Suite-Zero's
/// `zc`: 13 proxies for NB-101 and TransNAS-Bench-101, Zen for NB-201), each scored on the
/// records where it is finite as `proxy:<name>` (with `n`, how many), and the best of them
/// (highest Spearman among those finite on at least 90 % as many records as the best-covered
/// one; NB-101's file covers about a third of the cells) also as `best_proxy`, whose name is
/// returned. It is chosen on the evaluated records themselves: an upper bound on what picking
/// one proxy in advance would give. Where the file publishes proxies per task or dataset
/// (`class_scene_jacov`, `cifar10_zen`), only those of the target's own
/// (`class_scene_val_accuracy`, `cifar10_test_ep200`) are kept.
#[allow(clippy::type_complexity)]
pub fn proxy_baselines(
    recs: &[Record],
    truth: &[f64],
    target: &str,
) -> (Vec<(String, BTreeMap<String, f64>)>, Option<String>) {
    let all: std::collections::BTreeSet<&str> =
        recs.iter().flat_map(|r| r.proxies.keys().map(String::as_str)).collect();
    // the longest `<dataset>_` that starts both the target and some proxy's name
    let prefix = all
        .iter()
        .flat_map(|n| n.match_indices('_').map(move |(i, _)| &n[..=i]))
        .filter(|p| target.starts_with(p))
        .max_by_key(|p| p.len());
    let names: Vec<&str> = match prefix {
        Some(p) => all.into_iter().filter(|n| n.starts_with(p)).collect(),
        None => all.into_iter().collect(),
    };
    let mut out = Vec::new();
    let mut scored = Vec::new();
    for name in names {
        let (v, t): (Vec<f64>, Vec<f64>) = recs
            .iter()
            .zip(truth)
            .filter_map(|(r, &t)| r.proxies.get(name).map(|&v| (v, t)))
            .filter(|(v, t)| v.is_finite() && t.is_finite())
            .unzip();
        if v.len() < 3 {
            continue;
        }
        let mut m = score_ranking(&v, &t);
        m.insert("n".to_string(), v.len() as f64);
        scored.push((name, v.len(), m.clone()));
        out.push((format!("proxy:{name}"), m));
    }
    let most = scored.iter().map(|s| s.1).max().unwrap_or(0);
    let mut best: Option<(f64, String, BTreeMap<String, f64>)> = None;
    for (name, n, m) in scored {
        let rho = m.get("spearman").copied().unwrap_or(f64::NAN);
        if n * 10 >= most * 9 && rho.is_finite() && best.as_ref().is_none_or(|b| rho > b.0) {
            best = Some((rho, name.to_string(), m));
        }
    }
    let name = best.map(|(_, name, m)| {
        out.push(("best_proxy".to_string(), m));
        name
    });
    (out, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_baselines_keep_the_targets_own_proxies_and_pick_the_best_covered_one() {
        let truth: Vec<f64> = (0..20).map(f64::from).collect();
        let recs: Vec<Record> = (0..20)
            .map(|i| {
                let mut r = Record::new(format!("c{i}"), "tnb-micro", "s");
                let x = f64::from(i);
                // scene: synflow follows the truth but with noise; jacov is perfect but
                // published for only half the cells; object proxies belong to another task
                r.proxies
                    .insert("class_scene_synflow".into(), x + if i % 3 == 0 { 5.0 } else { 0.0 });
                if i % 2 == 0 {
                    r.proxies.insert("class_scene_jacov".into(), x);
                }
                r.proxies.insert("class_object_synflow".into(), -x);
                r.proxies.insert("class_sceneless_zen".into(), x);
                r
            })
            .collect();
        let (rows, best) = proxy_baselines(&recs, &truth, "class_scene_val_accuracy");
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["proxy:class_scene_jacov", "proxy:class_scene_synflow", "best_proxy"],
            "only the scene task's proxies"
        );
        assert_eq!(best.as_deref(), Some("class_scene_synflow"), "jacov covers half as many");
        assert_eq!(rows[0].1["n"], 10.0);
        assert!((rows[0].1["spearman"] - 1.0).abs() < 1e-12);
        assert_eq!(rows[2].1, rows[1].1);
        // no dataset prefix in common with the target (NB-101's zc names): all are kept
        let (rows, best) = proxy_baselines(&recs, &truth, "val_acc_ep108");
        assert_eq!(rows.len(), 5);
        assert_eq!(best.as_deref(), Some("class_sceneless_zen"));
        // no proxies: no rows
        let bare: Vec<Record> =
            (0..5).map(|i| Record::new(format!("c{i}"), "nb201", "s")).collect();
        assert_eq!(proxy_baselines(&bare, &truth[..5], "cifar10_test_ep200"), (vec![], None));
    }
}
