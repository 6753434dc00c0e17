//! Connection ids: the name a held connection goes by on the control API (`/conncheck`,
//! `/connections/publish`, `/connections/close`, `/refresh`) and in the `Connection-Id` header
//! its backend sees.
//!
//! An id is shaped like a UUID v4 (36 characters, lower-case hex), as Pushpin's WebSocket-over-
//! HTTP `Connection-Id` is, so backends written for Pushpin accept it. It packs a per-process
//! random prefix (48 bits) and the shard index (12 bits) + per-shard counter (52 bits) passed
//! through a keyed permutation of 64 bits (a 4-round Feistel network whose round function is
//! SipHash with a per-process random key). So ids are unique within a process by construction
//! (the permutation is a bijection), differ between runs, and cannot be guessed from another
//! one (a backend may echo an id to its client, as Pushpin's random ids allow). Minting one is a
//! few hashes and shifts into a fixed buffer: no allocation.
//!
//! ```text
//!   pppppppp-pppp-4sss-Vccc-cccccccccccc     p: random prefix  s, c: the permuted shard and
//!                                          counter  V: 8..b (variant bits)
//! ```

use std::hash::BuildHasher;

/// Characters in a connection id.
pub const CONNECTION_ID_LEN: usize = 36;

/// Positions of the dashes in a connection id.
const DASHES: [usize; 4] = [8, 13, 18, 23];

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A connection id (always valid ASCII: hex digits and dashes in UUID positions).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId([u8; CONNECTION_ID_LEN]);

impl ConnectionId {
    /// The id of connection number `seq` (< 2^52) of shard `shard`, in the process whose random
    /// prefix is `boot` (only its low 48 bits are used): the shard and counter go through the
    /// process's keyed permutation. Distinct `(shard mod 4096, seq)` give distinct ids for one
    /// `boot`.
    pub fn mint(boot: u64, shard: u16, seq: u64) -> Self {
        debug_assert!(seq < 1 << 52, "connection counter overflow");
        let plain = (u64::from(shard & 0x0fff) << 52) | (seq & ((1 << 52) - 1));
        let p = permute(process_key(), plain);
        Self::layout(boot, (p >> 52) as u16, p & ((1 << 52) - 1))
    }

    /// The UUID layout of a prefix, a 12-bit field and a 62-bit field (no permutation).
    fn layout(boot: u64, shard: u16, seq: u64) -> Self {
        debug_assert!(seq < 1 << 62, "connection counter overflow");
        let mut nibbles = [0u8; 32];
        for (i, n) in nibbles[..12].iter_mut().enumerate() {
            *n = ((boot >> (44 - 4 * i)) & 0xf) as u8;
        }
        nibbles[12] = 4;
        let shard = u64::from(shard & 0x0fff);
        for (i, n) in nibbles[13..16].iter_mut().enumerate() {
            *n = ((shard >> (8 - 4 * i)) & 0xf) as u8;
        }
        nibbles[16] = 0x8 | ((seq >> 60) & 0x3) as u8;
        for (i, n) in nibbles[17..32].iter_mut().enumerate() {
            *n = ((seq >> (56 - 4 * i)) & 0xf) as u8;
        }
        let mut out = [b'-'; CONNECTION_ID_LEN];
        let mut k = 0;
        for (pos, byte) in out.iter_mut().enumerate() {
            if DASHES.contains(&pos) {
                continue;
            }
            *byte = HEX[nibbles[k] as usize];
            k += 1;
        }
        debug_assert_eq!(k, 32);
        let id = ConnectionId(out);
        debug_assert!(ConnectionId::parse(id.as_str()) == Some(id));
        id
    }

    /// Read an id given by a control API caller or a backend: UUID-shaped (hex digits with
    /// dashes at 8, 13, 18, 23), upper-case folded to lower. `None` for anything else, which can
    /// never name a connection of this process.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != CONNECTION_ID_LEN {
            return None;
        }
        let mut out = [0u8; CONNECTION_ID_LEN];
        for (pos, (&c, o)) in b.iter().zip(out.iter_mut()).enumerate() {
            *o = if DASHES.contains(&pos) {
                if c != b'-' {
                    return None;
                }
                c
            } else if c.is_ascii_hexdigit() {
                c.to_ascii_lowercase()
            } else {
                return None;
            };
        }
        Some(ConnectionId(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only hex digits and dashes are ever stored (mint and parse guarantee it).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The process's key for the id permutation (random, drawn once).
fn process_key() -> &'static std::collections::hash_map::RandomState {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

/// A keyed permutation of 64-bit values: 4 Feistel rounds over 32-bit halves, the round
/// function SipHash of (round, half) under `key`. A bijection for every key.
fn permute(key: &impl BuildHasher, v: u64) -> u64 {
    let (mut l, mut r) = ((v >> 32) as u32, v as u32);
    for round in 0u8..4 {
        let f = key.hash_one((round, r)) as u32;
        (l, r) = (r, l ^ f);
    }
    (u64::from(l) << 32) | u64::from(r)
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_packs_prefix_shard_and_counter() {
        assert_eq!(
            ConnectionId::layout(0, 0, 0).as_str(),
            "00000000-0000-4000-8000-000000000000"
        );
        assert_eq!(
            ConnectionId::layout(0x0123_4567_89ab, 0x2a, 0x1f).as_str(),
            "01234567-89ab-402a-8000-00000000001f"
        );
        // Only the low 48 bits of the prefix and 12 bits of the shard are used; the counter's
        // top two bits land in the variant digit.
        assert_eq!(
            ConnectionId::layout(u64::MAX, u16::MAX, (1 << 62) - 1).as_str(),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            ConnectionId::layout(7, 1, 1 << 60).as_str(),
            "00000000-0007-4001-9000-000000000000"
        );
    }

    #[test]
    fn the_permutation_is_a_bijection_and_hides_the_counter() {
        let key = std::collections::hash_map::RandomState::new();
        let mut seen = std::collections::HashSet::new();
        for v in 0..4096u64 {
            assert!(seen.insert(permute(&key, v)), "collision at {v}");
        }
        // Consecutive counters do not give neighbouring ids.
        let (a, b) = (permute(&key, 41), permute(&key, 42));
        assert!(a.abs_diff(b) > 1 << 16, "{a:x} {b:x}");
        // Ids keep the prefix and UUID v4 shape.
        let id = ConnectionId::mint(0x0123_4567_89ab, 1, 42);
        assert!(id.as_str().starts_with("01234567-89ab-4"), "{id}");
        assert!(matches!(id.as_str().as_bytes()[19], b'8'..=b'b'), "{id}");
        assert_eq!(ConnectionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_differ_by_shard_and_counter() {
        let a = ConnectionId::mint(5, 0, 1);
        let b = ConnectionId::mint(5, 1, 1);
        let c = ConnectionId::mint(5, 0, 2);
        assert!(a != b && a != c && b != c);
    }

    #[test]
    fn parse_accepts_uuid_shapes_only() {
        let id = ConnectionId::layout(0xabc, 3, 99);
        assert_eq!(ConnectionId::parse(id.as_str()), Some(id));
        assert_eq!(
            ConnectionId::parse("00000000-0ABC-4003-8000-000000000063"),
            Some(id),
            "upper case folds"
        );
        // Any UUID is accepted (a Pushpin-made one simply names no connection here).
        assert!(ConnectionId::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8").is_some());
        for bad in [
            "",
            "abc",
            "00000000-0abc-4003-8000-00000000006",
            "00000000-0abc-4003-8000-0000000000633",
            "00000000_0abc-4003-8000-000000000063",
            "0000000g-0abc-4003-8000-000000000063",
            "00000000-0abc-4003-8000-00000000006\u{e9}",
        ] {
            assert_eq!(ConnectionId::parse(bad), None, "{bad:?}");
        }
    }
}
