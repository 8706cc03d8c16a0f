//! How much memory a network's proxies hold at their peak, estimated from the CG's shapes, and
//! the budget that bounds the networks run together ([`super::schedule`]).
//!
//! A pass keeps a share of the activations its batch makes, which depends on what it runs
//! ([`Pass`]): a forward without gradients keeps only the tensors still to be read; one that
//! taps every ReLU (nwot, swap) keeps those too; a forward and backward keeps every activation
//! for the backward; GraSP's double backward keeps the backward's graph as well. The shares
//! were measured on three NB-101 cells of 0.4 M, 4.9 M and 39 M parameters (peak RSS of
//! `nape proxies FILE --names P --threads 1`, docs/proxies.md "Memory") and rounded up.

use super::schedule::Prepared;
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

/// What glibc's heap adds to a pass's peak once it keeps freed memory ([`keep_freed`]): large
/// tensors no longer get a mapping each, so the heap they share fragments. The passes' share of
/// the peak RSS against their estimate without it, all 14 on two lanes (docs/proxies.md
/// "Memory"): 1.26 and 1.38 on the two NB-101 cells estimated at 9.7 GiB, 1.01 on one at 3.9
/// GiB; rounded up.
const HEAP_SLACK: f64 = 1.4;

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
    (act as f64 * images as f64 * p.pass().share() * HEAP_SLACK) as u64
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
    Some(meminfo("MemAvailable:")? / 10 * 9)
}

/// A field of /proc/meminfo (`key` with its colon), in bytes.
fn meminfo(key: &str) -> Option<u64> {
    proc_kib("/proc/meminfo", key)
}

/// A field given in kB in a /proc file (`key` with its colon), in bytes.
fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// All of this machine's memory, RAM and swap (`MemTotal` + `SwapTotal`); `None` where that
/// cannot be read.
pub fn machine_total() -> Option<u64> {
    Some(meminfo("MemTotal:")? + meminfo("SwapTotal:").unwrap_or(0))
}

/// The share of the machine's available memory the address-space cap lets a run take:
/// `MemAvailable` counts page cache the kernel cannot always reclaim in time, and mappings
/// that hold no memory (thread stacks, allocators' reserved arenas) count against the cap too.
const AVAILABLE_SHARE: f64 = 0.9;

/// The address-space cap of a process that maps `mapped` bytes now on a machine with
/// `available` bytes to give (`MemAvailable` + `SwapFree`). What is mapped now (libtorch's
/// libraries, mostly not resident) stays; what the run adds may reach 90% of `available`.
pub fn address_space_cap(mapped: u64, available: u64) -> u64 {
    mapped.saturating_add((available as f64 * AVAILABLE_SHARE) as u64)
}

/// Caps this process's address space (`RLIMIT_AS`, the soft limit, never raised) at what it
/// maps now plus what the machine has available ([`address_space_cap`]). The estimates that
/// schedule networks are estimates: a network estimated under the refusal line can still
/// outgrow the machine (pytorchcv's ResNet-542 for CIFAR-10, estimated 25-38 GB on a 23.5 GB
/// machine, was killed by the kernel at 23.9 GB with every network of its batch). Under the
/// cap its allocation fails instead: libtorch's "can't allocate memory", an out-of-memory
/// error of that network's proxies, reported and not cached, and the batch goes on. For the
/// CPU only (a GPU driver maps far more than it holds), and for `nape proxies` only (not a
/// Python host's process). Returns the cap set, `None` where nothing was set.
pub fn cap_address_space() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mapped = proc_kib("/proc/self/status", "VmSize:")?;
        let available = meminfo("MemAvailable:")? + meminfo("SwapFree:").unwrap_or(0);
        let cap = address_space_cap(mapped, available);
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write this process's limits.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_AS, &mut lim) != 0 || lim.rlim_cur <= cap {
                return None;
            }
            lim.rlim_cur = cap.min(lim.rlim_max);
            (libc::setrlimit(libc::RLIMIT_AS, &lim) == 0).then_some(lim.rlim_cur)
        }
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// How far an estimate may exceed all of the machine's memory before its network is refused:
/// the estimates run up to 1.9x the peak measured (docs/proxies.md "Memory"), so a network
/// estimated above twice the machine cannot fit even where its estimate errs the most.
const REFUSE_OVER: f64 = 2.0;

/// The refusal of a network estimated to need `need` bytes on a machine of `total` bytes (RAM
/// and swap, [`machine_total`]), or `None` when it may fit. Run anyway, it would be killed by
/// the kernel with every network of the batch. The message says "out of memory": like
/// libtorch's own ("CUDA out of memory", "can't allocate memory"), it is about the machine,
/// not the network, so the cache does not keep it ([`is_out_of_memory`]).
pub fn refusal(need: u64, total: Option<u64>) -> Option<String> {
    let total = total?;
    let gb = |b: u64| b as f64 / (1u64 << 30) as f64;
    (need as f64 > REFUSE_OVER * total as f64).then(|| {
        format!(
            "out of memory: its proxies would need about {:.1} GB, and this machine has {:.1} GB \
             in all; a smaller --batch, or fewer proxies (--names), may fit",
            gb(need),
            gb(total)
        )
    })
}

/// Whether an error says memory ran out (libtorch's CPU and CUDA allocators, C++'s
/// `std::bad_alloc` through libtorch, or [`refusal`]): the machine's state, not the network's,
/// so a rerun tries again. oneDNN's "could not create a primitive" counts too: it maps the code
/// of every kernel it compiles, and under the run's address-space cap ([`cap_address_space`])
/// a long run's convolutions failed so, ResNet-18's among them, which scores alone
/// (docs/proxies.md "Memory").
pub fn is_out_of_memory(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("can't allocate memory")
        || m.contains("could not create a primitive")
        || m.contains("std::bad_alloc")
}

/// The estimated peak of the proxies `todo` on `cg`, `lanes` at a time ([`network_peak`]), or
/// the [`refusal`] of a network that cannot fit the machine's `total` memory at all. A network
/// `name` estimated above the whole `budget` but not refused gets a warning: the scheduler
/// ([`super::schedule`]) runs it alone.
fn need(
    cg: &Cg,
    todo: &[&dyn Proxy],
    (lanes, batch): (usize, Option<usize>),
    (budget, total): (Option<u64>, Option<u64>),
    name: &str,
) -> Result<u64, String> {
    let need = network_peak(cg, todo, lanes, batch);
    tracing::debug!("{name}: estimated peak {} MiB", need >> 20);
    if let Some(refused) = refusal(need, total) {
        return Err(refused);
    }
    if let Some(budget) = budget.filter(|b| need > *b) {
        let gb = |b: u64| b as f64 / (1u64 << 30) as f64;
        tracing::warn!(
            "{name}: its proxies may need about {:.1} GB, more than the {:.1} GB available; it \
             runs alone",
            gb(need),
            gb(budget)
        );
    }
    Ok(need)
}

/// A network `name` ready for the scheduler: its graph `cg` with its estimated need ([`need`]),
/// or the error it reports instead, its graph's or its [`refusal`] (which needs nothing).
pub fn prepare(
    cg: crate::Result<Cg>,
    todo: &[&dyn Proxy],
    lanes_batch: (usize, Option<usize>),
    budget_total: (Option<u64>, Option<u64>),
    name: &str,
) -> Prepared<crate::Result<Cg>> {
    let need = cg.as_ref().map_or(Ok(0), |cg| need(cg, todo, lanes_batch, budget_total, name));
    match need {
        Ok(need) => Prepared { need, payload: cg },
        Err(msg) => {
            Prepared { need: 0, payload: Err(crate::Error::Run { path: name.to_string(), msg }) }
        }
    }
}

/// The size from which a block gets a mapping of its own, unmapped when it is freed: 256 MiB.
/// A heap that maps nothing keeps the extent of its largest use, pinned by any small block
/// left at its top, and under the address-space cap ([`cap_address_space`]) that extent is
/// what runs out: after a batch of ImageNet networks it spanned 8.4 GB with 65 MB in use, and
/// oneDNN, which maps the code of the kernels it compiles, could no longer create a
/// convolution for ResNet-18 ("could not create a primitive", docs/proxies.md "Memory"). The
/// cells' blocks stay below it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAPPED_FROM: libc::c_int = 256 << 20;

/// Makes glibc's malloc, which libtorch allocates with, keep what a network frees for the next
/// tensors instead of handing it to the kernel, which would have to fault and clear every page
/// again: one arena for every thread (the lanes and workers reuse each other's freed tensors),
/// `mmap` only for blocks of [`MAPPED_FROM`] and more (glibc maps every block over 32 MB
/// afresh, and an NB-101 cell's activations at batch 256 are 128 MB each), and no trimming on
/// free below 2 GiB (the largest threshold an `int` holds; -1, never, was no faster). The
/// scheduler counts what is so kept and hands it back with [`release_freed`] when a network
/// waits for it ([`super::schedule`]). Measured (docs/proxies.md "Memory"): the 14 on four NB-101 cells, two
/// workers, 340 s with 166 s in the kernel and 71 M page faults before, 222 s, 49 s and 4.7 M
/// after; NB-201 cells unchanged; values byte-identical. Call it first in a command that runs
/// proxies, before any thread allocates: glibc fixes its arena limit when threads start, and a
/// thread's own arena maps any block larger than its heaps (64 MB) whatever the settings.
/// Returns whether glibc took every setting (always true elsewhere, where there is nothing to set).
pub fn keep_freed() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters and returns 0 for a value it refuses.
    unsafe {
        let settings = [
            (libc::M_ARENA_MAX, 1),
            (libc::M_MMAP_THRESHOLD, MAPPED_FROM),
            (libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
        ];
        let taken = settings.iter().all(|&(param, value)| libc::mallopt(param, value) == 1);
        if !taken {
            tracing::debug!("glibc refused a setting that keeps freed memory");
        }
        taken
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    true
}

/// Hands the memory libtorch freed back to the kernel ([`keep_freed`] makes malloc keep it).
/// The scheduler counts what each worker so holds and calls this only when a network waits
/// for it ([`super::schedule`]); handing it back after every network made the next one fault
/// its pages in again (a third of the time on NB-201 cells), and keeping it without counting
/// it let the process hold the sum of the workers' peaks whatever ran at once (measured: 8.7 GB
/// against 6.6 GB for two NB-101 cells run one after the other, docs/proxies.md "Memory").
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

    #[test]
    fn the_address_space_cap_is_what_is_mapped_and_most_of_what_is_available() {
        let gib = 1u64 << 30;
        assert_eq!(address_space_cap(5 * gib, 20 * gib), 23 * gib);
        assert_eq!(address_space_cap(u64::MAX, gib), u64::MAX, "saturates");
    }

    #[test]
    fn a_network_twice_the_machine_is_refused_as_out_of_memory() {
        let gib = 1u64 << 30;
        assert_eq!(refusal(40 * gib, Some(20 * gib)), None, "at twice the machine it may fit");
        let r = refusal(41 * gib, Some(20 * gib)).expect("above twice the machine");
        assert!(r.contains("41.0 GB") && r.contains("20.0 GB") && r.contains("--batch"), "{r}");
        assert!(is_out_of_memory(&r));
        assert_eq!(refusal(u64::MAX, None), None, "no refusal where the machine is unknown");
        if cfg!(target_os = "linux") {
            assert!(machine_total().is_some_and(|t| t > 0), "/proc/meminfo is read on Linux");
        }
        // libtorch's own messages, CPU and CUDA, and errors about the network itself
        assert!(is_out_of_memory("DefaultCPUAllocator: can't allocate memory: you tried to"));
        assert!(is_out_of_memory("grasp: CUDA out of memory. Tried to allocate 2.00 GiB"));
        assert!(!is_out_of_memory("jacov is undefined: a sample's input gradient is constant"));
        let onednn = "node 5 '/layer1/layer1.0/conv1/Conv' (Conv): cannot run: Internal torch \
                      error: could not create a primitive";
        assert!(is_out_of_memory(onednn), "oneDNN's kernels are mapped memory");
        assert!(is_out_of_memory("synflow: backward: Internal torch error: std::bad_alloc"));
    }

    fn nb201_cell() -> Cg {
        use crate::spaces::{BuildOptions, Space};
        let spec = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|";
        let arch = Space::Nb201.parse_spec(spec).expect("spec");
        let bytes = arch.build(&BuildOptions::default()).expect("build").to_bytes();
        crate::onnx::load_bytes(&bytes, "cell", &Default::default()).expect("load")
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_large_tensor_gets_no_mapping_of_its_own_once_freed_memory_is_kept() {
        // 40 MB: above the mmap threshold glibc sets itself (at most 32 MB), so without
        // keep_freed it is mapped alone and unmapped when freed; below a thread arena's heap
        // (64 MB), which maps a larger block whatever the settings (this test runs on a thread
        // of the test harness). Mapped bytes grow only by blocks of MAPPED_FROM and more,
        // which no other unit test allocates.
        assert!(keep_freed(), "glibc refused a setting");
        // SAFETY: mallinfo2 only reads malloc's statistics.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let t = tch::Tensor::ones([10 << 20], (tch::Kind::Float, tch::Device::Cpu));
        let during = mapped();
        assert_eq!(t.sum(tch::Kind::Double).double_value(&[]), (10 << 20) as f64);
        assert!(during <= before, "mapped {before} bytes before, {during} with the tensor");
        // a block of MAPPED_FROM gets a mapping of its own
        let big = tch::Tensor::ones([MAPPED_FROM as i64 / 4], (tch::Kind::Float, tch::Device::Cpu));
        let with_big = mapped();
        assert_eq!(big.size(), [MAPPED_FROM as i64 / 4]);
        assert!(with_big >= during + MAPPED_FROM as usize, "{during} then {with_big}");
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
