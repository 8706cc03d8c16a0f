//! The node builder of the rewrites done before tract reads a model (`fused`, `lower_legacy`):
//! nodes and constants named below the rewritten node's name, and the opset-dependent forms.

use super::write::int as attr_i;
use tract_onnx::pb;

/// The nodes and constants a rewrite writes, each named below its source node's name.
pub(super) struct Out {
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) inits: Vec<pb::TensorProto>,
    pub(super) opset: i64,
    base: String,
    next: usize,
}

/// A string attribute.
pub(super) fn attr_s(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 3, s: v.into(), ..Default::default() }
}

/// An ints attribute.
pub(super) fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 7, ints: v.to_vec(), ..Default::default() }
}

/// The `value` attribute of a `Constant` or `ConstantOfShape`: a float tensor.
pub(super) fn attr_value(dims: &[i64], data: &[f32]) -> pb::AttributeProto {
    let t = pb::TensorProto {
        dims: dims.to_vec(),
        data_type: 1,
        float_data: data.to_vec(),
        ..Default::default()
    };
    pb::AttributeProto {
        name: "value".into(),
        r#type: pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

/// A float attribute of `n`, or `default`.
pub(super) fn float_attr(n: &pb::NodeProto, name: &str, default: f32) -> f32 {
    n.attribute.iter().find(|a| a.name == name).map_or(default, |a| a.f)
}

/// A floats attribute of `n` (empty when absent).
pub(super) fn floats_attr(n: &pb::NodeProto, name: &str) -> Vec<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.floats.clone()).unwrap_or_default()
}

impl Out {
    /// An empty rewrite of a node named `base`, in a model of `opset`.
    pub(super) fn new(opset: i64, base: String) -> Out {
        Out { nodes: Vec::new(), inits: Vec::new(), opset, base, next: 0 }
    }

    /// A new name below the rewritten node's.
    pub(super) fn name(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{}/nape_{what}_{}", self.base, self.next)
    }

    /// A node of `op` writing `out`.
    pub(super) fn op_to(
        &mut self,
        op: &str,
        input: Vec<String>,
        attr: Vec<pb::AttributeProto>,
        out: &str,
    ) {
        self.op_n(op, input, attr, &[out.to_string()]);
    }

    /// A node of `op` writing `outs`.
    pub(super) fn op_n(
        &mut self,
        op: &str,
        input: Vec<String>,
        attr: Vec<pb::AttributeProto>,
        outs: &[String],
    ) {
        let name = self.name(op);
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input,
            output: outs.to_vec(),
            attribute: attr,
            ..Default::default()
        });
    }

    /// A node of `op` writing a new name, which it returns.
    pub(super) fn op(
        &mut self,
        op: &str,
        input: Vec<String>,
        attr: Vec<pb::AttributeProto>,
    ) -> String {
        let out = self.name(&format!("{op}_out"));
        self.op_to(op, input, attr, &out);
        out
    }

    /// A float constant (an initializer); its name.
    pub(super) fn floats(&mut self, dims: &[i64], data: &[f32]) -> String {
        let name = self.name("const");
        let t = pb::TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: 1,
            ..Default::default()
        };
        self.inits.push(pb::TensorProto { float_data: data.to_vec(), ..t });
        name
    }

    /// An int64 vector constant (an initializer); its name.
    pub(super) fn ints(&mut self, data: &[i64]) -> String {
        let name = self.name("const");
        let dims = vec![data.len() as i64];
        let t = pb::TensorProto { name: name.clone(), dims, data_type: 7, ..Default::default() };
        self.inits.push(pb::TensorProto { int64_data: data.to_vec(), ..t });
        name
    }

    /// A float constant written as a `Constant` node: an op's attribute values, which no
    /// count takes for trained parameters (docs/costs.md); its name.
    pub(super) fn constant(&mut self, dims: &[i64], data: &[f32]) -> String {
        let name = self.name("const");
        let value = attr_value(dims, data);
        self.op_to("Constant", vec![], vec![value], &name);
        name
    }

    /// The reduction `op` over `axes`, keeping them: axes an input from the opset that made
    /// them one (13 for `ReduceSum`, 18 for the others), an attribute before.
    pub(super) fn reduce(&mut self, op: &str, x: String, axes: &[i64]) -> String {
        if self.opset >= if op == "ReduceSum" { 13 } else { 18 } {
            let a = self.ints(axes);
            self.op(op, vec![x, a], vec![attr_i("keepdims", 1)])
        } else {
            self.op(op, vec![x], vec![attr_i("keepdims", 1), attr_ints("axes", axes)])
        }
    }
}
