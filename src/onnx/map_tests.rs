//! Unit tests of `map`: costs and kinds of single nodes.

use super::*;
use crate::onnx::slots;
use std::sync::Arc;

fn einsum(eq: &str, ins: &[Shape], out: Shape) -> Result<Mapped, String> {
    let pn = pb::NodeProto {
        op_type: "Einsum".into(),
        attribute: vec![pb::AttributeProto {
            name: "equation".into(),
            s: eq.as_bytes().to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let ctx = NodeCtx {
        pn: &pn,
        in_shapes: ins,
        out_shapes: &[out],
        statics: &[],
        act_slots: (0..ins.len()).collect(),
    };
    map_node(&ctx)
}

#[test]
fn einsum_counts_macs_as_the_matmul_it_is() {
    // MaxViT's attention (torchvision): scores and the weighted sum of values
    let (b, g, h, i, j, d) = (1, 49, 4, 49, 49, 16);
    let m = einsum(
        "B G H I D, B G H J D -> B G H I J",
        &[vec![b, g, h, i, d], vec![b, g, h, j, d]],
        vec![b, g, h, i, j],
    )
    .unwrap();
    assert_eq!(m.kind, OpKind::MatMul);
    assert_eq!(m.macs, (b * g * h * i * j * d) as u64);
    assert_eq!(m.flops, 2 * m.macs);
    // the same contraction as a batched MatMul: out elements x K
    let m = einsum("bij,bjk->bik", &[vec![2, 3, 5], vec![2, 5, 7]], vec![2, 3, 7]).unwrap();
    assert_eq!(m.macs, 2 * 3 * 7 * 5);
    // an ellipsis broadcasts its leading dims
    let m = einsum("...ij,...jk->...ik", &[vec![4, 2, 3, 5], vec![1, 5, 7]], vec![4, 2, 3, 7]);
    assert_eq!(m.unwrap().macs, 4 * 2 * 3 * 7 * 5);
    // one operand moves data only
    assert_eq!(einsum("ij->ji", &[vec![3, 4]], vec![4, 3]).unwrap().macs, 0);
}

#[test]
fn a_batched_static_first_operand_contracts_over_the_activations_dim() {
    // timm's lambda layer: a folded [M, K, M] position table times q [1, 1, M, C]
    let table = crate::onnx::Static {
        float: true,
        numel: 256 * 16 * 256,
        sources: vec!["pos".into()],
        value: None,
        computable: true,
    };
    let pn = pb::NodeProto { op_type: "MatMul".into(), ..Default::default() };
    let ins = [vec![1, 1, 256, 128]];
    let statics = [(0, &table)];
    let ctx = NodeCtx {
        pn: &pn,
        in_shapes: &ins,
        out_shapes: &[vec![1, 256, 16, 128]],
        statics: &statics,
        act_slots: vec![1],
    };
    assert_eq!(map_node(&ctx).unwrap().macs, 256 * 16 * 128 * 256);
}

fn weight(numel: u64) -> crate::onnx::Static {
    crate::onnx::Static {
        float: true,
        numel,
        sources: vec![format!("w{numel}")],
        value: None,
        computable: false,
    }
}

#[test]
fn a_recurrent_layer_multiplies_every_step_by_w_and_r() {
    // a bidirectional LSTM as timm's sequencer writes it: 14 steps, batch 14, 192 -> 48
    let (t, b, i, h, dirs) = (14u64, 14u64, 192u64, 48u64, 2u64);
    let (w, r, bias) = (weight(dirs * 4 * h * i), weight(dirs * 4 * h * h), weight(dirs * 8 * h));
    let pn = pb::NodeProto {
        op_type: "LSTM".into(),
        input: ["x", "W", "R", "B"].map(String::from).to_vec(),
        ..Default::default()
    };
    let ins = [vec![t as usize, b as usize, i as usize]];
    let statics = [(1, &w), (2, &r), (3, &bias)];
    let ctx = NodeCtx {
        pn: &pn,
        in_shapes: &ins,
        out_shapes: &[vec![t as usize, dirs as usize, b as usize, h as usize]],
        statics: &statics,
        act_slots: vec![0],
    };
    let m = map_node(&ctx).unwrap();
    assert_eq!(m.kind, OpKind::Lstm);
    assert_eq!(m.macs, dirs * t * b * 4 * h * (i + h));
    assert_eq!(m.flops, 2 * m.macs + 3 * dirs * t * b * 4 * h);
    assert_eq!(m.attrs.bias, Some(true));
    // W, R, B and the peepholes are parameters; lengths and initial states are not
    let slots: Vec<usize> = (0..8).filter(|&s| slots::is_param_slot("LSTM", s)).collect();
    assert_eq!(slots, [1, 2, 3, 7]);
    assert!(slots::is_weight_slot("GRU", 2) && !slots::is_weight_slot("GRU", 5));
    // a W that does not fit the input is an error, not a guess
    let bad = [vec![t as usize, b as usize, 100]];
    let e = map_node(&NodeCtx { in_shapes: &bad, ..ctx }).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn a_kernel_computed_from_the_input_is_a_convolution_without_parameters() {
    // CondConv with batch 2: the routed kernel [2 x 32, 16 / 1, 3, 3] is an activation, the
    // batch folded into the groups (group 2) of a [1, 2 x 16, 28, 28] input
    let pn = pb::NodeProto {
        op_type: "Conv".into(),
        attribute: vec![pb::AttributeProto { name: "group".into(), i: 2, ..Default::default() }],
        ..Default::default()
    };
    let ins = [vec![1, 32, 28, 28], vec![64, 16, 3, 3]];
    let ctx = NodeCtx {
        pn: &pn,
        in_shapes: &ins,
        out_shapes: &[vec![1, 64, 26, 26]],
        statics: &[],
        act_slots: vec![0, 1],
    };
    let m = map_node(&ctx).unwrap();
    assert_eq!((m.kind.clone(), m.attrs.kernel.clone()), (OpKind::Conv, vec![3, 3]));
    assert_eq!(m.macs, 64 * 26 * 26 * 16 * 9);
    let e = map_node(&NodeCtx { act_slots: vec![0], in_shapes: &ins[..1], ..ctx }).unwrap_err();
    assert!(e.contains("no weight input"), "{e}");
}

#[test]
fn an_einsum_it_cannot_read_is_an_error_not_a_guess() {
    // (an implicit output is read: the letters that occur once, in order)
    assert_eq!(einsum("ij,jk", &[vec![3, 4], vec![4, 5]], vec![3, 5]).unwrap().macs, 60);
    let e = einsum("ijk,jk->i", &[vec![3, 4], vec![4, 5]], vec![3]).unwrap_err();
    assert!(e.contains("does not fit"), "{e}");
}

#[test]
fn col2im_reads_its_block_from_the_static_operand_and_adds_each_input_once() {
    // VOLO's fold: 3x3 blocks, stride 2, pad 1, of 192 channels back into 28x28
    let block = crate::onnx::Static {
        float: false,
        numel: 2,
        sources: vec![],
        value: Some(Arc::new(tract_onnx::prelude::tensor1(&[3i64, 3]))),
        computable: true,
    };
    let pn = pb::NodeProto {
        op_type: "Col2Im".into(),
        attribute: vec![
            pb::AttributeProto { name: "strides".into(), ints: vec![2, 2], ..Default::default() },
            pb::AttributeProto {
                name: "pads".into(),
                ints: vec![1, 1, 1, 1],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let ins = [vec![1, 192 * 9, 196]];
    let statics = [(2, &block)];
    let ctx = NodeCtx {
        pn: &pn,
        in_shapes: &ins,
        out_shapes: &[vec![1, 192, 28, 28]],
        statics: &statics,
        act_slots: vec![0],
    };
    let m = map_node(&ctx).unwrap();
    assert_eq!(m.kind, OpKind::Col2Im);
    assert_eq!((m.attrs.kernel.clone(), m.attrs.stride.clone()), (vec![3, 3], vec![2, 2]));
    assert_eq!(m.attrs.padding, vec![1, 1, 1, 1]);
    assert_eq!((m.macs, m.flops), (0, 192 * 9 * 196));
    assert!(slots::carries_value("Col2Im", 0) && !slots::carries_value("Col2Im", 2));
}
