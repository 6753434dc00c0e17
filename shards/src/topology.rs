//! Shard identity and CPU placement: [`ShardId`], and pinning shard `i` to core `i`.
//!
//! Placement is deliberately simple: the cores reported by `core_affinity` are taken in order,
//! and shard `i` is pinned to the `i`-th of them. When there are fewer cores than shards, the
//! extra shards run unpinned (the scheduler places them) and a warning says so once.

use std::fmt;

/// Index of a shard, `0..count`. Shard `i` runs on thread `"{thread_name}-{i}"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The id as an index into per-shard tables.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Where each shard should be pinned: `plan[i]` is the core for shard `i`, or `None` to leave
/// it unpinned. `cores` is the list of cores this process may use, in order.
pub(crate) fn placement<C: Copy>(shards: usize, pin: bool, cores: &[C]) -> Vec<Option<C>> {
    let plan: Vec<Option<C>> = (0..shards)
        .map(|i| if pin { cores.get(i).copied() } else { None })
        .collect();
    debug_assert_eq!(plan.len(), shards);
    debug_assert!(pin || plan.iter().all(Option::is_none));
    plan
}

/// The cores this process may run on, as `core_affinity` sees them (empty when unknown).
pub(crate) fn available_cores() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Pins the calling thread to `core`. Returns whether the OS accepted it.
pub(crate) fn pin_current(core: core_affinity::CoreId) -> bool {
    core_affinity::set_for_current(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_index() {
        assert_eq!(ShardId(3).to_string(), "shard-3");
        assert_eq!(ShardId(0).to_string(), "shard-0");
        assert_eq!(ShardId(65535).index(), 65535);
        assert!(ShardId(1) < ShardId(2));
    }

    #[test]
    fn placement_pins_in_order_and_leaves_extra_shards_unpinned() {
        let cores = [10u32, 11];
        assert_eq!(placement(3, true, &cores), vec![Some(10), Some(11), None]);
        assert_eq!(placement(1, true, &cores), vec![Some(10)]);
        assert_eq!(placement(2, false, &cores), vec![None, None]);
        assert_eq!(placement::<u32>(2, true, &[]), vec![None, None]);
    }
}
