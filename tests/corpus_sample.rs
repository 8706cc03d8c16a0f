//! The committed sample of the real-world corpus (tests/corpus/real, the hardest files picked
//! from what scripts/export_corpus.py writes, weights stripped, with their truth lines): every
//! file parses with no Unknown op, and parameters and MACs are within 1% of torch's counts.
//! This is the part of `make corpus-check` that CI runs without torch.

mod real_truth;

use real_truth::{check_family, read_truth, table};
use std::path::Path;

#[test]
fn committed_real_exports_match_torch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/real");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("truth.jsonl").exists())
        .collect();
    dirs.sort();
    let files: usize = dirs.iter().map(|d| read_truth(d).len()).sum();
    assert!(
        files >= 8,
        "expected the committed sample under {}, found {files} files",
        root.display()
    );
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for dir in dirs {
        let family = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let outcomes = check_family(&dir, 2);
        bad.extend(
            outcomes
                .iter()
                .filter_map(|o| o.problem().map(|p| format!("{family}/{}: {p}", o.file))),
        );
        rows.push((family, outcomes));
    }
    println!("{}", table(&rows));
    assert!(bad.is_empty(), "files off the truth:\n{}", bad.join("\n"));
}

/// The parameter rules of the check, on counts made up around the sample's pytorchcv files.
#[test]
fn parameter_counts_agree_only_as_folding_or_the_files_copies_explain() {
    use real_truth::{Counted, Outcome, Truth};
    let outcome = |nape: u64, params: u64, bn_params: u64, file_params: u64| Outcome {
        form: "stripped",
        file: "x.onnx".into(),
        parsed: Ok(Counted {
            params: nape,
            undecided_params: 0,
            macs: 1,
            bounded_macs: 0,
            unknown: vec![],
        }),
        truth: Truth {
            file: "x.onnx".into(),
            params,
            frozen: 0,
            bn_params,
            file_params: Some(file_params),
            macs: Some(1),
            embedded: None,
        },
    };
    // shufflenet_g3_wd4: 1.0% under torch, less than its BatchNorms' 6,120 affine values
    assert!(outcome(302_842, 305_902, 6_120, 302_842).params_ok());
    // 2% under torch with no BatchNorm to fold is wrong, whatever the file's count says
    assert!(outcome(299_784, 305_902, 0, 299_784).problem().is_some());
    // below torch by more than the folding can take
    assert!(outcome(290_000, 305_902, 6_120, 290_000).problem().is_some());
    // polynet: above torch, exactly the file's count: the exporter's copies, listed apart
    let copies = outcome(120_601_736, 95_366_600, 0, 120_601_736);
    assert!(!copies.params_ok() && copies.params_as_file() && copies.problem().is_none());
    // a weight counted twice is above the file's count too (gpt2's tied embedding)
    let twice = outcome(163_037_184, 124_439_808, 0, 124_439_808);
    assert!(!twice.params_as_file() && twice.problem().is_some());
}
