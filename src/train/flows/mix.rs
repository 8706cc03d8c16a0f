//! Training on several labelled families at once: the parts of a mix
//! ([`MixConfig::parts`](crate::train::config::MixConfig)), each a benchmark family with one
//! of its targets (`nb201:cifar100_test_ep200`) or a labels file (`zoo.csv:top1`), drawn,
//! featurised and put on one scale.
//!
//! - Each part's target becomes its rank-based normal scores within the part
//!   ([`normal_scores`]), so a CIFAR-10 fraction, an ImageNet top-1 in percent and a TransNAS
//!   task's accuracy train together, and no part's outliers dominate the loss.
//! - The parts of one family draw the same networks, so its targets share their held-out,
//!   validation and training networks (no network is tested on that was trained on under
//!   another of its family's targets).
//! - Batches come from one part at a time (`Trainer::supervised` with groups), so the pairwise
//!   ranking loss compares networks of one family and target only; a part's share of batches
//!   goes as its size to `temperature`.
//! - The base line (slopes on the universal features log FLOPs and log depth,
//!   [`within_slopes`], each at least 0) is fitted *within* the parts: it says how much more
//!   compute and depth help inside a family, not how families differ. Each part is then
//!   placed by its mean features at those slopes ([`placed`]), so the heads learn only what a
//!   network has beyond its family's trend.
//!
//! The model's prediction is a relative score on that scale: it ranks the networks of one
//! family; `nape finetune --labels` maps it to a user's units.

use super::{LabelledSet, Paths, Source};
use crate::dataset::{Dataset, SplitMix64};
use crate::error::{Error, Result};
use crate::graph::fnv1a;
use crate::train::config::{member_seed, MixConfig, TrainConfig};
use crate::train::data;
use crate::train::parts::{part_means, parts_of};
use std::path::Path;

/// The name of a mix's standardised target.
pub const MIX_TARGET: &str = "relative_score";

/// What a mix model predicts, in words.
pub const MIX_PREDICTS: &str = "relative accuracy score: the target's rank within each \
    training family as a normal score, families placed by their mean compute; it ranks \
    networks of one family; fine-tune with --labels for your units";

/// Which part each row of a mixed set comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Groups {
    /// Each part's name (its spec).
    pub names: Vec<String>,
    /// Each part's family (parts of one family share their networks).
    pub family: Vec<String>,
    /// Each row's part.
    pub of: Vec<u32>,
}

/// Each part's family as an index (parts of one family share it), as
/// [`RowParts::family`](crate::train::trainer::RowParts) reads it.
pub fn family_ids(groups: &Groups) -> Vec<u32> {
    let mut seen: Vec<&str> = Vec::new();
    groups
        .family
        .iter()
        .map(|f| match seen.iter().position(|s| s == f) {
            Some(i) => i as u32,
            None => {
                seen.push(f);
                (seen.len() - 1) as u32
            }
        })
        .collect()
}

/// One part of a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixPart {
    /// Where its labelled networks come from.
    pub source: Source,
    /// Its target (`None`: the family's default, or the labels file's only numeric column).
    pub target: Option<String>,
    /// Its name in reports: the spec, or the `NAME=` before it.
    pub name: String,
}

/// Reads a part's spec, `[NAME=]SOURCE`: `FAMILY[:TARGET]` for a benchmark family nape knows,
/// else a labels file's path with an optional `:TARGET` after it.
pub fn parse_part(spec: &str) -> MixPart {
    let (name, spec) = match spec.split_once('=') {
        Some((n, rest)) if !n.is_empty() && !n.contains(['/', '\\', ':']) => (n, rest),
        _ => (spec, spec),
    };
    let (source, target) = parse_source(spec);
    MixPart { source, target, name: name.to_string() }
}

/// The source and target of a spec without its name.
fn parse_source(spec: &str) -> (Source, Option<String>) {
    if let Some((head, tail)) = spec.split_once(':').filter(|(h, _)| data::FAMILIES.contains(h)) {
        return (Source::Family(head.into()), Some(tail.to_string()));
    }
    if data::FAMILIES.contains(&spec) {
        return (Source::Family(spec.into()), None);
    }
    match spec.rsplit_once(':') {
        Some((p, t)) if !Path::new(spec).exists() && !t.contains(['/', '\\']) => {
            (Source::Labels(p.into()), Some(t.to_string()))
        }
        _ => (Source::Labels(spec.into()), None),
    }
}

/// Loads and featurises every part of `cfg.mix` into one set whose target is
/// [`MIX_TARGET`] and whose [`LabelledSet::groups`] says which part each row is from.
pub fn load_mix(cfg: &TrainConfig, paths: &Paths) -> Result<LabelledSet> {
    let m = &cfg.mix;
    let parts: Vec<MixPart> = m.parts.iter().map(|p| parse_part(p)).collect();
    if parts.is_empty() {
        return Err(Error::Usage("a mix needs at least one part".into()));
    }
    for (i, p) in parts.iter().enumerate() {
        if parts[..i].iter().any(|q| q.name == p.name) {
            return Err(Error::Usage(format!("two parts of the mix are named '{}'", p.name)));
        }
    }
    let mut set = LabelledSet {
        family: "mix".into(),
        target: MIX_TARGET.into(),
        predicts: MIX_PREDICTS.into(),
        records: Dataset { family: "mix".into(), records: Vec::new(), issues: Vec::new() },
        samples: Vec::new(),
        skipped: Vec::new(),
        proxies: cfg.proxies.clone(),
        groups: None,
    };
    let mut groups = Groups::default();
    for (g, part) in parts.into_iter().enumerate() {
        let one =
            LabelledSet::load_lazy(&part.source, part.target.as_deref(), &cfg.proxies, paths)?;
        let order = one.records.shuffled(cfg.seed ^ fnv1a(&one.family));
        let take = &order[..order.len().min(m.per_part)];
        let truth = one.truth();
        let z = normal_scores(&take.iter().map(|&i| truth[i]).collect::<Vec<_>>());
        for ((&i, s), z) in take.iter().zip(one.samples_at(take, paths)?).zip(z) {
            let mut r = one.records.records[i].clone();
            r.targets.insert(MIX_TARGET.into(), z);
            set.records.records.push(r);
            set.samples.push(s);
            groups.of.push(g as u32);
        }
        set.skipped
            .extend(one.skipped.into_iter().map(|(f, e)| (f, format!("{}: {e}", part.name))));
        groups.names.push(part.name);
        groups.family.push(one.family);
    }
    set.groups = Some(groups);
    Ok(set)
}

/// Rank-based normal scores: `probit((rank - 0.5) / n)` (ties share their mean rank). A
/// monotone map of the target onto a standard normal, bounded by the part's size: NB-101's
/// few collapsed cells (10 % accuracy, 40 robust standard deviations below the median) would
/// otherwise dominate the squared loss, and did (held-out NB-101 Spearman 0.92 with them,
/// NB-201 zero-shot 0.78 from NB-101 alone, against the single-family path's 0.86).
pub fn normal_scores(y: &[f64]) -> Vec<f64> {
    let n = y.len() as f64;
    crate::metrics::ranks(y).iter().map(|r| probit((r - 0.5) / n)).collect()
}

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// below 1.2e-9 on (0, 1)).
fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] =
        [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Splits a mix into (test, validation, training) row indices, part by part: each part's
/// first `held_out` fraction (in its family's draw) is tested on, and member `k` draws its
/// validation and training rows from the rest in its family's own order.
pub fn split_groups(
    groups: &Groups,
    m: &MixConfig,
    seed: u64,
    member: usize,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut test, mut val, mut train) = (Vec::new(), Vec::new(), Vec::new());
    let mut parts = parts_of(&groups.of);
    parts.resize(groups.family.len(), Vec::new());
    for (rows, family) in parts.into_iter().zip(&groups.family) {
        let n = rows.len() as f64;
        let n_test = ((n * m.held_out).round() as usize).min(rows.len());
        test.extend_from_slice(&rows[..n_test]);
        let mut rest = rows[n_test..].to_vec();
        if member > 0 {
            let k = rest.len();
            SplitMix64(member_seed(seed, member) ^ fnv1a(family)).shuffle_prefix(&mut rest, k);
        }
        let n_val = ((n * m.validation).round() as usize).min(rest.len());
        val.extend_from_slice(&rest[..n_val]);
        train.extend_from_slice(&rest[n_val..]);
    }
    (test, val, train)
}

/// The universal features of the base line, in [`within_slopes`]' column order: log10(1 +
/// FLOPs) and log2(1 + depth). Parameters are left out: within the cell spaces they move with
/// FLOPs (the two slopes are not identified there), and between them the fit picks one almost
/// at random (docs/universal.md, "Depth in the base line"). Input resolution does not vary
/// within any part, so no within-part slope can be fitted on it.
pub fn base_features(g: &crate::features::GraphFeatures) -> [f64; 2] {
    [crate::features::log_flops(g), crate::features::log_depth(g)]
}

/// The base line's slopes on `x`'s columns: least squares on the rows' deviations from their
/// part's means (a fixed effect per part), each slope at least 0 (more compute and more depth
/// do not lower accuracy: the prior the base line stands for). The non-negative fit is exact:
/// the best-fitting of the column subsets whose unconstrained slopes are all >= 0, the other
/// slopes 0.
pub fn within_slopes<const K: usize>(x: &[[f64; K]], y: &[f64], of: &[u32]) -> [f64; K] {
    let col = |k: usize| x.iter().map(|r| r[k]).collect::<Vec<f64>>();
    let means: Vec<(Vec<f64>, Vec<f64>)> = (0..K).map(|k| part_means(&col(k), y, of)).collect();
    let (mut sxx, mut sxy, mut syy) = ([[0.0; K]; K], [0.0; K], 0.0);
    for ((r, yi), &g) in x.iter().zip(y).zip(of) {
        let g = g as usize;
        let d: [f64; K] = std::array::from_fn(|k| r[k] - means[k].0[g]);
        let e = yi - means[0].1[g];
        syy += e * e;
        for (i, di) in d.iter().enumerate() {
            sxy[i] += di * e;
            sxx[i].iter_mut().zip(&d).for_each(|(s, dj)| *s += di * dj);
        }
    }
    let mut best = ([0.0; K], syy);
    for subset in 1..1usize << K {
        let cols: Vec<usize> = (0..K).filter(|k| subset >> k & 1 == 1).collect();
        let a = cols.iter().map(|&i| cols.iter().map(|&j| sxx[i][j]).collect()).collect();
        let b = cols.iter().map(|&i| sxy[i]).collect();
        let Some(w) = solve(a, b).filter(|w| w.iter().all(|&v| v >= 0.0)) else { continue };
        let mut slopes = [0.0; K];
        cols.iter().zip(&w).for_each(|(&k, &v)| slopes[k] = v);
        // residual sum of squares: syy - (2 w.sxy - w' Sxx w)
        let fit: f64 = (0..K)
            .map(|i| {
                let sw: f64 = (0..K).map(|j| sxx[i][j] * slopes[j]).sum();
                slopes[i] * (2.0 * sxy[i] - sw)
            })
            .sum();
        if syy - fit < best.1 {
            best = (slopes, syy - fit);
        }
    }
    best.0
}

/// The solution of `a w = b` by Gaussian elimination with partial pivoting; `None` when `a` is
/// singular (a column that does not vary within any part, or one the others determine).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..n {
        let p = (i..n).max_by(|&r, &s| a[r][i].abs().total_cmp(&a[s][i].abs()))?;
        if a[p][i].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(i, p);
        b.swap(i, p);
        let (pivot, rhs) = (a[i].clone(), b[i]);
        for (r, (row, br)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
            if r != i {
                let f = row[i] / pivot[i];
                row.iter_mut().zip(&pivot).skip(i).for_each(|(v, p)| *v -= f * p);
                *br -= f * rhs;
            }
        }
    }
    Some((0..n).map(|i| b[i] / a[i][i]).collect())
}

/// Each row's target placed by its part's mean features,
/// `y + sum_k slope_k (mean_part(x_k) - mean(x_k))`, so that `placed - slopes . x` keeps only
/// the row's deviation from its part's trend (plus one constant).
pub fn placed<const K: usize>(x: &[[f64; K]], y: &[f64], of: &[u32], slopes: [f64; K]) -> Vec<f64> {
    let mut out = y.to_vec();
    for (k, &s) in slopes.iter().enumerate() {
        let col: Vec<f64> = x.iter().map(|r| r[k]).collect();
        let (mx, _) = part_means(&col, y, of);
        let all = col.iter().sum::<f64>() / col.len().max(1) as f64;
        out.iter_mut().zip(of).for_each(|(v, &g)| *v += s * (mx[g as usize] - all));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_family_and_target_or_a_labels_file() {
        let p = parse_part("nb201:cifar100_test_ep200");
        assert_eq!(p.source, Source::Family("nb201".into()));
        assert_eq!(p.target.as_deref(), Some("cifar100_test_ep200"));
        assert_eq!(parse_part("nb101").target, None);
        let p = parse_part("runs/zoo/labels.csv:top1");
        assert_eq!(p.source, Source::Labels("runs/zoo/labels.csv".into()));
        assert_eq!(p.target.as_deref(), Some("top1"));
        assert_eq!(parse_part("a/b.csv").source, Source::Labels("a/b.csv".into()));
        assert_eq!(parse_part("C:/x/b.csv").source, Source::Labels("C:/x/b.csv".into()));
        let p = parse_part("zoo=runs/zoo/labels.csv:top1");
        assert_eq!((p.name.as_str(), p.target.as_deref()), ("zoo", Some("top1")));
        assert_eq!(parse_part("nb101").name, "nb101");
    }

    #[test]
    fn normal_scores_are_monotone_bounded_and_ignore_how_far_an_outlier_is() {
        assert!((probit(0.975) - 1.959963985).abs() < 1e-8);
        assert!((probit(0.01) + 2.326347874).abs() < 1e-8);
        assert_eq!(probit(0.5), 0.0);
        let z = normal_scores(&[0.9, 0.91, 0.92, 0.93, 0.1]);
        assert_eq!(z, normal_scores(&[0.9, 0.91, 0.92, 0.93, 0.8]));
        assert!(z[4] < z[0] && z[0] < z[1] && z[1] == 0.0 && z[3] < 1.5, "{z:?}");
        let t = normal_scores(&[1.0, 1.0, 2.0]);
        assert_eq!(t[0], t[1]);
    }

    #[test]
    fn the_within_slopes_ignore_the_offsets_between_parts_and_stay_at_or_above_0() {
        // two parts: y = 2 f + 0.5 d + offset (+10 and -30), their features far apart
        let (mut x, mut y, mut of) = (Vec::new(), Vec::new(), Vec::new());
        for (g, off, shift) in [(0u32, 10.0, 0.0), (1, -30.0, 5.0)] {
            for i in 0..20 {
                let (f, d) = (shift + i as f64 * 0.1, (i % 3) as f64 + shift);
                x.push([f, d]);
                y.push(2.0 * f + 0.5 * d + off);
                of.push(g);
            }
        }
        let s = within_slopes(&x, &y, &of);
        assert!((s[0] - 2.0).abs() < 1e-9 && (s[1] - 0.5).abs() < 1e-9, "{s:?}");
        // pooled, the offsets would make the FLOPs slope negative; within, a falling trend
        // in FLOPs gives 0 and leaves depth's slope (FLOPs and depth vary apart here)
        let down: Vec<f64> = x.iter().map(|r| -r[0] + 0.5 * r[1]).collect();
        let s = within_slopes(&x, &down, &of);
        assert_eq!(s[0], 0.0);
        assert!(s[1] > 0.0, "{s:?}");
        // nothing rises: every slope 0
        let all_down: Vec<f64> = x.iter().map(|r| -r[0] - r[1]).collect();
        assert_eq!(within_slopes(&x, &all_down, &of), [0.0; 2]);
        // a target centred in each part, once placed, minus the base line is one constant
        let line = |r: &[f64; 2]| 2.0 * r[0] + 0.5 * r[1];
        let centred: Vec<f64> = (0..x.len())
            .map(|i| {
                let part: Vec<usize> = (0..x.len()).filter(|&j| of[j] == of[i]).collect();
                line(&x[i]) - part.iter().map(|&j| line(&x[j])).sum::<f64>() / part.len() as f64
            })
            .collect();
        let p = placed(&x, &centred, &of, [2.0, 0.5]);
        let r: Vec<f64> = p.iter().zip(&x).map(|(p, r)| p - line(r)).collect();
        assert!(r.iter().all(|v| (v - r[0]).abs() < 1e-9), "{r:?}");
        // one column: the plain within-part slope
        let one: Vec<[f64; 1]> = x.iter().map(|r| [r[0]]).collect();
        let lone: Vec<f64> = one.iter().zip(&of).map(|(r, &g)| 3.0 * r[0] + g as f64).collect();
        assert!((within_slopes(&one, &lone, &of)[0] - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_family_s_parts_share_their_held_out_rows() {
        // two parts of family a (rows in the same draw), one of family b
        let of: Vec<u32> = (0..30).map(|i| (i / 10) as u32).collect();
        let groups = Groups {
            names: vec!["a:t1".into(), "a:t2".into(), "b".into()],
            family: vec!["a".into(), "a".into(), "b".into()],
            of,
        };
        let m = MixConfig { held_out: 0.2, validation: 0.2, ..MixConfig::default() };
        for member in [0, 1, 3] {
            let (test, val, train) = split_groups(&groups, &m, 7, member);
            assert_eq!((test.len(), val.len(), train.len()), (6, 6, 18));
            let local = |v: &[usize], g: usize| -> Vec<usize> {
                v.iter().filter(|&&i| i / 10 == g).map(|i| i % 10).collect()
            };
            assert_eq!(local(&test, 0), local(&test, 1));
            assert_eq!(local(&val, 0), local(&val, 1));
            let mut all: Vec<usize> = test.iter().chain(&val).chain(&train).copied().collect();
            all.sort();
            assert_eq!(all, (0..30).collect::<Vec<_>>());
        }
    }
}
