//! The predictor end to end on a tiny budget: pretrain on ~200 NB-101 cells for one epoch of
//! each phase, reload, predict a corpus file through the library and the `nape predict`
//! binary, and check that the same seed gives the same model. Needs the benchmark data
//! (`NAPE_DATA` or `../shared/data`).
#![cfg(feature = "torch")]

use nape::dataset::data_dir;
use nape::onnx::ImportOptions;
use nape::predict::Predictor;
use nape::train::adapt::{AdaptConfig, Base};
use nape::train::flows::{self, Paths};
use nape::train::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Device;

fn tiny() -> TrainConfig {
    let mut c = TrainConfig::default();
    c.encoder.hidden = 16;
    c.encoder.layers = 2;
    c.encoder.emb_dim = 16;
    c.heads.k = 2;
    c.heads.hidden = 8;
    c.pretrain.unlabelled = 100;
    c.pretrain.epochs = 1;
    c.pretrain.batch = 50;
    c.supervised.n_test = 40;
    c.supervised.n_val = 40;
    c.supervised.n_train = 100;
    c.supervised.epochs = 1;
    c.supervised.batch = 50;
    c.supervised.fcm_epochs = 1;
    c
}

fn paths(root: &Path) -> Paths {
    Paths {
        data: data_dir(None),
        cache: root.join("cache"),
        models: root.join("models"),
        runs: root.join("runs"),
        import: Default::default(),
    }
}

#[test]
fn pretrain_then_predict_a_corpus_file() {
    let root = tempfile::tempdir().unwrap();
    let p = paths(root.path());
    let a = flows::pretrain(tiny(), "tiny", &p, Device::Cpu, true).unwrap();
    for f in ["config.json", "log.txt", "metrics.json", "predictions.csv"] {
        assert!(a.run_dir.join(f).is_file(), "run folder lacks {f}");
    }
    let model_dir = p.models.join("tiny");
    assert!(model_dir.join("weights.safetensors").is_file());
    let tau = a.metrics["model"]["kendalltau"];
    assert!(tau.is_finite(), "held-out kendall tau {tau}");
    // the naive competitors on the same split: the ridge on the same training cells' graph
    // features, and NAS-Bench-Suite-Zero's published proxies where the file has them
    assert!(a.metrics["ridge"]["spearman"].is_finite(), "{:?}", a.metrics.keys());
    assert!(a.metrics.contains_key("proxy:zen"), "{:?}", a.metrics.keys());
    let best = &a.metrics["best_proxy"];
    assert!(best["n"] >= 3.0 && best["n"] <= 40.0, "{best:?}");

    // same seed, same model
    let b = flows::pretrain(tiny(), "tiny2", &p, Device::Cpu, true).unwrap();
    assert_eq!(a.metrics["model"], b.metrics["model"]);

    let resnet = PathBuf::from("tests/corpus/zoo/resnet18.onnx");
    let pred =
        Predictor::load(&model_dir, Device::Cpu, ImportOptions::default(), Path::new(".")).unwrap();
    let out = pred.predict_files(&[resnet.clone(), root.path().join("missing.onnx")]);
    let r = out[0].as_ref().unwrap();
    assert!(r.prediction.is_finite() && r.uncertainty.is_finite() && r.uncertainty >= 0.0);
    // pretraining calibrated the in-domain reference on its held-out cells; one family's
    // model reads the distance only, not the members' spread (train::domain::calibrate)
    let d = r.in_domain.expect("an in-domain score");
    let m = nape::train::model::Model::load_members(&model_dir, Device::Cpu).unwrap();
    assert!(m[0].meta.domain_reference.is_some() && m[0].meta.spread_reference.is_none());
    assert!(d > 0.0 && d <= 1.0, "in_domain {d}");
    assert!(out[1].is_err());

    // the binary: JSON with a finite prediction and uncertainty; a bad file gives exit 5
    let bad = root.path().join("bad.onnx");
    std::fs::write(&bad, b"not onnx").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_nape"))
        .args(["predict", "--json", "--model"])
        .arg(&model_dir)
        .arg(&resnet)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = &doc["predictions"][0];
    assert_eq!(first["ok"], true);
    assert!(first["prediction"].as_f64().unwrap().is_finite());
    assert!(first["uncertainty"].as_f64().unwrap().is_finite());
    assert_eq!(first["in_domain"].as_f64(), Some(d));
    assert_eq!(doc["predictions"][1]["ok"], false);
    assert!(doc["predicts"].as_str().unwrap().contains("CIFAR-10"));
}

#[test]
fn an_ensemble_with_the_flops_transform_trains_predicts_and_fine_tunes() {
    let root = tempfile::tempdir().unwrap();
    let p = paths(root.path());
    let mut cfg = tiny();
    cfg.members = 2;
    cfg.supervised.flops_transform = true;
    cfg.heads.m = None;
    let a = flows::pretrain(cfg, "ens", &p, Device::Cpu, true).unwrap();
    let dir = p.models.join("ens");
    let members = nape::train::model::Model::load_members(&dir, Device::Cpu).unwrap();
    assert_eq!(members.len(), 2);
    for m in &members {
        // the fitted transform and fuzzifier are recorded in each member
        assert!(m.meta.flops_slope.is_finite() && m.meta.flops_slope != 0.0);
        let fm = m.meta.config.heads.m.unwrap();
        assert!(fm > 1.0 && fm < 2.0, "fuzzifier {fm}");
        // the robust spread of the training target (a fraction on NB-101) is recorded too
        let mad = m.meta.target_mad.unwrap();
        assert!(mad > 1e-3 && mad < 0.2, "training target MAD {mad}");
    }
    assert!(a.metrics["model"]["kendalltau"].is_finite());
    let log = std::fs::read_to_string(a.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("member 2 of 2") && log.contains("FLOPs transform"), "{log}");

    let resnet = PathBuf::from("tests/corpus/zoo/resnet18.onnx");
    let pred =
        Predictor::load(&dir, Device::Cpu, ImportOptions::default(), Path::new(".")).unwrap();
    assert_eq!(pred.members(), 2);
    let r = pred.predict_files(std::slice::from_ref(&resnet)).remove(0).unwrap();
    assert!(r.prediction.is_finite() && r.uncertainty.is_finite() && r.uncertainty > 0.0);

    let cfg = flows::FinetuneConfig {
        samples: 12,
        seeds: 1,
        limit: Some(60),
        align_family: false,
        adapt: AdaptConfig {
            epochs: 2,
            lr: 1e-3,
            folds: 3,
            heads_only: false,
            base: Base::Flops,
            lower_is_better: false,
            seed: 0,
        },
    };
    let finetune = |save_as: &str| {
        flows::finetune(
            &dir,
            &flows::Source::Family("nb201".into()),
            Some("cifar10_test_ep200"),
            &cfg,
            &p,
            Device::Cpu,
            Some(save_as),
            true,
        )
        .unwrap()
    };
    let f = finetune("ens-ft");
    assert!(f.summary["after_spearman_mean"].is_finite());
    for row in ["ridge_logs", "forest_graf", "flops"] {
        assert!(f.summary[&format!("{row}_spearman_mean")].is_finite(), "{row}");
    }
    // cross-validation chose among the checkpoints up to the 2 epochs asked for
    assert!(f.choices[0].epochs <= 2 && f.choices[0].tried.len() == 2 * 4);
    let tuned =
        nape::train::model::Model::load_members(&p.models.join("ens-ft"), Device::Cpu).unwrap();
    assert_eq!(tuned.len(), 2);
    // the slope was rescaled by NB-201's MAD (percent) over NB-101's (a fraction)
    let ratio = tuned[0].meta.flops_slope / members[0].meta.flops_slope;
    let want = tuned[0].meta.target_mad.unwrap() / members[0].meta.target_mad.unwrap();
    assert!((ratio / want - 1.0).abs() < 1e-9, "slope x{ratio}, MADs x{want}");
    assert!(want > 10.0, "NB-201's MAD over NB-101's: {want}");

    // a checkpoint written before the MAD was recorded: fine-tuning recomputes it from the
    // NB-101 cells each member saw (training and validation cells, close to the training MAD)
    for k in 0..2 {
        let f = dir.join(format!("member-{k}")).join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("target_mad").unwrap();
        std::fs::write(&f, serde_json::to_string(&meta).unwrap()).unwrap();
    }
    let old = nape::train::model::Model::load_members(&dir, Device::Cpu).unwrap();
    assert!(old.iter().all(|m| m.meta.target_mad.is_none()));
    finetune("old-ft");
    let again =
        nape::train::model::Model::load_members(&p.models.join("old-ft"), Device::Cpu).unwrap();
    let r = again[0].meta.flops_slope / tuned[0].meta.flops_slope;
    assert!((0.7..1.4).contains(&r), "recomputed MAD moved the slope x{r}");
}

#[test]
fn a_mix_of_families_trains_on_one_scale_and_ranks_each_part() {
    let root = tempfile::tempdir().unwrap();
    let p = paths(root.path());
    let mut cfg = tiny();
    cfg.supervised.flops_transform = true;
    cfg.mix.parts = vec!["nb201:cifar10_test_ep200".into(), "t=tnb-micro".into()];
    cfg.mix.per_part = 150;
    cfg.mix.held_out = 0.2;
    let set = flows::mix::load_mix(&cfg, &p).unwrap();
    assert_eq!(set.len(), 300);
    let g = set.groups.as_ref().unwrap();
    assert_eq!(g.names, ["nb201:cifar10_test_ep200", "t"]);
    // each part's target is on one scale: normal scores, median 0
    for part in 0..2u32 {
        let mut z: Vec<f64> = (0..set.len())
            .filter(|&i| g.of[i] == part)
            .map(|i| set.records.records[i].target(flows::mix::MIX_TARGET).unwrap())
            .collect();
        z.sort_by(f64::total_cmp);
        assert!(z[z.len() / 2].abs() < 0.05 && z[0] > -3.5 && z[z.len() - 1] < 3.5, "{z:?}");
    }
    let a = flows::pretrain_set(cfg, &set, "mix", &p, Device::Cpu, true).unwrap();
    for part in ["nb201:cifar10_test_ep200", "t"] {
        for who in ["model", "params", "flops"] {
            let s = a.metrics[&format!("{part}/{who}")]["spearman"];
            assert!(s.is_finite(), "{part}/{who}: {s}");
        }
        assert_eq!(a.metrics[&format!("{part}/model")]["n"], 30.0);
    }
    let m = nape::train::model::Model::load_members(&p.models.join("mix"), Device::Cpu).unwrap();
    let meta = &m[0].meta;
    assert_eq!((meta.family.as_str(), meta.predicts.as_str()), ("mix", flows::mix::MIX_PREDICTS));
    assert!(meta.flops_slope > 0.0 && meta.params_slope == 0.0, "{}", meta.flops_slope);
    let log = std::fs::read_to_string(a.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("base line within the 2 parts"), "{log}");
    // a mix's spread reference: the 90th percentile of the ensemble's uncertainty on its
    // held-out networks (predictions.csv), the same in every member
    let csv = std::fs::read_to_string(a.run_dir.join("predictions.csv")).unwrap();
    let col = csv.lines().next().unwrap().split(',').position(|c| c == "uncertainty").unwrap();
    let mut u: Vec<f64> =
        csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap().parse().unwrap()).collect();
    u.sort_by(f64::total_cmp);
    let pos = 0.9 * (u.len() - 1) as f64;
    let (lo, hi) = (u[pos.floor() as usize], u[pos.ceil() as usize]);
    let want = lo + (hi - lo) * pos.fract();
    let got = meta.spread_reference.expect("a mix's spread reference");
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    assert!(m.iter().all(|k| k.meta.spread_reference == Some(got)));
    let resnet = PathBuf::from("tests/corpus/zoo/resnet18.onnx");
    let pred = Predictor::load(
        &p.models.join("mix"),
        Device::Cpu,
        ImportOptions::default(),
        Path::new("."),
    )
    .unwrap();
    let r = pred.predict_files(std::slice::from_ref(&resnet)).remove(0).unwrap();
    assert!(r.prediction.is_finite() && r.in_domain.is_some());
}
