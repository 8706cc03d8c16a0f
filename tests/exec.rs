//! The tch executor agrees with tract (an independent ONNX runtime) on the same weights and
//! inputs: every file of the test corpus, and 50 NB-101 and 50 NB-201 networks with weights.
//! A corpus file with an op tract cannot run (Col2Im) is checked against PyTorch's own output,
//! kept in the manifest.
#![cfg(feature = "torch")]

use nape::dataset::SplitMix64;
use nape::exec::{no_grad, ExecOptions, Executor, Init, Taps};
use nape::graph::{Cg, OpKind};
use nape::onnx::run::{run_reference, with_weights, NamedTensor};
use nape::onnx::{load_bytes, write::Weights, ImportOptions};
use nape::spaces::{BuildOptions, Space};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.detach().to_kind(Kind::Float).flatten(0, -1)).expect("f32 values")
}

/// Runs `bytes` with both runtimes on the file's weights (materialised when the file has none);
/// returns the worst relative difference over the outputs (max |a - b| over max |b|).
fn compare(bytes: &[u8], source: &str, batch_override: Option<usize>) -> Result<f64, String> {
    let bytes = with_weights(bytes, source, 7).map_err(|e| e.to_string())?;
    let cg: Cg =
        load_bytes(&bytes, source, &ImportOptions::default()).map_err(|e| e.to_string())?;
    let ex = Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 11)
        .map_err(|e| e.to_string())?;
    let mut rng = SplitMix64(42);
    let mut named: Vec<NamedTensor> = Vec::new();
    let mut xs = Vec::new();
    for n in cg.graph.node_weights().filter(|n| n.kind == OpKind::Input) {
        let mut shape = n.out_shape().to_vec();
        if let Some(b) = batch_override {
            shape[0] = b;
        }
        let numel: usize = shape.iter().product();
        let data: Vec<f32> = (0..numel)
            .map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            .collect();
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        xs.push(Tensor::from_slice(&data).reshape(&dims));
        named.push((n.name.clone(), shape, data));
    }
    let fwd = no_grad(|| ex.forward(&xs, Taps::default())).map_err(|e| e.to_string())?;
    let reference = run_reference(&bytes, source, &named).map_err(|e| e.to_string())?;
    if fwd.outputs.len() != reference.len() {
        return Err(format!("{} outputs vs tract's {}", fwd.outputs.len(), reference.len()));
    }
    let mut worst = 0f64;
    for (i, (ours, (shape, theirs))) in fwd.outputs.iter().zip(&reference).enumerate() {
        let ours_shape: Vec<usize> = ours.size().iter().map(|&d| d as usize).collect();
        if &ours_shape != shape {
            return Err(format!("output {i}: shape {ours_shape:?} vs tract's {shape:?}"));
        }
        let a = values(ours);
        if a.iter().any(|v| !v.is_finite()) {
            return Err(format!("output {i} has non-finite values"));
        }
        let scale = theirs.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-12);
        let diff =
            a.iter().zip(theirs).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
        worst = worst.max(diff / scale);
    }
    Ok(worst)
}

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = Vec::new();
    for sub in ["ops", "zoo"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .expect("corpus folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        v.sort();
        files.extend(v);
    }
    files
}

const TOL: f64 = 1e-4;

/// A file's tolerance: [`TOL`], but rare_ops.onnx rounds an activation through float16 and
/// back, which nape reads as the float32 network (a cast between float types is an identity in
/// its graph), so tract's float16 rounding (2^-11 relative) separates the two there.
fn tolerance(file: &str) -> f64 {
    if file == "rare_ops.onnx" {
        1e-3
    } else {
        TOL
    }
}

/// PyTorch's input and output for a corpus file whose ops tract cannot run (Col2Im), kept in
/// the manifest by gen_corpus: (input, output shape, output).
fn expected(rel: &str) -> Option<(Vec<f32>, Vec<usize>, Vec<f32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifest.json");
    let text = std::fs::read_to_string(&path).expect("tests/corpus/manifest.json");
    let m: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
    let e = m.get(rel)?.get("expected")?;
    let floats = |k: &str| -> Vec<f32> {
        e[k].as_array().expect(k).iter().map(|v| v.as_f64().expect("number") as f32).collect()
    };
    let shape = e["output_shape"].as_array()?.iter().map(|v| v.as_u64().unwrap() as usize);
    Some((floats("input"), shape.collect(), floats("output")))
}

/// Runs `bytes` on PyTorch's input with the file's weights; the worst relative difference to
/// PyTorch's output.
fn compare_expected(
    bytes: &[u8],
    source: &str,
    want: (Vec<f32>, Vec<usize>, Vec<f32>),
) -> Result<f64, String> {
    let (input, shape, theirs) = want;
    let cg: Cg = load_bytes(bytes, source, &ImportOptions::default()).map_err(|e| e.to_string())?;
    let ex = Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 11)
        .map_err(|e| e.to_string())?;
    let x = cg.graph.node_weights().find(|n| n.kind == OpKind::Input).ok_or("no input")?;
    let dims: Vec<i64> = x.out_shape().iter().map(|&d| d as i64).collect();
    let xs = [Tensor::from_slice(&input).reshape(&dims)];
    let fwd = no_grad(|| ex.forward(&xs, Taps::default())).map_err(|e| e.to_string())?;
    let ours = fwd.outputs.first().ok_or("no output")?;
    let ours_shape: Vec<usize> = ours.size().iter().map(|&d| d as usize).collect();
    if ours_shape != shape {
        return Err(format!("shape {ours_shape:?} vs PyTorch's {shape:?}"));
    }
    let scale = theirs.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-12);
    let a = values(ours);
    Ok(a.iter().zip(&theirs).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale)
}

/// A graph whose shapes are upper bounds (a detector's head) is refused by the executor,
/// naming its first such node: `Some(why)` when `bytes` is such a graph and was refused.
fn refused_as_bounded(bytes: &[u8], source: &str) -> Option<String> {
    let cg = load_bytes(bytes, source, &ImportOptions::default()).ok()?;
    let first = cg.graph.node_weights().find(|n| n.bounded)?.name.clone();
    let opts = ExecOptions { train: false, ..Default::default() };
    match Executor::new(&cg, opts, Init::File, 11) {
        Err(e) if e.to_string().contains(&format!("'{first}'")) => {
            Some(format!("refused as it should be ({e})"))
        }
        Err(e) => panic!("{source}: refused without naming '{first}': {e}"),
        Ok(_) => panic!("{source}: the executor accepted a graph of bounded shapes"),
    }
}

#[test]
fn executor_matches_tract_on_every_corpus_file() {
    let mut report = Vec::new();
    let mut bad = Vec::new();
    for p in corpus_files() {
        let bytes = std::fs::read(&p).expect("read");
        let name = p.file_name().unwrap_or_default().to_string_lossy().to_string();
        let parent = p.parent().and_then(|d| d.file_name()).unwrap_or_default().to_string_lossy();
        if let Some(refusal) = refused_as_bounded(&bytes, &p.display().to_string()) {
            report.push(format!("{name}: {refusal}"));
            continue;
        }
        let result = match expected(&format!("{parent}/{name}")) {
            Some(want) => compare_expected(&bytes, &p.display().to_string(), want)
                .map_err(|e| format!("against PyTorch's output: {e}")),
            None => compare(&bytes, &p.display().to_string(), None),
        };
        match result {
            Ok(d) if d <= tolerance(&name) => report.push(format!("{name}: {d:.2e}")),
            Ok(d) => bad.push(format!("{name}: relative difference {d:.2e}")),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    eprintln!("executor vs tract:\n{}", report.join("\n"));
    assert!(bad.is_empty(), "executor disagrees with tract:\n{}", bad.join("\n"));
}

fn space_networks(space: Space, n: usize) -> Vec<(String, Vec<u8>)> {
    let dir = nape::dataset::data_dir(None);
    let ds = match space {
        Space::Nb101 => nape::dataset::load::load_nb101(&dir),
        _ => nape::dataset::load::load_nb201(&dir),
    }
    .unwrap_or_else(|e| panic!("this test needs the benchmark data: {e}"));
    let sample = ds.sample(n, 5);
    sample
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let spec = space.parse_spec(&r.spec).expect("spec");
            let opts =
                BuildOptions { weights: Weights::Data(100 + i as u64), ..Default::default() };
            (r.spec.clone(), spec.build(&opts).expect("build").to_bytes())
        })
        .collect()
}

fn check_space(space: Space) {
    let mut bad = Vec::new();
    let mut worst = 0f64;
    for (i, (spec, bytes)) in space_networks(space, 50).into_iter().enumerate() {
        // batch 1 as built; the first 10 also at batch 3 (the executor follows the batch it
        // is given)
        let batches: &[Option<usize>] = if i < 10 { &[None, Some(3)] } else { &[None] };
        for &batch in batches {
            match compare(&bytes, &spec, batch) {
                Ok(d) if d <= TOL => worst = worst.max(d),
                Ok(d) => bad.push(format!("{spec} (batch {batch:?}): {d:.2e}")),
                Err(e) => bad.push(format!("{spec}: {e}")),
            }
        }
    }
    eprintln!("{}: 50 networks, worst relative difference {worst:.2e}", space.name());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn executor_matches_tract_on_50_nb101_networks() {
    check_space(Space::Nb101);
}

#[test]
fn executor_matches_tract_on_50_nb201_networks() {
    check_space(Space::Nb201);
}

/// Under `no_grad` the ReLUs on one input (an NB-201 cell exports one per edge) are computed
/// once and share their output; with gradients each runs. The outputs are bitwise the same.
#[test]
fn relus_on_one_input_run_once_without_gradients() {
    use nape::onnx::from_proto;
    use nape::spaces::nb201::{Arch, Dataset};
    let spec = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    let m =
        Arch::parse(spec).expect("arch").build(Dataset::Cifar10, Weights::Inputs).expect("build");
    let cg = from_proto(&m.model, spec, &ImportOptions::default()).expect("cg");
    let ex = Executor::new(&cg, ExecOptions::default(), Init::Default, 5).expect("executor");
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let taps = Taps { relu_out: true, ..Default::default() };
    let plain = no_grad(|| ex.forward(&[x.shallow_clone()], taps)).expect("no_grad forward");
    let graded = ex.forward(&[x.shallow_clone()], taps).expect("forward");
    let distinct = |fwd: &nape::exec::Forward| {
        let mut ptrs: Vec<usize> =
            fwd.relu_out.iter().map(|t| t.value.data_ptr() as usize).collect();
        ptrs.sort_unstable();
        ptrs.dedup();
        ptrs.len()
    };
    let relus = plain.relu_out.len();
    assert_eq!(graded.relu_out.len(), relus);
    assert_eq!(distinct(&graded), relus, "with gradients every ReLU runs");
    assert!(distinct(&plain) < relus, "{} distinct of {relus}", distinct(&plain));
    for (a, b) in plain.relu_out.iter().zip(&graded.relu_out) {
        assert!(a.value.equal(&b.value.detach()), "{}", a.node);
    }
    assert!(plain.outputs[0].equal(&graded.outputs[0].detach()));
}

/// A conv/linear output tap carries its weight's PyTorch fan-in (the weights feeding one
/// output channel): Fisher counts each channel's value once per such weight, as the reference
/// does. Conv 3 -> 8 with a 3x3 kernel: 27; conv 8 -> 4, 1x1, groups 2 (so 4 inputs per
/// group): 4; linear 4 -> 10: 4. ReLU taps carry none.
#[test]
fn weighted_output_taps_carry_their_weight_s_fan_in() {
    use nape::onnx::{from_proto, write::ModelBuilder};
    let mut b = ModelBuilder::new("taps", "x", &[2, 3, 8, 8], Weights::Inputs);
    let c = b.conv("c1", "x", 8, 3, 1, 1, 1, false);
    let c = b.relu("r1", &c);
    let c = b.conv("c2", &c, 4, 1, 1, 0, 2, true);
    let g = b.global_avg_pool("gap", &c);
    let f = b.flatten("flat", &g);
    let y = b.linear("fc", &f, 10);
    let m = b.finish(&y);
    let cg = from_proto(&m.model, "taps", &ImportOptions::default()).expect("cg");
    let ex = Executor::new(&cg, ExecOptions::default(), Init::Default, 5).expect("executor");
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let taps = Taps { weighted_out: true, relu_out: true, ..Default::default() };
    let fwd = no_grad(|| ex.forward(&[x], taps)).expect("forward");
    let got: Vec<(String, Option<usize>)> =
        fwd.weighted_out.iter().map(|t| (t.node.clone(), t.fan_in)).collect();
    let fan_ins: Vec<Option<usize>> = got.iter().map(|g| g.1).collect();
    assert_eq!(fan_ins, [Some(27), Some(4), Some(4)], "{got:?}");
    assert!(fwd.relu_out.iter().all(|t| t.fan_in.is_none()));
}

/// The small network of tests/corpus/opsets (scripts/gen_opsets.py) as PyTorch writes it at
/// opsets 17 and 9, as ONNX's converter writes that at opset 7 (`Upsample`'s scales an
/// attribute), and with `auto_pad`, and the Caffe-era `legacy.onnx` (two `LRN`s): the executor
/// computes ONNX Runtime's output of each.
#[test]
fn executor_computes_onnx_runtime_s_output_at_older_opsets_and_with_auto_pad() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/opsets");
    let text = std::fs::read_to_string(dir.join("truth.json")).expect("tests/corpus/opsets");
    let truth: serde_json::Value = serde_json::from_str(&text).expect("truth.json");
    let input: Vec<f32> = (0..3 * 32 * 32).map(|i| (0.37 * i as f32).sin()).collect();
    for name in ["op17", "op9", "op7", "auto_pad", "legacy", "experimental"] {
        let theirs: Vec<f32> = truth["files"][name]["ort_output"]
            .as_array()
            .expect("ort_output")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let path = dir.join(format!("{name}.onnx"));
        let bytes = std::fs::read(&path).expect("read");
        let want = (input.clone(), vec![1, theirs.len()], theirs);
        let d = compare_expected(&bytes, &path.display().to_string(), want).expect(name);
        eprintln!("{name}: {d:.2e} from ONNX Runtime's output");
        assert!(d < TOL, "{name}: relative difference {d:.2e}");
    }
}

/// A ViT in miniature exported at batch 1 (tests/corpus/batch1, scripts/gen_batch1.py): its
/// attention's head split is a Reshape to `[17, 2, 8]` (tokens, batch x heads, head dim).
/// Run at batch 3, the executor runs the file's graph one sample at a time (no BatchNorm
/// mixes the samples), and computes PyTorch's output of the network itself on that batch,
/// and the gradient of the outputs' sum with respect to the input, through the samples.
#[test]
fn a_batch_1_attention_file_runs_a_larger_batch_as_the_network_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/batch1");
    let text = std::fs::read_to_string(dir.join("truth.json")).expect("tests/corpus/batch1");
    let truth: serde_json::Value = serde_json::from_str(&text).expect("truth.json");
    let floats = |k: &str| -> Vec<f32> {
        let v = truth[k].as_array().unwrap_or_else(|| panic!("truth.json has no {k}"));
        v.iter().map(|v| v.as_f64().expect("number") as f32).collect()
    };
    let file = dir.join("attention.onnx");
    let cg = nape::onnx::load(&file, &ImportOptions::default()).expect("attention.onnx");
    assert_eq!(cg.batch(), 1);
    let ex = Executor::new(&cg, ExecOptions { train: false, ..Default::default() }, Init::File, 0)
        .expect("executor");
    assert!(ex.runs_per_sample(3) && !ex.runs_per_sample(1));
    let input: Vec<f32> = (0..3 * 3 * 16 * 16).map(|i| (0.37 * i as f32).sin()).collect();
    let x = Tensor::from_slice(&input).reshape([3, 3, 16, 16]).set_requires_grad(true);
    let fwd = ex.forward(&[x.shallow_clone()], Taps::default()).expect("forward at batch 3");
    let y = &fwd.outputs[0];
    assert_eq!(y.size(), [3, 5]);
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let out = worst(&values(y), &floats("output"));
    assert!(out < 1e-5, "output differs from PyTorch's by {out}");
    let g = Tensor::f_run_backward(&[&y.sum(Kind::Float)], &[&x], false, false).expect("backward");
    let grad = worst(&values(&g[0]), &floats("grad_input"));
    assert!(grad < 1e-5, "input gradient differs from PyTorch's by {grad}");
    // the batch-1 run of each sample is the same network
    let one = ex.forward(&[x.narrow(0, 1, 1)], Taps::default()).expect("forward at batch 1");
    assert_eq!(values(&one.outputs[0]), values(&y.narrow(0, 1, 1)));
}
