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
