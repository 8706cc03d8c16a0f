//! The real-world corpus check (`make corpus-check`): every family folder under `NAPE_CORPUS`
//! (default /work/corpus; made by scripts/export_corpus.py, `make corpus`) is parsed, stripped
//! and embedded, and compared with torch's counts. Prints the per-family table and every
//! failing file, then fails unless all files parse with no Unknown op, parameters agree with
//! torch's (`Outcome::params_ok`; files whose exporter wrote copies of a weight are listed
//! apart, `Outcome::params_as_file`) and MACs are within 1%. Ignored by default: the corpus is tens of GB and lives outside git.
//! `NAPE_CORPUS_FAMILIES=a,b` limits the families, `NAPE_CORPUS_THREADS` the parallelism.

mod real_truth;

use real_truth::{check_family, table};
use std::path::PathBuf;

#[test]
#[ignore = "needs the exported corpus (make corpus); run with make corpus-check"]
fn real_corpus_matches_torch() {
    let root =
        PathBuf::from(std::env::var("NAPE_CORPUS").unwrap_or_else(|_| "/work/corpus".into()));
    let only: Option<Vec<String>> = std::env::var("NAPE_CORPUS_FAMILIES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let threads =
        std::env::var("NAPE_CORPUS_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut families: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (make corpus writes it)", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("truth.jsonl").exists())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            only.as_ref().is_none_or(|o| o.iter().any(|f| f == name))
        })
        .collect();
    families.sort();
    assert!(!families.is_empty(), "no family folder with a truth.jsonl under {}", root.display());
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for dir in families {
        let family = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let outcomes = check_family(&dir, threads);
        for o in &outcomes {
            if let Some(why) = o.problem() {
                failures.push(format!("{family}/{} ({}): {why}", o.file, o.form));
            }
            if let (true, Ok(c)) = (o.params_as_file(), &o.parsed) {
                let t = &o.truth;
                println!(
                    "COPIES {family}/{} ({}): params {} = the file's own count, torch {}",
                    o.file, o.form, c.params, t.params
                );
            }
        }
        eprintln!("{}", table(&[(family.clone(), outcomes.clone())]));
        rows.push((family, outcomes));
    }
    println!("{}", table(&rows));
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} files fail the corpus check (listed above)", failures.len());
}
