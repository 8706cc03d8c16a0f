//! NAS-Bench-201 networks against the benchmark's published numbers: for every cell of
//! NAS-Bench-Suite-Zero's `naslib_zc/nasbench201.jsonl` with published `params` and `flops`
//! (in millions) on CIFAR-10, CIFAR-100 and ImageNet16-120, the generated ONNX, read back
//! into a CG, has exactly that parameter count and that torchstat FLOP count.
//!
//! Needs the benchmark data (`NAPE_DATA` or `../shared/data`); fails saying where it looked.

use nape::dataset::{data_dir, load_naslib_zc, load_nb201, NaslibSpace};
use nape::onnx::write::Weights;
use nape::onnx::{from_proto, ImportOptions};
use nape::spaces::nb201::{Arch, Dataset};
use nape::spaces::torchstat_flops;
use rayon::prelude::*;

fn or_fail<T>(r: nape::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark data needed: {e}"))
}

#[test]
fn params_and_flops_match_the_published_values_on_all_three_datasets() {
    let dir = data_dir(None);
    let zc = or_fail(load_naslib_zc(&dir, NaslibSpace::Nb201));
    for ds in Dataset::ALL {
        let (pk, fk) = (format!("{ds}_params"), format!("{ds}_flops"));
        let cells: Vec<_> = zc
            .records
            .iter()
            .filter_map(|r| Some((r.spec.clone(), *r.proxies.get(&pk)?, *r.proxies.get(&fk)?)))
            .collect();
        assert!(
            cells.len() > 700,
            "{ds}: only {} cells with published params and flops",
            cells.len()
        );
        let results: Vec<(String, u64, u64, f64, f64)> = cells
            .par_iter()
            .map(|(spec, p, f)| {
                let arch = Arch::parse(spec).unwrap();
                let m = arch.build(ds, Weights::Inputs).unwrap();
                let cg = from_proto(&m.model, spec, &ImportOptions::default()).unwrap();
                (spec.clone(), cg.summary().params, torchstat_flops(&cg), *p, *f)
            })
            .collect();
        let mut worst_p = 0.0f64;
        let mut worst_f = 0.0f64;
        let mut wrong = Vec::new();
        for (spec, params, flops, p, f) in &results {
            let rp = (*params as f64 - p * 1e6).abs() / (p * 1e6);
            let rf = (*flops as f64 - f * 1e6).abs() / (f * 1e6);
            worst_p = worst_p.max(rp);
            worst_f = worst_f.max(rf);
            // published values are in millions with 6 decimals: exact to the unit
            if (*params as f64 - (p * 1e6).round()).abs() > 0.0
                || (*flops as f64 - (f * 1e6).round()).abs() > 0.0
            {
                wrong.push(format!("{spec}: params {params} vs {p}M, flops {flops} vs {f}M"));
            }
        }
        eprintln!(
            "{ds}: {} cells, largest relative difference params {worst_p:.3e}, flops {worst_f:.3e}, {} not exact",
            results.len(),
            wrong.len()
        );
        assert!(
            wrong.is_empty(),
            "{ds}: {} cells differ, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}

#[test]
fn naslib_tuples_map_to_the_same_cells_as_the_csv() {
    // the zc file's CIFAR-10 validation accuracy must equal the CSV's NASLib column for the
    // same arch string: checks the tuple -> arch string conversion on all 15,625 cells
    let dir = data_dir(None);
    let zc = or_fail(load_naslib_zc(&dir, NaslibSpace::Nb201));
    let mut csv = or_fail(load_nb201(&dir));
    assert_eq!(csv.len(), 15_625);
    let before = csv.issues.len();
    let joined = csv.merge_by_spec(&zc);
    assert_eq!(joined, zc.len(), "{:?}", &csv.issues[before..csv.issues.len().min(before + 5)]);
    let mut compared = 0;
    for r in &csv.records {
        for (a, b) in [
            ("cifar10_naslib_val_accuracy", "cifar10_val_accuracy"),
            ("cifar100_naslib_val_accuracy", "cifar100_val_accuracy"),
            ("imagenet16_naslib_val_accuracy", "imagenet16_val_accuracy"),
        ] {
            if let (Some(x), Some(y)) = (r.target(a), r.target(b)) {
                assert!((x - y).abs() < 1e-6, "{} {}: csv {x} vs zc {y}", r.id, r.spec);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 3 * 15_625);
}

/// The `nb201` family (what `nape eval` and `nape finetune` read) carries every label of the data
/// folder: NAS-Bench-Suite-Zero's SVHN, Spherical CIFAR-100 and NinaPro accuracies of 199 cells
/// each are targets beside the table's, on the cells whose published parameter counts they
/// come with (the same counts as those cells' CIFAR-10 networks, ranked identically).
#[test]
fn the_family_has_the_nas_bench_360_labels_on_their_cells() {
    let dir = data_dir(None);
    let family = or_fail(nape::train::data::load_family(&dir, "nb201"));
    assert_eq!(family.len(), 15_625);
    assert_eq!(family.require("cifar10_test_ep200").len(), 15_625);
    for dataset in ["svhn", "scifar100", "ninapro"] {
        let recs = family.require(&format!("{dataset}_val_accuracy"));
        assert_eq!(recs.len(), 199, "{dataset}");
        let (ours, published): (Vec<f64>, Vec<f64>) = recs
            .records
            .iter()
            .map(|r| {
                let built = Arch::parse(&r.spec).unwrap().build(Dataset::Cifar10, Weights::Inputs);
                (built.unwrap().params as f64, r.proxies[&format!("{dataset}_params")])
            })
            .unzip();
        let rho = nape::metrics::spearman(&ours, &published);
        assert!(rho > 0.999, "{dataset}: published counts rank the cells at {rho}");
    }
}
