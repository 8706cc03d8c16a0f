//! Fused ops read as the ops that define them (tests/corpus/fused, written by
//! scripts/gen_fused.py): no unknown op, a note, the unfused network's counts, and, run by the
//! executor, the output ONNX Runtime computes from the fused file.

use nape::graph::Cg;
use nape::onnx::{load, ImportOptions};
use std::path::{Path, PathBuf};

/// Every file of the fixture folder but the unfused references.
const FUSED: [&str; 16] = [
    "rms23",
    "simplified_ln",
    "skip_ln",
    "skip_simplified",
    "biasgelu",
    "fastgelu",
    "quickgelu",
    "attention3d",
    "gqa3d",
    "gqa23",
    "mha",
    "ms_attention",
    "ms_attention_causal",
    "block23",
    "bert_ort",
    "block18",
];

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/corpus/fused/{name}.onnx"))
}

fn read(name: &str, shapes_only: bool) -> Cg {
    let opts = ImportOptions { shapes_only, ..Default::default() };
    load(&path(name), &opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn truth() -> serde_json::Value {
    let p = path("truth").with_extension("json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{}", p.display()));
    serde_json::from_str(&text).expect("truth.json")
}

#[test]
fn every_fused_op_is_read_with_a_note_and_no_unknown_op() {
    for name in FUSED {
        for shapes_only in [false, true] {
            let cg = read(name, shapes_only);
            let s = cg.summary();
            assert!(s.unknown.is_empty(), "{name}: {:?}", s.unknown);
            let noted = cg.notes.iter().any(|n| n.contains("fused ops read as the ops"));
            assert_eq!(noted, name != "block18", "{name}: {:?}", cg.notes);
        }
    }
}

#[test]
fn opset_23_reads_as_the_same_block_at_opset_18() {
    let (b18, b23) = (read("block18", true), read("block23", true));
    let torch = truth()["files"]["block23"]["torch_params"].as_u64().expect("torch_params");
    let (s18, s23) = (b18.summary(), b23.summary());
    assert_eq!(s23.params, torch, "RMSNormalization's and Attention's weights, each once");
    for (name, shapes_only) in
        [("block18", true), ("block18", false), ("block18_ext", true), ("block18_ext", false)]
    {
        let p = read(name, shapes_only).summary().params;
        assert_eq!(p, torch, "{name}, shapes only {shapes_only}: opset 18's causal mask (0 and finfo.min) is a constant, no parameter");
    }
    assert_eq!(s23.macs, s18.macs, "the attention's two products and the projections");
    let kinds = |cg: &Cg| {
        let mut k = cg.canonical().summary().by_kind;
        k.remove("Reshape"); // opset 18 writes K's transpose through two reshapes
        k
    };
    assert_eq!(kinds(&b23), kinds(&b18));
    assert_eq!(b23.canonical().summary().depth, b18.canonical().summary().depth);
}

#[test]
fn grouped_query_attention_counts_every_query_head_s_products() {
    let torch = truth()["files"]["gqa23"]["torch_params"].as_u64().expect("torch_params");
    let s = read("gqa23", true).summary();
    // the two projections (64 x 64 and 64 x 32, with biases), then per query head (8) of
    // width 8: Q.K^T and P.V over 16 x 16 positions; the projections' 16 x (64 x 96) MACs
    assert_eq!(s.params, torch);
    assert_eq!(s.macs, 16 * 64 * 96 + 2 * 8 * 16 * 16 * 8);
}

#[test]
fn onnx_runtime_s_fusions_keep_the_unfused_products() {
    let (plain, fused) = (read("bert", true).summary(), read("bert_ort", true).summary());
    assert_eq!(fused.macs, plain.macs);
    assert_eq!(fused.by_kind.get("LayerNorm"), plain.by_kind.get("LayerNorm"));
    // the residual sums the fusion moved into SkipLayerNormalization are back
    let adds = |cg: &Cg| cg.summary().by_kind.get("Add").copied().unwrap_or(0);
    assert!(adds(&read("bert_ort", true)) >= 4, "{:?}", fused.by_kind);
}

#[test]
fn layer_norms_written_out_below_opset_17_read_as_at_opset_17() {
    let (at17, at14) = (read("bert", true), read("bert14", true));
    assert!(at14.notes.iter().any(|n| n.contains("5 LayerNorms written out")), "{:?}", at14.notes);
    let (s17, s14) = (at17.summary(), at14.summary());
    assert_eq!((s14.params, s14.macs, s14.flops), (s17.params, s17.macs, s17.flops));
    assert_eq!(at14.canonical().structure_hash(), at17.canonical().structure_hash());
}

#[test]
fn four_bit_weights_read_as_the_float_network() {
    let float = read("nbits_float", true);
    let torch = truth()["files"]["nbits_float"]["torch_params"].as_u64().expect("torch_params");
    assert_eq!(float.summary().params, torch);
    for (name, shapes_only) in
        [("nbits", true), ("nbits", false), ("nbits_sym", true), ("nbits_sym", false)]
    {
        let cg = read(name, shapes_only);
        let (s, f) = (cg.summary(), float.summary());
        assert_eq!(
            (s.params, s.macs, s.flops),
            (f.params, f.macs, f.flops),
            "{name} {shapes_only}"
        );
        assert_eq!(cg.canonical().structure_hash(), float.canonical().structure_hash(), "{name}");
        assert!(cg.notes.iter().any(|n| n.contains("MatMulNBits, 2 ops")), "{:?}", cg.notes);
    }
}

#[test]
fn half_precisions_read_as_the_float32_file_and_a_causal_mask_is_no_parameter() {
    let float = read("masked", true);
    let torch = truth()["files"]["masked"]["torch_params"].as_u64().expect("torch_params");
    let f = float.summary();
    assert_eq!(
        f.params, torch,
        "the [1, 1, 16, 16] mask (0 and finfo.min) is no table, no parameter"
    );
    for name in ["masked", "masked_f16", "masked_bf16"] {
        for shapes_only in [true, false] {
            let cg = read(name, shapes_only);
            let s = cg.summary();
            assert_eq!(
                (s.params, s.macs, s.flops),
                (f.params, f.macs, f.flops),
                "{name} {shapes_only}"
            );
            assert_eq!(
                cg.canonical().structure_hash(),
                float.canonical().structure_hash(),
                "{name}"
            );
            assert!(!cg.notes.iter().any(|n| n.contains("relative-position")), "{:?}", cg.notes);
        }
    }
}

fn keras_truth() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/keras/truth.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("keras truth")).expect("json")
}

fn keras_ln() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/keras/keras_ln.onnx")
}

#[test]
fn tensorflow_s_written_out_layer_norm_reads_as_one() {
    for shapes_only in [true, false] {
        let cg = load(&keras_ln(), &ImportOptions { shapes_only, ..Default::default() })
            .expect("keras_ln.onnx");
        let s = cg.summary();
        assert_eq!(s.by_kind.get("LayerNorm"), Some(&1), "{:?}", s.by_kind);
        for gone in ["Neg", "Reciprocal", "Sqrt", "GlobalAvgPool"] {
            assert!(!s.by_kind.contains_key(gone), "{gone}: {:?}", s.by_kind);
        }
        assert_eq!(s.params, keras_truth()["ln_params"].as_u64().unwrap(), "Keras' count");
    }
}

#[cfg(feature = "torch")]
mod computes {
    use super::*;
    use nape::exec::{ExecOptions, Executor, Init, Taps};
    use tch::{Kind, Tensor};

    fn ours(name: &str, shape: &[i64]) -> Vec<f64> {
        let cg = read(name, false);
        let ex =
            Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 0)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let n: i64 = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (0.37 * i as f64).sin() as f32).collect();
        let x = Tensor::from_slice(&x).reshape(shape);
        let out = nape::exec::no_grad(|| ex.forward(&[x], Taps::default())).expect("forward");
        let y = out.outputs[0].to_kind(Kind::Double).flatten(0, -1);
        Vec::<f64>::try_from(&y).expect("f64 values")
    }

    #[test]
    fn tensorflow_s_layer_norm_read_as_one_computes_what_onnx_runtime_computes() {
        let cg = load(&keras_ln(), &ImportOptions::default()).expect("keras_ln.onnx");
        let ex =
            Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 0)
                .expect("executor");
        let x: Vec<f32> = (0..16 * 32).map(|i| (0.37 * i as f64).sin() as f32).collect();
        let x = Tensor::from_slice(&x).reshape([1, 16, 32]);
        let out = nape::exec::no_grad(|| ex.forward(&[x], Taps::default())).expect("forward");
        let ours = Vec::<f64>::try_from(&out.outputs[0].to_kind(Kind::Double).flatten(0, -1))
            .expect("f64 values");
        let theirs: Vec<f64> = keras_truth()["ln_ort_output"]
            .as_array()
            .expect("output")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), theirs.len());
        let err = ours.iter().zip(&theirs).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("keras_ln: {err:.2e} from ONNX Runtime's output");
        assert!(err < 1e-4, "{err:.3e}");
    }

    #[test]
    fn the_expansions_compute_what_onnx_runtime_computes_from_the_fused_file() {
        let truth = truth();
        let more = ["bert14", "block18_ext", "nbits_float", "nbits", "nbits_sym", "masked"];
        // ONNX Runtime runs no bfloat16 on the CPU: for the half precisions, PyTorch's float32
        // output of the weights they hold
        let more = more.into_iter().chain(["masked_f16", "masked_bf16"]);
        for name in FUSED.into_iter().chain(more) {
            let t = &truth["files"][name];
            let shape: Vec<i64> = t["input_shape"]
                .as_array()
                .expect("input_shape")
                .iter()
                .map(|d| d.as_i64().expect("dim"))
                .collect();
            let reference = if t["ort_output"].is_null() { "torch_output" } else { "ort_output" };
            let theirs: Vec<f64> = t[reference]
                .as_array()
                .expect("output")
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ours = ours(name, &shape);
            assert_eq!(ours.len(), theirs.len(), "{name}");
            let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = ours.iter().zip(&theirs).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{name}: {err:.2e} from the {reference} of the file");
            assert!(err < 1e-4, "{name}: {err:.3e} from the {reference}");
        }
    }
}
