//! Per-connection last-id tracking for reliable delivery (`Grip-Channel: ch; prev-id=X`,
//! `../shared/grip-spec.md` §6.3), pure: no I/O, no clock.
//!
//! A reliable connection knows, for each of its reliable channels, the id of the last item it
//! got (at first the `prev-id` the backend gave). A published item with ids on such a channel
//! is delivered only if its `prev-id` is that id, and then the id advances to the item's `id`;
//! anything else is a **gap** (an item went missing, or the item does not follow), and the
//! connection recovers by asking its backend (`Grip-Last: <ch>; last-id=<id>` for every tracked
//! channel), which answers with what was missed and the new `prev-id`.
//!
//! Items without an `id` carry no position: they are delivered and leave the id alone.
//! Channels are kept in a small `Vec` (at most `connection_subscription_max` of them, 20 by
//! default), in the order they were added.

/// What to do with one published item on a connection that tracks ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The client has this item already (its id is the connection's id): do not write it.
    Skip,
    /// Deliver it: the channel is not tracked, the item has no id, or it follows (the
    /// connection's id for the channel advanced to the item's id).
    Deliver,
    /// The item does not follow the connection's id for its channel (a gap or a mismatch): do
    /// not deliver it; recover from the backend.
    Gap,
}

/// The ids one connection tracks, per channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastIds {
    /// (channel, id): `None` for a channel the connection knows but does not track now.
    ids: Vec<(String, Option<String>)>,
    max: usize,
}

impl LastIds {
    /// An empty tracker that knows at most `max` channels.
    pub fn new(max: usize) -> Self {
        Self {
            ids: Vec::new(),
            max,
        }
    }

    /// Whether some channel has an id (the connection is reliable).
    pub fn is_tracking(&self) -> bool {
        self.ids.iter().any(|(_, id)| id.is_some())
    }

    /// The connection's id for `channel`, if tracked.
    pub fn get(&self, channel: &str) -> Option<&str> {
        self.ids
            .iter()
            .find(|(c, _)| c == channel)
            .and_then(|(_, id)| id.as_deref())
    }

    /// Add `channel` with its id (`None`: known, not tracked), or set the id of a channel
    /// already known. False when there is no room for a new channel (it stays unknown).
    pub fn add(&mut self, channel: &str, id: Option<&str>) -> bool {
        if self.update(channel, id) {
            return true;
        }
        if self.ids.len() >= self.max {
            return false;
        }
        self.ids.push((channel.to_string(), id.map(str::to_string)));
        true
    }

    /// Set (`Some`) or stop tracking (`None`) the id of a channel already known (a recovery
    /// answer's new `prev-id`). False when the channel is not known.
    pub fn update(&mut self, channel: &str, id: Option<&str>) -> bool {
        match self.ids.iter_mut().find(|(c, _)| c == channel) {
            Some(e) => {
                e.1 = id.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// Stop tracking every channel (the connection is no longer reliable).
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    /// Keep only the channels in `keep` (a next link's answer replaced the subscriptions).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.ids.retain(|(c, _)| keep(c));
    }

    /// Check one published item (`id`, `prev_id`) on `channel`, advancing the id on delivery.
    pub fn check(&mut self, channel: &str, id: Option<&str>, prev_id: Option<&str>) -> Verdict {
        let Some(id) = id else {
            return Verdict::Deliver;
        };
        let Some(cur) = self
            .ids
            .iter_mut()
            .find(|(c, _)| c == channel)
            .and_then(|(_, cur)| cur.as_mut())
        else {
            return Verdict::Deliver;
        };
        if id == cur.as_str() {
            return Verdict::Skip;
        }
        if prev_id != Some(cur.as_str()) {
            return Verdict::Gap;
        }
        cur.clear();
        cur.push_str(id);
        Verdict::Deliver
    }

    /// Whether a tracked channel's last id, as `known` tells it (the shard's sequencer), is
    /// known and differs from the connection's: the connection is behind, recover at once.
    pub fn behind<'a>(&self, known: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.tracked()
            .any(|(ch, id)| known(ch).is_some_and(|last| last != id))
    }

    /// The tracked (channel, id) pairs, in the order the channels were added.
    pub fn tracked(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ids
            .iter()
            .filter_map(|(c, id)| id.as_deref().map(|id| (c.as_str(), id)))
    }

    /// The `Grip-Last` entries of a recovery request: one (channel, id) per tracked channel.
    pub fn grip_last(&self) -> Vec<(String, String)> {
        self.tracked()
            .map(|(c, id)| (c.to_string(), id.to_string()))
            .collect()
    }

    /// A filter for the items queued while the connection recovered: on each tracked channel,
    /// items that come before the first one that follows the (new) id are what the backend's
    /// answer already covered, and are dropped; from that one on, items are kept (and checked
    /// one by one as they are delivered).
    pub fn after_recovery(&self) -> RecoveryFilter<'_> {
        RecoveryFilter {
            ids: self,
            settled: Vec::new(),
        }
    }
}

/// See [`LastIds::after_recovery`].
pub struct RecoveryFilter<'a> {
    ids: &'a LastIds,
    settled: Vec<&'a str>,
}

impl RecoveryFilter<'_> {
    /// Whether to keep a queued item (`channel`, `prev_id`); call in queue order.
    pub fn keep(&mut self, channel: &str, prev_id: Option<&str>) -> bool {
        let Some((name, cur)) = self
            .ids
            .ids
            .iter()
            .find(|(c, _)| c == channel)
            .and_then(|(c, id)| id.as_deref().map(|id| (c.as_str(), id)))
        else {
            return true;
        };
        if self.settled.contains(&name) {
            return true;
        }
        if prev_id == Some(cur) {
            self.settled.push(name);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(pairs: &[(&str, &str)]) -> LastIds {
        let mut t = LastIds::new(20);
        for (c, id) in pairs {
            assert!(t.add(c, Some(id)));
        }
        t
    }

    #[test]
    fn an_item_the_client_has_is_skipped_and_channels_can_be_dropped() {
        let mut t = tracker(&[("a", "4"), ("b", "9")]);
        assert_eq!(t.check("a", Some("4"), Some("3")), Verdict::Skip);
        assert_eq!(t.get("a"), Some("4"));
        t.retain(|c| c == "b");
        assert_eq!(t.get("a"), None);
        assert_eq!(
            t.check("a", Some("7"), Some("6")),
            Verdict::Deliver,
            "untracked"
        );
        assert_eq!(t.grip_last(), vec![("b".to_string(), "9".to_string())]);
        t.clear();
        assert!(!t.is_tracking());
        assert_eq!(t.check("b", Some("11"), Some("10")), Verdict::Deliver);
    }

    #[test]
    fn in_order_items_advance_the_id() {
        let mut t = tracker(&[("ch", "1")]);
        assert_eq!(t.check("ch", Some("2"), Some("1")), Verdict::Deliver);
        assert_eq!(t.get("ch"), Some("2"));
        assert_eq!(t.check("ch", Some("3"), Some("2")), Verdict::Deliver);
        assert_eq!(t.get("ch"), Some("3"));
        assert_eq!(t.grip_last(), vec![("ch".to_string(), "3".to_string())]);
    }

    #[test]
    fn a_gap_or_a_mismatch_is_detected_and_leaves_the_id() {
        let mut t = tracker(&[("ch", "1")]);
        // Item 2 went missing: 3 follows 2, not 1.
        assert_eq!(t.check("ch", Some("3"), Some("2")), Verdict::Gap);
        assert_eq!(t.get("ch"), Some("1"));
        // An item with an id but no prev-id does not follow either.
        assert_eq!(t.check("ch", Some("9"), None), Verdict::Gap);
        assert_eq!(t.get("ch"), Some("1"));
    }

    #[test]
    fn items_without_ids_and_untracked_channels_pass_untouched() {
        let mut t = tracker(&[("ch", "1")]);
        assert_eq!(t.check("ch", None, None), Verdict::Deliver);
        assert_eq!(t.check("ch", None, Some("0")), Verdict::Deliver);
        assert_eq!(t.get("ch"), Some("1"));
        assert_eq!(t.check("other", Some("5"), Some("4")), Verdict::Deliver);
        assert_eq!(t.get("other"), None);
        // A channel the backend stopped tracking (no prev-id any more).
        assert!(t.update("ch", None));
        assert!(!t.is_tracking());
        assert_eq!(t.check("ch", Some("7"), Some("x")), Verdict::Deliver);
        assert!(t.grip_last().is_empty());
        // …and that it tracks again; an unknown channel is not added by an update.
        assert!(t.update("ch", Some("7")));
        assert!(!t.update("new", Some("1")));
        assert_eq!(t.get("new"), None);
        assert_eq!(t.check("ch", Some("8"), Some("7")), Verdict::Deliver);
    }

    #[test]
    fn several_channels_are_independent() {
        let mut t = tracker(&[("a", "1"), ("b", "x")]);
        assert_eq!(t.check("a", Some("2"), Some("1")), Verdict::Deliver);
        assert_eq!(t.check("b", Some("y"), Some("1")), Verdict::Gap);
        assert_eq!(t.check("b", Some("y"), Some("x")), Verdict::Deliver);
        assert_eq!(
            t.grip_last(),
            vec![
                ("a".to_string(), "2".to_string()),
                ("b".to_string(), "y".to_string())
            ]
        );
    }

    #[test]
    fn behind_compares_with_the_known_last_ids() {
        let t = tracker(&[("a", "1"), ("b", "5")]);
        assert!(!t.behind(|_| None));
        assert!(!t.behind(|c| if c == "a" { Some("1") } else { None }));
        assert!(t.behind(|c| if c == "b" { Some("6") } else { Some("1") }));
    }

    #[test]
    fn the_tracker_is_bounded() {
        let mut t = LastIds::new(1);
        assert!(t.add("a", Some("1")));
        assert!(!t.add("b", Some("1")));
        assert_eq!(t.get("b"), None);
        assert!(t.add("a", Some("2")));
        assert_eq!(t.get("a"), Some("2"));
    }

    #[test]
    fn after_recovery_drops_what_the_answer_covered_and_keeps_the_rest() {
        // The backend's answer went up to 4; queued: 3 (prev 2), 4 (prev 3), 5 (prev 4), 7
        // (prev 6), and items of an untracked channel.
        let t = tracker(&[("a", "4"), ("b", "x")]);
        let mut f = t.after_recovery();
        let kept: Vec<bool> = [
            ("a", Some("2")),
            ("z", Some("q")),
            ("a", Some("3")),
            ("a", Some("4")),
            ("b", Some("x")),
            ("a", Some("6")),
            ("b", Some("nope")),
        ]
        .iter()
        .map(|(c, p)| f.keep(c, *p))
        .collect();
        assert_eq!(kept, vec![false, true, false, true, true, true, true]);
    }
}
