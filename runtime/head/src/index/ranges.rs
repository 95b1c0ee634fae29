//! Which ids each run names, kept as ranges of counters instead of one entry per id.
//!
//! Every id is (the salt of the process that made it, a counter), and a process makes its
//! ids in counter order within blocks of 2^16 counters (`keys::COUNTER_BLOCK_BITS`). A run
//! of events names ids from a few such blocks (its submitter's tasks and objects, the
//! workers the node agent named, the events that caused them), each a narrow band of
//! counters. So for each run the index keeps, per block it names, the lowest and highest
//! counter named: a handful of entries per run, whatever its size, found without hashing
//! each id. A lookup reads the runs whose range covers the id and keeps the events that
//! really name it (a range may cover ids the run does not name: those cost a read, never a
//! wrong answer). A run naming ids of more than `MAX_PER_RUN` blocks posts the rest one by
//! one (the postings table).
//!
//! The file `ranges` holds every entry of the flushed runs (24 bytes each), appended as
//! runs are; the manifest says how many are committed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::keys::{COUNTER_BLOCK_BITS, FxHashMap, Key};

/// Most blocks one run keeps ranges for; further ids are posted whole.
pub(crate) const MAX_PER_RUN: usize = 16;
const RECORD: usize = 24;

/// One range: run `run` names ids of block (salt, block) with counters `lo..=hi` (within
/// the block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub run: u32,
    pub lo: u16,
    pub hi: u16,
}

/// The ranges one run is building while it is indexed.
#[derive(Default)]
pub(crate) struct RunRanges {
    entries: Vec<((u64, u64), u16, u16)>,
    last: usize,
}

impl RunRanges {
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.last = 0;
    }

    /// Notes that the run names `key`; `false` when the run already keeps `MAX_PER_RUN`
    /// blocks and this one is another (then the caller posts the id itself).
    #[inline]
    pub(crate) fn note(&mut self, key: Key) -> bool {
        let block = (key.salt, key.counter >> COUNTER_BLOCK_BITS);
        let off = (key.counter & ((1 << COUNTER_BLOCK_BITS) - 1)) as u16;
        let i = match self.entries.get(self.last) {
            Some(e) if e.0 == block => self.last,
            _ => match self.entries.iter().position(|e| e.0 == block) {
                Some(i) => i,
                None if self.entries.len() < MAX_PER_RUN => {
                    self.entries.push((block, off, off));
                    self.entries.len() - 1
                }
                None => return false,
            },
        };
        self.last = i;
        let e = &mut self.entries[i];
        e.1 = e.1.min(off);
        e.2 = e.2.max(off);
        true
    }
}

/// Every run's ranges, by block.
#[derive(Default)]
pub(crate) struct Ranges {
    by_block: FxHashMap<(u64, u64), Vec<Range>>,
    /// Entries not yet in the `ranges` file, in the order they were added.
    unsaved: Vec<u8>,
    count: u64,
}

impl Ranges {
    /// Adds run `run`'s ranges.
    pub(crate) fn add(&mut self, run: u32, r: &RunRanges) {
        for &((salt, block), lo, hi) in &r.entries {
            self.by_block.entry((salt, block)).or_default().push(Range { run, lo, hi });
            self.unsaved.extend_from_slice(&run.to_le_bytes());
            self.unsaved.extend_from_slice(&salt.to_le_bytes());
            self.unsaved.extend_from_slice(&block.to_le_bytes());
            self.unsaved.extend_from_slice(&lo.to_le_bytes());
            self.unsaved.extend_from_slice(&hi.to_le_bytes());
            self.count += 1;
        }
    }

    /// How many entries there are (what the manifest commits).
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Appends the entries not yet in `path` and syncs it.
    pub(crate) fn save(&mut self, path: &Path) -> io::Result<()> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let mut f = File::options().create(true).append(true).open(path)?;
        f.write_all(&self.unsaved)?;
        f.sync_data()?;
        self.unsaved.clear();
        Ok(())
    }

    /// Reads the first `committed` entries of `path`, cutting off any after them.
    pub(crate) fn load(path: &Path, committed: u64) -> io::Result<Ranges> {
        let mut ranges = Ranges::default();
        let mut file = match File::options().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && committed == 0 => return Ok(ranges),
            Err(e) => return Err(e),
        };
        let have = file.metadata()?.len();
        let want = committed.checked_mul(RECORD as u64).filter(|n| *n <= have).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{} holds fewer than the {committed} ranges the manifest names", path.display()))
        })?;
        file.set_len(want)?;
        let mut bytes = Vec::with_capacity(want as usize);
        (&mut file).take(want).read_to_end(&mut bytes)?;
        for rec in bytes.chunks_exact(RECORD) {
            let run = u32::from_le_bytes(rec[0..4].try_into().unwrap());
            let salt = u64::from_le_bytes(rec[4..12].try_into().unwrap());
            let block = u64::from_le_bytes(rec[12..20].try_into().unwrap());
            let lo = u16::from_le_bytes(rec[20..22].try_into().unwrap());
            let hi = u16::from_le_bytes(rec[22..24].try_into().unwrap());
            ranges.by_block.entry((salt, block)).or_default().push(Range { run, lo, hi });
            ranges.count += 1;
        }
        Ok(ranges)
    }

    /// Calls `f` with every key some range covers (each once per range covering it).
    pub(crate) fn for_each_counter(&self, mut f: impl FnMut(Key)) {
        for (&(salt, block), list) in &self.by_block {
            for r in list {
                for off in r.lo..=r.hi {
                    f(Key { salt, counter: block << COUNTER_BLOCK_BITS | off as u64 });
                }
            }
        }
    }

    /// Appends the runs whose ranges cover `key` to `out`.
    pub(crate) fn runs_covering(&self, key: Key, out: &mut Vec<u32>) {
        let block = (key.salt, key.counter >> COUNTER_BLOCK_BITS);
        let off = (key.counter & ((1 << COUNTER_BLOCK_BITS) - 1)) as u16;
        if let Some(list) = self.by_block.get(&block) {
            out.extend(list.iter().filter(|r| r.lo <= off && off <= r.hi).map(|r| r.run));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(salt: u64, counter: u64) -> Key {
        Key { salt, counter }
    }

    #[test]
    fn a_run_keeps_a_range_per_block_and_lookups_find_it() {
        let mut run = RunRanges::default();
        for c in [5, 9, 7] {
            assert!(run.note(key(1, c)));
        }
        assert!(run.note(key(1, (3 << COUNTER_BLOCK_BITS) + 2)));
        assert!(run.note(key(2, 100)));
        let mut ranges = Ranges::default();
        ranges.add(7, &run);
        run.clear();
        assert!(run.note(key(1, 8)));
        ranges.add(8, &run);
        let find = |k: Key| {
            let mut v = Vec::new();
            ranges.runs_covering(k, &mut v);
            v
        };
        assert_eq!(find(key(1, 8)), vec![7, 8]);
        assert_eq!(find(key(1, 6)), vec![7], "a range covers what lies between its ends");
        assert_eq!(find(key(1, 10)), Vec::<u32>::new());
        assert_eq!(find(key(1, (3 << COUNTER_BLOCK_BITS) + 2)), vec![7]);
        assert_eq!(find(key(2, 100)), vec![7]);
        assert_eq!(find(key(3, 100)), Vec::<u32>::new());

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ranges");
        ranges.save(&path).unwrap();
        let again = Ranges::load(&path, 3).unwrap();
        let mut v = Vec::new();
        again.runs_covering(key(1, 8), &mut v);
        assert_eq!(v, vec![7], "the fourth entry (run 8's) was not committed");
        assert!(Ranges::load(&path, 9).is_err());
    }

    #[test]
    fn a_run_naming_too_many_blocks_says_so() {
        let mut run = RunRanges::default();
        for s in 0..MAX_PER_RUN as u64 {
            assert!(run.note(key(s, 1)));
        }
        assert!(!run.note(key(99, 1)));
        assert!(run.note(key(3, 5)), "a block it keeps already");
    }
}
