//! Golden files guard the ONNX -> CG mapping: `nape inspect --json` of every file of
//! tests/corpus/ops must equal tests/golden/<name>.json (regenerate with scripts/regen_golden.sh
//! after an intended change, and review the diff).

use std::path::Path;
use std::process::Command;

#[test]
fn inspect_json_matches_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/corpus/ops"))
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let rel = f.strip_prefix(root).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nape"))
            .current_dir(root)
            .args(["inspect", "--json"])
            .arg(rel)
            .output()
            .expect("run nape");
        assert!(
            out.status.success(),
            "{}: {}",
            rel.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        got.as_object_mut().unwrap().remove("nape_version");
        let gp = golden.join(format!("{name}.json"));
        let Ok(text) = std::fs::read_to_string(&gp) else {
            bad.push(format!("{}: no golden file (run scripts/regen_golden.sh)", gp.display()));
            continue;
        };
        let mut want: serde_json::Value = serde_json::from_str(&text).expect("golden json");
        want.as_object_mut().unwrap().remove("nape_version");
        if got != want {
            bad.push(format!("{}: differs from {}", rel.display(), gp.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
