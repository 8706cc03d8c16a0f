//! Features on real files and random networks: every corpus file (tests/corpus/ops and zoo)
//! featurises to finite values of the documented sizes; the text serialisation of small
//! corpus files equals tests/golden/text_<name>.txt (regenerate with
//! `NAPE_REGEN_GOLDEN=1 cargo test --no-default-features --test features golden`, or
//! scripts/regen_golden.sh, and review the diff); and, for random networks from nape's ONNX
//! builder, features are finite, deterministic, and the same whether BatchNorm is explicit or
//! folded into the convolution before it.

use nape::features::{
    encode, to_text, GraphFeatures, GLOBAL_DIM, MAX_TOKENS, NODE_DIM, OP_VOCAB, TOKEN_VOCAB,
};
use nape::onnx::write::{ModelBuilder, Weights};
use nape::onnx::{load, load_bytes, ImportOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

fn check_shapes(f: &GraphFeatures) -> Result<(), String> {
    let bad = |m: String| Err(m);
    if f.op.len() != f.n_nodes || f.node.len() != f.n_nodes * NODE_DIM {
        return bad(format!(
            "{} nodes, {} ops, {} node values",
            f.n_nodes,
            f.op.len(),
            f.node.len()
        ));
    }
    if f.global.len() != GLOBAL_DIM {
        return bad(format!("{} global values, want {GLOBAL_DIM}", f.global.len()));
    }
    if f.tokens.is_empty() || f.tokens.len() > MAX_TOKENS {
        return bad(format!("{} tokens", f.tokens.len()));
    }
    if let Some(t) = f.tokens.iter().find(|&&t| t as usize >= TOKEN_VOCAB) {
        return bad(format!("token {t} outside the vocabulary"));
    }
    if let Some(o) = f.op.iter().find(|&&o| !(0..OP_VOCAB as i64).contains(&o)) {
        return bad(format!("op index {o} outside the vocabulary"));
    }
    if let Some(v) = f.node.iter().chain(&f.global).find(|v| !v.is_finite()) {
        return bad(format!("non-finite value {v}"));
    }
    if let Some(e) = f.edges.iter().find(|(a, b)| a >= b || *b as usize >= f.n_nodes) {
        return bad(format!("edge {e:?} is not a forward edge between nodes"));
    }
    Ok(())
}

fn corpus_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = Vec::new();
    for dir in ["ops", "zoo"] {
        for e in std::fs::read_dir(root.join(dir)).expect("corpus folder").flatten() {
            if e.path().extension().is_some_and(|x| x == "onnx") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_corpus_file_featurises_to_finite_values_of_the_documented_sizes() {
    let files = corpus_files();
    assert!(files.len() >= 30, "corpus has only {} files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let cg = match load(f, &ImportOptions::default()) {
            Ok(cg) => cg,
            Err(e) => {
                bad.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        let feats = encode(&cg, &BTreeMap::new());
        if let Err(e) = check_shapes(&feats) {
            bad.push(format!("{}: {e}", f.display()));
        }
        // the canonical graph's node count
        if feats.n_nodes != cg.canonical().len() {
            bad.push(format!("{}: n_nodes differs from the canonical graph", f.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn golden_text_of_small_corpus_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regen = std::env::var_os("NAPE_REGEN_GOLDEN").is_some_and(|v| v == "1");
    let mut bad = Vec::new();
    for name in ["nasbench201_cell", "resnet_block", "batchnorm_unfolded"] {
        let cg =
            load(&root.join(format!("tests/corpus/ops/{name}.onnx")), &ImportOptions::default())
                .expect("corpus file loads");
        let text = to_text(&cg.canonical());
        let gp = root.join(format!("tests/golden/text_{name}.txt"));
        if regen {
            nape::error::write_atomic(&gp, text.as_bytes()).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&gp) {
            Ok(want) if want == text => {}
            Ok(_) => bad.push(format!("{name}: text differs from {}", gp.display())),
            Err(e) => bad.push(format!("{}: {e} (regenerate: NAPE_REGEN_GOLDEN=1)", gp.display())),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[derive(Debug, Clone)]
enum Step {
    ConvBn { ch: usize, k: usize, stride: usize },
    Conv { ch: usize, k: usize, groups: bool },
    Relu,
    MaxPool,
    Residual,
    Branch { ch: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..4, prop_oneof![Just(1usize), Just(3), Just(5)], 1usize..3)
            .prop_map(|(c, k, s)| Step::ConvBn { ch: c * 4, k, stride: s }),
        (1usize..4, prop_oneof![Just(1usize), Just(3)], any::<bool>())
            .prop_map(|(c, k, g)| Step::Conv { ch: c * 4, k, groups: g }),
        Just(Step::Relu),
        Just(Step::MaxPool),
        Just(Step::Residual),
        (1usize..4).prop_map(|c| Step::Branch { ch: c * 2 }),
    ]
}

/// A random network; `fold` writes each conv+BN as one biased conv (PyTorch's eval export).
fn build(steps: &[Step], fold: bool) -> Vec<u8> {
    let mut b = ModelBuilder::new("prop", "x", &[1, 4, 16, 16], Weights::Inputs);
    let mut x = "x".to_string();
    for (i, s) in steps.iter().enumerate() {
        let shape = b.shape(&x).to_vec();
        let (c, h) = (shape[1], shape[2]);
        match s {
            Step::ConvBn { ch, k, stride } => {
                let stride = if h / stride < 4 { 1 } else { *stride };
                x = b.conv(&format!("c{i}"), &x, *ch, *k, stride, k / 2, 1, fold);
                if !fold {
                    x = b.batch_norm(&format!("bn{i}"), &x, 1e-5, 0.1);
                }
            }
            Step::Conv { ch, k, groups } => {
                let g = if *groups && c == *ch { c } else { 1 };
                x = b.conv(&format!("c{i}"), &x, *ch, *k, 1, k / 2, g, true);
            }
            Step::Relu => x = b.relu(&format!("r{i}"), &x),
            Step::MaxPool => {
                if h >= 4 {
                    x = b.pool(&format!("p{i}"), &x, true, 2, 2, 0, false);
                }
            }
            Step::Residual => {
                let y = b.conv(&format!("rc{i}"), &x, c, 3, 1, 1, 1, false);
                x = b.add(&format!("ra{i}"), &[x.clone(), y]);
            }
            Step::Branch { ch } => {
                let y = b.conv(&format!("b{i}"), &x, *ch, 1, 1, 0, 1, false);
                x = b.concat(&format!("cat{i}"), &[x.clone(), y]);
            }
        }
    }
    let gp = b.global_avg_pool("gap", &x);
    let f = b.flatten("flat", &gp);
    let out = b.linear("fc", &f, 10);
    b.finish(&out).to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn features_are_finite_deterministic_and_canonical(
        steps in proptest::collection::vec(step(), 1..10),
        synflow in proptest::option::of(-1e6f64..1e6),
    ) {
        let mut proxies = BTreeMap::new();
        if let Some(s) = synflow {
            proxies.insert("synflow".to_string(), s);
        }
        let explicit = build(&steps, false);
        let cg = load_bytes(&explicit, "prop.onnx", &ImportOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let f = encode(&cg, &proxies);
        check_shapes(&f).map_err(TestCaseError::fail)?;
        // the same graph, loaded again, gives the same features
        let again = load_bytes(&explicit, "prop.onnx", &ImportOptions::default()).unwrap();
        prop_assert_eq!(&f, &encode(&again, &proxies));
        // BatchNorm folded into the conv by the exporter: the same features
        let folded = build(&steps, true);
        let cg2 = load_bytes(&folded, "prop.onnx", &ImportOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&f, &encode(&cg2, &proxies));
    }
}

/// Sanity measurement on real benchmark cells (needs NAPE_DATA; slow in debug, so ignored):
/// featurise 2,000 NB-101 and 2,000 NB-201 cells (seeded sample), report time per graph, token
/// lengths, the Spearman of each graph feature with accuracy, and a ridge baseline on the
/// features (half to fit, half to test; and NB-101 -> NB-201 zero-shot). Run with
/// `cargo test --release --no-default-features --test features sanity -- --ignored --nocapture`.
#[test]
#[ignore]
fn sanity_measurement_on_benchmark_cells() {
    use nape::dataset::{data_dir, load_nb101, load_nb201};
    use nape::ensemble::baseline;
    use nape::features::global_names;
    use nape::metrics::{kendall_tau, spearman};
    use nape::onnx::from_proto;
    use nape::spaces::{BuildOptions, Space};
    use std::time::Instant;

    let dir = data_dir(None);
    let names = global_names();
    let mut fitted: Option<baseline::Baseline> = None;
    for (space, targets) in [
        (Space::Nb101, vec!["val_acc_ep108"]),
        (Space::Nb201, vec!["cifar10_test_ep200", "cifar100_test_ep200", "imagenet16_test_ep200"]),
    ] {
        let all = match space {
            Space::Nb101 => load_nb101(&dir),
            _ => load_nb201(&dir),
        }
        .unwrap_or_else(|e| panic!("benchmark data needed: {e}"));
        let d = all.require(targets[0]).sample(2000, 42);
        let (mut t_build, mut t_load, mut t_enc) = (0.0, 0.0, 0.0);
        let mut feats = Vec::new();
        for r in &d.records {
            let t0 = Instant::now();
            let m = space.parse_spec(&r.spec).unwrap().build(&BuildOptions::default()).unwrap();
            let t1 = Instant::now();
            let cg = from_proto(&m.model, &r.id, &ImportOptions::default()).unwrap();
            let t2 = Instant::now();
            let f = encode(&cg, &r.proxies);
            t_enc += t2.elapsed().as_secs_f64();
            t_build += (t1 - t0).as_secs_f64();
            t_load += (t2 - t1).as_secs_f64();
            check_shapes(&f).unwrap();
            feats.push(f);
        }
        let n = feats.len() as f64;
        let ntok: Vec<usize> = feats.iter().map(|f| f.tokens.len()).collect();
        let truncated =
            feats.iter().filter(|f| f.tokens.last() == Some(&nape::features::text::TRUNC)).count();
        let vocab = nape::features::text::vocabulary();
        let op_tok = vocab.iter().position(|w| w == "Op").unwrap() as u32;
        let blocks: usize =
            feats.iter().map(|f| f.tokens.iter().filter(|&&t| t == op_tok).count()).sum();
        let text_len: usize = d
            .records
            .iter()
            .take(20)
            .map(|r| {
                let m = space.parse_spec(&r.spec).unwrap().build(&BuildOptions::default()).unwrap();
                let cg = from_proto(&m.model, &r.id, &ImportOptions::default()).unwrap();
                to_text(&cg.canonical()).len()
            })
            .sum();
        eprintln!(
            "\n{}: {} cells, one thread, per graph: spec->ONNX {:.3} ms, ONNX->CG {:.3} ms, encode {:.3} ms; \
             nodes (canonical) mean {:.1}; tokens mean {:.1}, {} of {} truncated at {MAX_TOKENS}, \
             covering the first {:.1} node blocks; text {:.0} chars",
            space.name(),
            feats.len(),
            1e3 * t_build / n,
            1e3 * t_load / n,
            1e3 * t_enc / n,
            feats.iter().map(|f| f.n_nodes).sum::<usize>() as f64 / n,
            ntok.iter().sum::<usize>() as f64 / n,
            truncated,
            feats.len(),
            blocks as f64 / n,
            text_len as f64 / 20.0,
        );
        let x = ndarray::Array2::from_shape_fn((feats.len(), GLOBAL_DIM), |(i, j)| {
            feats[i].global[j] as f64
        });
        for target in &targets {
            let y: Vec<f64> =
                d.records.iter().map(|r| r.target(target).unwrap_or(f64::NAN)).collect();
            let mut rows: Vec<(String, f64)> = (0..GLOBAL_DIM)
                .filter_map(|j| {
                    let col: Vec<f64> = x.column(j).to_vec();
                    let varies = col.iter().any(|&v| v != col[0]);
                    varies.then(|| (names[j].clone(), spearman(&col, &y)))
                })
                .collect();
            rows.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            eprintln!(
                "{} {target}: Spearman of each varying graph feature with accuracy",
                space.name()
            );
            for (name, rho) in &rows {
                eprintln!("  {name:<24} {rho:+.3}");
            }
            let half = feats.len() / 2;
            let xs = x.slice(ndarray::s![..half, ..]).to_owned();
            let b = baseline::fit(&xs, &y[..half]).unwrap();
            let pred = b.predict(&x.slice(ndarray::s![half.., ..]).to_owned()).unwrap();
            eprintln!(
                "  ridge baseline, fit on {half}, tested on {}: Spearman {:.3}, Kendall {:.3} (penalty {})",
                feats.len() - half,
                spearman(&pred, &y[half..]),
                kendall_tau(&pred, &y[half..]),
                b.penalty
            );
            match (&fitted, space) {
                (None, Space::Nb101) => fitted = Some(baseline::fit(&x, &y).unwrap()),
                (Some(b101), Space::Nb201) => {
                    let pred = b101.predict(&x).unwrap();
                    eprintln!(
                        "  ridge fitted on 2,000 NB-101 cells, zero-shot on these: Spearman {:.3}",
                        spearman(&pred, &y)
                    );
                }
                _ => {}
            }
        }
    }
}

/// NB-201's `none` edges are zeros: the canonical graph of a cell drops them, and with them
/// whatever only fed them, so two cells that compute the same function read the same.
#[test]
fn nb201_none_edges_vanish_from_the_canonical_graph() {
    use nape::graph::OpKind;
    use nape::onnx::from_proto;
    use nape::spaces::nb201::{Arch, Dataset};
    let canon = |spec: &str| {
        let built = Arch::parse(spec).unwrap().build(Dataset::Cifar10, Weights::Inputs).unwrap();
        from_proto(&built.model, spec, &ImportOptions::default()).unwrap().canonical()
    };
    let kinds = |cg: &nape::graph::Cg| cg.nodes().map(|(_, n)| n.kind.clone()).collect::<Vec<_>>();
    // node 1 = conv(node 0) feeds only `none` edges: dead; node 3 = node 0 in both
    let a = canon("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|");
    let b = canon("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|");
    assert_eq!(kinds(&a), kinds(&b));
    assert_eq!(a.summary().params, b.summary().params);
    assert!(kinds(&a).iter().all(|k| *k != OpKind::Zero));
    a.validate().unwrap();
    // a cell cut off from its input keeps the zeros its output is made of, and the network
    // computes a constant: no path from the input to the output, nothing before the cut
    let cut = canon("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|");
    assert!(kinds(&cut).contains(&OpKind::Zero));
    let input = cut.nodes().find(|(_, n)| n.kind == OpKind::Input).unwrap().0;
    assert!(cut.outputs_of(input).is_empty(), "the input still feeds something");
    assert!(cut.len() < a.len(), "{} nodes cut, {} connected", cut.len(), a.len());
    let f = encode(&cut, &BTreeMap::new());
    assert!(f.node.iter().chain(&f.global).all(|v| v.is_finite()));
    // a branch computed from zeros alone is a constant: gone while the output depends on the input
    let shifted = canon("|none~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|");
    assert_eq!(kinds(&shifted), kinds(&b));
    // a cell without `none` keeps every convolution and sum
    let dense = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    let built = Arch::parse(dense).unwrap().build(Dataset::Cifar10, Weights::Inputs).unwrap();
    let raw = from_proto(&built.model, dense, &ImportOptions::default()).unwrap();
    let count = |cg: &nape::graph::Cg, k: OpKind| cg.nodes().filter(|(_, n)| n.kind == k).count();
    for k in [OpKind::Conv, OpKind::Add] {
        assert_eq!(count(&canon(dense), k.clone()), count(&raw, k));
    }
}
