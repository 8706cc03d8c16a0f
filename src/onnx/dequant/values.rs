//! Tensor values for the dequantization: the element types quantized files use, read as f32,
//! and `(q - zero_point) * scale` per tensor or per axis.

use tract_onnx::pb;
use tract_onnx::prelude::f16;

const FLOAT: i32 = 1;

/// A tensor's values as f32 with its dims, for the element types quantized files use.
pub(super) struct Values {
    pub(super) dims: Vec<i64>,
    pub(super) data: Vec<f32>,
}

/// Values of `t` (int8, uint8, int16, uint16, int32, float, float16, double), or `None`.
pub(super) fn values(t: &pb::TensorProto) -> Option<Values> {
    let n = t.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))?;
    let raw = &t.raw_data;
    let data: Vec<f32> = match (t.data_type, raw.is_empty()) {
        (1, true) => t.float_data.clone(),
        (1, false) => {
            raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        (2, false) => raw.iter().map(|&b| b as f32).collect(),
        (3, false) => raw.iter().map(|&b| b as i8 as f32).collect(),
        (4, false) => {
            raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f32).collect()
        }
        (5, false) => {
            raw.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32).collect()
        }
        (6, false) => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        (10, false) => {
            raw.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        (2, true) => t.int32_data.iter().map(|&v| v as u8 as f32).collect(),
        (3, true) => t.int32_data.iter().map(|&v| v as i8 as f32).collect(),
        (4, true) => t.int32_data.iter().map(|&v| v as u16 as f32).collect(),
        (5, true) => t.int32_data.iter().map(|&v| v as i16 as f32).collect(),
        (6, true) => t.int32_data.iter().map(|&v| v as f32).collect(),
        (10, true) => t.int32_data.iter().map(|&v| f16::from_bits(v as u16).to_f32()).collect(),
        (11, true) => t.double_data.iter().map(|&v| v as f32).collect(),
        (11, false) => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    };
    (data.len() == n).then(|| Values { dims: t.dims.clone(), data })
}

pub(super) fn is_integer(t: &pb::TensorProto) -> bool {
    matches!(t.data_type, 2..=6)
}

/// `(q - zp) * scale`, the scale and zero point per tensor or along `axis` of `q`.
pub(super) fn dequantized(
    q: &Values,
    scale: &Values,
    zp: Option<&Values>,
    axis: i64,
) -> Option<Vec<f32>> {
    let per = scale.data.len();
    if zp.is_some_and(|z| z.data.len() != per) || per == 0 {
        return None;
    }
    let rank = q.dims.len() as i64;
    let (stride, channels) = if per == 1 {
        (1, 1)
    } else {
        let axis = if axis < 0 { axis + rank } else { axis };
        let axis = usize::try_from(axis).ok().filter(|&a| a < q.dims.len())?;
        if q.dims[axis] as usize != per {
            return None;
        }
        (q.dims[axis + 1..].iter().product::<i64>() as usize, per)
    };
    let at = |i: usize| (i / stride.max(1)) % channels;
    let zero = |c: usize| zp.map_or(0.0, |z| z.data[c]);
    Some(q.data.iter().enumerate().map(|(i, &v)| (v - zero(at(i))) * scale.data[at(i)]).collect())
}

pub(super) fn float_tensor(name: String, dims: Vec<i64>, data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims,
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}
