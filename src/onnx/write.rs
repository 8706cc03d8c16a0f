//! Writing ONNX: a small builder for generated architectures (benchmark cells, test nets).
//!
//! The builder tracks every tensor's shape as it goes, so callers say "a 3x3 conv to 64
//! channels" and the weight shapes follow. Weights are written one of two ways
//! ([`Weights`]): as typed graph inputs with no data (files of a few kilobytes; nape's loader
//! counts them as parameters, listed under the model metadata key [`WEIGHT_INPUTS_KEY`]), or as
//! initializers filled the way PyTorch initialises a fresh module (seeded).

use crate::graph::Shape;
use prost::Message;
use std::collections::BTreeMap;
use tract_onnx::pb;

/// Model metadata key listing (comma-separated) the graph inputs that are weights, not data.
pub const WEIGHT_INPUTS_KEY: &str = "nape.weight_inputs";

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// How weights are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Weights are typed graph inputs without data (tiny files; shapes and counts only).
    Inputs,
    /// Weights are initializers with values drawn as PyTorch's default init does (Kaiming
    /// uniform for conv/linear, ones/zeros for norms), from this seed.
    Data(u64),
}

/// Builds one ONNX model. Every method that adds a node returns the name of its output tensor.
#[derive(Debug)]
pub struct ModelBuilder {
    graph: pb::GraphProto,
    shapes: BTreeMap<String, Shape>,
    weights: Weights,
    weight_inputs: Vec<String>,
    rng: u64,
    counter: usize,
    doc: String,
}

/// Result of building: the model and a count of the parameters it declares.
#[derive(Debug, Clone)]
pub struct BuiltModel {
    /// The ONNX model.
    pub model: pb::ModelProto,
    /// Trainable parameters written (BatchNorm running statistics excluded).
    pub params: u64,
}

impl BuiltModel {
    /// Serialised protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }
}

impl ModelBuilder {
    /// A builder with one float input `name` of `shape`.
    pub fn new(name: &str, input: &str, shape: &[usize], weights: Weights) -> ModelBuilder {
        let mut b = ModelBuilder {
            graph: pb::GraphProto { name: name.to_string(), ..Default::default() },
            shapes: BTreeMap::new(),
            weights,
            weight_inputs: Vec::new(),
            rng: match weights {
                Weights::Data(s) => s ^ 0x9E37_79B9_7F4A_7C15,
                Weights::Inputs => 0,
            },
            counter: 0,
            doc: String::new(),
        };
        b.graph.input.push(value_info(input, shape));
        b.shapes.insert(input.to_string(), shape.to_vec());
        b
    }

    /// Sets the model's doc string (e.g. the benchmark spec it was built from).
    pub fn doc(&mut self, doc: impl Into<String>) {
        self.doc = doc.into();
    }

    /// The shape of a tensor made so far.
    pub fn shape(&self, t: &str) -> &[usize] {
        self.shapes.get(t).map(|s| s.as_slice()).unwrap_or(&[])
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    fn next_uniform(&mut self) -> f32 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Adds a float weight; `fill` gives values when weights carry data.
    fn weight(&mut self, name: &str, dims: &[usize], fill: Fill) -> String {
        match self.weights {
            Weights::Inputs => {
                self.graph.input.push(value_info(name, dims));
                self.weight_inputs.push(name.to_string());
            }
            Weights::Data(_) => {
                let n: usize = dims.iter().product();
                let data: Vec<f32> = match fill {
                    Fill::Uniform(bound) => (0..n).map(|_| self.next_uniform() * bound).collect(),
                    Fill::Const(v) => vec![v; n],
                };
                self.graph.initializer.push(pb::TensorProto {
                    name: name.to_string(),
                    dims: dims.iter().map(|&d| d as i64).collect(),
                    data_type: FLOAT,
                    float_data: data,
                    ..Default::default()
                });
            }
        }
        self.shapes.insert(name.to_string(), dims.to_vec());
        name.to_string()
    }

    /// Adds a constant (always written as data).
    fn constant_f32(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            float_data: data,
            ..Default::default()
        });
        name.to_string()
    }

    fn constant_i64(&mut self, name: &str, data: Vec<i64>) -> String {
        self.graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            dims: vec![data.len() as i64],
            data_type: INT64,
            int64_data: data,
            ..Default::default()
        });
        name.to_string()
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
        out_shape: Shape,
    ) -> String {
        let out = format!("{name}_out");
        self.graph.node.push(pb::NodeProto {
            op_type: op.to_string(),
            name: name.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        self.shapes.insert(out.clone(), out_shape);
        out
    }

    /// 2-D convolution with square kernel `k`, `stride`, symmetric `pad`, `groups`; PyTorch's
    /// default init (Kaiming uniform with a = sqrt(5): bound 1/sqrt(fan_in)).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: &str,
        out_ch: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let s = self.shape(x).to_vec();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let fan_in = (c / groups) * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let wname = self.weight(
            &format!("{name}.weight"),
            &[out_ch, c / groups, k, k],
            Fill::Uniform(bound),
        );
        let mut inputs = vec![x.to_string(), wname];
        if bias {
            inputs.push(self.weight(&format!("{name}.bias"), &[out_ch], Fill::Uniform(bound)));
        }
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad, pad, pad, pad]),
            ints("dilations", &[1, 1]),
            int("group", groups as i64),
        ];
        let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        self.node("Conv", name, &refs, attrs, vec![n, out_ch, oh, ow])
    }

    /// BatchNorm over channels: scale and shift are parameters, running mean/var are not.
    pub fn batch_norm(&mut self, name: &str, x: &str, eps: f32, momentum: f32) -> String {
        let s = self.shape(x).to_vec();
        let c = s[1];
        let scale = self.weight(&format!("{name}.weight"), &[c], Fill::Const(1.0));
        let bias = self.weight(&format!("{name}.bias"), &[c], Fill::Const(0.0));
        let mean = self.constant_f32(&format!("{name}.running_mean"), &[c], vec![0.0; c]);
        let var = self.constant_f32(&format!("{name}.running_var"), &[c], vec![1.0; c]);
        let attrs = vec![float("epsilon", eps), float("momentum", momentum)];
        self.node("BatchNormalization", name, &[x, &scale, &bias, &mean, &var], attrs, s)
    }

    /// ReLU.
    pub fn relu(&mut self, name: &str, x: &str) -> String {
        let s = self.shape(x).to_vec();
        self.node("Relu", name, &[x], vec![], s)
    }

    /// Max or average pooling with square kernel (average excludes padding, as PyTorch's
    /// `count_include_pad=False`; set `count_include_pad` to change).
    #[allow(clippy::too_many_arguments)]
    pub fn pool(
        &mut self,
        name: &str,
        x: &str,
        max: bool,
        k: usize,
        stride: usize,
        pad: usize,
        count_include_pad: bool,
    ) -> String {
        let s = self.shape(x).to_vec();
        let oh = (s[2] + 2 * pad - k) / stride + 1;
        let ow = (s[3] + 2 * pad - k) / stride + 1;
        let mut attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad, pad, pad, pad]),
        ];
        if !max {
            attrs.push(int("count_include_pad", i64::from(count_include_pad)));
        }
        self.node(
            if max { "MaxPool" } else { "AveragePool" },
            name,
            &[x],
            attrs,
            vec![s[0], s[1], oh, ow],
        )
    }

    /// Global average pooling to `[N, C, 1, 1]`.
    pub fn global_avg_pool(&mut self, name: &str, x: &str) -> String {
        let s = self.shape(x).to_vec();
        self.node("GlobalAveragePool", name, &[x], vec![], vec![s[0], s[1], 1, 1])
    }

    /// Flatten to `[N, rest]`.
    pub fn flatten(&mut self, name: &str, x: &str) -> String {
        let s = self.shape(x).to_vec();
        let rest = s[1..].iter().product();
        self.node("Flatten", name, &[x], vec![int("axis", 1)], vec![s[0], rest])
    }

    /// Fully connected layer `y = x W^T + b` as Gemm (PyTorch's Linear init).
    pub fn linear(&mut self, name: &str, x: &str, out: usize) -> String {
        let s = self.shape(x).to_vec();
        let bound = 1.0 / (s[1] as f32).sqrt();
        let w = self.weight(&format!("{name}.weight"), &[out, s[1]], Fill::Uniform(bound));
        let b = self.weight(&format!("{name}.bias"), &[out], Fill::Uniform(bound));
        self.node("Gemm", name, &[x, &w, &b], vec![int("transB", 1)], vec![s[0], out])
    }

    /// Elementwise sum of several tensors of one shape (a chain of Adds; one input is returned as is).
    pub fn add(&mut self, name: &str, xs: &[String]) -> String {
        let mut acc = xs[0].clone();
        for (i, x) in xs.iter().enumerate().skip(1) {
            let s = self.shape(&acc).to_vec();
            let nm = if xs.len() == 2 { name.to_string() } else { format!("{name}.{i}") };
            acc = self.node("Add", &nm, &[&acc, x], vec![], s);
        }
        acc
    }

    /// Channel concatenation.
    pub fn concat(&mut self, name: &str, xs: &[String]) -> String {
        let mut s = self.shape(&xs[0]).to_vec();
        s[1] = xs.iter().map(|x| self.shape(x)[1]).sum();
        let refs: Vec<&str> = xs.iter().map(|s| s.as_str()).collect();
        self.node("Concat", name, &refs, vec![int("axis", 1)], s)
    }

    /// Zeros of `x`'s shape, written as `Mul(x, 0)` (NAS-Bench-201's `none` op).
    pub fn zero(&mut self, name: &str, x: &str) -> String {
        let s = self.shape(x).to_vec();
        let z = self.fresh("zero_const");
        let z = self.constant_f32(&z, &[], vec![0.0]);
        self.node("Mul", name, &[x, &z], vec![], s)
    }

    /// Channel slice `[start, end)` (used for NB-101's truncated projections).
    pub fn slice_channels(&mut self, name: &str, x: &str, start: usize, end: usize) -> String {
        let mut s = self.shape(x).to_vec();
        s[1] = end - start;
        let st = self.constant_i64(&format!("{name}.starts"), vec![start as i64]);
        let en = self.constant_i64(&format!("{name}.ends"), vec![end as i64]);
        let ax = self.constant_i64(&format!("{name}.axes"), vec![1]);
        self.node("Slice", name, &[x, &st, &en, &ax], vec![], s)
    }

    /// Finishes the model with `x` as its single output.
    pub fn finish(mut self, x: &str) -> BuiltModel {
        let shape = self.shape(x).to_vec();
        self.graph.output.push(value_info(x, &shape));
        let params = count_params(&self.graph, &self.weight_inputs);
        let mut metadata_props = Vec::new();
        if !self.weight_inputs.is_empty() {
            metadata_props.push(pb::StringStringEntryProto {
                key: WEIGHT_INPUTS_KEY.to_string(),
                value: self.weight_inputs.join(","),
            });
        }
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "nape".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            doc_string: self.doc,
            graph: Some(self.graph),
            metadata_props,
            ..Default::default()
        };
        BuiltModel { model, params }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fill {
    Uniform(f32),
    Const(f32),
}

/// Parameters declared by a built graph: weight inputs plus float initializers, less BatchNorm
/// running statistics and scalars.
fn count_params(g: &pb::GraphProto, weight_inputs: &[String]) -> u64 {
    let numel = |dims: &[i64]| dims.iter().map(|&d| d.max(0) as u64).product::<u64>();
    let from_inputs: u64 = g
        .input
        .iter()
        .filter(|v| weight_inputs.contains(&v.name))
        .map(|v| {
            super::inputs::declared_dims(v)
                .iter()
                .map(|d| d.unwrap_or(0).max(0) as u64)
                .product::<u64>()
        })
        .sum();
    let from_init: u64 = g
        .initializer
        .iter()
        .filter(|t| {
            t.data_type == FLOAT
                && !t.name.ends_with(".running_mean")
                && !t.name.ends_with(".running_var")
        })
        .map(|t| numel(&t.dims))
        .filter(|&n| n > 1)
        .sum();
    from_inputs + from_init
}

/// A float tensor value-info with static dims.
pub fn value_info(name: &str, shape: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An int attribute.
pub(super) fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}

fn ints(name: &str, v: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

/// A float attribute.
pub(super) fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 1, f: v, ..Default::default() }
}
