//! How much memory a network's proxies hold at their peak, estimated from the CG's shapes, and
//! the budget that bounds the networks run together ([`super::schedule`]).
//!
//! A pass keeps a share of the activations its batch makes, which depends on what it runs
//! ([`Pass`]): a forward without gradients keeps only the tensors still to be read; one that
//! taps every ReLU (nwot, swap) keeps those too; a forward and backward keeps every activation
//! for the backward; GraSP's double backward keeps the backward's graph as well. The shares
//! were measured on three NB-101 cells of 0.4 M, 4.9 M and 39 M parameters (peak RSS of
//! `nape proxies FILE --names P --threads 1`, docs/proxies.md "Memory") and rounded up.

use super::{Needs, Proxy, Reads};
use crate::graph::Cg;

/// What a proxy's pass keeps of the activations its batch makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Reads only the graph: no pass.
    None,
    /// A forward without gradients: only the tensors still to be read.
    Forward,
    /// A forward without gradients that keeps a tap on every ReLU.
    ForwardTaps,
    /// A forward and a backward: every activation the backward reads.
    Backward,
    /// A backward of a backward (GraSP's Hessian-gradient product).
    DoubleBackward,
}

impl Pass {
    /// The pass a proxy runs unless it says otherwise: none for the graph alone, a double
    /// backward for the Hessian-gradient product, a forward and backward for everything else.
    pub fn default_for(needs: Needs, reads: Reads) -> Pass {
        match needs {
            Needs::Graph => Pass::None,
            _ if reads.hessian_grad => Pass::DoubleBackward,
            _ => Pass::Backward,
        }
    }

    /// The share of a batch's activations the pass keeps at its peak (measured, rounded up).
    fn share(self) -> f64 {
        match self {
            Pass::None => 0.0,
            Pass::Forward => 0.1,
            Pass::ForwardTaps => 0.45,
            Pass::Backward => 1.1,
            Pass::DoubleBackward => 2.7,
        }
    }
}

/// What one network holds besides its passes, on each lane that runs it: libtorch's and
/// oneDNN's working memory (about 0.35 GB measured on a small cell) and its weights with their
/// gradients (16 bytes a parameter).
const NETWORK_BASE: u64 = 350 << 20;

/// Bytes of activations one image makes in `cg`: every node output, 4 bytes an element,
/// divided by the batch the CG's shapes were made for.
pub fn activation_bytes_per_image(cg: &Cg) -> u64 {
    cg.output_elements() / cg.batch().max(1) as u64 * 4
}

/// The peak of one proxy's pass on a network that makes `act` bytes per image, with every
/// data proxy's batch set to `batch` where given.
fn pass_peak(p: &dyn Proxy, act: u64, batch: Option<usize>) -> u64 {
    let images = match p.needs() {
        Needs::Graph => 0,
        // synflow's all-ones input, in float64
        Needs::Nothing => 2,
        Needs::Images(n) => batch.unwrap_or(n),
    };
    (act as f64 * images as f64 * p.pass().share()) as u64
}

/// The memory the proxies `todo` hold at their peak on `cg`, `lanes` of them at a time: the
/// proxies that share the loss pass hold one pass together, every other proxy (or part of one)
/// its own, and lanes run the dearest at once.
pub fn network_peak(cg: &Cg, todo: &[&dyn Proxy], lanes: usize, batch: Option<usize>) -> u64 {
    let act = activation_bytes_per_image(cg);
    // the tasks lanes run: a task's proxies share its pass, so it holds the largest of them
    let mut peaks: Vec<u64> = super::lanes::tasks(todo)
        .iter()
        .map(|t| t.iter().map(|j| pass_peak(j.proxy, act, batch)).max().unwrap_or(0))
        .collect();
    peaks.sort_unstable_by(|a, b| b.cmp(a));
    // each lane builds its own network and works in its own libtorch memory
    let lanes = lanes.clamp(1, peaks.len().max(1)) as u64;
    let params: u64 = cg.graph.node_weights().map(|n| n.params).sum();
    lanes * (NETWORK_BASE + params * 16) + peaks.iter().take(lanes as usize).sum::<u64>()
}

/// The memory budget of networks run at once on this machine: 90% of what the kernel says is
/// available now (`MemAvailable` in /proc/meminfo); `None` where that cannot be read.
pub fn machine_budget() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024 / 10 * 9)
}

/// The estimated peak of the proxies `todo` on `cg`, `lanes` at a time ([`network_peak`]),
/// with a warning naming the network `name` when it exceeds the whole `budget`: the scheduler
/// ([`super::schedule`]) runs it alone.
pub fn need(
    cg: &Cg,
    todo: &[&dyn Proxy],
    lanes: usize,
    batch: Option<usize>,
    budget: Option<u64>,
    name: &str,
) -> u64 {
    let need = network_peak(cg, todo, lanes, batch);
    tracing::debug!("{name}: estimated peak {} MiB", need >> 20);
    if let Some(budget) = budget.filter(|b| need > *b) {
        let gb = |b: u64| b as f64 / (1u64 << 30) as f64;
        tracing::warn!(
            "{name}: its proxies may need about {:.1} GB, more than the {:.1} GB available; it \
             runs alone",
            gb(need),
            gb(budget)
        );
    }
    need
}

/// Hands the memory libtorch freed back to the kernel. libtorch allocates with glibc's malloc,
/// which keeps freed blocks in the arena of the thread that used them, for that thread's next
/// allocations. The scheduler counts what each worker so holds and calls this only when a
/// network waits for it ([`super::schedule`]); handing it back after every network made the next
/// one fault its pages in again (a third of the time on NB-201 cells), and keeping it without
/// counting it let the process hold the sum of the workers' peaks whatever ran at once
/// (measured: 8.7 GB against 6.6 GB for two NB-101 cells run one after the other,
/// docs/proxies.md "Memory").
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heaps to the kernel; it touches
    // no live allocation and is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb201_cell() -> Cg {
        use crate::spaces::{BuildOptions, Space};
        let spec = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|";
        let arch = Space::Nb201.parse_spec(spec).expect("spec");
        let bytes = arch.build(&BuildOptions::default()).expect("build").to_bytes();
        crate::onnx::load_bytes(&bytes, "cell", &Default::default()).expect("load")
    }

    #[test]
    fn peaks_grow_with_the_batch_the_backward_and_the_lanes() {
        use crate::proxies::{Grasp, L2Norm, Nwot, Params, Snip, Swap};
        let cg = nb201_cell();
        let act = activation_bytes_per_image(&cg);
        // the stem alone makes 16 x 32 x 32 float32 values three times (conv, BN, ReLU)
        assert!(act > 3 * 16 * 32 * 32 * 4, "{act}");
        let base = network_peak(&cg, &[&Params, &L2Norm], 1, None);
        let snip = network_peak(&cg, &[&Snip], 1, None);
        let grasp = network_peak(&cg, &[&Grasp], 1, None);
        assert!(base < snip && snip < grasp, "{base} {snip} {grasp}");
        assert_eq!(network_peak(&cg, &[&Snip, &Grasp], 1, None), grasp, "one shared pass");
        assert!(network_peak(&cg, &[&Snip], 1, Some(128)) > snip);
        let swap = Swap::default();
        let one = network_peak(&cg, &[&Nwot, &swap], 1, None);
        let two = network_peak(&cg, &[&Nwot, &swap], 2, None);
        assert!(two > one, "{one} {two}");
    }
}
