//! The proxies of one network on several threads ("lanes"). When there are fewer networks than
//! threads, a network's proxies are spread over the spare threads instead of handing libtorch
//! more intra-op threads, which spin more than they compute on networks this small
//! (docs/proxies.md, Threads).
//!
//! A task is one proxy, or every proxy that reads the shared loss pass together (they share
//! its one forward and backward, so they stay on one thread). Each task builds its own
//! network: the proxies that read the default-initialised network without the loss pass
//! (nwot, zico, l2_norm) pay one more build each, a parameter initialisation, small beside
//! their passes. Lanes take the dearest task left first ([`Proxy::cost`]). Every network is
//! initialised from the seed in Rust ([`crate::exec::Init`]) and each lane runs libtorch on its
//! own thread, so a score does not depend on the lanes: the values are bitwise those of one lane.

use super::{score_one, Proxy, ProxyInput, Reads};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Each proxy's score, or its failure's message, by name.
pub type Scores = BTreeMap<String, std::result::Result<f64, String>>;

/// The tasks of one network, dearest first: the proxies that read the loss pass together, every
/// other proxy alone.
fn tasks<'p>(proxies: &[&'p dyn Proxy]) -> Vec<Vec<&'p dyn Proxy>> {
    let (shared, alone): (Vec<&dyn Proxy>, Vec<&dyn Proxy>) =
        proxies.iter().partition(|p| p.reads() != Reads::default());
    let mut tasks: Vec<Vec<&dyn Proxy>> = alone.into_iter().map(|p| vec![p]).collect();
    if !shared.is_empty() {
        tasks.push(shared);
    }
    tasks.sort_by_key(|t| std::cmp::Reverse(t.iter().map(|p| p.cost()).sum::<usize>()));
    tasks
}

/// Scores every proxy of `proxies` on the network of `input`, on up to `lanes` threads (one:
/// in this thread, in order). Each lane runs libtorch on as many intra-op threads as the
/// caller's (a new thread would otherwise start at the machine's default); that should be one
/// (`tch::set_num_threads(1)`), or the lanes compete with libtorch's threads.
pub fn score_lanes(proxies: &[&dyn Proxy], input: ProxyInput, lanes: usize) -> Scores {
    if lanes <= 1 || proxies.len() <= 1 {
        let input = input.planning(proxies.iter().copied());
        return proxies.iter().flat_map(|p| score_one(*p, &input)).collect();
    }
    let ProxyInput { cg, images, seed, device, batch, .. } = input;
    let tasks = tasks(proxies);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Scores::new());
    let intra = tch::get_num_threads();
    std::thread::scope(|s| {
        for _ in 0..lanes.min(tasks.len()) {
            s.spawn(|| {
                tch::set_num_threads(intra);
                while let Some(task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let input = ProxyInput::new(cg, images, seed, device)
                        .with_batch(batch)
                        .planning(task.iter().copied());
                    let scores: Scores = task.iter().flat_map(|p| score_one(*p, &input)).collect();
                    out.lock().unwrap_or_else(|e| e.into_inner()).extend(scores);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::registry;

    #[test]
    fn loss_pass_readers_form_one_task_and_the_dearest_go_first() {
        let all = registry();
        let refs: Vec<&dyn Proxy> = all.iter().map(|p| &**p).collect();
        let tasks = tasks(&refs);
        let names = |t: &Vec<&dyn Proxy>| t.iter().map(|p| p.name()).collect::<Vec<_>>();
        let shared: Vec<_> = tasks.iter().filter(|t| t.len() > 1).map(names).collect();
        assert_eq!(shared, vec![vec!["snip", "grad_norm", "jacov", "fisher", "grasp", "plain"]]);
        assert_eq!(tasks.iter().map(Vec::len).sum::<usize>(), all.len());
        let costs: Vec<usize> = tasks.iter().map(|t| t.iter().map(|p| p.cost()).sum()).collect();
        assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");
        assert_eq!(names(&tasks[0]).len(), 6, "the loss pass is the dearest task");
        assert_eq!(costs.last(), Some(&0), "the static proxies cost nothing");
    }
}
