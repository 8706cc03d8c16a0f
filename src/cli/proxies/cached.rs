//! The proxies' cache entries: what one network holds (each proxy's value or error under its
//! key), which of its errors the cache must not keep, and the tag that names a cache file.

use crate::proxies::{memory, Proxy};
use std::collections::BTreeMap;

/// What the cache holds of one network: each proxy's value or error, under its key
/// ([`Proxy::key`]).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub(super) struct Cached {
    pub(super) values: BTreeMap<String, f64>,
    pub(super) errors: BTreeMap<String, String>,
}

impl Cached {
    pub(super) fn empty() -> Cached {
        Cached { values: BTreeMap::new(), errors: BTreeMap::new() }
    }

    /// Whether the value cached under `key` ([`Proxy::key`]) is to be scored: neither a value
    /// nor an error is cached for it (a rerun, such as the resumed NB-101 table, does not retry
    /// a proxy that failed; after an upgrade, docs/proxies.md says to clear the cache).
    pub(super) fn lacks(&self, key: &str) -> bool {
        !self.values.contains_key(key) && !self.errors.contains_key(key)
    }

    /// Takes out the errors that say memory ran out ([`memory::is_out_of_memory`]): the
    /// machine's, not the network's, so not to be cached.
    pub(super) fn split_out_of_memory(&mut self) -> BTreeMap<String, String> {
        let (out, kept) = std::mem::take(&mut self.errors)
            .into_iter()
            .partition(|(_, e)| memory::is_out_of_memory(e));
        self.errors = kept;
        out
    }

    /// The proxies `ps` of this entry, by name (what a run prints and writes): a cached entry
    /// holds every proxy and setting scored before, each under its key.
    pub(super) fn view(&self, ps: &[Box<dyn Proxy>]) -> Cached {
        let mut v = Cached::empty();
        for p in ps {
            let (name, key) = (p.name().to_string(), p.key());
            if let Some(x) = self.values.get(&key) {
                v.values.insert(name, *x);
            } else if let Some(e) = self.errors.get(&key) {
                v.errors.insert(name, e.clone());
            }
        }
        v
    }
}

/// This run's errors that say memory ran out, by network id and proxy key: reported with the
/// run's rows, but not cached, so that a rerun (with more memory, or a smaller batch) tries
/// those proxies again.
pub(super) type Unkept = BTreeMap<String, BTreeMap<String, String>>;

/// The cache tag: everything that changes every value. The images by their bytes; the device
/// when it is not the CPU, since a GPU's kernels round differently and a run asked for there
/// must not be served the CPU's values (a proxy's own settings are in the key of its value,
/// `Proxy::key`).
pub(super) fn cache_tag(
    seed: u64,
    batch: Option<usize>,
    images: &str,
    device: tch::Device,
) -> String {
    let batch = batch.map_or_else(|| "ref".into(), |b| b.to_string());
    let on = match device {
        tch::Device::Cpu => String::new(),
        tch::Device::Cuda(i) => format!("-cuda{i}"),
        other => format!("-{other:?}").to_lowercase(),
    };
    format!("proxies-seed{seed}-batch{batch}-{}{on}", short_hash(images))
}

fn short_hash(s: &str) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(s.as_bytes()))[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::{self, Swap};

    #[test]
    fn the_cache_tag_names_a_gpu_and_keeps_the_cpu_s_tag_of_earlier_caches() {
        // the CPU's tag is the one every cache before the device was named in it carries
        let md5 = "d41d8cd98f00b204e9800998ecf8427e"; // of ""
        assert_eq!(
            cache_tag(0, None, "", tch::Device::Cpu),
            format!("proxies-seed0-batchref-{}", &md5[..8])
        );
        assert_eq!(cache_tag(3, Some(16), "", tch::Device::Cpu), "proxies-seed3-batch16-d41d8cd9");
        let gpu = cache_tag(0, None, "", tch::Device::Cuda(0));
        assert_eq!(gpu, "proxies-seed0-batchref-d41d8cd9-cuda0");
        assert_ne!(gpu, cache_tag(0, None, "", tch::Device::Cuda(1)));
    }

    #[test]
    fn errors_that_say_memory_ran_out_are_split_off_and_the_network_s_own_kept() {
        let mut c = Cached::empty();
        c.values.insert("params".into(), 1.0);
        c.errors
            .insert("grasp".into(), "grasp: CUDA out of memory. Tried to allocate 2 GiB".into());
        c.errors.insert(
            "jacov".into(),
            "jacov is undefined: a sample's input gradient is constant".into(),
        );
        let out = c.split_out_of_memory();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["grasp"]);
        assert_eq!(c.errors.keys().collect::<Vec<_>>(), ["jacov"], "the network's own error stays");
        assert_eq!(c.values.len(), 1);
    }

    #[test]
    fn a_cached_value_or_error_is_not_scored_again() {
        let mut c = Cached::empty();
        c.values.insert("synflow".into(), 1.5);
        c.errors.insert("jacov".into(), "jacov is undefined".into());
        assert!(!c.lacks("synflow"));
        assert!(!c.lacks("jacov"));
        assert!(c.lacks("snip"));
    }

    #[test]
    fn a_proxy_s_settings_key_its_cached_value_and_a_run_reads_its_own_by_name() {
        let nb101 = proxies::Epsinas { weights: (1e-4, 10.0) };
        let reg = Swap { reg: Some((600.0, 300.0)), ..Swap::default() };
        assert_eq!(proxies::Epsinas::default().key(), "epsinas");
        assert_eq!(nb101.key(), "epsinas[0.0001,10]");
        assert_eq!(reg.key(), "swap_reg[600,300]");
        assert_eq!(Swap::default().key(), "swap");
        let mut c = Cached::empty();
        c.values.insert("epsinas".into(), 1.0);
        c.values.insert("swap".into(), 3.0);
        c.errors.insert("swap_reg[600,300]".into(), "undefined".into());
        // NB-101's weights are not the default's: not cached yet, and never read as it
        assert!(c.lacks(&nb101.key()));
        let ps: Vec<Box<dyn Proxy>> =
            vec![Box::new(nb101), Box::new(reg), Box::new(Swap::default())];
        let v = c.view(&ps);
        assert_eq!(v.values, BTreeMap::from([("swap".to_string(), 3.0)]));
        assert_eq!(v.errors.get("swap_reg").map(String::as_str), Some("undefined"));
        c.values.insert("epsinas[0.0001,10]".into(), 2.0);
        assert_eq!(c.view(&ps).values.get("epsinas"), Some(&2.0));
        // a value of zico's previous definition (one batch of 128 in halves) is never read
        let zico: Vec<Box<dyn Proxy>> = vec![Box::new(proxies::Zico)];
        c.values.insert("zico".into(), 4.0);
        assert!(c.lacks("zico@2") && c.view(&zico).values.is_empty());
        c.values.insert("zico@2".into(), 5.0);
        assert_eq!(c.view(&zico).values.get("zico"), Some(&5.0));
    }
}
