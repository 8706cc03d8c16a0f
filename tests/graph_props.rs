//! Property tests: random networks written by nape's ONNX builder load back into valid graphs
//! whose parameter count equals what the builder declared, whose MACs equal the closed-form
//! count, and whose bytes out are the same on every load.

use nape::graph::OpKind;
use nape::onnx::write::{ModelBuilder, Weights};
use nape::onnx::{load_bytes, ImportOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Conv { ch: usize, k: usize, stride: usize, groups: bool, bias: bool },
    Bn,
    Relu,
    MaxPool,
    Residual,
    Branch { ch: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..4, prop_oneof![Just(1usize), Just(3)], 1usize..3, any::<bool>(), any::<bool>())
            .prop_map(|(c, k, s, g, b)| Step::Conv { ch: c * 4, k, stride: s, groups: g, bias: b }),
        Just(Step::Bn),
        Just(Step::Relu),
        Just(Step::MaxPool),
        Just(Step::Residual),
        (1usize..4).prop_map(|c| Step::Branch { ch: c * 2 }),
    ]
}

/// Builds the network; returns (bytes, declared params, expected MACs).
fn build(steps: &[Step], weights: Weights) -> (Vec<u8>, u64, u64) {
    let mut b = ModelBuilder::new("prop", "x", &[1, 4, 16, 16], weights);
    let mut x = "x".to_string();
    let mut macs = 0u64;
    for (i, s) in steps.iter().enumerate() {
        let shape = b.shape(&x).to_vec();
        let (c, h) = (shape[1], shape[2]);
        match s {
            Step::Conv { ch, k, stride, groups, bias } => {
                let stride = if h / stride < 2 { 1 } else { *stride };
                let g = if *groups && c % 4 == 0 && ch % 4 == 0 { 4 } else { 1 };
                x = b.conv(&format!("c{i}"), &x, *ch, *k, stride, k / 2, g, *bias);
                let o = b.shape(&x).to_vec();
                macs += o.iter().product::<usize>() as u64 * (c / g) as u64 * (k * k) as u64;
            }
            Step::Bn => x = b.batch_norm(&format!("bn{i}"), &x, 1e-5, 0.1),
            Step::Relu => x = b.relu(&format!("r{i}"), &x),
            Step::MaxPool => {
                if h >= 4 {
                    x = b.pool(&format!("p{i}"), &x, true, 2, 2, 0, false);
                }
            }
            Step::Residual => {
                let y = b.conv(&format!("rc{i}"), &x, c, 3, 1, 1, 1, false);
                macs += (h * h * c) as u64 * c as u64 * 9;
                x = b.add(&format!("ra{i}"), &[x.clone(), y]);
            }
            Step::Branch { ch } => {
                let y = b.conv(&format!("b{i}"), &x, *ch, 1, 1, 0, 1, false);
                macs += (h * h * ch) as u64 * c as u64;
                x = b.concat(&format!("cat{i}"), &[x.clone(), y]);
            }
        }
    }
    let gp = b.global_avg_pool("gap", &x);
    let f = b.flatten("flat", &gp);
    let c = b.shape(&f)[1];
    let out = b.linear("fc", &f, 10);
    macs += c as u64 * 10;
    let built = b.finish(&out);
    (built.to_bytes(), built.params, macs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn built_networks_load_back_exactly(steps in proptest::collection::vec(step(), 1..12), data in any::<bool>()) {
        let weights = if data { Weights::Data(7) } else { Weights::Inputs };
        let (bytes, params, macs) = build(&steps, weights);
        let cg = load_bytes(&bytes, "prop.onnx", &ImportOptions::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        cg.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s = cg.summary();
        prop_assert_eq!(s.params, params);
        prop_assert_eq!(s.macs, macs);
        prop_assert!(s.unknown.is_empty());
        prop_assert_eq!(cg.nodes().filter(|(_, n)| n.kind == OpKind::Input).count(), 1);
        // deterministic bytes out
        let again = load_bytes(&bytes, "prop.onnx", &ImportOptions::default()).unwrap();
        prop_assert_eq!(serde_json::to_string(&cg.to_json()).unwrap(), serde_json::to_string(&again.to_json()).unwrap());
        // with or without weight data, the same graph
        let (other, _, _) = build(&steps, if data { Weights::Inputs } else { Weights::Data(7) });
        let cg2 = load_bytes(&other, "prop.onnx", &ImportOptions::default()).unwrap();
        prop_assert_eq!(cg.to_json().nodes, cg2.to_json().nodes);
        // canonical: valid, no BatchNorm directly after a conv, and no more nodes
        let c = cg.canonical();
        c.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(c.len() <= cg.len());
    }
}
