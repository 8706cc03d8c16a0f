//! `--published`: score only the cells of a family that a published source scored, and set
//! nape's value of each proxy beside the published one, cell by cell (`--correlate`).
//!
//! The published scores are the records' `proxies` ([`crate::dataset::load::load_space`]):
//! NB-101's `zc` under the proxy's name, NAS-Bench-Suite-Zero's NB-201 and TransNAS-Bench-101
//! scores under `<dataset>_<proxy>` (`cifar10_fisher`, `class_scene_grasp`). Names are NASLib's,
//! which nape's proxies share.

use crate::dataset::{Dataset, Record};
use crate::error::Error;
use std::collections::BTreeSet;

/// The key of `name`'s published score: `name` itself, or `<dataset>_<name>` when a dataset
/// is given (`--published cifar10`).
pub(super) fn key(dataset: &str, name: &str) -> String {
    if dataset.is_empty() {
        name.to_string()
    } else {
        format!("{dataset}_{name}")
    }
}

/// `name`'s published score in `r`, if the source scored it.
pub(super) fn value(r: &Record, dataset: &str, name: &str) -> Option<f64> {
    r.proxies.get(&key(dataset, name)).copied()
}

/// The records of `ds` with a published score of at least one of `names`; a usage error
/// naming the keys the family does have when none is left.
pub(super) fn keep(mut ds: Dataset, dataset: &str, names: &[&str]) -> crate::Result<Dataset> {
    let all = std::mem::take(&mut ds.records);
    let (kept, rest): (Vec<Record>, Vec<Record>) =
        all.into_iter().partition(|r| names.iter().any(|n| value(r, dataset, n).is_some()));
    if kept.is_empty() {
        let wanted: Vec<String> = names.iter().map(|n| key(dataset, n)).collect();
        return Err(Error::Usage(format!(
            "no {} cell has a published score under {}; {}",
            ds.family,
            wanted.join(", "),
            hint(&rest, names)
        )));
    }
    ds.records = kept;
    Ok(ds)
}

/// What the records do have: the datasets that score one of `names` (`<dataset>_<name>`
/// keys), else the first of their keys.
fn hint(records: &[Record], names: &[&str]) -> String {
    let keys: BTreeSet<&str> =
        records.iter().flat_map(|r| r.proxies.keys()).map(String::as_str).collect();
    let datasets: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| names.iter().find_map(|n| k.strip_suffix(n)?.strip_suffix('_')))
        .collect();
    if !datasets.is_empty() {
        let d: Vec<&str> = datasets.into_iter().collect();
        return format!(
            "its scores are per dataset: give --published with one of {}",
            d.join(", ")
        );
    }
    match keys.len() {
        0 => "it has no published scores".into(),
        n => {
            let first: Vec<&str> = keys.into_iter().take(12).collect();
            format!("its published keys: {}{}", first.join(", "), if n > 12 { ", ..." } else { "" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, proxies: &[(&str, f64)]) -> Record {
        let mut r = Record::new(id, "nb201", id);
        r.proxies = proxies.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r
    }

    fn ds(records: Vec<Record>) -> Dataset {
        Dataset { family: "nb201".into(), records, ..Default::default() }
    }

    #[test]
    fn keeps_the_cells_scored_under_the_dataset_s_key() {
        let d = ds(vec![
            rec("a", &[("cifar10_fisher", 1.0), ("cifar10_zen", 2.0)]),
            rec("b", &[("cifar10_zen", 3.0)]),
            rec("c", &[("cifar100_fisher", 4.0)]),
        ]);
        let kept = keep(d, "cifar10", &["fisher", "snip"]).unwrap();
        let ids: Vec<&str> = kept.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(value(&kept.records[0], "cifar10", "fisher"), Some(1.0));
        assert_eq!(value(&kept.records[0], "", "fisher"), None);
    }

    #[test]
    fn none_left_is_a_usage_error_naming_the_keys_there_are() {
        let d = ds(vec![rec("a", &[("cifar10_fisher", 1.0)])]);
        let e = keep(d, "", &["fisher"]).unwrap_err().to_string();
        assert!(e.contains("under fisher") && e.contains("one of cifar10"), "{e}");
        let d = ds(vec![rec("a", &[("zen", 1.0)])]);
        let e = keep(d, "", &["fisher"]).unwrap_err().to_string();
        assert!(e.contains("its published keys: zen"), "{e}");
    }
}
