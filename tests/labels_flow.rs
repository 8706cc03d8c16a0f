//! A user's own family end to end, through the binary: export NAS-Bench-201 networks, write
//! a labels CSV from the export's manifest (with one file that is not ONNX), fine-tune the
//! bundled model on it with `--labels`, predict with the saved model from another models
//! folder, evaluate it on held-out labels with the fitted baselines, and run the few-shot
//! protocol inside the file; then the bad inputs a labels file can have. Needs the benchmark
//! data (`NAPE_DATA` or `../shared/data`) for the export.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::Command;

fn nape(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nape"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run nape");
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

/// Exports `n` NB-201 cells into `dir` and returns (file, CIFAR-10 accuracy) per cell.
fn export(dir: &Path, n: usize) -> Vec<(String, f64)> {
    let d = dir.to_str().unwrap();
    let (code, _, err) = nape(&["export", "nb201", "--out", d, "--limit", &n.to_string()]);
    assert_eq!(code, 0, "nape export failed (is the benchmark data there?): {err}");
    let text = std::fs::read_to_string(dir.join("manifest.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            let acc = r["targets"]["cifar10_test_ep200"].as_f64().unwrap();
            (r["file"].as_str().unwrap().to_string(), acc)
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[(String, f64)]) {
    let mut s = String::from("file,top1,error\n");
    for (f, a) in rows {
        s.push_str(&format!("{f},{a},{}\n", 100.0 - a));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn finetune_predict_and_evaluate_on_a_labels_file() {
    let root = tempfile::tempdir().unwrap();
    let nets = root.path().join("nets");
    let rows = export(&nets, 40);
    std::fs::write(nets.join("broken.onnx"), b"not an onnx file").unwrap();
    let mut train: Vec<(String, f64)> = rows[..24].to_vec();
    train.push(("broken.onnx".into(), 50.0));
    write_csv(&nets.join("train.csv"), &train);
    write_csv(&nets.join("held_out.csv"), &rows[24..]);
    let (models, runs, cache) =
        (root.path().join("models"), root.path().join("runs"), root.path().join("cache"));
    let common = [
        "--models",
        models.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    let labels = nets.join("train.csv");
    let mut args = vec!["finetune", "--labels", labels.to_str().unwrap(), "--target", "top1"];
    args.extend(["--save-as", "mine", "--epochs", "3", "--folds", "3", "--json"]);
    args.extend(common);
    let (code, out, err) = nape(&args);
    assert_eq!(code, 5, "a file that does not parse is skipped (exit 5): {err}");
    assert!(err.contains("skipped broken.onnx"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["n"], 24);
    assert!(report["choice"]["epochs"].as_u64().unwrap() <= 3);
    assert!(models.join("mine").join("baselines.json").is_file());

    // predict with the saved model, from the other models folder
    let files: Vec<String> =
        rows[24..28].iter().map(|r| nets.join(&r.0).display().to_string()).collect();
    let mut args = vec!["predict", "--model", "mine", "--models", models.to_str().unwrap()];
    args.push("--json");
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = nape(&args);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["predicts"].as_str().unwrap().contains("top1 as labelled in"), "{doc}");
    for p in doc["predictions"].as_array().unwrap() {
        let (v, u) = (p["prediction"].as_f64().unwrap(), p["uncertainty"].as_f64().unwrap());
        assert!(v > 0.0 && v < 100.0 && u.is_finite(), "percent like the labels: {p}");
        // a fine-tuned model knows its family: no in-domain reference, nothing shrunk
        assert!(p["in_domain"].is_null(), "{p}");
    }

    // evaluate on held-out labels: the fitted baselines are scored on the same rows
    let held = nets.join("held_out.csv");
    let mut args = vec!["eval", "--model", "mine", "--labels", held.to_str().unwrap()];
    args.extend(["--target", "top1", "--json"]);
    args.extend(common);
    let (code, out, err) = nape(&args);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["n"], 16);
    for k in ["model", "params", "flops", "ridge", "ridge_logs", "forest_graf"] {
        assert!(r["metrics"][k]["spearman"].as_f64().is_some(), "{k}: {r}");
    }
    let csv =
        std::fs::read_to_string(Path::new(r["run_dir"].as_str().unwrap()).join("predictions.csv"));
    assert!(csv
        .unwrap()
        .starts_with("id,truth,prediction,uncertainty,params,params_effective,flops,ridge,"));

    // pretraining from scratch on the labels file alone (no NB-101): 24 readable rows split
    // 5 / 2 / 17, the contrastive stage on the rows' own graphs
    let mut args = vec!["pretrain", "--labels", labels.to_str().unwrap(), "--target", "top1"];
    args.extend(["--config", "configs/tiny.json", "--name", "scratch", "--json"]);
    args.extend(common);
    let (code, out, err) = nape(&args);
    assert_eq!(code, 5, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in ["model", "ridge_logs", "forest_graf"] {
        assert_eq!(r["metrics"][k]["n"].as_f64(), Some(5.0), "{k}: {r}");
    }
    assert!(models.join("scratch").join("meta.json").is_file());

    // the few-shot protocol inside the file, with an error target where lower is better
    let mut args = vec!["finetune", "--labels", held.to_str().unwrap(), "--target", "error"];
    args.extend(["--samples", "8", "--seeds", "2", "--epochs", "2", "--folds", "2"]);
    args.extend(["--lower-is-better", "--json"]);
    args.extend(common);
    let (code, out, err) = nape(&args);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    assert!(r["summary"]["after_spearman_mean"].as_f64().unwrap().is_finite());
}

#[test]
fn bad_labels_files_name_the_row_and_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    for f in ["a.onnx", "b.onnx", "c.onnx"] {
        std::fs::copy("tests/corpus/zoo/resnet18.onnx", dir.join(f)).unwrap();
    }
    let run = |csv: &str, extra: &[&str]| {
        let p = dir.join("labels.csv");
        std::fs::write(&p, csv).unwrap();
        let mut args = vec!["finetune", "--labels", p.to_str().unwrap(), "--save-as", "x"];
        args.extend(extra);
        args.extend(["--models", dir.to_str().unwrap(), "--runs", dir.to_str().unwrap()]);
        nape(&args)
    };
    let (code, _, err) = run("file,acc\na.onnx,1\nb.onnx,2\na.onnx,3\n", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("labels.csv:4: a.onnx: the same network file as line 2"), "{err}");
    let (code, _, err) = run("file,acc\na.onnx,1\nb.onnx,NaN\nc.onnx,3\n", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("labels.csv:3: b.onnx: label acc = NaN is not finite"), "{err}");
    let (code, _, err) = run("file,acc\na.onnx,1\ngone.onnx,2\nc.onnx,3\n", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("labels.csv:3") && err.contains("gone.onnx"), "{err}");
    let (code, _, err) = run("file,acc\na.onnx,1\nb.onnx,2\nc.onnx,3\n", &["--target", "top5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no target column 'top5' (columns: acc)"), "{err}");
    let (code, _, err) = run("file,acc\na.onnx,1\nb.onnx,2\n", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("2 labelled rows; at least 3"), "{err}");
    assert!(!dir.join("x").exists(), "nothing half-written");
}

/// `nape proxies --labels`: the labels file's networks are scored and `--correlate` ranks each
/// proxy against its target column (an error column ranks the other way round). `--target`
/// needs `--labels`, and `--labels` names the networks alone.
#[test]
fn proxies_correlate_with_a_labels_files_target() {
    let root = tempfile::tempdir().unwrap();
    let nets = root.path().join("nets");
    let rows = export(&nets, 30);
    let labels = nets.join("labels.csv");
    write_csv(&labels, &rows);
    let (l, cache) = (labels.to_str().unwrap(), root.path().join("cache"));
    let c = cache.to_str().unwrap();
    let base = ["proxies", "--labels", l, "--names", "params,flops", "--cache", c];
    let (code, out, err) = nape(&[&base[..], &["--target", "error", "--correlate"]].concat());
    assert_eq!(code, 0, "{err}");
    let row = |out: &str, p: &str| -> Vec<String> {
        let line = out.lines().find(|x| x.starts_with(p)).unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert!(out.lines().next().is_some_and(|h| h.contains("error")), "{out}");
    let params = row(&out, "params");
    assert_eq!(params[1], "30", "{out}");
    // the same ranking against top1 is the opposite sign
    let (code, top1, err) = nape(&[&base[..], &["--target", "top1", "--correlate"]].concat());
    assert_eq!(code, 0, "{err}");
    let (a, b): (f64, f64) = (params[2].parse().unwrap(), row(&top1, "params")[2].parse().unwrap());
    assert!(b > 0.3 && (a + b).abs() < 1e-9, "error {a}, top1 {b}");
    // two numeric columns: the target must be named
    let (code, _, err) = nape(&[&base[..], &["--correlate"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--target"), "{err}");
    let (code, _, err) = nape(&["proxies", "--target", "top1", l, "--cache", c]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = nape(&[&base[..], &[nets.join(&rows[0].0).to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{err}");
}
