//! `nape bench`: throughput of each pipeline stage, as a table. Speed is measured here, never
//! asserted in tests. Build with `--release` for figures worth quoting.

use crate::onnx::{decode, from_proto, ImportOptions};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `nape bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds to spend on each measurement (at least 3 repetitions are always run).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Extra ONNX files to measure besides the built-in set.
    #[arg(long)]
    pub files: Vec<PathBuf>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time every zero-cost proxy on an NB-201 and an NB-101 network (libtorch on one
    /// thread per network, Gaussian image batches of each proxy's reference size).
    #[arg(long)]
    pub proxies: bool,
}

/// Milliseconds per proxy on the benchmark-cell networks: each proxy alone (its own network
/// build and passes, as one-at-a-time scoring runs it), their sum, the 14 together sharing the
/// network and the loss pass in one thread (`score_all`), and the same spread over one lane per
/// core (`score_lanes`, what `nape proxies` runs on one network), with the lanes' peak memory
/// beside the memory gate's estimate of it. The lanes run three times: first after the freed
/// memory went back to the kernel (every page of the peak faulted in fresh, as for a run's
/// first network; its peak is the one printed), then twice on what that run freed (as for
/// every later network of a run, [`crate::proxies::memory::keep_freed`]), the faster printed.
#[cfg(feature = "torch")]
fn proxy_table(out: &mut impl Write) -> anyhow::Result<()> {
    use crate::dataset::images::ImageSource;
    use crate::proxies::{registry, score_all, score_lanes, ProxyInput};
    tch::set_num_threads(1);
    let images = ImageSource::Gaussian { classes: 10 };
    let nets: Vec<Net> =
        space_networks()?.into_iter().filter(|n| n.label.contains("no weights")).collect();
    let proxies = registry();
    let refs: Vec<&dyn crate::proxies::Proxy> = proxies.iter().map(|p| &**p).collect();
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(out, "\nzero-cost proxies, ms per network (libtorch on 1 thread; each proxy alone, their sum, all together sharing one network build and loss pass, and the same on {lanes} lanes, one per core)")?;
    let bn = if crate::exec::batch_norm_kernel_agrees() {
        "nape's kernel (libtorch's bits, checked at start)"
    } else {
        "libtorch's (nape's kernel differed from it on this machine)"
    };
    writeln!(out, "BatchNorm's batch statistics outside autograd: {bn}")?;
    write!(out, "{:<16}", "network")?;
    for p in &proxies {
        write!(out, " {:>9}", p.name())?;
    }
    let head =
        ["one by one", "shared", "ratio", "lanes 1st", "lanes", "ratio", "lanes MiB", "est. MiB"];
    writeln!(
        out,
        " {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>9} {:>9}",
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]
    )?;
    for net in &nets {
        let cg =
            from_proto(&decode(&net.bytes, &net.label)?, &net.label, &ImportOptions::default())?;
        write!(out, "{:<16}", net.label.replace(" (no weights)", ""))?;
        let mut alone = 0.0;
        for p in &proxies {
            let input = ProxyInput::new(&cg, &images, 0, tch::Device::Cpu);
            let t = Instant::now();
            let r = p.score(&input);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            alone += ms;
            match r {
                Ok(_) => write!(out, " {ms:>9.0}")?,
                Err(_) => write!(out, " {:>9}", "error")?,
            }
        }
        let t = Instant::now();
        score_all(&proxies, ProxyInput::new(&cg, &images, 0, tch::Device::Cpu));
        let shared = t.elapsed().as_secs_f64() * 1e3;
        // the lanes' own peak: what the runs before freed handed back, the count started again
        crate::proxies::memory::release_freed();
        reset_peak_rss();
        let lanes_ms = || {
            let t = Instant::now();
            score_lanes(&refs, ProxyInput::new(&cg, &images, 0, tch::Device::Cpu), lanes);
            t.elapsed().as_secs_f64() * 1e3
        };
        // cold: every page of the peak fresh from the kernel, as a run's first network finds
        // it; warm: the next network of a run, which reuses what the one before freed
        let cold = lanes_ms();
        let peak = peak_rss_mib();
        let laned = lanes_ms().min(lanes_ms());
        let (ratio, lratio) = (shared / alone, laned / alone);
        write!(
            out,
            " {alone:>10.0} {shared:>9.0} {ratio:>6.2} {cold:>9.0} {laned:>9.0} {lratio:>6.2}"
        )?;
        // the lanes' measured peak beside the memory gate's estimate of it
        let est = crate::proxies::memory::network_peak(&cg, &refs, lanes, None) >> 20;
        writeln!(out, " {peak:>9.0} {est:>9}")?;
    }
    Ok(())
}

/// A network to measure: a label and its ONNX bytes.
struct Net {
    label: String,
    bytes: Vec<u8>,
}

fn corpus_file(rel: &str) -> Option<Net> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(rel);
    let bytes = std::fs::read(&p).ok()?;
    Some(Net { label: rel.to_string(), bytes })
}

/// The built-in networks: benchmark-cell networks from the search spaces and widely used
/// architectures from the bundled corpus.
fn networks(extra: &[PathBuf]) -> anyhow::Result<Vec<Net>> {
    let mut nets = space_networks()?;
    nets.extend(
        ["zoo/resnet50.onnx", "zoo/mobilenet_v2.onnx", "zoo/vit_b_16.onnx"]
            .iter()
            .filter_map(|r| corpus_file(r)),
    );
    for f in extra {
        let bytes = std::fs::read(f).map_err(|e| crate::Error::io(f, e))?;
        nets.push(Net { label: f.display().to_string(), bytes });
    }
    Ok(nets)
}

/// Full benchmark networks generated from their specs: NAS-Bench-101's published test-vector
/// cell (8.6 M parameters) and NAS-Bench-201's best CIFAR-10 cell, each with its weights as
/// data (as a user's file would be) and without (nape's compact export).
fn space_networks() -> anyhow::Result<Vec<Net>> {
    use crate::onnx::write::Weights;
    use crate::spaces::{BuildOptions, Space};
    let cells = [
        (
            Space::Nb101,
            "nb101",
            "0100110/0010000/0001001/0000010/0000010/0000001/0000000:input,conv3x3-bn-relu,maxpool3x3,conv3x3-bn-relu,conv3x3-bn-relu,conv1x1-bn-relu,output",
        ),
        (
            Space::Nb201,
            "nb201",
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        ),
    ];
    let mut nets = Vec::new();
    for (space, label, spec) in cells {
        let arch = space.parse_spec(spec)?;
        for (weights, tag) in [(Weights::Data(0), "weights"), (Weights::Inputs, "no weights")] {
            let opts = BuildOptions { weights, ..BuildOptions::default() };
            let built = arch.build(&opts)?;
            nets.push(Net { label: format!("{label} network ({tag})"), bytes: built.to_bytes() });
        }
    }
    Ok(nets)
}

/// Times `f` repeatedly for about `budget`; returns the median duration of one call.
fn time<F: FnMut()>(budget: f64, mut f: F) -> Duration {
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed().as_secs_f64() < budget && samples.len() < 10_000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// Starts [`peak_rss_mib`]'s count again from what is resident now (Linux's `clear_refs` 5;
/// elsewhere nothing).
#[cfg(feature = "torch")]
fn reset_peak_rss() {
    // best effort: where it cannot be written, the peak stays the process's
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process so far, in MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One network's row of the parse table: decode, analyse and build, canonical form, and files
/// per second on one thread and on all `threads` (each timed for about `seconds`).
fn parse_row(net: &Net, seconds: f64, threads: usize) -> anyhow::Result<serde_json::Value> {
    let opts = ImportOptions::default();
    let proto = decode(&net.bytes, &net.label)?;
    let cg = from_proto(&proto, &net.label, &opts)?;
    let nodes = cg.len();
    let t_decode = time(seconds / 4.0, || {
        let _ = decode(&net.bytes, &net.label);
    });
    let t_load = time(seconds / 2.0, || {
        let _ = from_proto(&proto, &net.label, &opts);
    });
    let t_canon = time(seconds / 4.0, || {
        let _ = cg.canonical();
    });
    // parallel: as many files as workers x 8, all cores
    let batch = threads * 8;
    let t_par = time(seconds, || {
        (0..batch).into_par_iter().for_each(|_| {
            let _ = decode(&net.bytes, &net.label).and_then(|p| from_proto(&p, &net.label, &opts));
        });
    });
    Ok(serde_json::json!({
        "network": net.label,
        "bytes": net.bytes.len(),
        "nodes": nodes,
        "decode_ms": t_decode.as_secs_f64() * 1e3,
        "analyse_and_build_ms": t_load.as_secs_f64() * 1e3,
        "parse_to_cg_ms": (t_decode + t_load).as_secs_f64() * 1e3,
        "files_per_s_1_thread": 1.0 / (t_decode + t_load).as_secs_f64(),
        "files_per_s_all_threads": batch as f64 / t_par.as_secs_f64(),
        "canonical_ms": t_canon.as_secs_f64() * 1e3,
    }))
}

/// The parse table as text.
fn parse_table(
    out: &mut impl Write,
    rows: &[serde_json::Value],
    profile: &str,
    threads: usize,
) -> anyhow::Result<()> {
    writeln!(out, "nape bench: ONNX -> CG ({profile} build, {threads} threads)")?;
    writeln!(
        out,
        "{:<34} {:>6} {:>9} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "network",
        "nodes",
        "KiB",
        "decode ms",
        "build ms",
        "total ms",
        "files/s x1",
        format!("files/s x{threads}")
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<34} {:>6} {:>9.1} {:>10.3} {:>10.3} {:>10.3} {:>12.1} {:>12.1}",
            r["network"].as_str().unwrap_or(""),
            r["nodes"],
            r["bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["decode_ms"].as_f64().unwrap_or(0.0),
            r["analyse_and_build_ms"].as_f64().unwrap_or(0.0),
            r["parse_to_cg_ms"].as_f64().unwrap_or(0.0),
            r["files_per_s_1_thread"].as_f64().unwrap_or(0.0),
            r["files_per_s_all_threads"].as_f64().unwrap_or(0.0),
        )?;
    }
    writeln!(
        out,
        "build ms = tract shape analysis + mapping to the CG; peak RSS {:.0} MiB",
        peak_rss_mib()
    )?;
    Ok(())
}

/// Runs `nape bench`.
pub fn run(a: &BenchArgs) -> anyhow::Result<i32> {
    #[cfg(feature = "torch")]
    if a.proxies {
        crate::proxies::memory::keep_freed();
    }
    let nets = networks(&a.files)?;
    let threads = rayon::current_num_threads();
    let rows = nets
        .iter()
        .map(|net| parse_row(net, a.seconds, threads))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = std::io::stdout().lock();
    let profile = if cfg!(debug_assertions) {
        "debug (use a release build for real figures)"
    } else {
        "release"
    };
    if a.json {
        let doc = serde_json::json!({
            "nape_version": env!("CARGO_PKG_VERSION"),
            "build": profile,
            "threads": threads,
            "peak_rss_mib": peak_rss_mib(),
            "parse": rows,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(0);
    }
    parse_table(&mut out, &rows, profile, threads)?;
    #[cfg(feature = "torch")]
    if a.proxies {
        proxy_table(&mut out)?;
    }
    Ok(0)
}
