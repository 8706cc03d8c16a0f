//! The test corpus (tests/corpus, made by scripts/gen_corpus.py): every file parses; parameter
//! counts equal the ONNX file's own weights; MACs equal an independent count made in PyTorch;
//! widely used architectures parse with zero Unknown compute ops; every OpKind is covered.

use nape::graph::{Cg, OpKind, ALL_KINDS};
use nape::onnx::{load, ImportOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn manifest() -> serde_json::Map<String, serde_json::Value> {
    let p = corpus().join("manifest.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str::<serde_json::Value>(&text)
        .expect("manifest is JSON")
        .as_object()
        .expect("object")
        .clone()
}

fn load_rel(rel: &str) -> Cg {
    let p = corpus().join(rel);
    load(&p, &ImportOptions::default()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// nape counts the weights the file holds, except a relative-position table the exporter stored
/// gathered, which it counts as the table the framework has, and says so in the notes.
#[test]
fn params_equal_the_files_own_weights() {
    let mut bad = Vec::new();
    for (rel, m) in manifest() {
        let cg = load_rel(&rel);
        let gathered = cg.notes.iter().any(|n| n.contains("relative-position tables"));
        let rule = if gathered { "framework_params" } else { "file_params" };
        let Some(want) = m[rule].as_u64() else { continue };
        let got = cg.summary().params;
        if got != want {
            bad.push(format!("{rel}: nape {got}, {rule} {want}"));
        }
    }
    assert!(bad.is_empty(), "parameter counts differ:\n{}", bad.join("\n"));
}

#[test]
fn macs_equal_an_independent_pytorch_count() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for (rel, m) in manifest() {
        let Some(want) = m["macs"].as_u64() else { continue };
        let got = load_rel(&rel).summary().macs;
        checked += 1;
        if got != want {
            bad.push(format!("{rel}: nape {got}, PyTorch hooks {want}"));
        }
    }
    assert!(checked >= 20, "only {checked} files have an independent MAC count");
    assert!(bad.is_empty(), "MAC counts differ:\n{}", bad.join("\n"));
}

/// Where sizes depend on the values (a detector's head), PyTorch's count on the one input the
/// generator ran lies between the part of nape's count that holds for every input and its bound.
#[test]
fn a_data_dependent_count_lies_within_napes_bounds() {
    let mut checked = 0;
    for (rel, m) in manifest() {
        let s = load_rel(&rel).summary();
        if s.bounded_macs == 0 {
            continue;
        }
        let on_one_input = m["macs_hooked_partial"].as_u64().expect("the hooks' count");
        let exact = s.macs - s.bounded_macs;
        assert!(
            exact < on_one_input && on_one_input <= s.macs,
            "{rel}: PyTorch's {on_one_input} outside nape's [{exact}, {}]",
            s.macs
        );
        checked += 1;
    }
    assert!(checked >= 1, "no corpus file has data-dependent sizes");
}

#[test]
fn zoo_architectures_have_no_unknown_ops() {
    let zoo = corpus().join("zoo");
    let mut files: Vec<_> =
        std::fs::read_dir(&zoo).expect("tests/corpus/zoo").flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 12, "expected the 12 torchvision exports in {}", zoo.display());
    for f in files {
        let cg = load(&f, &ImportOptions { strict: true, ..Default::default() })
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let s = cg.summary();
        assert!(s.unknown.is_empty(), "{}: unknown ops {:?}", f.display(), s.unknown);
        assert!(s.params > 1_000_000 && s.macs > 10_000_000, "{}: {s:?}", f.display());
    }
}

/// Every op kind is read from some committed file: the corpus of the manifest, or the files
/// of older opsets and converters (tests/corpus/opsets: the Caffe-era `LRN`).
#[test]
fn every_op_kind_is_covered_by_the_corpus() {
    let mut seen = BTreeSet::new();
    let older = ["auto_pad", "legacy", "op17", "op7", "op9"].map(|f| format!("opsets/{f}.onnx"));
    for rel in manifest().keys().cloned().chain(older) {
        for (_, n) in load_rel(&rel).nodes() {
            seen.insert(n.kind.clone());
        }
    }
    let missing: Vec<&OpKind> = ALL_KINDS.iter().filter(|k| !seen.contains(k)).collect();
    assert!(missing.is_empty(), "OpKinds no corpus file exercises: {missing:?}");
}

#[test]
fn every_graph_is_valid_and_deterministic() {
    for rel in manifest().keys() {
        let a = load_rel(rel);
        a.validate().unwrap_or_else(|e| panic!("{rel}: {e}"));
        let b = load_rel(rel);
        assert_eq!(
            serde_json::to_string(&a.to_json()).unwrap(),
            serde_json::to_string(&b.to_json()).unwrap(),
            "{rel}: two loads differ"
        );
        // canonical form is valid too, and never has more parameters than the raw graph + biases
        let c = a.canonical();
        c.validate().unwrap_or_else(|e| panic!("{rel} (canonical): {e}"));
    }
}
