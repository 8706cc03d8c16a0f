use super::*;
use crate::onnx::write::{ModelBuilder, Weights};
use crate::onnx::{load_bytes, ImportOptions};

/// conv(3x3, 8 ch) [+ BN] -> relu -> residual add -> gap -> flatten -> linear(10).
fn net(bn: bool) -> Cg {
    let mut b = ModelBuilder::new("t", "x", &[1, 3, 16, 16], Weights::Inputs);
    let mut x = b.conv("c1", "x", 8, 3, 1, 1, 1, !bn);
    if bn {
        x = b.batch_norm("bn1", &x, 1e-5, 0.1);
    }
    let x = b.relu("r1", &x);
    let y = b.conv("c2", &x, 8, 1, 1, 0, 1, true);
    let x = b.add("a", &[x, y]);
    let x = b.global_avg_pool("gap", &x);
    let x = b.flatten("flat", &x);
    let out = b.linear("fc", &x, 10);
    let m = b.finish(&out);
    load_bytes(&m.to_bytes(), "t.onnx", &ImportOptions::default()).unwrap()
}

#[test]
fn shapes_follow_the_constants_and_values_are_finite() {
    let cg = net(true);
    let f = encode(&cg, &BTreeMap::new());
    assert_eq!(f.op.len(), f.n_nodes);
    assert_eq!(f.node.len(), f.n_nodes * NODE_DIM);
    assert_eq!(f.global.len(), GLOBAL_DIM);
    assert_eq!(global_names().len(), GLOBAL_DIM);
    assert!(f.tokens.len() <= MAX_TOKENS && f.tokens.len() > 2);
    assert!(f.tokens.iter().all(|&t| (t as usize) < TOKEN_VOCAB));
    assert!(f.op.iter().all(|&o| (0..OP_VOCAB as i64).contains(&o)));
    assert!(f.node.iter().chain(&f.global).all(|v| v.is_finite()));
    assert!(f.node.iter().all(|&v| (0.0..=CLAMP).contains(&v)));
    for &(a, b) in &f.edges {
        assert!(a < b && (b as usize) < f.n_nodes, "edge {a}->{b} not forward");
    }
    // BatchNorm folded: no BatchNorm in the canonical graph's op indices
    assert!(!f.op.contains(&op_index(&OpKind::BatchNorm)));
}

#[test]
fn conv_node_features_say_what_the_conv_is() {
    let f = encode(&net(false), &BTreeMap::new());
    let conv = f.op.iter().position(|&o| o == op_index(&OpKind::Conv)).unwrap();
    let row = &f.node[conv * NODE_DIM..(conv + 1) * NODE_DIM];
    assert_eq!(row[0], 16.0 / 256.0); // H_in
    assert_eq!(row[4], 3.0 / 512.0); // C_in
    assert_eq!(row[5], 8.0 / 512.0); // C_out
    assert_eq!(row[6 + 3], 1.0); // kernel height 3
    assert_eq!(row[14 + 3], 1.0); // kernel width 3
    assert_eq!(row[6..22].iter().sum::<f32>(), 2.0);
    assert_eq!(row[22], 0.25); // stride 1
    assert_eq!((row[27], row[28], row[29]), (0.0, 1.0, 1.0)); // bias, weighted
    let relu = f.op.iter().position(|&o| o == op_index(&OpKind::Relu)).unwrap();
    let row = &f.node[relu * NODE_DIM..(relu + 1) * NODE_DIM];
    assert_eq!(row[6], 1.0); // no kernel
    assert_eq!((row[27], row[28], row[29]), (0.0, 0.0, 0.0));
}

#[test]
fn folded_and_explicit_batchnorm_give_the_same_features() {
    let a = encode(&net(true), &BTreeMap::new());
    let b = encode(&net(false), &BTreeMap::new());
    assert_eq!(a, b);
}

#[test]
fn proxies_fill_values_and_presence_flags() {
    let cg = net(false);
    let mut p = BTreeMap::new();
    p.insert("synflow".to_string(), 42.0);
    p.insert("snip".to_string(), f64::NAN);
    p.insert("unrelated".to_string(), 1.0);
    let f = encode(&cg, &p);
    let base = GLOBAL_DIM - 2 * GLOBAL_PROXIES.len();
    let k = |name: &str| GLOBAL_PROXIES.iter().position(|&n| n == name).unwrap();
    assert!((f.global[base + k("synflow")] - (43f32).log10()).abs() < 1e-6);
    assert_eq!(f.global[base + GLOBAL_PROXIES.len() + k("synflow")], 1.0);
    assert_eq!(f.global[base + k("snip")], 0.0);
    assert_eq!(f.global[base + GLOBAL_PROXIES.len() + k("snip")], 0.0);
    let none = encode(&cg, &BTreeMap::new());
    assert_eq!(none.global[base + GLOBAL_PROXIES.len() + k("synflow")], 0.0);
    assert_eq!(none.global[..base], f.global[..base]);
}

#[test]
fn graph_features_see_the_residual_connection() {
    let f = encode(&net(false), &BTreeMap::new());
    let names = global_names();
    let at = |n: &str| f.global[names.iter().position(|x| x == n).unwrap()];
    assert!(at("frac_merge") > 0.0);
    assert!(at("frac_branch") > 0.0);
    assert!(at("frac_skip_edges") > 0.0);
    assert!(at("short_over_long_path") < 1.0);
    assert!((at("input_h") - 16.0 / 256.0).abs() < 1e-7);
    let hist: f32 =
        names.iter().zip(&f.global).filter(|(n, _)| n.starts_with("op_")).map(|(_, v)| v).sum();
    assert!((hist - 1.0).abs() < 1e-5, "op histogram sums to {hist}");
}

#[test]
fn signed_log_is_monotone_and_finite() {
    let xs = [-1e300, -5.0, -0.5, 0.0, 0.5, 5.0, 1e300];
    let ys: Vec<f64> = xs.iter().map(|&x| signed_log(x)).collect();
    assert!(ys.windows(2).all(|w| w[0] < w[1]));
    assert!(ys.iter().all(|y| y.is_finite()));
}

#[test]
fn text_has_one_block_per_compute_node() {
    let cg = net(false).canonical();
    let t = to_text(&cg);
    let compute = cg.nodes().filter(|(_, n)| n.kind != OpKind::Input).count();
    assert_eq!(t.matches("\nOp: ").count() + usize::from(t.starts_with("Op: ")), compute);
    assert!(
        t.starts_with("In1(1,3,16,16)-->V1:\nOp: Conv(kernel=3x3,pad=1,bias=1)\nW: [8,3,3,3]\n")
    );
    assert!(t.ends_with("-->Out1:\nOp: Output(1,10)\n"), "{t}");
}

#[test]
fn feature_spec_describes_this_layout() {
    let s = FeatureSpec::current();
    assert_eq!(s.op_vocab.len(), OP_VOCAB);
    assert_eq!(s.global_names.len(), GLOBAL_DIM);
    for k in FEATURE_KINDS {
        assert_eq!(s.op_vocab[op_index(k) as usize], k.as_str());
    }
    // the vocabulary of features v4 ends at Zero; kinds the graph gained later are out of it
    assert_eq!(FEATURE_KINDS.last(), Some(&OpKind::Zero));
    for k in &ALL_KINDS[FEATURE_KINDS.len()..] {
        assert_eq!(op_index(k), 0, "{k} is not in the features' vocabulary");
    }
    let back: FeatureSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn unknown_ops_and_empty_graphs_encode_without_panicking() {
    use crate::graph::TensorEdge;
    let mut cg = Cg::new("hand");
    let s = vec![1, 4, 8, 8];
    let mut x = OpNode::new(OpKind::Input, "x");
    x.out_shapes = vec![s.clone()];
    let mut u = OpNode::new(OpKind::Unknown("Frob-nicate".into()), "u");
    u.in_shapes = vec![s.clone()];
    u.out_shapes = vec![s.clone()];
    let mut y = OpNode::new(OpKind::Output, "y");
    y.in_shapes = vec![s.clone()];
    let (a, b, c) = (cg.graph.add_node(x), cg.graph.add_node(u), cg.graph.add_node(y));
    let e = TensorEdge { src_slot: 0, dst_slot: 0, shape: s, name: "t".into() };
    cg.graph.add_edge(a, b, e.clone());
    cg.graph.add_edge(b, c, e);
    let f = encode(&cg, &BTreeMap::new());
    assert_eq!(f.op[1], 0, "Unknown ops take index 0");
    assert!(to_text(&cg).contains("Op: Frobnicate()"));
    assert!(f.tokens.contains(&text::UNK));
    assert!(f.global.iter().all(|v| v.is_finite()));
    let empty = encode(&Cg::new("empty"), &BTreeMap::new());
    assert_eq!(empty.n_nodes, 0);
    assert_eq!(empty.global.len(), GLOBAL_DIM);
    assert_eq!(empty.tokens, vec![text::BOS, text::EOS]);
}

#[test]
fn log_flops_reads_back_the_canonical_graphs_flops() {
    let cg = net(false);
    let f = encode(&cg, &BTreeMap::new());
    let flops = cg.canonical().summary().flops as f64;
    assert!(flops > 0.0);
    assert!((log_flops(&f) - (1.0 + flops).log10()).abs() < 1e-5, "{} {flops}", log_flops(&f));
    assert_eq!(global_names()[GLOBAL_LOG_FLOPS], "log_flops");
}
