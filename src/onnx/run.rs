//! Running an ONNX model with tract, as the reference the tch executor is checked against.
//!
//! This is not part of nape's pipeline (tract is forward-only, and nape runs graphs with tch so
//! that gradients exist); it is here so that tests, and `nape bench`, can compare the executor
//! with an independent runtime on the same weights and inputs.

use super::analyse::{guarded, one_line};
use super::inputs::{declared_dims, elem_type};
use super::{decode, load_bytes, ImportOptions, WEIGHT_INPUTS_KEY};
use crate::error::{Error, Result};
use crate::graph::OpKind;
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A named float tensor: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Runs the model in `bytes` on `inputs` (every graph input that has no initializer, by name,
/// float32), and returns its outputs in graph order as (shape, values).
pub fn run_reference(
    bytes: &[u8],
    source: &str,
    inputs: &[NamedTensor],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let proto = decode(bytes, source)?;
    guarded(source, || {
        let onnx = tract_onnx::onnx().with_ignore_output_shapes(true).with_ignore_value_info(true);
        let mut model =
            onnx.model_for_proto_model(&proto).map_err(|e| invalid(one_line(&format!("{e:#}"))))?;
        let outlets = model.input_outlets().map_err(|e| invalid(format!("{e:#}")))?.to_vec();
        let mut values = TVec::new();
        for (ix, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let (_, shape, data) = inputs
                .iter()
                .find(|(n, _, _)| *n == name)
                .ok_or_else(|| invalid(format!("no value given for input '{name}'")))?;
            model
                .set_input_fact(ix, f32::fact(shape).into())
                .map_err(|e| invalid(format!("{e:#}")))?;
            let t = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data.clone())
                .map_err(|e| invalid(format!("input '{name}': {e}")))?;
            values.push(Tensor::from(t).into_tvalue());
        }
        let runnable = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| invalid(one_line(&format!("{e:#}"))))?;
        let outs = runnable.run(values).map_err(|e| invalid(one_line(&format!("{e:#}"))))?;
        outs.iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(|e| invalid(format!("{e:#}")))?;
                let v = t.to_plain_array_view::<f32>().map_err(|e| invalid(format!("{e:#}")))?;
                Ok((v.shape().to_vec(), v.iter().copied().collect()))
            })
            .collect()
    })
}

/// A seeded initializer for the weight input `vi` (see [`with_weights`]); draws one value of
/// `next` per element whatever the type, so the stream moves as it always has.
fn seeded_tensor(vi: &pb::ValueInfoProto, next: &mut impl FnMut() -> u64) -> pb::TensorProto {
    let dims = declared_dims(vi);
    let dims: Vec<i64> = dims.iter().map(|d| d.unwrap_or(1)).collect();
    let numel: i64 = dims.iter().product();
    let fan = if dims.len() >= 2 { (numel / dims[0].max(1)).max(1) } else { 0 };
    let vals: Vec<f32> = (0..numel)
        .map(|_| {
            let u = (next() >> 40) as f32 / (1u64 << 24) as f32;
            if fan > 0 {
                (2.0 * u - 1.0) / (fan as f32).sqrt()
            } else {
                0.5 + u
            }
        })
        .collect();
    match elem_type(vi) {
        // integer inputs are indices (a relative-position index): 0 is valid for any table
        Some(t @ (6 | 7)) => pb::TensorProto {
            name: vi.name.clone(),
            dims,
            data_type: t,
            int64_data: if t == 7 { vec![0; numel as usize] } else { vec![] },
            int32_data: if t == 6 { vec![0; numel as usize] } else { vec![] },
            ..Default::default()
        },
        _ => pb::TensorProto {
            name: vi.name.clone(),
            dims,
            data_type: 1,
            float_data: vals,
            ..Default::default()
        },
    }
}

/// Gives every weight input of a file exported without weights seeded values, written as
/// initializers, so that every runtime (and the loader's constant folding) sees the same
/// weights. Matrices and kernels get `U(-1, 1) / sqrt(fan_in)`, vectors (norm scales, shifts,
/// running statistics) `U(0.5, 1.5)`, integer inputs (indices) 0. A file whose weights are all in it comes back unchanged.
pub fn with_weights(bytes: &[u8], source: &str, seed: u64) -> Result<Vec<u8>> {
    let cg = load_bytes(bytes, source, &ImportOptions::default())?;
    let data: Vec<String> = cg
        .graph
        .node_weights()
        .filter(|n| n.kind == OpKind::Input)
        .map(|n| n.name.clone())
        .collect();
    let mut proto = decode(bytes, source)?;
    let Some(graph) = proto.graph.as_mut() else {
        return Err(Error::InvalidOnnx { path: source.into(), msg: "no graph".into() });
    };
    // a SplitMix64 stream (onnx sits below dataset, whose generator it must not import)
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut keep = Vec::new();
    let mut changed = false;
    for vi in std::mem::take(&mut graph.input) {
        if data.contains(&vi.name) || graph.initializer.iter().any(|t| t.name == vi.name) {
            keep.push(vi);
            continue;
        }
        let tensor = seeded_tensor(&vi, &mut next);
        graph.initializer.push(tensor);
        changed = true;
    }
    graph.input = keep;
    if !changed {
        return Ok(bytes.to_vec());
    }
    proto.metadata_props.retain(|p| p.key != WEIGHT_INPUTS_KEY);
    Ok(proto.encode_to_vec())
}
