//! Which shape each graph input is bound to before the shapes are analysed.
//!
//! A weight input has the dims the file declares. The first data input takes `--input-shape`
//! where one is given. Every other dim the file leaves symbolic (`dim_param`, or no value) is
//! bound by name: `--dim NAME=N`, else the value `--input-shape` gives the same name in the first
//! input (so an attention mask's `sequence` follows the token ids'); a leading dim nothing binds
//! is the batch, 1. Any other unbound dim is refused: an image's size or a sequence's length is
//! not in the file, and reading it as 1 (as tract's defaults would) gives a network 1 pixel or 1
//! token wide, whose MACs and prediction are silently wrong.

use super::inputs::{datum_type_of, elem_type};
use super::{HashMap, ImportOptions};
use crate::error::{Error, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// One declared dim of a graph input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dim {
    Fixed(usize),
    /// A `dim_param`: bound by this name.
    Named(String),
    /// Neither a value nor a name.
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Named(n) => write!(f, "{n}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// The declared dims of a value, `None` when it declares no shape.
pub(super) fn declared(vi: &pb::ValueInfoProto) -> Option<Vec<Dim>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) = vi.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = t.shape.as_ref()?.dim.iter().map(|d| match &d.value {
        Some(Value::DimValue(v)) if *v > 0 => Dim::Fixed(*v as usize),
        Some(Value::DimParam(p)) if !p.is_empty() => Dim::Named(p.clone()),
        _ => Dim::Unknown,
    });
    Some(dims.collect())
}

/// The fact a graph input is bound to.
pub(super) fn bind_input(
    name: &str,
    graph: &pb::GraphProto,
    data_inputs: &[&pb::ValueInfoProto],
    weight_inputs: &HashMap<&str, Vec<usize>>,
    opts: &ImportOptions,
    source: &str,
) -> Result<InferenceFact> {
    let vi = graph.input.iter().find(|v| v.name == name);
    let shape = match (weight_inputs.get(name), vi) {
        (Some(dims), _) => dims.clone(),
        (None, Some(vi)) => {
            let first = data_inputs.first().copied();
            let is_first = first.is_some_and(|f| f.name == name);
            let symbols = symbols(first, opts, source)?;
            data_shape(vi, is_first, &symbols, opts, source)?
        }
        (None, None) => {
            return Err(Error::InvalidOnnx {
                path: source.into(),
                msg: format!("input '{name}' is used but not declared"),
            })
        }
    };
    let dt = vi.and_then(elem_type).and_then(datum_type_of).unwrap_or(DatumType::F32);
    Ok(InferenceFact::dt_shape(dt, shape.iter().map(|&d| d.to_dim()).collect::<TVec<_>>()))
}

/// The value of each symbolic dim name: `--dim NAME=N`, then the names of the first data input
/// with `--input-shape`'s values (or, without it, its leading name as the batch, 1).
fn symbols(
    first: Option<&pb::ValueInfoProto>,
    opts: &ImportOptions,
    source: &str,
) -> Result<HashMap<String, usize>> {
    let mut s: HashMap<String, usize> = opts.dims.iter().cloned().collect();
    let Some(dims) = first.and_then(declared) else { return Ok(s) };
    let given: Vec<Option<usize>> = match &opts.input_shape {
        Some(shape) => shape.iter().map(|&v| Some(v)).collect(),
        None => dims.iter().enumerate().map(|(i, _)| (i == 0).then_some(1)).collect(),
    };
    for (d, v) in dims.iter().zip(given) {
        let (Dim::Named(n), Some(v)) = (d, v) else { continue };
        match s.get(n) {
            Some(&w) if w != v && opts.input_shape.is_some() => {
                return Err(Error::Shape {
                    path: source.into(),
                    msg: format!("--dim {n}={w} contradicts --input-shape, which gives {n} = {v}"),
                })
            }
            Some(_) => {}
            None => {
                s.insert(n.clone(), v);
            }
        }
    }
    Ok(s)
}

/// The shape of a data input: `--input-shape` for the first one (checked against what the file
/// declares), else its declared dims with the symbols bound.
fn data_shape(
    vi: &pb::ValueInfoProto,
    is_first: bool,
    symbols: &HashMap<String, usize>,
    opts: &ImportOptions,
    source: &str,
) -> Result<Vec<usize>> {
    let name = &vi.name;
    let shape_err = |msg: String| Error::Shape { path: source.into(), msg };
    let declared = declared(vi).unwrap_or_default();
    if let (Some(s), true) = (&opts.input_shape, is_first) {
        if !declared.is_empty() && declared.len() != s.len() {
            return Err(shape_err(format!(
                "input '{name}' has rank {} but --input-shape gives rank {} ({s:?})",
                declared.len(),
                s.len()
            )));
        }
        if declared.iter().zip(s).any(|(d, w)| matches!(d, Dim::Fixed(v) if v != w)) {
            let shown = show(&declared);
            return Err(shape_err(format!(
                "input '{name}' is declared {shown} but --input-shape gives {s:?}"
            )));
        }
        return Ok(s.clone());
    }
    if declared.is_empty() {
        return Err(shape_err(format!("input '{name}' has no declared shape: pass --input-shape")));
    }
    let bound: Vec<Option<usize>> = declared
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(v) => Some(*v),
            Dim::Named(n) if symbols.contains_key(n) => symbols.get(n).copied(),
            _ if i == 0 => Some(1),
            _ => None,
        })
        .collect();
    if let Some(shape) = bound.iter().copied().collect::<Option<Vec<usize>>>() {
        return Ok(shape);
    }
    Err(shape_err(unbound_message(name, &declared, &bound, is_first)))
}

/// Why an input with unbound dims is refused, and how to bind them.
fn unbound_message(name: &str, declared: &[Dim], bound: &[Option<usize>], first: bool) -> String {
    let free: Vec<String> = declared
        .iter()
        .zip(bound)
        .enumerate()
        .filter(|(_, (_, b))| b.is_none())
        .map(|(i, (d, _))| format!("'{d}' (dim {i})"))
        .collect();
    let example: Vec<String> = declared
        .iter()
        .zip(bound)
        .map(|(d, b)| b.map_or_else(|| d.to_string().to_uppercase(), |v| v.to_string()))
        .collect();
    let named: Vec<String> = declared
        .iter()
        .zip(bound)
        .filter_map(|(d, b)| match (d, b) {
            (Dim::Named(n), None) => Some(format!("--dim {n}=N")),
            _ => None,
        })
        .collect();
    let mut how = Vec::new();
    if first {
        how.push(format!("--input-shape {}", example.join(",")));
    }
    if named.len() == free.len() {
        how.push(named.join(" "));
    }
    let how = if how.is_empty() {
        "it can only be read with a file that fixes them".to_string()
    } else {
        format!("pass {}", how.join(" or "))
    };
    format!(
        "input '{name}' is declared {}: {} not fixed in the file, and nape does not guess \
         (an image's size, a sequence's length); {how}",
        show(declared),
        if free.len() == 1 {
            format!("{} is", free[0])
        } else {
            format!("{} are", free.join(", "))
        }
    )
}

fn show(dims: &[Dim]) -> String {
    format!("[{}]", dims.iter().map(Dim::to_string).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{load_bytes, write::ModelBuilder, write::Weights};
    use prost::Message;

    /// A value of element type float with dims: a number, a `dim_param`, or `?` (neither).
    fn vi(name: &str, dims: &[&str]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: match (d.parse::<i64>(), *d) {
                    (Ok(v), _) => Some(Value::DimValue(v)),
                    (_, "?") => None,
                    _ => Some(Value::DimParam(d.to_string())),
                },
                ..Default::default()
            })
            .collect();
        let shape = pb::TensorShapeProto { dim };
        let t = pb::type_proto::Tensor { elem_type: 1, shape: Some(shape) };
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(t)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn opts(shape: Option<&[usize]>, dims: &[(&str, usize)]) -> ImportOptions {
        ImportOptions {
            input_shape: shape.map(<[usize]>::to_vec),
            dims: dims.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    /// The shapes `inputs` are bound to under `o`, in order (the first is the first data input).
    fn bound(inputs: &[pb::ValueInfoProto], o: &ImportOptions) -> Result<Vec<Vec<usize>>> {
        let s = symbols(inputs.first(), o, "t.onnx")?;
        inputs.iter().enumerate().map(|(i, v)| data_shape(v, i == 0, &s, o, "t.onnx")).collect()
    }

    #[test]
    fn declared_dims_keep_their_names() {
        let d = declared(&vi("x", &["N", "3", "?", "0"])).unwrap();
        assert_eq!(d, [Dim::Named("N".into()), Dim::Fixed(3), Dim::Unknown, Dim::Unknown]);
        assert_eq!(declared(&pb::ValueInfoProto::default()), None);
    }

    #[test]
    fn a_leading_symbol_is_the_batch_and_any_other_is_refused_by_name() {
        let ok = bound(&[vi("x", &["N", "3", "32", "32"])], &opts(None, &[])).unwrap();
        assert_eq!(ok, [vec![1, 3, 32, 32]]);
        let err = bound(&[vi("x", &["N", "3", "H", "W"])], &opts(None, &[])).unwrap_err();
        let msg = err.to_string();
        for s in ["'H' (dim 2)", "'W' (dim 3)", "--input-shape 1,3,H,W", "--dim H=N --dim W=N"] {
            assert!(msg.contains(s), "{s} not in: {msg}");
        }
        assert_eq!(err.exit_code(), crate::error::exit::ONNX);
        // an anonymous dim can only be bound by --input-shape
        let msg = bound(&[vi("x", &["1", "?"])], &opts(None, &[])).unwrap_err().to_string();
        assert!(msg.contains("--input-shape 1,?") && !msg.contains("--dim"), "{msg}");
    }

    #[test]
    fn dims_bind_by_name_in_every_input_and_follow_the_input_shape() {
        let ids = vi("input_ids", &["batch", "sequence"]);
        let mask = vi("attention_mask", &["batch", "sequence"]);
        let both = [ids.clone(), mask.clone()];
        let by_dim = bound(&both, &opts(None, &[("sequence", 16)])).unwrap();
        assert_eq!(by_dim, [vec![1, 16], vec![1, 16]]);
        let by_shape = bound(&both, &opts(Some(&[2, 8]), &[])).unwrap();
        assert_eq!(by_shape, [vec![2, 8], vec![2, 8]]);
        let agree = bound(&both, &opts(Some(&[1, 8]), &[("sequence", 8)])).unwrap();
        assert_eq!(agree, [vec![1, 8], vec![1, 8]]);
        let clash = bound(&both, &opts(Some(&[1, 8]), &[("sequence", 9)])).unwrap_err();
        assert!(clash.to_string().contains("--dim sequence=9 contradicts --input-shape"));
        // the second input's unbound symbol is refused without an --input-shape hint
        let other = [ids, vi("decoder_ids", &["batch", "target"])];
        let msg = bound(&other, &opts(None, &[("sequence", 4)])).unwrap_err().to_string();
        assert!(msg.contains("'target' (dim 1)") && msg.contains("--dim target=N"), "{msg}");
        assert!(!msg.contains("--input-shape"), "{msg}");
    }

    #[test]
    fn input_shape_is_checked_against_the_fixed_dims() {
        let x = [vi("x", &["N", "3", "H", "W"])];
        assert_eq!(bound(&x, &opts(Some(&[1, 3, 8, 8]), &[])).unwrap(), [vec![1, 3, 8, 8]]);
        let msg = bound(&x, &opts(Some(&[1, 4, 8, 8]), &[])).unwrap_err().to_string();
        assert!(msg.contains("declared [N, 3, H, W] but --input-shape gives"), "{msg}");
        let msg = bound(&x, &opts(Some(&[1, 3, 8]), &[])).unwrap_err().to_string();
        assert!(msg.contains("rank 4 but --input-shape gives rank 3"), "{msg}");
    }

    /// A 3x3 convolution on an input whose height and width the file leaves as `H`, `W`.
    fn symbolic_conv() -> Vec<u8> {
        let mut b = ModelBuilder::new("t", "x", &[1, 3, 8, 8], Weights::Data(1));
        let c = b.conv("conv", "x", 4, 3, 1, 1, 1, false);
        let mut m = b.finish(&c).model;
        let g = m.graph.as_mut().unwrap();
        g.input[0] = vi("x", &["N", "3", "H", "W"]);
        g.output.iter_mut().for_each(|o| o.r#type = None);
        m.encode_to_vec()
    }

    #[test]
    fn a_file_with_a_symbolic_image_size_is_refused_not_read_at_one_pixel() {
        let bytes = symbolic_conv();
        let err = load_bytes(&bytes, "t.onnx", &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("'H' (dim 2), 'W' (dim 3) are not fixed"), "{err}");
        let read = |o: &ImportOptions| load_bytes(&bytes, "t.onnx", o).unwrap().summary();
        let by_dim = read(&opts(None, &[("H", 8), ("W", 8)]));
        let by_shape = read(&opts(Some(&[1, 3, 8, 8]), &[]));
        // 4 output channels x 8 x 8 positions x 27 taps
        assert_eq!((by_dim.macs, by_shape.macs), (4 * 64 * 27, 4 * 64 * 27));
        let shapes_only = ImportOptions { shapes_only: true, ..opts(None, &[("H", 4), ("W", 4)]) };
        assert_eq!(read(&shapes_only).macs, 4 * 16 * 27);
    }
}
