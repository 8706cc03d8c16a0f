//! `nape export` end to end: the files it writes pass the ONNX checker (with full shape
//! inference), run in tract and in onnxruntime with the same output (within 1e-4), the
//! manifest lists every file with its labels, and missing or malformed data is exit code 3
//! with the path.
//!
//! Needs the benchmark data (`NAPE_DATA` or `../shared/data`) and a Python with onnx and
//! onnxruntime (`NAPE_PYTHON`, else `.venv-py/bin/python`, which `make setup` installs); fails
//! saying where it looked for either.

use nape::dataset::{data_dir, read_manifest, Record};
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::prelude::*;

fn nape(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nape")).args(args).output().expect("run nape");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn python() -> PathBuf {
    let p = std::env::var_os("NAPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-py/bin/python"));
    assert!(
        p.exists(),
        "no Python with onnx and onnxruntime at {} (set NAPE_PYTHON, or run `make setup`)",
        p.display()
    );
    p
}

fn data() -> String {
    let d = data_dir(None);
    assert!(
        d.join("nasbench101").is_dir(),
        "benchmark data not found: looked in {} (set NAPE_DATA or put the data in ../shared/data)",
        std::fs::canonicalize(&d).unwrap_or(d.clone()).display()
    );
    d.display().to_string()
}

/// The deterministic input both runtimes get: sin(0.37 i), computed in f64, stored as f32.
fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f64) * 0.37).sin() as f32).collect()
}

/// Checks every file with onnx.checker; runs those with weights in onnxruntime. Returns the
/// outputs by file name.
const CHECK: &str = r#"
import json, sys
import numpy as np
import onnx, onnxruntime as ort
out = {}
for path in sys.argv[1:]:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inputs = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    if len(inputs) != 1:
        out[path] = None  # weights are graph inputs: checked, not run
        continue
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    x = np.sin(np.arange(int(np.prod(dims)), dtype=np.float64) * 0.37).astype(np.float32).reshape(dims)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = s.run(None, {inputs[0].name: x})[0]
    out[path] = [float(v) for v in y.reshape(-1)]
print(json.dumps(out))
"#;

fn run_tract(path: &Path) -> Vec<f32> {
    let model = tract_onnx::onnx().model_for_path(path).unwrap().into_optimized().unwrap();
    let shape: Vec<usize> = model.input_fact(0).unwrap().shape.as_concrete().unwrap().to_vec();
    let n = shape.iter().product();
    let x = Tensor::from_shape(&shape, &input(n)).unwrap();
    let plan = model.into_runnable().unwrap();
    let out = plan.run(tvec!(x.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

/// Exports `ids` of `space`, checks exit code and manifest, returns the manifest records.
fn export(space: &str, ids: &[&str], out: &Path, extra: &[&str]) -> Vec<Record> {
    let data = data();
    let ids = ids.join(",");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["export", space, "--data", &data, "--out", out_s, "--ids", &ids];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = nape(&args);
    assert_eq!(code, 0, "nape {args:?}: {stderr}");
    assert!(stdout.contains("networks"), "{stdout}");
    let recs = read_manifest(&out.join("manifest.jsonl")).unwrap();
    assert_eq!(recs.len(), ids.split(',').count());
    for r in &recs {
        assert_eq!(r.family, space);
        assert!(!r.targets.is_empty(), "{}: no labels", r.id);
        assert!(out.join(r.file.as_ref().unwrap()).is_file());
    }
    recs
}

#[test]
fn exported_files_pass_the_checker_and_agree_in_tract_and_onnxruntime() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &[&str]); 5] = [
        // the published NB-101 test vector plus two more cells
        (
            "nb101",
            &[
                "00005c142e6f48ac74fdcf73e3439874",
                "0000718c96730a92ea6d5242f8ce77e2",
                "1c04c17a05911cd1dbe7cfca030c617b",
            ],
            &[],
        ),
        // every NB-201 op, on each dataset
        ("nb201", &["0", "1", "2"], &["--dataset", "cifar10"]),
        ("nb201", &["0", "1"], &["--dataset", "imagenet16"]),
        // identity on reducing edges (FactorizedReduce), zeros on reducing edges, both convs
        ("tnb-micro", &["1_10_302", "0_01_123"], &["--task", "class_scene"]),
        ("tnb-micro", &["1_11_111"], &["--task", "class_object"]),
    ];
    let mut files = Vec::new();
    for (i, (space, ids, extra)) in cases.iter().enumerate() {
        // with weights: checked and run; without: checked only
        let with = tmp.path().join(format!("{i}-w"));
        let mut args = extra.to_vec();
        args.extend(["--with-weights", "--seed", "3"]);
        for r in export(space, ids, &with, &args) {
            files.push(with.join(r.file.unwrap()));
        }
        let without = tmp.path().join(format!("{i}-n"));
        for r in export(space, ids, &without, extra) {
            files.push(without.join(r.file.unwrap()));
        }
    }
    let out = Command::new(&py)
        .arg("-c")
        .arg(CHECK)
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(out.status.success(), "onnx check failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut compared = 0;
    let mut worst = 0.0f32;
    for f in &files {
        let Some(ort) = results[f.to_str().unwrap()].as_array() else { continue };
        let ort: Vec<f32> = ort.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let ours = run_tract(f);
        assert_eq!(ours.len(), ort.len(), "{}", f.display());
        // untrained weights and BatchNorm statistics of 0/1 let activations grow (logits in
        // the thousands): compare relative to the output's scale
        let scale = ort.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(&ort) {
            let rel = (a - b).abs() / scale;
            worst = worst.max(rel);
            assert!(
                rel <= 1e-4,
                "{}: tract {a} vs onnxruntime {b} (output scale {scale})",
                f.display()
            );
        }
        compared += 1;
    }
    eprintln!(
        "{} files pass onnx.checker; {compared} run in tract and onnxruntime, largest difference {worst:.2e} of the output scale",
        files.len()
    );
    assert_eq!(compared, files.len() / 2);
}

#[test]
fn rerun_skips_written_files_and_other_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    export("nb201", &["5", "6"], &out, &[]);
    let data = data();
    let o = out.to_str().unwrap();
    let (code, stdout, _) =
        nape(&["export", "nb201", "--data", &data, "--out", o, "--limit", "3", "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["exported"], 3);
    assert_eq!(j["written"], 3);
    let (code, stdout, _) =
        nape(&["export", "nb201", "--data", &data, "--out", o, "--limit", "3", "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["already_there"], 3);
    let (code, _, err) =
        nape(&["export", "nb201", "--data", &data, "--out", o, "--dataset", "cifar100"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("other options"), "{err}");
}

#[test]
fn missing_or_malformed_data_is_exit_3_with_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let out = tmp.path().join("out");
    let (ds, os) = (d.to_str().unwrap(), out.to_str().unwrap());
    for (space, rel) in [
        ("nb101", "nasbench101/nb101_labelled.jsonl"),
        ("nb201", "nasbench201/nb201_all_15625.csv"),
        ("tnb-micro", "naslib_zc/transbench101_micro.jsonl"),
    ] {
        let (code, _, err) = nape(&["export", space, "--data", ds, "--out", os]);
        assert_eq!(code, 3, "{space}: {err}");
        assert!(err.contains(&d.join(rel).display().to_string()), "{space}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // now malformed
        let p = d.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{\"truncated\": \n").unwrap();
        let (code, _, err) = nape(&["export", space, "--data", ds, "--out", os]);
        assert_eq!(code, 3, "{space}: {err}");
        assert!(err.contains(&p.display().to_string()), "{space}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // NAPE_DATA is used when --data is not given
    let out2 = Command::new(env!("CARGO_BIN_EXE_nape"))
        .args(["export", "nb101", "--out", os])
        .env("NAPE_DATA", tmp.path().join("elsewhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out2.stderr);
    assert_eq!(out2.status.code(), Some(3), "{err}");
    assert!(
        err.contains("elsewhere/nasbench101/nb101_labelled.jsonl") && err.contains("NAPE_DATA"),
        "{err}"
    );
}

#[test]
fn inspect_reports_the_published_parameter_count_of_exported_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nb101");
    let data = data();
    let (code, _, err) = nape(&[
        "export",
        "nb101",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "4",
        "--require",
        "val_acc_ep108",
    ]);
    assert_eq!(code, 0, "{err}");
    for r in read_manifest(&out.join("manifest.jsonl")).unwrap() {
        let f = out.join(r.file.as_ref().unwrap());
        let (code, stdout, err) = nape(&["inspect", f.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{err}");
        let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(j["params"].as_f64(), r.target("trainable_parameters"), "{}", r.id);
    }
}
