//! One network, three exporters (tests/corpus/exporters): nape's own export, PyTorch's
//! TorchScript export and its dynamo export of the same NAS-Bench-201 cell give one canonical
//! graph (the same `graph_hash` and parameter count) and, through the bundled model, the same
//! prediction. `make exporters-check` runs the same check on 200 NB-201 and 200 NB-101 cells.
//! A Keras network written by tf2onnx and its PyTorch twin do the same (tests/corpus/keras), as
//! do one network's exports at opsets 17, 9 and 7 and with `auto_pad` (tests/corpus/opsets).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const FORMS: [&str; 3] = ["nape", "torchscript", "dynamo"];
const CELLS: [&str; 3] = ["0", "3", "105"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(form: &str) -> Vec<String> {
    let dir = root().join("tests/corpus/exporters/nb201").join(form);
    CELLS
        .iter()
        .map(|c| {
            let p = dir.join(format!("{c}.onnx"));
            assert!(p.is_file(), "missing fixture {} (see tests/corpus/exporters)", p.display());
            p.display().to_string()
        })
        .collect()
}

/// `nape ARGS FILES` as JSON lines (or one document), keyed by file name.
fn nape(args: &[&str], files: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nape"))
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .args(files)
        .output()
        .expect("run nape");
    assert!(out.status.success(), "nape {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn by_cell(rows: Vec<serde_json::Value>) -> BTreeMap<String, serde_json::Value> {
    rows.into_iter()
        .map(|r| {
            let f = r["file"].as_str().expect("file").to_string();
            (Path::new(&f).file_stem().unwrap().to_string_lossy().to_string(), r)
        })
        .collect()
}

#[test]
fn three_exports_give_one_canonical_graph() {
    let mut seen: Vec<BTreeMap<String, serde_json::Value>> = Vec::new();
    for form in FORMS {
        let text = nape(&["inspect", "--canonical", "--jsonl", "-q"], &files(form));
        let rows = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        seen.push(by_cell(rows));
    }
    for cell in CELLS {
        for (form, rows) in FORMS.iter().zip(&seen).skip(1) {
            for key in ["graph_hash", "params", "macs", "nodes"] {
                assert_eq!(rows[cell][key], seen[0][cell][key], "cell {cell}, {form}: {key}");
            }
        }
    }
}

#[cfg(feature = "torch")]
#[test]
fn three_exports_give_one_prediction() {
    let mut seen = Vec::new();
    for form in FORMS {
        let doc: serde_json::Value =
            serde_json::from_str(&nape(&["predict", "--json", "-q"], &files(form))).expect("json");
        let rows = doc["predictions"].as_array().expect("predictions").clone();
        seen.push(by_cell(rows));
    }
    for cell in CELLS {
        let p0 = seen[0][cell]["prediction"].as_f64().expect("prediction");
        for (form, rows) in FORMS.iter().zip(&seen).skip(1) {
            let p = rows[cell]["prediction"].as_f64().expect("prediction");
            assert!((p - p0).abs() < 1e-6, "cell {cell}, {form}: {p} against nape's {p0}");
        }
    }
}

/// The same small network written by Keras through tf2onnx and by PyTorch (tests/corpus/keras,
/// scripts/gen_keras.py): NHWC input with Keras' normalization layers, a BatchNorm as
/// `Mul` + `Add`, zero padding as `Pad`s, DenseNet-style concatenations one feature at a time,
/// a softmax classifier; one canonical graph and one prediction.
fn keras_pair() -> Vec<String> {
    let dir = root().join("tests/corpus/keras");
    ["keras", "torch"].iter().map(|f| dir.join(format!("{f}.onnx")).display().to_string()).collect()
}

#[test]
fn keras_through_tf2onnx_reads_as_the_pytorch_export() {
    let text = nape(&["inspect", "--canonical", "--jsonl", "-q"], &keras_pair());
    let rows: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for key in ["graph_hash", "params", "macs", "flops", "nodes", "depth", "by_kind"] {
        assert_eq!(
            rows[0][key], rows[1][key],
            "{key}: Keras {} against PyTorch {}",
            rows[0][key], rows[1][key]
        );
    }
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/corpus/keras/truth.json")).expect("truth"),
    )
    .expect("json");
    // both frameworks count the same trainable parameters (BatchNorm's scale and shift)
    assert_eq!(truth["keras_trainable"], truth["torch_params"]);
}

#[cfg(feature = "torch")]
#[test]
fn keras_through_tf2onnx_gets_the_pytorch_export_s_prediction() {
    let doc: serde_json::Value =
        serde_json::from_str(&nape(&["predict", "--json", "-q"], &keras_pair())).expect("json");
    let p: Vec<f64> = doc["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|r| r["prediction"].as_f64().expect("prediction"))
        .collect();
    assert!((p[0] - p[1]).abs() < 1e-6, "Keras {} against PyTorch {}", p[0], p[1]);
}

/// One small network as PyTorch writes it at opset 17 and at opset 9, as ONNX's converter
/// writes that at opset 7, and the opset-17 file with `auto_pad` (tests/corpus/opsets,
/// scripts/gen_opsets.py): a `ceil_mode` max pool or end pads, a padded average pool or a `Pad`
/// before it, a `Pad` of nothing, `chunk` as `Slice`s or one `Split`, `Resize` or `Upsample`.
fn opset_files() -> Vec<String> {
    let dir = root().join("tests/corpus/opsets");
    ["op17", "op9", "op7", "auto_pad"]
        .iter()
        .map(|f| dir.join(format!("{f}.onnx")).display().to_string())
        .collect()
}

#[test]
fn older_opsets_and_auto_pad_read_as_today_s_export() {
    let text = nape(&["inspect", "--canonical", "--jsonl", "-q"], &opset_files());
    let rows: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for row in &rows[1..] {
        for key in ["graph_hash", "params", "macs", "flops", "nodes", "depth", "by_kind"] {
            assert_eq!(row[key], rows[0][key], "{}: {key}", row["file"]);
        }
    }
}

#[cfg(feature = "torch")]
#[test]
fn older_opsets_and_auto_pad_get_today_s_prediction() {
    let doc: serde_json::Value =
        serde_json::from_str(&nape(&["predict", "--json", "-q"], &opset_files())).expect("json");
    let rows = doc["predictions"].as_array().expect("predictions");
    let p0 = rows[0]["prediction"].as_f64().expect("prediction");
    for r in &rows[1..] {
        let p = r["prediction"].as_f64().expect("prediction");
        assert!((p - p0).abs() < 1e-6, "{}: {p} against opset 17's {p0}", r["file"]);
    }
}

/// A file written as the Caffe-era networks of the ONNX model zoo are (tests/corpus/opsets/
/// legacy.onnx: opset 7, IR 3, every weight also a graph input): its two `LRN`s are LRNs, not
/// unknown ops, and its parameters are the weights, BatchNorm's scale and shift.
#[test]
fn a_caffe_era_file_reads_with_its_local_response_norms() {
    let file = root().join("tests/corpus/opsets/legacy.onnx").display().to_string();
    let row: serde_json::Value =
        serde_json::from_str(nape(&["inspect", "--jsonl", "-q", "--strict"], &[file]).trim())
            .expect("json");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/corpus/opsets/truth.json")).expect("truth"),
    )
    .expect("json");
    assert_eq!(row["params"], truth["files"]["legacy"]["params"]);
    assert_eq!(row["by_kind"]["LRN"], 2, "{}", row["by_kind"]);
    let inputs = row["input_shapes"].as_object().map(|m| m.len());
    assert_eq!(inputs, Some(1), "the weights are no inputs: {}", row["input_shapes"]);
}

/// The Caffe2-era ops ONNX dropped at opset 10 or defines by a function (tests/corpus/opsets/
/// experimental.onnx: `ImageScaler`, `Crop`, `Scale`, `MeanVarianceNormalization`,
/// `LpNormalization`) read as the ops they are made of, under `--strict`: the parameters are the
/// weights (`ImageScaler`'s scale and bias are attributes), and the input scaling is left out
/// of the canonical graph as any input normalization is. Before, `ImageScaler`, `Crop` and
/// `Scale` stopped the shape analysis and the other two were unknown ops.
#[test]
fn caffe2_era_ops_read_as_what_they_compute() {
    let file = root().join("tests/corpus/opsets/experimental.onnx").display().to_string();
    let read = |flags: &[&str]| -> serde_json::Value {
        let mut args = vec!["inspect", "--jsonl", "-q", "--strict"];
        args.extend_from_slice(flags);
        serde_json::from_str(nape(&args, std::slice::from_ref(&file)).trim()).expect("json")
    };
    let (raw, canonical) = (read(&[]), read(&["--canonical"]));
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/corpus/opsets/truth.json")).expect("truth"),
    )
    .expect("json");
    assert_eq!(raw["params"], truth["files"]["experimental"]["params"]);
    assert_eq!(raw["unknown_ops"], serde_json::json!({}), "{raw}");
    assert_eq!(raw["by_kind"]["Slice"], 2, "the two crops: {}", raw["by_kind"]);
    // the ImageScaler's Mul and Add are the input's normalization
    let muls = |row: &serde_json::Value| row["by_kind"]["Mul"].as_u64().unwrap_or(0);
    assert_eq!(muls(&raw) - muls(&canonical), 1, "{} / {}", raw["by_kind"], canonical["by_kind"]);
}
