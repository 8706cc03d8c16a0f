//! Tensor values for the dequantization: the element types quantized files use, read as f32,
//! and `(q - zero_point) * scale` per tensor or per axis.

use tract_onnx::pb;

const FLOAT: i32 = 1;

/// A tensor's values as f32 with its dims, for the element types quantized files use.
pub(super) struct Values {
    pub(super) dims: Vec<i64>,
    pub(super) data: Vec<f32>,
}

/// Values of `t` (int8, uint8, int16, uint16, int32, float, float16, double), or `None`: the
/// tensor as the shape analysis reads initializers ([`crate::onnx::shapes`]), cast to f32.
pub(super) fn values(t: &pb::TensorProto) -> Option<Values> {
    if !matches!(t.data_type, 1..=6 | 10 | 11) {
        return None;
    }
    let tensor = super::super::shapes::initializer(t)?;
    let cast = tensor.cast_to::<f32>().ok()?;
    let data = cast.to_plain_array_view::<f32>().ok()?.iter().copied().collect();
    Some(Values { dims: t.dims.clone(), data })
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
