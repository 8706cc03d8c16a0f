//! `nape proxies`: zero-cost proxy scores of ONNX files, folders, a manifest from `nape export`,
//! a benchmark family's cells, or a user's labelled networks (`--labels`); parallel across
//! networks, cached so a rerun computes only what is missing, optionally correlated with the
//! family's accuracies or the labels.

use super::util::{collect_onnx_files, OutputFormat, ShapeArgs};
use crate::dataset::cache::{Cache, READER_DIGEST};
use crate::dataset::images::ImageSource;
use crate::dataset::{self, Record};
use crate::error::{exit, Error};
use crate::exec::device::{resolve, DeviceChoice};
use crate::graph::Cg;
use crate::onnx::{load, load_bytes, write::Weights, ImportOptions};
use crate::proxies::{self, memory, Proxy, Swap};
use crate::spaces::{BuildOptions, Space};
use cached::{cache_tag, Cached};
use folded::Folded;
use std::path::PathBuf;

mod cached;
mod folded;
mod fresh;
mod output;
mod published;
mod scoring;
use output::{print_correlations, print_rows, report_errors, write_records};
use scoring::score_missing;

/// Arguments of `nape proxies`.
#[derive(Debug, clap::Args)]
pub struct ProxiesArgs {
    /// ONNX files, folders, or a manifest.jsonl written by `nape export`.
    pub paths: Vec<PathBuf>,
    /// Score a benchmark family's cells instead of files (nb101, nb201, tnb-micro).
    #[arg(long)]
    pub family: Option<String>,
    /// Your own labelled networks (a CSV or JSONL, as `nape finetune --labels` reads): their
    /// files are scored, and --correlate ranks each proxy against the labels.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// With --labels: the column to correlate with (default: its only numeric one).
    #[arg(long)]
    pub target: Option<String>,
    /// With --family: a seeded random sample of this many cells (default: all).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Proxies, comma-separated (default: all). Known: params, flops, synflow, snip, grad_norm,
    /// jacov, fisher, grasp, nwot, swap, zico, epsinas, l2_norm, plain.
    #[arg(long, default_value = "all")]
    pub names: String,
    /// Override every data proxy's batch size (default: each proxy's reference size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Image source: an IDX file, a CIFAR-10 binary batch, a folder of images, or `gaussian`
    /// (default: Fashion-MNIST from the data folder).
    #[arg(long)]
    pub images: Option<String>,
    /// Seed for image batches and initialisations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Regularised SWAP: mu and sigma in thousands of parameters (adds `swap_reg`).
    #[arg(long, num_args = 2, value_names = ["MU", "SIGMA"])]
    pub swap_reg: Option<Vec<f64>>,
    /// The BatchNorms an eval-mode export folded into its convolutions: `restore` puts back
    /// those the exporter's names say it folded (PyTorch's exporters, tf2onnx), so a file scores
    /// as the network PyTorch built; `guess` also those whose names say nothing but whose place
    /// suggests one; `keep` scores the file's graph as it is (docs/proxies.md, "Eval-mode
    /// exports").
    #[arg(long, default_value = "restore", value_name = "restore|guess|keep")]
    pub folded_bn: proxies::FoldedBn,
    /// epsinas' two constant weights (NB-201: 1e-7 1; NB-101: 1e-4 10).
    #[arg(long, num_args = 2, value_names = ["W1", "W2"])]
    pub epsinas_weights: Option<Vec<f64>>,
    /// Benchmark data folder (default: $NAPE_DATA, else ../shared/data).
    #[arg(long, env = "NAPE_DATA")]
    pub data: Option<PathBuf>,
    /// Cache folder (a rerun computes only what is missing).
    #[arg(long, default_value = "runs/cache")]
    pub cache: PathBuf,
    /// Write the records with their proxies (and the family's targets) as a manifest.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --family or --labels: print the Spearman correlation of each proxy with each
    /// target.
    #[arg(long)]
    pub correlate: bool,
    /// With --family: only the cells a published source scored (NB-101's NASLib scores; for
    /// NB-201 and TransNAS, NAS-Bench-Suite-Zero's, give the dataset or task: cifar10,
    /// class_scene, ...); --correlate then adds each proxy's Spearman with its published
    /// scores, cell by cell.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "DATASET")]
    pub published: Option<String>,
    /// Threads in all (default: the machine's cores): networks are scored in parallel, and
    /// when there are fewer networks than threads, each network's proxies are spread over the
    /// threads left (docs/proxies.md, Threads).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory in GB the networks scored at once may hold together, by their estimated peaks
    /// (default: 90% of what the machine has available at the start; docs/proxies.md, Memory).
    /// A network estimated above it runs alone.
    #[arg(long, value_name = "GB", value_parser = positive_gb)]
    pub memory: Option<f64>,
    /// libtorch threads per proxy (default 1: networks and proxies in parallel use a CPU
    /// better than libtorch's threads, docs/proxies.md, Threads).
    #[arg(long)]
    pub intra_op: Option<usize>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Shorthand for --format json.
    #[arg(long)]
    pub json: bool,
    /// Shorthand for --format csv.
    #[arg(long)]
    pub csv: bool,
    /// How the files' data inputs are bound.
    #[command(flatten)]
    pub shape: ShapeArgs,
}

struct Job {
    id: String,
    /// Cache key: the spec, or the file's md5.
    key: String,
    record: Option<Record>,
    source: JobSource,
}

impl Job {
    /// A file given by its path: keyed by its path and its bytes' md5, without a record.
    fn file(f: PathBuf) -> Job {
        Job { id: Job::file_id(&f), key: file_key(&f), record: None, source: JobSource::File(f) }
    }

    /// The id of the file `f`'s job: its path as given.
    fn file_id(f: &std::path::Path) -> String {
        f.display().to_string()
    }

    /// Whether the file `f`'s job is to run in this process ([`fresh::wanted`]), asked before
    /// [`Job::file`] reads its bytes for the digest: a fresh process reads only the files it
    /// is to score (all 21 GB of a corpus took 40 s to read).
    fn wanted_file(f: &std::path::Path) -> bool {
        fresh::wanted(&Job::file_id(f))
    }
}

enum JobSource {
    File(PathBuf),
    Spec(Space, String),
}

/// The graph of a job as its proxies run it: a file's without what the file wraps around the
/// network (an NHWC input, Keras' input normalization, a final softmax: `Cg::network_only`), so
/// the memory estimate and the scores see one graph.
/// A file's folded BatchNorms are put back as `folded_bn` says (`proxies::scored_network`);
/// those it leaves that seem folded are counted in `seen`.
fn build_cg(
    job: &Job,
    opts: &ImportOptions,
    folded_bn: proxies::FoldedBn,
    seen: &Folded,
) -> crate::Result<Cg> {
    match &job.source {
        JobSource::File(p) => load(p, opts).map(|mut cg| {
            proxies::scored_network(&mut cg, folded_bn);
            if folded_bn != proxies::FoldedBn::Keep {
                seen.saw(&cg, &job.id);
            }
            cg
        }),
        JobSource::Spec(space, spec) => {
            let arch = space.parse_spec(spec)?;
            let opts = BuildOptions { weights: Weights::Inputs, ..Default::default() };
            let bytes = arch.build(&opts)?.to_bytes();
            load_bytes(&bytes, &format!("{}:{spec}", space.name()), &ImportOptions::default())
        }
    }
}

fn select(a: &ProxiesArgs) -> anyhow::Result<Vec<Box<dyn Proxy>>> {
    let mut ps: Vec<Box<dyn Proxy>> = proxies::select(&a.names)?
        .into_iter()
        .map(|p| -> Box<dyn Proxy> {
            match (p.name(), &a.epsinas_weights) {
                ("epsinas", Some(w)) if w.len() == 2 => {
                    Box::new(proxies::Epsinas { weights: (w[0], w[1]) })
                }
                _ => p,
            }
        })
        .collect();
    if let Some(r) = &a.swap_reg {
        if r.len() == 2 && r[1] > 0.0 {
            ps.push(Box::new(Swap { reg: Some((r[0], r[1])), ..Swap::default() }));
        } else {
            return Err(Error::Usage("--swap-reg takes MU SIGMA with SIGMA > 0".into()).into());
        }
    }
    Ok(ps)
}

fn jobs(
    a: &ProxiesArgs,
    data_dir: &std::path::Path,
    names: &[&str],
) -> anyhow::Result<(String, Vec<Job>)> {
    if a.target.is_some() && a.labels.is_none() {
        return Err(Error::Usage("--target goes with --labels".into()).into());
    }
    if a.labels.is_some() && (a.family.is_some() || !a.paths.is_empty()) {
        return Err(Error::Usage("--labels names the networks: no files or --family".into()).into());
    }
    if let Some(fam) = &a.family {
        return family_jobs(fam, a, data_dir, names);
    }
    if a.published.is_some() {
        return Err(Error::Usage("--published goes with --family".into()).into());
    }
    if let Some(labels) = &a.labels {
        return Ok(("files".into(), labels_jobs(labels, a.target.as_deref())?));
    }
    let mut out = Vec::new();
    for p in &a.paths {
        if p.extension().is_some_and(|x| x == "jsonl") {
            out.extend(manifest_jobs(p)?);
        } else {
            let files = collect_onnx_files(std::slice::from_ref(p)).into_iter();
            out.extend(files.filter(|f| Job::wanted_file(f)).map(Job::file));
        }
    }
    if out.is_empty() {
        return Err(
            Error::Usage("give ONNX files, folders, a manifest.jsonl, or --family".into()).into()
        );
    }
    Ok(("files".into(), out))
}

/// The (sampled) networks of a benchmark family, built from their specs; with `--published`,
/// drawn from the cells a published source scored for one of `names`.
fn family_jobs(
    fam: &str,
    a: &ProxiesArgs,
    data_dir: &std::path::Path,
    names: &[&str],
) -> anyhow::Result<(String, Vec<Job>)> {
    let space = Space::ALL
        .into_iter()
        .find(|s| s.name() == fam)
        .ok_or_else(|| Error::Usage(format!("unknown family '{fam}' (nb101, nb201, tnb-micro)")))?;
    let ds = dataset::load_space(space, data_dir)?;
    let ds = match &a.published {
        Some(d) => published::keep(ds, d, names)?,
        None => ds,
    };
    let ds = match a.sample {
        Some(n) => ds.sample(n, a.seed),
        None => ds,
    };
    let jobs = ds
        .records
        .into_iter()
        .map(|r| Job {
            id: r.id.clone(),
            key: r.spec.clone(),
            source: JobSource::Spec(space, r.spec.clone()),
            record: Some(r),
        })
        .collect();
    Ok((space.name().to_string(), jobs))
}

/// The networks of a labels file, each with its one label as the record's target (the id and
/// cache key of the same file given as a path, so both runs share the cache).
fn labels_jobs(path: &std::path::Path, target: Option<&str>) -> anyhow::Result<Vec<Job>> {
    let labels = dataset::labels::read_labels(path, target)?;
    Ok(labels
        .records
        .into_iter()
        .filter_map(|r| {
            let f = r.file.clone().filter(|f| Job::wanted_file(f))?;
            Some(Job { record: Some(r), ..Job::file(f) })
        })
        .collect())
}

/// The networks a manifest lists: its files (relative to the manifest), or the specs of a
/// family nape builds.
fn manifest_jobs(p: &std::path::Path) -> anyhow::Result<Vec<Job>> {
    let base = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
    let mut out = Vec::new();
    for r in dataset::read_manifest(p)? {
        let file = r.file.clone().map(|f| base.join(f));
        let source = match (&file, Space::ALL.into_iter().find(|s| s.name() == r.family)) {
            (Some(f), _) => JobSource::File(f.clone()),
            (None, Some(s)) => JobSource::Spec(s, r.spec.clone()),
            (None, None) => {
                let fam = &r.family;
                tracing::warn!(
                    "{}: record {} has no file and family '{fam}' is not one nape builds: skipped",
                    p.display(),
                    r.id
                );
                continue;
            }
        };
        let key = match &file {
            Some(f) => file_key(f),
            None => r.spec.clone(),
        };
        out.push(Job { id: r.id.clone(), key, record: Some(r), source });
    }
    Ok(out)
}

/// `--memory`: a size in GB above zero (checked with the other arguments, exit 2).
fn positive_gb(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(gb) if gb > 0.0 && gb.is_finite() => Ok(gb),
        _ => Err(format!("'{s}' is not a size in GB above 0")),
    }
}

fn file_key(p: &std::path::Path) -> String {
    use md5::{Digest, Md5};
    match std::fs::read(p) {
        Ok(b) => format!("{:x}", Md5::digest(&b)),
        Err(_) => "missing".into(),
    }
}

/// Runs `nape proxies`: scores what the cache lacks, then prints (or writes) every row.
pub fn run(a: &ProxiesArgs) -> anyhow::Result<i32> {
    crate::proxies::memory::keep_freed();
    let format = if a.json {
        OutputFormat::Json
    } else if a.csv {
        OutputFormat::Csv
    } else {
        a.format
    };
    let data_dir = dataset::data_dir(a.data.as_deref());
    let ps = select(a)?;
    let images = ImageSource::from_arg(a.images.as_deref(), &data_dir)?;
    let names: Vec<&str> = ps.iter().map(|p| p.name()).collect();
    let (family, mut jobs) = jobs(a, &data_dir, &names)?;
    // a fresh process scores only the networks it was given, whatever named them (files,
    // a manifest, a family, a labels file); it would score every network the cache lacks,
    // the others out of memory among them
    jobs.retain(|j| fresh::wanted(&j.id));
    let device = device_of(a)?;
    if device == tch::Device::Cpu {
        if let Some(cap) = memory::cap_address_space() {
            tracing::debug!("address space capped at {:.1} GB", cap as f64 / 1e9);
        }
    }
    // scores of files read at another input shape, or read by other code, are other scores
    let reader = if family == "files" { format!("-r{READER_DIGEST}") } else { String::new() };
    let reader = match a.folded_bn {
        proxies::FoldedBn::Restore => reader,
        proxies::FoldedBn::Guess => reader + "-bn-guess",
        proxies::FoldedBn::Keep => reader + "-bn-keep",
    };
    let tag = cache_tag(a.seed, a.batch, &images.content_key()?, device)
        + &a.shape.options().binding_tag()
        + &reader;
    let mut cache: Cache<Cached> = Cache::open(&a.cache, &family, &tag)?;
    let scored = score_missing(a, &ps, &images, &jobs, device, &mut cache)?;
    if fresh::is_child() {
        return Ok(exit::OK);
    }
    let mut unkept = scored.unkept;
    if fresh::worth_it(&unkept, scored.networks, scored.concurrent, device) {
        fresh::rerun(&unkept, &a.cache);
        cache = Cache::open(&a.cache, &family, &tag)?;
        fresh::settle(&mut unkept, &cache, &jobs);
    }
    let rows: Vec<(&Job, Cached)> = jobs
        .iter()
        .map(|j| {
            let mut c = cache.get(&j.id, &j.key).cloned().unwrap_or_else(Cached::empty);
            c.errors.extend(unkept.get(&j.id).cloned().unwrap_or_default());
            (j, c.view(&ps))
        })
        .collect();
    let failed = report_errors(&rows, &names);
    if let Some(out) = &a.out {
        write_records(out, &rows)?;
    }
    if a.correlate {
        let published = a.published.as_deref();
        print_correlations(&rows, &names, ps.as_slice(), published, a.labels.is_some());
    } else {
        print_rows(&rows, &names, format)?;
    }
    Ok(if failed == 0 {
        exit::OK
    } else if rows.iter().any(|(_, c)| !c.values.is_empty()) {
        exit::PARTIAL
    } else {
        exit::FAILURE
    })
}

/// The device `--device` names, with a warning when it falls back to another.
fn device_of(a: &ProxiesArgs) -> anyhow::Result<tch::Device> {
    let choice: DeviceChoice = a.device.parse().map_err(Error::Usage)?;
    let (device, why) = resolve(choice);
    if let Some(w) = why {
        tracing::warn!("{w}");
    }
    Ok(device)
}
