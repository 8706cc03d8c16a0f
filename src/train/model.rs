//! A trained predictor: encoder + heads in one `VarStore`, and its `meta.json` (op vocabulary,
//! feature dimensions, target standardisation, FCM centres, training family, metrics, config,
//! nape version). Checkpoints are `models/<name>/{weights.safetensors, meta.json}`, both
//! written atomically (a temporary file in the same folder, then a rename).

use crate::encoder::{Batch, FeatureDims, GraphEncoder};
use crate::ensemble::heads::Heads;
use crate::error::{write_atomic, Error, Result};
use crate::features::{GraphFeatures, GLOBAL_DIM, GLOBAL_PROXIES, OP_VOCAB};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Tensor};

pub use super::domain::{predict_members, Parts};
pub use super::meta::{Meta, CHECKPOINT_VERSION, META_FILE, WEIGHTS_FILE};

/// Encoder, heads and metadata of one predictor.
#[derive(Debug)]
pub struct Model {
    /// All weights.
    pub vs: nn::VarStore,
    /// The graph encoder.
    pub encoder: GraphEncoder,
    /// The head ensemble.
    pub heads: Heads,
    /// Metadata.
    pub meta: Meta,
}

impl Model {
    /// A freshly initialised model (seeded by `meta.config.seed`) on `device`.
    pub fn new(meta: Meta, device: Device) -> Result<Model> {
        // libtorch's generator is global: seeding and drawing the initial weights must not
        // interleave with another thread's model, or the same seed gives other weights
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(super::config::member_seed(meta.config.seed, meta.member) as i64);
        let vs = nn::VarStore::new(device);
        let encoder = GraphEncoder::new(&(vs.root() / "encoder"), &meta.config.encoder, &meta.dims);
        let mut heads =
            Heads::new(&(vs.root() / "heads"), meta.config.encoder.emb_dim, &meta.config.heads);
        if let Some(c) = &meta.fcm_centres {
            heads.set_centres(c, device)?;
        }
        Ok(Model { vs, encoder, heads, meta })
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Writes `dir/weights.safetensors` and `dir/meta.json`, each atomically.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.meta.fcm_centres = self.heads.centres();
        let tmp = dir.join(format!(".{WEIGHTS_FILE}.{}.safetensors", std::process::id()));
        let dest = dir.join(WEIGHTS_FILE);
        self.vs.save(&tmp).map_err(|e| Error::Model(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        let meta = serde_json::to_vec_pretty(&self.meta)
            .map_err(|e| Error::Model(format!("cannot serialise meta.json: {e}")))?;
        write_atomic(&dir.join(META_FILE), &meta)
    }

    /// Reads a model folder onto `device`: one model (its `meta.json` at the top), or every
    /// member of a deep ensemble (`member-0`, `member-1`, ... subfolders, each a model folder).
    pub fn load_members(dir: &Path, device: Device) -> Result<Vec<Model>> {
        if dir.join(META_FILE).exists() || !member_dir(dir, 0).is_dir() {
            return Ok(vec![Model::load(dir, device)?]);
        }
        let mut members = Vec::new();
        while member_dir(dir, members.len()).is_dir() {
            members.push(Model::load(&member_dir(dir, members.len()), device)?);
        }
        Ok(members)
    }

    /// Writes the members of a deep ensemble as the folder `dir` (one model: its folder, as
    /// [`Model::save`]). The members are written into a temporary folder beside it that then
    /// takes its place, so `dir` is never half an ensemble.
    pub fn save_members(models: &mut [Model], dir: &Path) -> Result<()> {
        if let [one] = models {
            // a single model written over an ensemble: its meta.json at the top wins on load,
            // but the old members would linger; clear them first
            let mut k = 0;
            while member_dir(dir, k).is_dir() {
                let m = member_dir(dir, k);
                std::fs::remove_dir_all(&m).map_err(|e| Error::io(&m, e))?;
                k += 1;
            }
            return one.save(dir);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let base = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        for (k, m) in models.iter_mut().enumerate() {
            m.save(&member_dir(&tmp, k))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    }

    /// Reads a model folder onto `device`; checks that its features match this build's.
    pub fn load(dir: &Path, device: Device) -> Result<Model> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingData {
                    what: "model metadata".into(),
                    path: meta_path.clone(),
                    hint: "; train one with `nape pretrain` or name a folder under models/".into(),
                }
            } else {
                Error::io(&meta_path, e)
            }
        })?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::BadData {
            path: meta_path.clone(),
            line: e.line(),
            msg: format!("not a nape model's meta.json: {e}"),
        })?;
        if meta.checkpoint_version != CHECKPOINT_VERSION {
            return Err(Error::Model(format!(
                "{}: checkpoint version {} (this nape reads {CHECKPOINT_VERSION})",
                meta_path.display(),
                meta.checkpoint_version
            )));
        }
        let mut meta = meta;
        let now = FeatureDims::current();
        if !meta.config.encoder.use_text {
            // a model without the token encoder holds no token weights: the vocabulary is moot
            meta.dims.token_vocab = now.token_vocab;
            meta.dims.max_tokens = now.max_tokens;
        }
        if meta.dims != now {
            return Err(Error::Model(format!(
                "{}: built for features {:?}, this nape computes {:?}; retrain it",
                meta_path.display(),
                meta.dims,
                FeatureDims::current()
            )));
        }
        let mut model = Model::new(meta, device)?;
        let w = dir.join(WEIGHTS_FILE);
        model.vs.load(&w).map_err(|e| Error::Model(format!("{}: {e}", w.display())))?;
        Ok(model)
    }

    /// What the heads are trained to output for a network `g` whose target is `y`: the target
    /// less the base line ([`Meta::base`]), standardised.
    pub fn standardise(&self, g: &GraphFeatures, y: f64) -> f64 {
        (self.meta.target_sign * y - self.meta.base(g) - self.meta.target_mean)
            / self.meta.target_std
    }

    /// `g` with the ops the model never saw in training replaced (see [`Meta::seen_ops`]): by
    /// their stand-in when the model saw that (an average pool reads as a max pool, one
    /// normalisation as another, see [`stand_in`]), otherwise by the out-of-vocabulary index
    /// 0. The op histogram's share moves with the op (to the stand-in, or nowhere). Borrowed
    /// unchanged when every op was seen.
    pub fn mask_unseen<'a>(&self, g: &'a GraphFeatures) -> std::borrow::Cow<'a, GraphFeatures> {
        use std::borrow::Cow;
        let seen = &self.meta.seen_ops;
        let is_seen = |o: i64| seen.binary_search(&o).is_ok();
        if seen.is_empty() || g.op.iter().all(|&o| is_seen(o)) {
            return Cow::Borrowed(g);
        }
        let mut m = g.clone();
        let hist = GLOBAL_DIM - OP_VOCAB - 2 * GLOBAL_PROXIES.len();
        let unseen: std::collections::BTreeSet<i64> =
            g.op.iter().copied().filter(|&o| !is_seen(o)).collect();
        let mut to = BTreeMap::new();
        for o in unseen {
            let s = stand_in(o).filter(|&s| is_seen(s)).unwrap_or(0);
            let share = m.global.get(hist + o as usize).copied().unwrap_or(0.0);
            if let Some(v) = m.global.get_mut(hist + o as usize) {
                *v = 0.0;
            }
            if s != 0 {
                if let Some(v) = m.global.get_mut(hist + s as usize) {
                    *v += share;
                }
            }
            to.insert(o, s);
        }
        for o in m.op.iter_mut() {
            if let Some(&s) = to.get(o) {
                *o = s;
            }
        }
        Cow::Owned(m)
    }

    /// Embeddings of `graphs` (no gradient), `[n, emb_dim]`, in batches of `batch`.
    pub fn embed(&self, graphs: &[&GraphFeatures], batch: usize) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let mut parts = Vec::new();
        for chunk in graphs.chunks(batch.max(1)) {
            let masked: Vec<_> = chunk.iter().map(|g| self.mask_unseen(g)).collect();
            let refs: Vec<&GraphFeatures> = masked.iter().map(|g| g.as_ref()).collect();
            let b = Batch::new(&refs, &self.meta.dims, self.device())?;
            parts.push(self.encoder.forward(&b).0);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros(
                [0, self.meta.config.encoder.emb_dim],
                (tch::Kind::Float, self.device()),
            ));
        }
        Ok(Tensor::cat(&parts, 0))
    }
}

/// The folder of member `k` of the ensemble in `dir`.
pub fn member_dir(dir: &Path, k: usize) -> std::path::PathBuf {
    dir.join(format!("member-{k}"))
}

/// The op index a model that never saw op `o` reads it as, when there is a close sibling:
/// the other pooling of the same extent, another normalisation. Everything else has none.
pub fn stand_in(o: i64) -> Option<i64> {
    use crate::features::{op_index, POOL_SIBLINGS};
    use crate::graph::OpKind::*;
    let pools =
        POOL_SIBLINGS.iter().flat_map(|(a, b)| [(a.clone(), b.clone()), (b.clone(), a.clone())]);
    let pairs: Vec<_> = pools
        .chain([
            (LayerNorm, BatchNorm),
            (GroupNorm, BatchNorm),
            (InstanceNorm, BatchNorm),
            (BatchNorm, LayerNorm),
        ])
        .collect();
    pairs.iter().find(|(a, _)| op_index(a) == o).map(|(_, b)| op_index(b))
}

/// Picks the device: `cuda` when asked for and available, otherwise the CPU (with a message
/// saying why when CUDA was asked for).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                eprintln!(
                    "warning: --device cuda asked for, but CUDA is not available here (no GPU, \
                     or libtorch_cuda not loaded): running on the CPU"
                );
                Ok(Device::Cpu)
            }
        }
        d => Err(Error::Usage(format!("unknown device '{d}' (cpu or cuda)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::NODE_DIM;
    use crate::train::TrainConfig;

    fn graphs() -> Vec<GraphFeatures> {
        (1..6)
            .map(|n| GraphFeatures {
                n_nodes: n * 3,
                op: (0..n * 3).map(|i| (i % 7) as i64 + 1).collect(),
                node: (0..n * 3 * NODE_DIM).map(|i| ((i * 13 + n) % 17) as f32 / 17.0).collect(),
                edges: (1..n * 3).map(|i| ((i - 1) as u32, i as u32)).collect(),
                global: (0..GLOBAL_DIM).map(|i| ((i + n) % 5) as f32 / 5.0).collect(),
                tokens: vec![2, 10, 11, 3],
            })
            .collect()
    }

    #[test]
    fn checkpoint_round_trip_gives_identical_predictions() {
        let mut cfg = TrainConfig::default();
        cfg.encoder.use_text = true;
        cfg.heads.k = 3;
        let mut meta = Meta::new("t", &cfg);
        meta.target_mean = 0.9;
        meta.target_std = 0.05;
        let mut model = Model::new(meta, Device::Cpu).unwrap();
        let centres: Vec<Vec<f64>> =
            (0..3).map(|k| vec![k as f64 * 0.1; cfg.encoder.emb_dim as usize]).collect();
        model.heads.set_centres(&centres, Device::Cpu).unwrap();
        let g = graphs();
        let refs: Vec<&GraphFeatures> = g.iter().collect();
        let before = model.predict(&refs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let loaded = Model::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.predict(&refs).unwrap(), before);
        assert_eq!(loaded.meta, model.meta);
        assert!(before.iter().all(|(p, u)| p.is_finite() && u.is_finite() && *u >= 0.0));
    }

    #[test]
    fn flops_transform_adds_its_term_and_standardise_inverts_predict() {
        let cfg = TrainConfig { seed: 3, ..Default::default() };
        let g = graphs();
        let refs: Vec<&GraphFeatures> = g.iter().collect();
        let mut meta = Meta::new("f", &cfg);
        meta.target_mean = 0.2;
        meta.target_std = 0.05;
        let plain = Model::new(meta.clone(), Device::Cpu).unwrap().predict(&refs).unwrap();
        meta.flops_slope = 0.03;
        let model = Model::new(meta, Device::Cpu).unwrap();
        let with = model.predict(&refs).unwrap();
        assert!(g.iter().filter(|g| crate::features::log_flops(g) > 0.0).count() >= 3);
        for ((a, b), g) in plain.iter().zip(&with).zip(&g) {
            let term = 0.03 * crate::features::log_flops(g);
            assert!((b.0 - a.0 - term).abs() < 1e-9, "{} {} {term}", a.0, b.0);
            assert_eq!(a.1, b.1, "the uncertainty is the heads' spread, untouched");
        }
        // a network predicted at y is trained towards the heads' own output for it
        let heads = Model::new(
            Meta { flops_slope: 0.0, target_mean: 0.0, target_std: 1.0, ..model.meta.clone() },
            Device::Cpu,
        )
        .unwrap()
        .predict(&refs)
        .unwrap();
        for ((p, h), g) in with.iter().zip(&heads).zip(&g) {
            assert!((model.standardise(g, p.0) - h.0).abs() < 1e-6);
        }
    }

    #[test]
    fn an_ensemble_averages_its_members_and_adds_their_spread() {
        let g = graphs();
        let refs: Vec<&GraphFeatures> = g.iter().collect();
        let models: Vec<Model> = (0..3)
            .map(|s| {
                let cfg = TrainConfig { seed: 10 + s, ..Default::default() };
                Model::new(Meta::new(&format!("e{s}"), &cfg), Device::Cpu).unwrap()
            })
            .collect();
        let each: Vec<Vec<(f64, f64)>> = models.iter().map(|m| m.predict(&refs).unwrap()).collect();
        let ens = predict_members(&models, &refs).unwrap();
        for (i, (p, u)) in ens.iter().enumerate() {
            let mean = each.iter().map(|e| e[i].0).sum::<f64>() / 3.0;
            assert!((p - mean).abs() < 1e-12);
            assert!(each.iter().all(|e| *u >= e[i].1 / 3f64.sqrt() - 1e-12) && u.is_finite());
        }
        assert_eq!(predict_members(&models[..1], &refs).unwrap(), each[0]);
        assert!(predict_members(&[], &refs).is_err());
        let mut other = Model::new(Meta::new("o", &TrainConfig::default()), Device::Cpu).unwrap();
        other.meta.target = "something_else".into();
        let mixed = vec![models.into_iter().next().unwrap(), other];
        assert!(predict_members(&mixed, &refs).is_err());
    }

    #[test]
    fn ensembles_save_and_load_as_member_folders_and_replace_whole() {
        let g = graphs();
        let refs: Vec<&GraphFeatures> = g.iter().collect();
        let cfg = TrainConfig { seed: 4, members: 3, ..Default::default() };
        let mut models: Vec<Model> = (0..3)
            .map(|k| {
                let mut meta = Meta::new("ens", &cfg);
                meta.member = k;
                Model::new(meta, Device::Cpu).unwrap()
            })
            .collect();
        // members draw their own initial weights; member 0 is the single model of that seed
        let p: Vec<_> = models.iter().map(|m| m.predict(&refs).unwrap()).collect();
        assert_ne!(p[0], p[1]);
        let single = Model::new(
            Meta::new("one", &TrainConfig { seed: 4, ..Default::default() }),
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(single.predict(&refs).unwrap(), p[0]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ens");
        Model::save_members(&mut models, &path).unwrap();
        assert!(member_dir(&path, 2).join(META_FILE).exists() && !path.join(META_FILE).exists());
        let loaded = Model::load_members(&path, Device::Cpu).unwrap();
        assert_eq!(loaded.len(), 3);
        assert_eq!(
            predict_members(&loaded, &refs).unwrap(),
            predict_members(&models, &refs).unwrap()
        );
        // a single model written over the ensemble replaces it
        let mut one = vec![single];
        Model::save_members(&mut one, &path).unwrap();
        assert!(!member_dir(&path, 0).exists());
        assert_eq!(Model::load_members(&path, Device::Cpu).unwrap().len(), 1);
        // and an ensemble over a single model
        Model::save_members(&mut models, &path).unwrap();
        assert!(!path.join(META_FILE).exists());
        assert_eq!(Model::load_members(&path, Device::Cpu).unwrap().len(), 3);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1, "no temporary folder left");
    }

    #[test]
    fn same_seed_same_initial_weights() {
        let cfg = TrainConfig { seed: 5, ..Default::default() };
        let g = graphs();
        let refs: Vec<&GraphFeatures> = g.iter().collect();
        let a = Model::new(Meta::new("a", &cfg), Device::Cpu).unwrap().predict(&refs).unwrap();
        let b = Model::new(Meta::new("b", &cfg), Device::Cpu).unwrap().predict(&refs).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn missing_or_foreign_checkpoints_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Model::load(dir.path(), Device::Cpu), Err(Error::MissingData { .. })));
        let mut meta = Meta::new("x", &TrainConfig::default());
        meta.dims.node_dim += 1;
        std::fs::write(dir.path().join(META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert!(matches!(Model::load(dir.path(), Device::Cpu), Err(Error::Model(_))));
    }

    #[test]
    fn unseen_ops_read_as_out_of_vocabulary() {
        let mut meta = Meta::new("m", &TrainConfig::default());
        meta.seen_ops = vec![1, 2, 3];
        let model = Model::new(meta, Device::Cpu).unwrap();
        let g = &graphs()[2];
        let hist = GLOBAL_DIM - OP_VOCAB - 2 * GLOBAL_PROXIES.len();
        let m = model.mask_unseen(g);
        for (a, b) in g.op.iter().zip(&m.op) {
            assert_eq!(*b, if *a <= 3 { *a } else { 0 });
        }
        // the histogram share of every unseen op that occurs is zeroed
        for &o in g.op.iter().filter(|&&o| o > 3) {
            assert_eq!(m.global[hist + o as usize], 0.0);
        }
        assert!(g.op.iter().any(|&o| o > 3), "the test graph has no unseen op");
        assert_eq!(m.global[hist + 1], g.global[hist + 1]);
        let seen_only = GraphFeatures { op: vec![1; g.n_nodes], ..g.clone() };
        assert!(matches!(model.mask_unseen(&seen_only), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn an_unseen_op_reads_as_its_seen_stand_in_with_its_histogram_share() {
        use crate::features::op_index;
        use crate::graph::OpKind;
        let (avg, max) = (op_index(&OpKind::AvgPool), op_index(&OpKind::MaxPool));
        assert_eq!(stand_in(avg), Some(max));
        assert_eq!(stand_in(op_index(&OpKind::Conv)), None);
        let mut meta = Meta::new("m", &TrainConfig::default());
        let g = &graphs()[2];
        let mut seen: Vec<i64> = g.op.iter().copied().filter(|&o| o != avg).collect();
        seen.push(max);
        seen.sort_unstable();
        seen.dedup();
        meta.seen_ops = seen;
        let model = Model::new(meta, Device::Cpu).unwrap();
        let hist = GLOBAL_DIM - OP_VOCAB - 2 * GLOBAL_PROXIES.len();
        let mut g = g.clone();
        g.op[1] = avg;
        g.global[hist + avg as usize] = 0.25;
        let before_max = g.global[hist + max as usize];
        let m = model.mask_unseen(&g);
        assert_eq!(m.op[1], max);
        assert_eq!(m.global[hist + avg as usize], 0.0);
        assert!((m.global[hist + max as usize] - (before_max + 0.25)).abs() < 1e-6);
    }
}
