//! Bad input never panics: each case gives a one-line error naming the file (and the node and
//! op where there is one) and the documented exit code (3 missing data or I/O, 4 invalid ONNX,
//! 5 partial success in a batch).

use nape::onnx::write::{ModelBuilder, Weights};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::pb;

fn nape(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nape")).args(args).output().expect("run nape");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn small_model() -> Vec<u8> {
    let mut b = ModelBuilder::new("t", "x", &[1, 3, 8, 8], Weights::Data(1));
    let c = b.conv("conv", "x", 4, 3, 1, 1, 1, false);
    let r = b.relu("relu", &c);
    b.finish(&r).to_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn check(path: &Path, extra: &[&str], code: i32, must_contain: &[&str]) {
    let p = path.to_str().unwrap();
    let mut args = vec!["inspect", p];
    args.extend_from_slice(extra);
    let (got, _, err) = nape(&args);
    assert!(!err.contains("panicked"), "{p}: panic: {err}");
    assert_eq!(got, code, "{p}: exit code {got}, stderr: {err}");
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{p}: error is not one line: {err}");
    assert!(line.contains(p), "{p}: error does not name the file: {line}");
    for s in must_contain {
        assert!(line.contains(s), "{p}: error does not mention '{s}': {line}");
    }
}

#[test]
fn each_kind_of_bad_file_gets_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let good = small_model();
    check(&write(dir.path(), "empty.onnx", &[]), &[], 4, &["empty"]);
    check(
        &write(dir.path(), "truncated.onnx", &good[..good.len() / 2]),
        &[],
        4,
        &["not a valid ONNX"],
    );
    let mut rng = 0x1234_5678_u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    check(&write(dir.path(), "random.onnx", &noise), &[], 4, &[]);
    let tensor = pb::TensorProto {
        name: "w".into(),
        dims: vec![2],
        float_data: vec![1., 2.],
        data_type: 1,
        ..Default::default()
    };
    check(
        &write(dir.path(), "tensor.onnx", &tensor.encode_to_vec()),
        &[],
        4,
        &["not a valid ONNX"],
    );
    // a well-formed protobuf that decodes as a ModelProto but holds no graph
    let hollow =
        pb::ModelProto { producer_name: "someone".into(), ir_version: 8, ..Default::default() };
    check(&write(dir.path(), "hollow.onnx", &hollow.encode_to_vec()), &[], 4, &["no graph"]);
    check(&dir.path().join("missing.onnx"), &[], 3, &["not found"]);
}

#[test]
fn unsupported_op_is_an_error_under_strict_and_unknown_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = pb::ModelProto::decode(small_model().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node[1].op_type = "FancyActivation".into();
    g.node[1].domain = "com.example".into();
    m.opset_import.push(pb::OperatorSetIdProto { domain: "com.example".into(), version: 1 });
    let p = write(dir.path(), "custom.onnx", &m.encode_to_vec());
    check(&p, &["--strict"], 4, &["FancyActivation", "relu", "unsupported op"]);
    // without --strict the op has no shape rule in tract: still a clean error naming the node
    let (code, _, err) = nape(&["inspect", p.to_str().unwrap()]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(code == 0 || code == 4, "{code}: {err}");
    if code == 4 {
        assert!(err.contains("FancyActivation") && err.contains("relu"), "{err}");
    }
}

#[test]
fn shape_mismatch_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = pb::ModelProto::decode(small_model().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    // Add a [1,4,8,8] activation to a [5] constant: not broadcastable
    g.initializer.push(pb::TensorProto {
        name: "c5".into(),
        dims: vec![5],
        data_type: 1,
        float_data: vec![0.; 5],
        ..Default::default()
    });
    let last = g.node[1].output[0].clone();
    g.node.push(pb::NodeProto {
        op_type: "Add".into(),
        name: "bad_add".into(),
        input: vec![last, "c5".into()],
        output: vec!["y".into()],
        ..Default::default()
    });
    g.output[0].name = "y".into();
    let p = write(dir.path(), "mismatch.onnx", &m.encode_to_vec());
    check(&p, &[], 4, &["bad_add"]);
    // wrong --input-shape: rank and value
    let ok = write(dir.path(), "ok.onnx", &small_model());
    check(&ok, &["--input-shape", "1,3,8"], 4, &["rank"]);
    check(&ok, &["--input-shape", "1,5,8,8"], 4, &["declared"]);
}

#[test]
fn batch_keeps_going_and_reports_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a_good.onnx", &small_model());
    write(dir.path(), "b_bad.onnx", b"not a model at all");
    let (code, out, err) = nape(&["inspect", "--jsonl", dir.path().to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[0]["params"], 4 * 3 * 9);
    assert_eq!(lines[1]["ok"], false);
    assert!(err.contains("b_bad.onnx"), "{err}");
}

/// [`small_model`] with its input's height and width left symbolic (`H`, `W`), as
/// `torch.onnx.export(..., dynamic_axes=...)` writes them.
fn symbolic_size_model() -> Vec<u8> {
    use pb::tensor_shape_proto::dimension::Value;
    let mut m = pb::ModelProto::decode(small_model().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let Some(pb::type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("a tensor input")
    };
    let dims = &mut t.shape.as_mut().unwrap().dim;
    for (d, name) in dims.iter_mut().zip(["N", "C", "H", "W"]).filter(|(_, n)| *n != "C") {
        d.value = Some(Value::DimParam(name.into()));
    }
    g.output.iter_mut().for_each(|o| o.r#type = None);
    m.encode_to_vec()
}

#[test]
fn a_symbolic_image_size_is_refused_until_bound_and_a_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "b_dynamic.onnx", &symbolic_size_model());
    check(&p, &[], 4, &["'H' (dim 2), 'W' (dim 3) are not fixed", "--input-shape 1,3,H,W"]);
    write(dir.path(), "a_good.onnx", &small_model());
    let folder = dir.path().to_str().unwrap();
    let (code, out, err) = nape(&["inspect", "--jsonl", folder]);
    assert_eq!(code, 5, "{err}");
    let macs = |out: &str| -> Vec<Option<u64>> {
        let line = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["macs"].as_u64();
        out.lines().map(line).collect()
    };
    assert_eq!(macs(&out), [Some(4 * 3 * 9 * 64), None]);
    for bind in [&["--dim", "H=8", "--dim", "W=8"][..], &["--input-shape", "1,3,8,8"]] {
        let mut args = vec!["inspect", "--jsonl", folder];
        args.extend_from_slice(bind);
        let (code, out, err) = nape(&args);
        assert_eq!(code, 0, "{bind:?}: {err}");
        assert_eq!(macs(&out), [Some(4 * 3 * 9 * 64); 2], "{bind:?}");
        let bound: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
        assert_eq!(bound["input_shapes"]["x"], serde_json::json!([1, 3, 8, 8]), "{bind:?}");
    }
    let (code, _, err) = nape(&["inspect", p.to_str().unwrap(), "--dim", "H"]);
    assert_eq!(code, 2, "a --dim without a size is a usage error: {err}");
}

#[test]
fn fuzzer_findings_stay_clean_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("tests/fuzz_regressions").flatten() {
        n += 1;
        check(&e.path(), &[], 4, &[]);
    }
    assert!(n >= 1, "no regression files in {}", dir.display());
}

/// `predict` (run by nape-torch, which `nape` hands it to) keeps the documented codes: every
/// file missing is 3, every file invalid is 4, some of each with a good one is 5.
#[cfg(feature = "torch")]
#[test]
fn predict_keeps_the_exit_codes_through_nape_torch() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let garbage = write(dir.path(), "garbage.onnx", b"not a protobuf at all");
    let good = write(dir.path(), "good.onnx", &small_model());
    let run = |files: &[&Path]| {
        let mut args = vec!["predict", "-q"];
        args.extend(files.iter().map(|p| p.to_str().unwrap()));
        let (code, _, err) = nape(&args);
        assert!(!err.contains("panicked"), "panic: {err}");
        code
    };
    assert_eq!(run(&[&missing]), 3);
    assert_eq!(run(&[&garbage]), 4);
    assert_eq!(run(&[&good, &missing]), 5);
}

/// `--memory` bounds the networks `nape proxies` runs at once: a budget no network fits in
/// runs each alone, with a warning naming it, and changes no value; a budget that is not a
/// size is a usage error.
#[cfg(feature = "torch")]
#[test]
fn proxies_under_a_tiny_memory_budget_run_each_network_alone_with_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &small_model());
    let b = write(dir.path(), "b.onnx", &small_model());
    let cache = dir.path().join("cache");
    let run = |cache: &str, extra: &[&str]| {
        let mut args = vec!["proxies", a.to_str().unwrap(), b.to_str().unwrap()];
        args.extend_from_slice(&["--names", "synflow,snip", "--images", "gaussian", "--json"]);
        args.extend_from_slice(&["--threads", "2", "--cache", cache]);
        args.extend_from_slice(extra);
        nape(&args)
    };
    let (code, free, _) = run(cache.join("free").to_str().unwrap(), &[]);
    assert_eq!(code, 0);
    let (code, tight, err) = run(cache.join("tight").to_str().unwrap(), &["--memory", "0.001"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(free, tight, "the budget changed a value");
    assert_eq!(err.matches("runs alone").count(), 2, "{err}");
    assert!(err.contains("a.onnx") && err.contains("b.onnx"), "{err}");
    let (code, _, err) = run(cache.join("zero").to_str().unwrap(), &["--memory", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--memory"), "{err}");
}

/// A proxy's settings key its value inside one cache file: a run under other epsinas weights
/// scores epsinas again beside the cached one, and each run prints only what it asked for.
#[cfg(feature = "torch")]
#[test]
fn proxies_under_other_settings_share_the_cache_file_and_keep_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &small_model());
    let cache = dir.path().join("cache");
    let run = |names: &str, extra: &[&str]| {
        let mut args = vec!["proxies", a.to_str().unwrap(), "--names", names, "--json"];
        args.extend_from_slice(&["--images", "gaussian", "--cache", cache.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let (code, out, err) = nape(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let default = run("synflow,epsinas", &[]);
    let nb101 = run("synflow,epsinas", &["--epsinas-weights", "1e-4", "10"]);
    let only = run("synflow", &["--epsinas-weights", "1e-4", "10"]);
    let text = only_cache_file(&cache);
    assert!(text.contains("\"epsinas\"") && text.contains("\"epsinas[0.0001,10]\""), "{text}");
    assert!(default.contains("\"epsinas\"") && nb101.contains("\"epsinas\""), "{nb101}");
    assert!(!nb101.contains("epsinas["), "{nb101}");
    assert!(!only.contains("epsinas") && only.contains("synflow"), "{only}");
}

/// A network estimated above twice all of the machine's memory is refused with an error that
/// says so and names the remedy, instead of being run into the kernel's OOM killer with the
/// whole batch; the refusal is the machine's, not the network's, so the cache does not keep
/// it and a second run tries again.
#[cfg(feature = "torch")]
#[test]
fn proxies_refuse_a_network_the_machine_cannot_hold_and_do_not_cache_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &small_model());
    let cache = dir.path().join("cache");
    let (a, cache_arg) = (a.to_str().unwrap(), cache.to_str().unwrap());
    for _ in 0..2 {
        let args = ["proxies", a, "--names", "nwot", "--batch", "1000000000000"];
        let more = ["--images", "gaussian", "--cache", cache_arg, "--threads", "1"];
        let (code, _, err) = nape(&[&args[..], &more[..]].concat());
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("a.onnx: nwot: out of memory") && err.contains("--batch"), "{err}");
        assert!(err.contains("scored 1 networks"), "scored, not read from the cache: {err}");
    }
    let text = only_cache_file(&cache);
    assert!(!text.contains("out of memory"), "the refusal was cached: {text}");
}

/// A network out of memory in a run of several gets one more try, the same command in a fresh
/// process of its own (which holds none of what the others left), once: the fresh process
/// scores only that network and never starts another; the parent reports every row.
/// Here the fresh process refuses the 16384x16384 network again (terabytes on any machine),
/// and the row says so.
#[cfg(feature = "torch")]
#[test]
fn networks_out_of_memory_after_others_get_one_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &small_model());
    let big = write(dir.path(), "big.onnx", &huge_model(64));
    let cache = dir.path().join("cache");
    let args = ["proxies", a.to_str().unwrap(), big.to_str().unwrap(), "--names", "nwot"];
    let more = ["--images", "gaussian", "--cache", cache.to_str().unwrap(), "--json"];
    let (code, out, err) = nape(&[&args[..], &more[..]].concat());
    assert_eq!(code, 5, "a partial result: {err}");
    assert_eq!(err.matches("each in a fresh process").count(), 1, "{err}");
    // the parent scored both; the child, given big.onnx's id, scored it alone
    assert!(err.contains("scored 2 networks") && err.contains("scored 1 networks"), "{err}");
    assert!(err.contains("big.onnx: nwot: out of memory"), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = doc["networks"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "every row, once: {out}");
    assert!(rows[0]["proxies"]["nwot"].is_number(), "a.onnx's value: {out}");
    assert!(rows[1]["errors"]["nwot"].as_str().unwrap().contains("out of memory"), "{out}");
}

/// Every network out of memory gets a fresh process of its own whatever named the networks:
/// from a labels file (as from a manifest or a family), each child scores its one network,
/// not every network the cache lacks (the other one out of memory too).
#[cfg(feature = "torch")]
#[test]
fn a_labels_run_gives_each_network_out_of_memory_a_process_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.onnx", &small_model());
    write(dir.path(), "big.onnx", &huge_model(64));
    write(dir.path(), "big2.onnx", &huge_model(65));
    let labels =
        write(dir.path(), "labels.csv", b"file,acc\na.onnx,0.5\nbig.onnx,0.6\nbig2.onnx,0.7\n");
    let cache = dir.path().join("cache");
    let args = ["proxies", "--labels", labels.to_str().unwrap(), "--names", "nwot"];
    let more = ["--images", "gaussian", "--cache", cache.to_str().unwrap(), "--json"];
    let (code, out, err) = nape(&[&args[..], &more[..]].concat());
    assert_eq!(code, 5, "a partial result: {err}");
    assert_eq!(err.matches("each in a fresh process").count(), 1, "{err}");
    assert!(err.contains("scored 3 networks"), "the parent scored all three: {err}");
    assert_eq!(err.matches("scored 1 networks").count(), 2, "one network per child: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["networks"].as_array().unwrap().len(), 3, "every row, once: {out}");
}

/// A convolution of `channels` and a ReLU on a 16384x16384 input: refused for out of memory on
/// any machine (terabytes of proxies), in no time.
#[cfg(feature = "torch")]
fn huge_model(channels: usize) -> Vec<u8> {
    let mut b = ModelBuilder::new("t", "x", &[1, 3, 16384, 16384], Weights::Data(1));
    let c = b.conv("conv", "x", channels, 3, 1, 1, 1, false);
    let r = b.relu("relu", &c);
    b.finish(&r).to_bytes()
}

/// The text of the one cache file under `dir` (gzip-compressed JSONL).
#[cfg(feature = "torch")]
fn only_cache_file(dir: &Path) -> String {
    let files: Vec<_> = walk(dir);
    assert_eq!(files.len(), 1, "one cache file: {files:?}");
    let mut text = String::new();
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(&files[0]).unwrap());
    std::io::Read::read_to_string(&mut std::io::BufReader::new(gz), &mut text).unwrap();
    text
}

#[cfg(feature = "torch")]
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
