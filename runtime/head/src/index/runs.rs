//! The run directory: one fixed-size record per indexed run, in the order runs were
//! indexed. A run is the unit the index points at: postings name runs, and a query reads
//! the runs it is pointed to from the event logs (`log`, `offset`, `len`).
//!
//! The file `runs` holds the records of every flushed run; the manifest says how many of
//! them are committed, and records past that (a crash between appending and committing)
//! are cut off when the index opens.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::keys::FxHashMap;

/// Bytes per record in the `runs` file.
const RECORD: usize = 84;

/// One indexed run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunRec {
    /// Which event log (the manifest's list of logs).
    pub log: u32,
    /// Where the run's frame body starts in the log, and its length.
    pub offset: u64,
    pub len: u32,
    /// Events in the run.
    pub count: u32,
    /// The ordinal (1-based, in index order) of the run's first event.
    pub first_event: u64,
    /// The recording process's id salt and the first event's sequence number: an event id
    /// of the run is `event_id_from(first_seq + i, salt)`.
    pub salt: u64,
    pub first_seq: u64,
    /// What the run's events share (`Ids` numbers, 0 for none): the recording process, the
    /// node whose log it is in, and the job the run says it belongs to.
    pub source: u32,
    pub node: u32,
    pub job: u32,
    pub min_time: i64,
    pub max_time: i64,
    /// Bit k set: an event of kind k is in the run (kinds ≥ 63 set bit 63).
    pub kinds: u64,
    /// Events of the run that name their own id (the rest have the id that follows from
    /// the run).
    pub explicit: u32,
}

impl RunRec {
    /// The ordinal after the run's last event.
    pub(crate) fn end_event(&self) -> u64 {
        self.first_event + self.count as u64
    }

    pub(crate) fn has_kind(&self, kind: i32) -> bool {
        self.kinds & kind_bit(kind) != 0
    }

    /// Whether the run holds the event with sequence number `seq` of the process `salt`.
    pub(crate) fn holds_seq(&self, salt: u64, seq: u64) -> bool {
        self.salt == salt && seq >= self.first_seq && seq - self.first_seq < self.count as u64
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.log.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.first_event.to_le_bytes());
        out.extend_from_slice(&self.salt.to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.source.to_le_bytes());
        out.extend_from_slice(&self.node.to_le_bytes());
        out.extend_from_slice(&self.job.to_le_bytes());
        out.extend_from_slice(&self.min_time.to_le_bytes());
        out.extend_from_slice(&self.max_time.to_le_bytes());
        out.extend_from_slice(&self.kinds.to_le_bytes());
        out.extend_from_slice(&self.explicit.to_le_bytes());
    }

    fn read(b: &[u8; RECORD]) -> RunRec {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        RunRec {
            log: u32_at(0),
            offset: u64_at(4),
            len: u32_at(12),
            count: u32_at(16),
            first_event: u64_at(20),
            salt: u64_at(28),
            first_seq: u64_at(36),
            source: u32_at(44),
            node: u32_at(48),
            job: u32_at(52),
            min_time: u64_at(56) as i64,
            max_time: u64_at(64) as i64,
            kinds: u64_at(72),
            explicit: u32_at(80),
        }
    }
}

pub(crate) fn kind_bit(kind: i32) -> u64 {
    1u64 << kind.clamp(0, 63)
}

/// Every indexed run, and where each process's runs are.
#[derive(Default)]
pub(crate) struct Runs {
    list: Vec<RunRec>,
    /// Runs of each recording process (by salt), in index order: finds an event by its id.
    by_salt: FxHashMap<u64, Vec<u32>>,
    /// Records already in the `runs` file.
    saved: usize,
}

impl Runs {
    /// Reads the first `committed` records of `path`, cutting off any after them.
    pub(crate) fn load(path: &Path, committed: u64) -> io::Result<Runs> {
        let mut runs = Runs::default();
        let mut file = match File::options().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && committed == 0 => return Ok(runs),
            Err(e) => return Err(e),
        };
        let have = file.metadata()?.len();
        let want = committed
            .checked_mul(RECORD as u64)
            .filter(|n| *n <= have)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{} holds fewer than the {committed} runs the manifest names", path.display())))?;
        file.set_len(want)?;
        let mut bytes = Vec::with_capacity(want as usize);
        (&mut file).take(want).read_to_end(&mut bytes)?;
        for rec in bytes.chunks_exact(RECORD) {
            runs.push(RunRec::read(rec.try_into().unwrap()));
        }
        runs.saved = runs.list.len();
        Ok(runs)
    }

    pub(crate) fn push(&mut self, rec: RunRec) -> u32 {
        let n = self.list.len() as u32;
        self.by_salt.entry(rec.salt).or_default().push(n);
        self.list.push(rec);
        n
    }

    /// Appends the records not yet in `path` and syncs it.
    pub(crate) fn save(&mut self, path: &Path) -> io::Result<()> {
        if self.saved == self.list.len() {
            return Ok(());
        }
        let mut out = Vec::with_capacity((self.list.len() - self.saved) * RECORD);
        for r in &self.list[self.saved..] {
            r.write(&mut out);
        }
        let mut f = File::options().create(true).append(true).open(path)?;
        f.write_all(&out)?;
        f.sync_data()?;
        self.saved = self.list.len();
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn get(&self, n: u32) -> Option<&RunRec> {
        self.list.get(n as usize)
    }

    pub(crate) fn all(&self) -> &[RunRec] {
        &self.list
    }

    /// The run holding the event ordinal `event`, or the first after it.
    pub(crate) fn at_event(&self, event: u64) -> u32 {
        self.list.partition_point(|r| r.end_event() <= event) as u32
    }

    /// The run holding event `seq` of the process `salt`.
    pub(crate) fn of_event(&self, salt: u64, seq: u64) -> Option<u32> {
        self.by_salt.get(&salt)?.iter().copied().find(|n| self.list[*n as usize].holds_seq(salt, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_uncommitted_ones_are_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("runs");
        let mut runs = Runs::default();
        for i in 0..5u32 {
            runs.push(RunRec { log: i, offset: 7 * i as u64, len: 3, count: 2, first_event: 1 + 2 * i as u64, salt: 9, first_seq: 10 * i as u64, source: 1, node: 2, job: 3, min_time: -1, max_time: 5, kinds: 1 << 12, explicit: i });
        }
        runs.save(&path).unwrap();
        let again = Runs::load(&path, 3).unwrap();
        assert_eq!(again.all(), &runs.all()[..3]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * RECORD as u64);
        assert_eq!(again.of_event(9, 21), Some(2));
        assert_eq!(again.of_event(9, 25), None);
        assert_eq!(again.at_event(1), 0);
        assert_eq!(again.at_event(4), 1);
        assert_eq!(again.at_event(100), 3);
        assert!(Runs::load(&path, 4).is_err(), "more committed than written is damage");
    }
}
