//! NAS-Bench-101 against the benchmark's own numbers:
//! - the module hash of every one of the 423,624 cells of `nb101_space_all_423624.tsv.gz`, and
//!   of every labelled cell, equals the hash the file lists;
//! - the parameter count of the generated network, read back from ONNX into a CG, equals
//!   `trainable_parameters`: a fixed sample of 3,000 cells in every build, all 30,001 in
//!   `params_match_on_all_labelled_cells`, which debug builds skip and release builds run
//!   (`cargo test --release --no-default-features --test spaces_nb101`);
//! - `featurise_all_labelled_cells_into_a_cache` (ignored; run with `--release -- --ignored
//!   --nocapture`) measures spec -> ONNX -> CG -> cache for the whole labelled set.
//!
//! Needs the benchmark data (`NAPE_DATA` or `../shared/data`); fails saying where it looked.

use nape::dataset::{data_dir, data_file, load_nb101, CachedGraph, CgCache, Dataset, NB101_SPACE};
use nape::onnx::write::Weights;
use nape::onnx::{from_proto, ImportOptions};
use nape::spaces::nb101::Cell;
use rayon::prelude::*;
use std::io::{BufRead, BufReader};
use std::time::Instant;

fn or_fail<T>(r: nape::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark data needed: {e}"))
}

fn labelled() -> Dataset {
    let d = or_fail(load_nb101(&data_dir(None)));
    let with = d.require("val_acc_ep108");
    assert_eq!(with.len(), 30_001, "records with val_acc_ep108");
    assert!(with.records.iter().all(|r| r.target("trainable_parameters").is_some()));
    with
}

/// Cells whose generated parameter count differs from `trainable_parameters`.
fn param_mismatches(d: &Dataset) -> Vec<String> {
    d.records
        .par_iter()
        .filter_map(|r| {
            let want = r.target("trainable_parameters")? as u64;
            let cell = Cell::parse(&r.spec).ok()?;
            let m = cell.build(Weights::Inputs).ok()?;
            let cg = from_proto(&m.model, &r.id, &ImportOptions::default()).ok()?;
            let got = cg.summary().params;
            (got != want || m.params != want).then(|| {
                format!("{} {}: CG {got}, builder {}, published {want}", r.id, r.spec, m.params)
            })
        })
        .collect()
}

#[test]
fn every_cell_of_the_space_hashes_to_its_published_hash() {
    let path = or_fail(data_file(&data_dir(None), NB101_SPACE, "NAS-Bench-101 space table"));
    let f = std::fs::File::open(&path).unwrap();
    let lines: Vec<String> =
        BufReader::new(flate2::read::GzDecoder::new(f)).lines().map(|l| l.unwrap()).collect();
    assert_eq!(lines[0], "hash\tnum_vertices\tmatrix_rows\tops");
    let t = Instant::now();
    let wrong: Vec<String> = lines[1..]
        .par_iter()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let cell = Cell::from_rows_ops(cols[2], cols[3]).map_err(|e| e.to_string());
            match cell.and_then(|c| c.hash().map_err(|e| e.to_string())) {
                Ok(h) if h == cols[0] => None,
                Ok(h) => Some(format!("{l}: got {h}")),
                Err(e) => Some(format!("{l}: {e}")),
            }
        })
        .collect();
    eprintln!("{} cells hashed in {:.1} s", lines.len() - 1, t.elapsed().as_secs_f64());
    assert_eq!(lines.len() - 1, 423_624);
    assert!(
        wrong.is_empty(),
        "{} hashes differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn labelled_cells_hash_to_their_key() {
    let d = or_fail(load_nb101(&data_dir(None)));
    assert_eq!(d.len(), 30_267);
    assert!(d.issues.is_empty(), "{:?}", &d.issues[..d.issues.len().min(5)]);
    let wrong: Vec<_> = d
        .records
        .par_iter()
        .filter(|r| {
            Cell::parse(&r.spec).and_then(|c| c.hash()).ok().as_deref() != Some(r.id.as_str())
        })
        .map(|r| r.id.clone())
        .collect();
    assert!(
        wrong.is_empty(),
        "{} labelled cells hash to another key: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn params_match_on_a_fixed_sample_of_3000_labelled_cells() {
    let sample = labelled().sample(3000, 101);
    let t = Instant::now();
    let wrong = param_mismatches(&sample);
    eprintln!("3000 cells built and parsed in {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        wrong.is_empty(),
        "{} of 3000 differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
#[cfg_attr(debug_assertions, ignore = "all 30,001 cells: runs by default in release builds")]
fn params_match_on_all_labelled_cells() {
    let d = labelled();
    let t = Instant::now();
    let wrong = param_mismatches(&d);
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "params: {}/{} match ({:.1} s, {:.0} networks/s)",
        d.len() - wrong.len(),
        d.len(),
        s,
        d.len() as f64 / s
    );
    assert!(wrong.is_empty(), "{} differ, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // fields 14 and 15 of the file (utime, stime) are 12 and 13 after the command name
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

#[test]
#[ignore = "throughput of featurising all 30,001 labelled cells; run in release"]
fn featurise_all_labelled_cells_into_a_cache() {
    let d = labelled();
    let items: Vec<(String, String)> =
        d.records.iter().map(|r| (r.id.clone(), r.spec.clone())).collect();
    // where the time goes, one thread, first 2,000 cells
    let (mut tb, mut tp, mut ts) = (0.0, 0.0, 0.0);
    for (id, spec) in items.iter().take(2000) {
        let t0 = Instant::now();
        let m = Cell::parse(spec).unwrap().build(Weights::Inputs).unwrap();
        let t1 = Instant::now();
        let cg = from_proto(&m.model, id, &ImportOptions::default()).unwrap();
        let t2 = Instant::now();
        let _ = CachedGraph::new(&cg, true);
        tb += (t1 - t0).as_secs_f64();
        tp += (t2 - t1).as_secs_f64();
        ts += t2.elapsed().as_secs_f64();
    }
    eprintln!(
        "per network, one thread: spec->ONNX {:.2} ms, ONNX->CG {:.2} ms, summary+CG JSON {:.2} ms",
        tb / 2.0,
        tp / 2.0,
        ts / 2.0
    );
    for keep_graph in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tag = if keep_graph { "cg" } else { "summary" };
        let (w0, c0) = (Instant::now(), cpu_seconds());
        let mut cache = CgCache::open(dir.path(), "nb101", tag).unwrap();
        let built = cache
            .fill(&items, |id, spec| {
                let m = Cell::parse(spec)?.build(Weights::Inputs)?;
                let cg = from_proto(&m.model, id, &ImportOptions::default())?;
                Ok(CachedGraph::new(&cg, keep_graph))
            })
            .unwrap();
        let w_fill = w0.elapsed().as_secs_f64();
        cache.save().unwrap();
        let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let size = std::fs::metadata(cache.path()).unwrap().len();
        let t = Instant::now();
        let back = CgCache::open(dir.path(), "nb101", tag).unwrap();
        assert_eq!(back.len(), d.len());
        assert_eq!(built, d.len());
        eprintln!(
            "featurised {} networks ({}) in {wall:.1} s wall = {:.0} networks/s (fill {w_fill:.1} s, save {:.1} s) on {} threads; \
             {cpu:.1} CPU s = {:.0} networks per CPU second; cache {:.1} MB, reloaded in {:.1} s",
            d.len(),
            if keep_graph { "summary + whole CG" } else { "summary only" },
            d.len() as f64 / wall,
            wall - w_fill,
            rayon::current_num_threads(),
            d.len() as f64 / cpu.max(1e-9),
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
}
