//! [`IdMap`]: the map of this process's own tasks and objects, which may hold millions
//! (a driver with a million tasks queued behind one dependency) and must not slow down or
//! stall while it grows.
//!
//! A hash table grows by moving every entry into one twice its size: at a million entries
//! that is a million cache misses in the middle of submitting, and between growths every
//! insert lands at a random place in a table far larger than the cache. The ids this
//! process makes are its own counter, scrambled (`rayr_logs::new_id`; `split_id` undoes
//! it), so `IdMap` files them by counter instead: in chunks of 64 consecutive counters,
//! each chunk allocated when its first entry comes and freed with its last. Nothing ever
//! moves, consecutive submits touch the same chunk, and a million entries need no more
//! than a small index of chunks. Ids another process made (rare here) go to a plain table.

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

/// Counters per chunk (a power of two): small, so that one long-lived entry keeps little
/// else allocated; large enough that the index of chunks stays small.
const CHUNK_BITS: u32 = 6;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The entries of `CHUNK` consecutive counters.
struct Chunk<V> {
    slots: Box<[Option<V>]>,
    live: u32,
}

/// A map from ids to `V`, for ids made by this process (see the module doc).
pub(crate) struct IdMap<V> {
    /// This process's salt: ids ending with it are filed by counter.
    salt: u64,
    /// Chunks by counter / CHUNK.
    chunks: HashMap<u64, Chunk<V>, BuildHasherDefault<IdHasher>>,
    /// Ids another process made.
    other: IdHashMap<V>,
    len: usize,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap { salt: rayr_logs::process_salt(), chunks: HashMap::default(), other: IdHashMap::default(), len: 0 }
    }
}

impl<V> IdMap<V> {
    /// The chunk and slot of one of this process's ids; None for another process's.
    #[inline]
    fn place(&self, id: &Id) -> Option<(u64, usize)> {
        let (salt, counter) = rayr_logs::split_id(id);
        (salt == self.salt).then_some((counter >> CHUNK_BITS, (counter as usize) & (CHUNK - 1)))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len + self.other.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &Id) -> Option<&V> {
        match self.place(id) {
            Some((chunk, slot)) => self.chunks.get(&chunk)?.slots[slot].as_ref(),
            None => self.other.get(id),
        }
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut V> {
        match self.place(id) {
            Some((chunk, slot)) => self.chunks.get_mut(&chunk)?.slots[slot].as_mut(),
            None => self.other.get_mut(id),
        }
    }

    pub fn contains_key(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// Inserts, returning the value `id` had.
    pub fn insert(&mut self, id: Id, value: V) -> Option<V> {
        let Some((chunk, slot)) = self.place(&id) else { return self.other.insert(id, value) };
        let c = self.chunks.entry(chunk).or_insert_with(|| Chunk { slots: (0..CHUNK).map(|_| None).collect(), live: 0 });
        let before = c.slots[slot].replace(value);
        if before.is_none() {
            c.live += 1;
            self.len += 1;
        }
        before
    }

    pub fn remove(&mut self, id: &Id) -> Option<V> {
        let Some((chunk, slot)) = self.place(id) else { return self.other.remove(id) };
        let c = self.chunks.get_mut(&chunk)?;
        let value = c.slots[slot].take()?;
        c.live -= 1;
        self.len -= 1;
        if c.live == 0 {
            self.chunks.remove(&chunk);
        }
        Some(value)
    }

    /// Every entry, in no set order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, &V)> {
        let salt = self.salt;
        self.chunks
            .iter()
            .flat_map(move |(chunk, c)| {
                c.slots.iter().enumerate().filter_map(move |(i, v)| {
                    let counter = (chunk << CHUNK_BITS) | i as u64;
                    v.as_ref().map(|v| (rayr_logs::id_of_counter(counter, salt), v))
                })
            })
            .chain(self.other.iter().map(|(id, v)| (*id, v)))
    }

    /// Every key, in no set order.
    pub fn keys(&self) -> impl Iterator<Item = Id> + '_ {
        self.iter().map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id another process made.
    fn foreign(n: u32) -> Id {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id[8..].copy_from_slice(&(!rayr_logs::process_salt()).to_be_bytes());
        id
    }

    #[test]
    fn every_entry_is_kept_whatever_is_removed_or_replaced_meanwhile() {
        // The same operations on a std map, compared at every step; ids of this process
        // and of others (filed apart) mixed.
        let mut m: IdMap<u32> = IdMap::default();
        let mut model: HashMap<Id, u32> = HashMap::new();
        let mut ids = Vec::new();
        for n in 0..100_000u32 {
            let id = if n % 10 == 0 { foreign(n) } else { rayr_logs::new_id() };
            ids.push(id);
            assert_eq!(m.insert(id, n), model.insert(id, n));
            if n % 3 == 0 {
                let old = ids[n as usize / 2];
                assert_eq!(m.remove(&old), model.remove(&old));
            }
            if n % 7 == 0 && n > 10 {
                // Replaced (or put back) wherever it is now.
                let again = ids[n as usize - 5];
                assert_eq!(m.insert(again, n + 1_000_000), model.insert(again, n + 1_000_000));
            }
            assert_eq!(m.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(m.get(k), Some(v));
            assert!(m.contains_key(k));
        }
        let mut seen: Vec<(Id, u32)> = m.iter().map(|(k, v)| (k, *v)).collect();
        let mut want: Vec<(Id, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        want.sort_unstable();
        assert_eq!(seen, want, "iteration yields every entry under its own id");
        assert_eq!(m.keys().count(), model.len());
        for k in model.keys() {
            assert!(m.remove(k).is_some());
        }
        assert!(m.is_empty());
        assert!(m.chunks.is_empty(), "empty chunks are freed");
        // Removing what is not there changes nothing.
        assert_eq!(m.remove(&ids[1]), None);
        assert_eq!(m.get_mut(&ids[2]), None);
    }

    #[test]
    fn a_million_entries_made_in_a_row_fill_few_chunks() {
        let mut m: IdMap<Box<u64>> = IdMap::default();
        for n in 0..1_000_000u64 {
            // A task and its result: two ids per submit, one filed here.
            let _result = rayr_logs::new_id();
            m.insert(rayr_logs::new_id(), Box::new(n));
        }
        assert_eq!(m.len(), 1_000_000);
        // Half of each chunk's counters are the results' (and a thread takes counters in
        // blocks): a chunk per ~32 entries, give or take a block boundary.
        assert!(m.chunks.len() <= 1_000_000 / 32 + 64, "{} chunks", m.chunks.len());
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
