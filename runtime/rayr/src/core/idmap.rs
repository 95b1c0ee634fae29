//! [`IdMap`]: the map of this process's own tasks and objects, which may hold millions
//! (a driver with a million tasks queued behind one dependency) and must not stall while
//! it grows.
//!
//! A hash table grows by moving every entry into one twice its size at once: at a million
//! entries that is a million cache misses, a stall of a tenth of a second in the middle
//! of submitting. `IdMap` grows incrementally instead (as Redis' dict does): the full
//! table becomes the old one, a table of twice the capacity takes new entries, and every
//! insert moves two entries across, so the move is done long before the new table fills.
//! Lookups try the new table, then the old.
//!
//! Keys are ids made by this process (`rayr_logs::new_id`: already scattered), hashed
//! with [`IdHasher`], a multiply per half instead of SipHash. Only for keys made here:
//! ids chosen by another process could be made to collide.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayr_logs::Id;

/// A std map keyed by ids made here, with [`IdHasher`] (for small maps that never hold
/// many entries; [`IdMap`] for those that may).
pub(crate) type IdHashMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;

/// The hasher for ids made by this process.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        // (The slice length every id hashes first: the same for all, nothing to mix in.)
        let _ = n;
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The table picks buckets with the low bits and tags with the top 7: fold the
        // well-mixed high half down.
        self.0 ^ (self.0 >> 29)
    }
}

/// Entries moved from the old table to the new one per insert while growing. Two: the
/// old table holds at most half of the new one's capacity, so it is empty by the time
/// the new one is three quarters full.
const MOVE_PER_INSERT: usize = 2;

/// A map from ids made here to `V` that grows without a stall (see the module doc).
pub(crate) struct IdMap<V> {
    new: IdHashMap<V>,
    /// The table being emptied into `new` (empty when not growing).
    old: IdHashMap<V>,
    /// Keys of `old` still to move (some may have been removed since).
    moving: Vec<Id>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap { new: IdHashMap::default(), old: IdHashMap::default(), moving: Vec::new() }
    }
}

impl<V> IdMap<V> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &Id) -> Option<&V> {
        self.new.get(id).or_else(|| self.old.get(id))
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut V> {
        match self.new.get_mut(id) {
            Some(v) => Some(v),
            None => self.old.get_mut(id),
        }
    }

    pub fn contains_key(&self, id: &Id) -> bool {
        self.new.contains_key(id) || self.old.contains_key(id)
    }

    pub fn remove(&mut self, id: &Id) -> Option<V> {
        self.new.remove(id).or_else(|| self.old.remove(id))
    }

    /// Inserts, returning the value `id` had.
    pub fn insert(&mut self, id: Id, value: V) -> Option<V> {
        let before = if self.old.is_empty() { None } else { self.old.remove(&id) };
        if self.old.is_empty() && self.new.len() == self.new.capacity() && !self.new.contains_key(&id) {
            self.start_growing();
        }
        let replaced = self.new.insert(id, value);
        self.move_some();
        replaced.or(before)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Id, &V)> {
        self.new.iter().chain(self.old.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &Id> {
        self.new.keys().chain(self.old.keys())
    }

    /// `new` is full: it becomes the old table, emptied into one of twice its capacity.
    fn start_growing(&mut self) {
        let capacity = (self.new.capacity() * 2).max(16);
        let full = std::mem::replace(&mut self.new, IdHashMap::with_capacity_and_hasher(capacity, Default::default()));
        self.moving.clear();
        self.moving.extend(full.keys().copied());
        self.old = full;
    }

    fn move_some(&mut self) {
        if self.moving.is_empty() {
            return;
        }
        for _ in 0..MOVE_PER_INSERT {
            let Some(id) = self.moving.pop() else { break };
            if let Some(v) = self.old.remove(&id) {
                self.new.insert(id, v);
            }
        }
        if self.moving.is_empty() {
            // Whatever is left was removed meanwhile: free the old table.
            debug_assert!(self.old.is_empty());
            self.old = IdHashMap::default();
            self.moving = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id
    }

    #[test]
    fn every_entry_survives_growing_whatever_is_removed_or_replaced_meanwhile() {
        // The same operations on a std map, compared at every step.
        let mut m: IdMap<u32> = IdMap::default();
        let mut model: HashMap<Id, u32> = HashMap::new();
        for n in 0..100_000u32 {
            assert_eq!(m.insert(id(n), n), model.insert(id(n), n));
            if n % 3 == 0 {
                // Removed while it (or others) may be waiting to move.
                assert_eq!(m.remove(&id(n / 2)), model.remove(&id(n / 2)));
            }
            if n % 7 == 0 && n > 10 {
                // Replaced (or put back) wherever it is now.
                assert_eq!(m.insert(id(n - 5), n + 1_000_000), model.insert(id(n - 5), n + 1_000_000));
            }
            assert_eq!(m.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(m.get(k), Some(v));
            assert!(m.contains_key(k));
        }
        assert_eq!(m.iter().count(), model.len());
        assert_eq!(m.keys().count(), model.len());
        for k in model.keys() {
            assert!(m.remove(k).is_some());
        }
        assert!(m.is_empty());
    }

    #[test]
    fn growing_never_moves_more_than_a_few_entries_per_insert() {
        let mut m: IdMap<u64> = IdMap::default();
        let mut most_moving = 0;
        for n in 0..300_000u32 {
            let before = m.new.len();
            m.insert(id(n), n as u64);
            // The new table took this entry and at most MOVE_PER_INSERT moved ones; only
            // the switch itself (a fresh, empty table) drops its count.
            let grew = m.new.len().saturating_sub(before);
            assert!(grew <= 1 + MOVE_PER_INSERT, "insert {n} moved {grew}");
            most_moving = most_moving.max(m.moving.len());
        }
        assert!(most_moving > 100_000, "the test grew a large table ({most_moving} to move at most)");
        assert_eq!(m.len(), 300_000);
        // The old table was emptied before the new one had to grow again.
        assert!(m.new.len() <= m.new.capacity());
    }

    #[test]
    fn ids_made_in_a_row_spread_over_the_buckets() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut buckets = vec![0u32; 1024];
        for _ in 0..1024 * 64 {
            buckets[(build.hash_one(rayr_logs::new_id()) & 1023) as usize] += 1;
        }
        // 64 per bucket on average; a poor hash piles thousands into a few.
        let most = *buckets.iter().max().unwrap();
        assert!(most < 160, "fullest bucket holds {most}");
    }
}
