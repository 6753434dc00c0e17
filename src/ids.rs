//! Typed identifiers shared across modules: no bare `usize` crosses a module boundary.

pub use shards::ShardId;

/// Identifies a client connection: the shard that owns it and a per-shard sequence number.
/// Sequence numbers are never reused within a process lifetime (u64), so stale references
/// (timers, deliveries) to a closed connection can be recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub shard: ShardId,
    pub seq: u64,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.shard.0, self.seq)
    }
}
