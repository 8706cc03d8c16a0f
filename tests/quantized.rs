//! Quantized and float16 files read as the float network they hold (tests/corpus/quantized,
//! written by scripts/gen_quantized.py with ONNX Runtime's quantizers and float16 converter):
//! the same counts, costs and graph as the float file, a note saying what was read, and, run by
//! the executor on the file's own (dequantized) weights, the output ONNX Runtime computes from
//! the quantized file.

use nape::graph::Cg;
use nape::onnx::{load, ImportOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FORMS: [&str; 5] = ["qdq", "qoperator", "dynamic", "fp16", "fp16_io32"];

fn path(form: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/corpus/quantized/{form}.onnx"))
}

fn read(form: &str, shapes_only: bool) -> Cg {
    let opts = ImportOptions { shapes_only, ..Default::default() };
    load(&path(form), &opts).unwrap_or_else(|e| panic!("{form}: {e}"))
}

/// Node counts by kind, a ReLU6 counted as a ReLU (a quantizer folds either into a zero point,
/// and the file keeps only the calibrated range, so nape restores a ReLU).
fn kinds_relu6_as_relu(cg: &Cg) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for (k, n) in cg.summary().by_kind {
        *kinds.entry(if k == "Relu6" { "Relu".into() } else { k }).or_default() += n;
    }
    kinds
}

#[test]
fn every_form_reads_as_the_float_network_with_a_note() {
    let float = read("float", false);
    let f = float.summary();
    assert_eq!(f.params, 3578, "the float file: torch's 3,674 less the BatchNorms folded away");
    for form in FORMS {
        for shapes_only in [false, true] {
            let cg = read(form, shapes_only);
            let s = cg.summary();
            let what = format!("{form} (shapes only: {shapes_only})");
            assert_eq!((s.params, s.macs, s.flops), (f.params, f.macs, f.flops), "{what}");
            // (the dynamic form adds a Linear layer's bias by its own Add, which the
            // canonical graph folds, as it does for any exporter that writes one)
            let depth = cg.canonical().summary().depth;
            assert_eq!(depth, float.canonical().summary().depth, "{what}");
            assert!(s.unknown.is_empty(), "{what}: {:?}", s.unknown);
            assert_eq!(
                kinds_relu6_as_relu(&cg.canonical()),
                kinds_relu6_as_relu(&float.canonical()),
                "{what}"
            );
            let note = |text: &str| cg.notes.iter().any(|n| n.contains(text));
            let quantized = !form.starts_with("fp16");
            assert_eq!(note("a quantized network"), quantized, "{what}: {:?}", cg.notes);
            assert_eq!(
                note("not in topological order"),
                form == "fp16_io32",
                "{what}: {:?}",
                cg.notes
            );
        }
    }
    // the forms that keep every activation op have the float network's very graph
    for form in ["dynamic", "fp16", "fp16_io32"] {
        let hash = read(form, false).canonical().structure_hash();
        assert_eq!(hash, float.canonical().structure_hash(), "{form}");
    }
    // the static forms: the quantizer folded two ReLUs and two ReLU6s into zero points
    let qdq = read("qdq", false);
    assert!(
        qdq.notes[0].contains("4 ReLUs the quantizer folded into a zero point restored"),
        "{:?}",
        qdq.notes
    );
}

#[cfg(feature = "torch")]
mod computes {
    use super::*;
    use nape::exec::{ExecOptions, Executor, Init, Taps};
    use tch::{Kind, Tensor};

    /// ONNX Runtime's output of each file on the input x[i] = sin(0.37 i), in truth.json.
    fn ort_output(form: &str) -> Vec<f64> {
        let truth = path("truth").with_extension("json");
        let text = std::fs::read_to_string(&truth).expect("tests/corpus/quantized/truth.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("truth.json");
        let out = v["files"][form]["ort_output"].as_array().unwrap_or_else(|| panic!("{form}"));
        out.iter().map(|x| x.as_f64().expect("number")).collect()
    }

    fn ours(form: &str) -> Vec<f64> {
        let cg = read(form, false);
        let ex =
            Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 0)
                .unwrap_or_else(|e| panic!("{form}: {e}"));
        let x: Vec<f32> = (0..3 * 32 * 32).map(|i| (0.37 * i as f32).sin()).collect();
        let x = Tensor::from_slice(&x).reshape([1, 3, 32, 32]);
        let out = nape::exec::no_grad(|| ex.forward(&[x], Taps::default())).expect("forward");
        let y = out.outputs[0].to_kind(Kind::Double).flatten(0, -1);
        Vec::<f64>::try_from(&y).expect("f64 values")
    }

    /// max |a - b| over max |b|.
    fn relative(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn the_float_reading_computes_what_onnx_runtime_computes_from_the_file() {
        let float = ours("float");
        assert!(relative(&float, &ort_output("float")) < 1e-5, "the float file itself");
        for form in FORMS {
            let (ours, theirs) = (ours(form), ort_output(form));
            // int8 activations and weights: within quantization error of the quantized file
            // (a weight dequantized on the wrong axis, or a ReLU left out, is off by far more)
            let tolerance = if form.starts_with("fp16") { 2e-3 } else { 0.05 };
            let err = relative(&ours, &theirs);
            eprintln!("{form}: {err:.5} from ONNX Runtime's output of the file");
            assert!(err < tolerance, "{form}: {err:.4} from ONNX Runtime's output of the file");
        }
    }
}
