//! A batch run one sample at a time, for a graph bound at batch 1 that mixes no samples.
//!
//! An exporter that traces a network at batch 1 may fold the batch into constants: a Reshape
//! to `[50, 12, 64]` in torchvision's ViT-B/32 attention (`[tokens, batch x heads, dim]`), a
//! Gather of indices computed for one image in dynamo's Swin. The executor follows a batch
//! in a shape's first dimension, alone or merged with heads (`ops::target`); it cannot tell
//! where else a 1 was the batch, and a wrong guess fails at best and mixes samples at worst.
//! Where nothing in the graph mixes the samples of a batch, running the file's own batch-1
//! graph once per sample is the network on that batch exactly, wherever the exporter put the
//! batch. What mixes samples is a BatchNorm computing batch statistics (training mode, as
//! the proxies run freshly built networks), so a graph with one runs its batch at once.

use super::{Executor, Forward, Tap, Taps};
use crate::error::{Error, Result};
use crate::graph::OpKind;
use tch::Tensor;

impl Executor<'_> {
    /// Whether [`Executor::forward`] runs a batch of `batch` one sample at a time: the graph is
    /// bound at batch 1 and no BatchNorm of it computes batch statistics.
    pub fn runs_per_sample(&self, batch: i64) -> bool {
        let batch_stats = self.opts.keep_bn && self.opts.train;
        // the cheap conditions first: the graph is read only for a batch-1 graph run larger
        batch > 1
            && self.cg_batch == 1
            && !(batch_stats && self.cg.graph.node_weights().any(|n| n.kind == OpKind::BatchNorm))
    }
}

impl Tap {
    /// The tensors a gradient with respect to this tap is taken for: the samples' tensors
    /// where the batch ran one sample at a time, else the tap's own ([`tap_grads`] joins
    /// them back).
    pub fn differentiated(&self) -> Vec<&Tensor> {
        if self.parts.is_empty() {
            vec![&self.value]
        } else {
            self.parts.iter().collect()
        }
    }
}

/// Each tap's gradient from `grads`, the gradients with respect to the taps'
/// [`Tap::differentiated`] tensors in order: a sample-by-sample tap's joined as its value is.
pub fn tap_grads(taps: &[Tap], grads: Vec<Tensor>) -> std::result::Result<Vec<Tensor>, String> {
    let mut grads = grads.into_iter();
    let mut out = Vec::with_capacity(taps.len());
    for t in taps {
        if t.parts.is_empty() {
            out.extend(grads.next());
        } else {
            let parts: Vec<Tensor> = grads.by_ref().take(t.parts.len()).collect();
            out.push(join_samples(&parts.iter().collect::<Vec<_>>())?);
        }
    }
    Ok(out)
}

/// [`Executor::forward`] one sample at a time: each output and each tap joined across the
/// samples ([`join_samples`]), a tap keeping its samples' tensors for gradients.
pub(super) fn forward(ex: &Executor, inputs: &[Tensor], taps: Taps, batch: i64) -> Result<Forward> {
    let fail = |msg: String| Error::Shape { path: ex.cg.source.clone(), msg };
    let mut runs = Vec::with_capacity(batch as usize);
    for i in 0..batch {
        let one = inputs
            .iter()
            .map(|t| t.f_narrow(0, i, 1))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("sample {i} of the inputs: {}", super::ops::e(e))))?;
        runs.push(ex.forward_batch(&one, taps)?);
    }
    let join = |pick: &dyn Fn(&Forward) -> &[Tensor]| -> Result<Vec<Tensor>> {
        let n = pick(&runs[0]).len();
        (0..n)
            .map(|j| {
                let parts: Vec<&Tensor> = runs.iter().filter_map(|r| pick(r).get(j)).collect();
                join_samples(&parts).map_err(|e| fail(format!("joining the samples: {e}")))
            })
            .collect()
    };
    let outputs = join(&|r| &r.outputs)?;
    let mut fwd = Forward { outputs, ..Forward::default() };
    fwd.relu_in = join_taps(&runs, |r| &r.relu_in).map_err(fail)?;
    fwd.relu_out = join_taps(&runs, |r| &r.relu_out).map_err(fail)?;
    fwd.weighted_out = join_taps(&runs, |r| &r.weighted_out).map_err(fail)?;
    Ok(fwd)
}

/// The taps `pick` reads from each sample's run, joined tap by tap.
fn join_taps(
    runs: &[Forward],
    pick: impl Fn(&Forward) -> &Vec<Tap>,
) -> std::result::Result<Vec<Tap>, String> {
    let first = pick(&runs[0]);
    if runs.iter().any(|r| pick(r).len() != first.len()) {
        return Err("the samples' runs tapped different activations".into());
    }
    (0..first.len())
        .map(|j| {
            let parts: Vec<Tensor> =
                runs.iter().map(|r| pick(r)[j].value.shallow_clone()).collect();
            let value = join_samples(&parts.iter().collect::<Vec<_>>())
                .map_err(|e| format!("joining the samples of {}: {e}", first[j].node))?;
            Ok(Tap { node: first[j].node.clone(), value, fan_in: first[j].fan_in, parts })
        })
        .collect()
}

/// One tensor per sample joined into the batch's: along their first dimension where it is
/// the sample's (size 1, as a batch-first network's), else along a new first dimension (a
/// scalar, or a `[tokens, 1, dim]` whose batch the exporter put second). A gradient taken with
/// respect to the samples' tensors is joined the same way.
fn join_samples(parts: &[&Tensor]) -> std::result::Result<Tensor, String> {
    let leading = parts.iter().all(|t| t.dim() > 0 && t.size()[0] == 1);
    let joined = if leading { Tensor::f_cat(parts, 0) } else { Tensor::f_stack(parts, 0) };
    joined.map_err(super::ops::e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecOptions, Init};
    use crate::onnx::write::{ModelBuilder, Weights};
    use crate::onnx::{from_proto, ImportOptions};
    use tch::{Device, Kind};

    /// A batch-first network without BatchNorm, bound at batch 1: conv, ReLU, max pool,
    /// flatten, linear.
    fn small_cnn(bn: bool) -> crate::graph::Cg {
        let mut b = ModelBuilder::new("cnn", "x", &[1, 3, 8, 8], Weights::Inputs);
        let mut c = b.conv("c1", "x", 6, 3, 1, 1, 1, true);
        if bn {
            c = b.batch_norm("bn", &c, 1e-5, 0.1);
        }
        let c = b.relu("r1", &c);
        let c = b.pool("p1", &c, true, 2, 2, 0, true);
        let f = b.flatten("flat", &c);
        let y = b.linear("fc", &f, 4);
        from_proto(&b.finish(&y).model, "cnn", &ImportOptions::default()).expect("cg")
    }

    fn worst(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn one_sample_at_a_time_is_the_batch_where_the_batch_runs_at_once() {
        let cg = small_cnn(false);
        let ex = Executor::new(&cg, ExecOptions::default(), Init::Default, 3).expect("executor");
        assert!(ex.runs_per_sample(4) && !ex.runs_per_sample(1));
        let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let taps = Taps { relu_in: true, weighted_out: true, ..Default::default() };
        let each = forward(&ex, &[x.shallow_clone()], taps, 4).expect("per sample");
        let all = ex.forward_batch(&[x.shallow_clone()], taps).expect("at once");
        assert_eq!(each.outputs[0].size(), [4, 4]);
        assert!(worst(&each.outputs[0], &all.outputs[0]) < 1e-5);
        for (a, b) in each
            .weighted_out
            .iter()
            .zip(&all.weighted_out)
            .chain(each.relu_in.iter().zip(&all.relu_in))
        {
            assert_eq!((a.value.size(), a.parts.len(), a.fan_in), (b.value.size(), 4, b.fan_in));
            assert!(worst(&a.value, &b.value) < 1e-5, "{}", a.node);
        }
        // a gradient with respect to the samples' tensors, joined, is the batch's
        let loss = |f: &Forward| f.outputs[0].pow_tensor_scalar(2).sum(Kind::Float);
        let tap = &each.weighted_out[0];
        let parts: Vec<&Tensor> = tap.parts.iter().collect();
        let g = Tensor::run_backward(&[loss(&each)], &parts, false, false);
        let g_all =
            Tensor::run_backward(&[loss(&all)], &[&all.weighted_out[0].value], false, false);
        let joined = join_samples(&g.iter().collect::<Vec<_>>()).expect("join");
        assert!(worst(&joined, &g_all[0]) < 1e-5);
    }

    /// The miniature ViT of tests/corpus/batch1, whose head split is a Reshape to
    /// `[17, 2, 8]`: run at batch 3 all at once, the executor's batch-first reading of that
    /// shape fails or mixes the images; one image at a time is the network.
    #[test]
    fn the_batch_at_once_misreads_a_batch_1_attention_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/batch1");
        let cg = crate::onnx::load(&dir.join("attention.onnx"), &ImportOptions::default())
            .expect("tests/corpus/batch1/attention.onnx");
        let eval = ExecOptions { train: false, ..Default::default() };
        let ex = Executor::new(&cg, eval, Init::File, 0).expect("executor");
        let x = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
        let each = forward(&ex, &[x.shallow_clone()], Taps::default(), 3).expect("per sample");
        let one = ex.forward_batch(&[x.narrow(0, 2, 1)], Taps::default()).expect("one image");
        assert!(worst(&each.outputs[0].narrow(0, 2, 1), &one.outputs[0]) < 1e-6);
        match ex.forward_batch(&[x], Taps::default()) {
            Err(e) => assert!(e.to_string().contains("Reshape"), "{e}"),
            Ok(all) => {
                let y = &all.outputs[0];
                assert!(y.size() != [3, 5] || worst(y, &each.outputs[0]) > 1e-3, "{y:?}");
            }
        }
    }

    #[test]
    fn a_batchnorm_computing_batch_statistics_keeps_the_batch_together() {
        let cg = small_cnn(true);
        let train = Executor::new(&cg, ExecOptions::default(), Init::Default, 3).expect("executor");
        assert!(!train.runs_per_sample(4), "batch statistics mix the samples");
        let eval = ExecOptions { train: false, ..Default::default() };
        let ex = Executor::new(&cg, eval, Init::Default, 3).expect("executor");
        assert!(ex.runs_per_sample(4), "running statistics do not");
        let no_bn = ExecOptions { keep_bn: false, ..Default::default() };
        let ex = Executor::new(&cg, no_bn, Init::Default, 3).expect("executor");
        assert!(ex.runs_per_sample(4), "nor a BatchNorm made an identity");
    }

    #[test]
    fn samples_join_along_their_batch_or_a_new_first_dimension() {
        let a = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        assert_eq!(join_samples(&[&a, &a, &a]).expect("join").size(), [3, 2]);
        let seq = Tensor::ones([5, 1, 2], (Kind::Float, Device::Cpu));
        // the exporter put the batch second: a new first dimension for the samples
        assert_eq!(join_samples(&[&seq, &seq]).expect("join").size(), [2, 5, 1, 2]);
        let s = Tensor::from(1.5f32);
        assert_eq!(join_samples(&[&s, &s]).expect("join").size(), [2]);
    }
}
