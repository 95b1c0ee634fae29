//! The manifest: what a consistent index is made of at one point of the event logs.
//!
//! Written whole after every flush and compaction, atomically (a new file, synced, renamed
//! over the old one): the segments that hold the index, how many runs of the `runs` file
//! are committed, how far each event log is indexed, the dictionaries, the small views
//! (workers, nodes, jobs, actors) and the running counts. Everything after the offsets it
//! names is read again from the logs when the index opens, so a crash loses nothing and
//! indexes nothing twice.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::table::checksum;

const MAGIC: &[u8; 8] = b"RAYRMAN1";

#[derive(Serialize, Deserialize, Default, Debug)]
pub(crate) struct Manifest {
    /// Segment files, oldest first.
    pub segments: Vec<String>,
    /// The number the next segment file gets.
    pub next_segment: u64,
    /// Committed records of the `runs` file, and the events in them.
    pub runs: u64,
    /// Committed entries of the `ranges` file.
    pub ranges: u64,
    pub events: u64,
    /// Event logs by the number runs name them with: file name and bytes indexed.
    pub logs: Vec<(String, u64)>,
    pub names: Vec<String>,
    pub ids: Vec<[u8; 16]>,
    /// The small views, each row encoded (`rayr_proto`).
    pub workers: Vec<Vec<u8>>,
    pub nodes: Vec<Vec<u8>>,
    pub jobs: Vec<Vec<u8>>,
    pub actors: Vec<Vec<u8>>,
    /// Tasks by (function, state) and objects by state: (state, count, bytes).
    pub task_counts: Vec<(u32, u8, i64)>,
    pub object_counts: Vec<(u8, i64, i64)>,
    /// Per counter block, the highest task and object keys in any segment (see
    /// `State::maybe_flushed`).
    pub task_high: Vec<(u64, u64, u64)>,
    pub object_high: Vec<(u64, u64, u64)>,
    /// The newest final task failures.
    pub failures: Vec<Failure>,
}

/// A final task failure, as the live views list them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub time_us: i64,
    pub task: [u8; 16],
    pub function: u32,
    pub error_type: u32,
    pub error: String,
}

impl Manifest {
    /// Reads `path`: `Ok(None)` when there is none yet.
    pub(crate) fn read(path: &Path) -> io::Result<Option<Manifest>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(bad("not an index manifest"));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let sum = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        let body = &bytes[24..];
        if body.len() as u64 != len || checksum(body) != sum {
            return Err(bad("damaged (length or checksum)"));
        }
        postcard::from_bytes(body).map(Some).map_err(|e| bad(&format!("does not decode: {e}")))
    }

    /// Replaces `path` with this manifest, durably.
    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        let body = postcard::to_allocvec(self).map_err(io::Error::other)?;
        let mut bytes = Vec::with_capacity(body.len() + 24);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_damage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("manifest");
        assert!(Manifest::read(&path).unwrap().is_none());
        let m = Manifest { segments: vec!["seg-1".into()], runs: 4, events: 9, logs: vec![("events-a.log".into(), 77)], ..Default::default() };
        m.write(&path).unwrap();
        let back = Manifest::read(&path).unwrap().unwrap();
        assert_eq!((back.segments, back.runs, back.events, back.logs), (m.segments, 4, 9, m.logs));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Manifest::read(&path).is_err());
    }
}
