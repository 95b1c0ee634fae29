//! How the index names ids: as (salt, counter) keys, hashed cheaply.

use std::hash::{BuildHasherDefault, Hasher};

use rayr_logs::Id;

/// An id as the index sorts it: the salt of the process that made it, then its counter
/// (`rayr_logs::split_id`). A process's ids sort together, in the order it made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Key {
    pub salt: u64,
    pub counter: u64,
}

impl Key {
    #[inline]
    pub(crate) fn of(id: &Id) -> Key {
        let (salt, counter) = rayr_logs::split_id(id);
        Key { salt, counter }
    }

    #[inline]
    pub(crate) fn id(self) -> Id {
        rayr_logs::id_of_counter(self.counter, self.salt)
    }

    /// Which block of counters (a thread's allotment) the key is in.
    #[inline]
    pub(crate) fn block(self) -> (u64, u64) {
        (self.salt, self.counter >> COUNTER_BLOCK_BITS)
    }
}

/// Counters are handed to a process's threads in blocks of this many (rayr_logs::ids):
/// within one, ids are made in counter order.
pub(crate) const COUNTER_BLOCK_BITS: u32 = 16;

/// FxHash: ids are random already, so hashing needs only to mix, not to resist attack
/// (keys come from the cluster's own record).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
pub(crate) type FxHashSet<K> = std::collections::HashSet<K, FxBuild>;
