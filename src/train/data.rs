//! Featurised benchmark networks for training and evaluation: a family's labelled records,
//! unlabelled NB-101 cells drawn from the whole space, and each record's network built
//! (`spaces`), read into a canonical CG and encoded (`features`), cached on disk
//! (`dataset::cache`) so experiments featurise each network once.

use crate::dataset::cache::{Cache, READER_DIGEST};
use crate::dataset::{self, Record, SplitMix64};
use crate::error::{Error, Result};
pub use crate::features::sample::{featurise_file, no_proxies, Sample, Scorer, SAMPLE_VERSION};
use crate::features::{FEATURES_VERSION, GLOBAL_DIM, NODE_DIM, TOKEN_VOCAB};
use crate::onnx::{from_proto, ImportOptions};
use crate::spaces::{BuildOptions, Space};

use std::io::{BufRead, BufReader};
use std::path::Path;

/// The families nape trains and evaluates on.
pub const FAMILIES: &[&str] = &["nb101", "nb201", "tnb-micro"];

/// The space of a family name.
pub fn space_of(family: &str) -> Result<Space> {
    match family {
        "nb101" => Ok(Space::Nb101),
        "nb201" => Ok(Space::Nb201),
        "tnb-micro" => Ok(Space::TnbMicro),
        f => Err(Error::Usage(format!("unknown family '{f}' (known: {})", FAMILIES.join(", ")))),
    }
}

/// The default target of a family.
pub fn default_target(family: &str) -> Result<&'static str> {
    match space_of(family)? {
        Space::Nb101 => Ok("val_acc_ep108"),
        Space::Nb201 => Ok("cifar10_test_ep200"),
        Space::TnbMicro => Ok("class_scene_val_accuracy"),
    }
}

/// What a target means, in words, for predictions to say.
pub fn describe_target(family: &str, target: &str) -> String {
    match (family, target) {
        ("nb101", "val_acc_ep108") => {
            "CIFAR-10 validation accuracy (fraction 0-1) after NAS-Bench-101's 108-epoch recipe"
                .into()
        }
        ("nb201", t) if t.ends_with("_test_ep200") => format!(
            "{} test accuracy (%) after NAS-Bench-201's 200-epoch recipe",
            t.trim_end_matches("_test_ep200")
        ),
        (f, t) => format!("{t} of family {f}"),
    }
}

/// How to build a family's networks. One network per cell for every target of a family:
/// NB-201 cells are built as their CIFAR-10 network (32x32 input, 10 classes) and
/// TransNAS-Bench-101 cells with the scene-classification head, whatever the target, so the
/// features say what differs between cells (their operations), not which benchmark dataset
/// the labels come from, and one feature cache serves every target.
pub fn build_options(_family: &str, _target: &str) -> BuildOptions {
    BuildOptions::default()
}

/// The labelled records of a family, with every label and published proxy score the data
/// folder has for it ([`dataset::load_space`]: NB-201's table with NAS-Bench-Suite-Zero's
/// records joined, so its SVHN, Spherical CIFAR-100 and NinaPro labels are targets too).
pub fn load_family(data_dir: &Path, family: &str) -> Result<dataset::Dataset> {
    dataset::load_space(space_of(family)?, data_dir)
}

/// Featurises one spec of `space`, with the proxy scores `scorer` gives its network.
pub fn featurise_spec(
    space: Space,
    spec: &str,
    opts: &BuildOptions,
    scorer: Scorer,
) -> Result<Sample> {
    let arch = space.parse_spec(spec)?;
    let built = arch.build(opts)?;
    let cg = from_proto(&built.model, spec, &ImportOptions::default())?;
    Ok(Sample::from_cg(&cg, &scorer(&cg)))
}

/// The cache tag of featurised networks (changes with the feature layout and the proxies
/// read).
pub fn cache_tag(family: &str, target: &str, proxies: &[String]) -> String {
    let o = build_options(family, target);
    let p = if proxies.is_empty() { String::new() } else { format!("-p{}", proxies.join("+")) };
    format!(
        "features-v{FEATURES_VERSION}-s{SAMPLE_VERSION}-n{NODE_DIM}-g{GLOBAL_DIM}-t{TOKEN_VOCAB}-{:?}-{:?}{p}",
        o.nb201_dataset, o.tnb_task
    )
}

/// Featurises `records` of `family` built for `target`, with the scores of the proxies named
/// `proxies` that `scorer` computes, through the cache below `cache_dir`, in the records' order.
pub fn featurise(
    records: &[Record],
    family: &str,
    target: &str,
    cache_dir: &Path,
    proxies: &[String],
    scorer: Scorer,
) -> Result<Vec<Sample>> {
    let space = space_of(family)?;
    let opts = build_options(family, target);
    let tag = cache_tag(family, target, proxies);
    let mut cache: Cache<Sample> = Cache::open(cache_dir, family, &tag)?;
    let items: Vec<(String, String)> =
        records.iter().map(|r| (r.id.clone(), r.spec.clone())).collect();
    let built = cache.fill(&items, |_, spec| featurise_spec(space, spec, &opts, scorer))?;
    if built > 0 {
        tracing::info!("featurised {built} {family} networks into {}", cache.path().display());
        cache.save()?;
    }
    records
        .iter()
        .map(|r| {
            cache.get(&r.id, &r.spec).cloned().ok_or_else(|| {
                Error::Model(format!("{family} record {} missing from the feature cache", r.id))
            })
        })
        .collect()
}

/// `n` unlabelled NB-101 cells drawn by `seed` from the whole space
/// (`nb101_space_all_423624.tsv.gz`), as records with no targets.
pub fn nb101_unlabelled(data_dir: &Path, n: usize, seed: u64) -> Result<Vec<Record>> {
    let path = dataset::data_file(data_dir, dataset::NB101_SPACE, "NAS-Bench-101 space listing")?;
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            return Err(Error::BadData {
                path: path.clone(),
                line: i + 1,
                msg: format!("expected 4 tab-separated fields, found {}", f.len()),
            });
        }
        rows.push((f[0].to_string(), format!("{}:{}", f[2], f[3])));
    }
    let k = n.min(rows.len());
    SplitMix64(seed).shuffle_prefix(&mut rows, k);
    Ok(rows.into_iter().take(k).map(|(id, spec)| Record::new(id, "nb101", spec)).collect())
}

/// The feature cache of ONNX files is keyed by the md5 of their bytes, under this family name.
const FILES_FAMILY: &str = "files";

/// Featurises ONNX files, in parallel, through a cache keyed by each file's content (md5), so
/// a rerun on the same files reads nothing but the cache. The cache tag holds the proxies read
/// and the input shape bound. One result per file, in order: a file that cannot be read or
/// parsed gives its error and the others go on.
pub fn featurise_files(
    files: &[&Path],
    cache_dir: &Path,
    opts: &ImportOptions,
    proxies: &[String],
    scorer: Scorer,
) -> Result<Vec<Result<Sample>>> {
    use md5::{Digest, Md5};
    use rayon::prelude::*;
    let shape = opts.input_shape.as_ref().map(|s| format!("{s:?}")).unwrap_or_default();
    let tag = format!(
        "{}-shape{shape}{}-r{READER_DIGEST}",
        cache_tag(FILES_FAMILY, "", proxies),
        opts.dims_tag()
    );
    let mut cache: Cache<Sample> = Cache::open(cache_dir, FILES_FAMILY, &tag)?;
    // without proxies the network never runs: the weights' shapes suffice
    let opts = &ImportOptions { shapes_only: proxies.is_empty(), ..opts.clone() };
    // each file is read once: its bytes give the cache key and, on a miss, the graph
    let read: Vec<Result<(String, Option<Sample>)>> = files
        .par_iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(*p, e))?;
            let h = format!("{:x}", Md5::digest(&bytes));
            if cache.get(&h, "").is_some() {
                return Ok((h, None));
            }
            let cg = crate::onnx::load_read(p, &bytes, opts)?;
            Ok((h, Some(Sample::from_cg(&cg, &scorer(&cg)))))
        })
        .collect();
    let mut fresh = 0;
    for (h, s) in read.iter().flatten() {
        if let Some(s) = s {
            cache.insert(h, "", s.clone());
            fresh += 1;
        }
    }
    if fresh > 0 {
        cache.save()?;
    }
    Ok(read
        .into_iter()
        .map(|r| {
            let (h, s) = r?;
            match s {
                Some(s) => Ok(s),
                None => cache.get(&h, "").cloned().ok_or_else(|| {
                    Error::Model(format!("file {h} missing from the feature cache"))
                }),
            }
        })
        .collect())
}
