//! The full NAS-Bench-101 CIFAR-10 network of a cell, as NAS-Bench-101's `model_builder.py`
//! builds it (see the parent module's docs).

use super::{Cell, Op, BN_EPS, BN_MOMENTUM, CELLS_PER_STACK, INPUT_SHAPE, NUM_CLASSES};
use super::{NUM_STACKS, STEM_CHANNELS};
use crate::error::Result;
use crate::onnx::write::{BuiltModel, ModelBuilder, Weights};
use crate::spaces::{bad_spec, Space};

impl Cell {
    /// Output channels of every vertex of this (pruned) cell when its input has `in_ch`
    /// channels and its output `out_ch`: NAS-Bench-101's `compute_vertex_channels`.
    pub fn vertex_channels(&self, in_ch: usize, out_ch: usize) -> Vec<usize> {
        let n = self.n;
        let mut vc = vec![0usize; n];
        vc[0] = in_ch;
        vc[n - 1] = out_ch;
        if n == 2 {
            return vc;
        }
        let out = n - 1;
        let fan_in = (1..out).filter(|&v| self.edge(v, out)).count().max(1);
        let interior = out_ch / fan_in;
        let mut correction = out_ch % fan_in;
        for (v, c) in vc.iter_mut().enumerate().take(out).skip(1) {
            if self.edge(v, out) {
                *c = interior;
                if correction > 0 {
                    *c += 1;
                    correction -= 1;
                }
            }
        }
        for v in (1..n.saturating_sub(2)).rev() {
            if !self.edge(v, out) {
                for dst in v + 1..out {
                    if self.edge(v, dst) {
                        vc[v] = vc[v].max(vc[dst]);
                    }
                }
            }
        }
        vc
    }

    /// The full NAS-Bench-101 CIFAR-10 network of this cell (pruned first) as ONNX.
    pub fn build(&self, weights: Weights) -> Result<BuiltModel> {
        let cell = self.prune()?;
        let spec = cell.spec();
        let mut b = ModelBuilder::new("nasbench101", "input", &INPUT_SHAPE, weights);
        b.doc(format!("NAS-Bench-101 CIFAR-10 network of cell {spec}"));
        let mut net = conv_bn_relu(&mut b, "stem", "input", STEM_CHANNELS, 3);
        let mut channels = STEM_CHANNELS;
        for stack in 0..NUM_STACKS {
            if stack > 0 {
                net = b.pool(&format!("downsample{stack}"), &net, true, 2, 2, 0, false);
                channels *= 2;
            }
            for module in 0..CELLS_PER_STACK {
                let name = format!("stack{stack}.module{module}");
                net = cell.build_module(&mut b, &name, &net, channels, &spec)?;
            }
        }
        let gap = b.global_avg_pool("gap", &net);
        let flat = b.flatten("flatten", &gap);
        let logits = b.linear("dense", &flat, NUM_CLASSES);
        Ok(b.finish(&logits))
    }

    /// One cell (module) of the network; `x` is its input, `channels` its output channels.
    fn build_module(
        &self,
        b: &mut ModelBuilder,
        name: &str,
        x: &str,
        channels: usize,
        spec: &str,
    ) -> Result<String> {
        let n = self.n;
        let out = n - 1;
        let in_ch = b.shape(x).get(1).copied().unwrap_or(0);
        let vc = self.vertex_channels(in_ch, channels);
        let mut tensors: Vec<String> = vec![x.to_string()];
        let mut concat_in: Vec<String> = Vec::new();
        for t in 1..out {
            let vname = format!("{name}.vertex{t}");
            let vin = self.vertex_input(b, &vname, &tensors, &vc, t, spec)?;
            let value = match self.ops[t] {
                Op::Conv3x3 => conv_bn_relu(b, &format!("{vname}.conv3x3"), &vin, vc[t], 3),
                Op::Conv1x1 => conv_bn_relu(b, &format!("{vname}.conv1x1"), &vin, vc[t], 1),
                Op::MaxPool3x3 => {
                    b.pool(&format!("{vname}.maxpool3x3"), &vin, true, 3, 1, 1, false)
                }
                Op::Input | Op::Output => {
                    return Err(bad_spec(Space::Nb101, spec, "interior input/output op"))
                }
            };
            if self.edge(t, out) {
                concat_in.push(value.clone());
            }
            tensors.push(value);
        }
        let output = if concat_in.is_empty() {
            if !self.edge(0, out) {
                return Err(bad_spec(Space::Nb101, spec, "the output has no input"));
            }
            conv_bn_relu(b, &format!("{name}.output.projection"), x, channels, 1)
        } else {
            let cat = if concat_in.len() == 1 {
                concat_in.remove(0)
            } else {
                b.concat(&format!("{name}.output.concat"), &concat_in)
            };
            if self.edge(0, out) {
                let proj = conv_bn_relu(b, &format!("{name}.output.projection"), x, channels, 1);
                b.add(&format!("{name}.output.add"), &[cat, proj])
            } else {
                cat
            }
        };
        Ok(output)
    }

    /// The input of interior vertex `t`: the outputs of its predecessors among the interior
    /// vertices (one a channel wider truncated to `vc[t]`) and, with an edge from the module's
    /// input `tensors[0]`, its 1x1 projection, summed when there are several.
    fn vertex_input(
        &self,
        b: &mut ModelBuilder,
        vname: &str,
        tensors: &[String],
        vc: &[usize],
        t: usize,
        spec: &str,
    ) -> Result<String> {
        let mut add_in: Vec<String> = Vec::new();
        for src in (1..t).filter(|&src| self.edge(src, t)) {
            let (have, want) = (vc[src], vc[t]);
            let input = match have.cmp(&want) {
                std::cmp::Ordering::Equal => tensors[src].clone(),
                std::cmp::Ordering::Greater if have - want == 1 => {
                    b.slice_channels(&format!("{vname}.truncate{src}"), &tensors[src], 0, want)
                }
                _ => {
                    let msg = format!("vertex {src} has {have} channels, vertex {t} needs {want}");
                    return Err(bad_spec(Space::Nb101, spec, msg));
                }
            };
            add_in.push(input);
        }
        if self.edge(0, t) {
            add_in.push(conv_bn_relu(b, &format!("{vname}.projection"), &tensors[0], vc[t], 1));
        }
        match add_in.len() {
            0 => Err(bad_spec(Space::Nb101, spec, format!("vertex {t} has no input"))),
            1 => Ok(add_in.remove(0)),
            _ => Ok(b.add(&format!("{vname}.sum"), &add_in)),
        }
    }
}

/// Convolution (`k`x`k`, same padding, no bias), BatchNorm, ReLU: NAS-Bench-101's `conv_bn_relu`.
fn conv_bn_relu(b: &mut ModelBuilder, name: &str, x: &str, out_ch: usize, k: usize) -> String {
    let c = b.conv(&format!("{name}.conv"), x, out_ch, k, 1, k / 2, 1, false);
    let n = b.batch_norm(&format!("{name}.bn"), &c, BN_EPS, BN_MOMENTUM);
    b.relu(&format!("{name}.relu"), &n)
}
