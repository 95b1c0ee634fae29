//! The append-only event log file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayr_proto::{Event, Message, split_frame};

/// Appends already-encoded event frames to one node's log.
pub struct EventLogWriter {
    file: File,
    path: PathBuf,
}

impl EventLogWriter {
    /// Opens (or creates) the log for appending. A torn frame left at the end by a crash is
    /// cut off first, so new frames never follow garbage.
    pub fn open(path: &Path) -> io::Result<EventLogWriter> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let valid = valid_prefix_len(&mut file)?;
        if valid < file.metadata()?.len() {
            file.set_len(valid)?;
        }
        Ok(EventLogWriter { file, path: path.to_path_buf() })
    }

    /// Appends whole frames in one write: readers see all of them or, after a crash, a
    /// torn tail they ignore.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        self.file.write_all(frames)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn valid_prefix_len(file: &mut File) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let mut at = 0usize;
    while let Ok(Some((body, used))) = split_frame(&data[at..]) {
        if Event::decode(body).is_err() {
            break;
        }
        at += used;
    }
    Ok(at as u64)
}

/// Reads complete events from a log, remembering where it stopped so that it can be
/// called again as the log grows (tailing).
pub struct EventLogReader {
    path: PathBuf,
    offset: u64,
}

impl EventLogReader {
    pub fn new(path: &Path, offset: u64) -> EventLogReader {
        EventLogReader { path: path.to_path_buf(), offset }
    }

    /// The byte offset after the last complete frame read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads up to `max_bytes` more bytes and returns the complete events in them, each
    /// with the offset just past it. An incomplete tail is left for the next call.
    pub fn read_more(&mut self, max_bytes: usize) -> io::Result<Vec<(u64, Event)>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut data = Vec::new();
        file.take(max_bytes as u64).read_to_end(&mut data)?;
        let mut at = 0usize;
        let mut out = Vec::new();
        loop {
            match split_frame(&data[at..]) {
                Ok(Some((body, used))) => {
                    let event = Event::decode(body).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: bad event at byte {}: {e}", self.path.display(), self.offset + at as u64),
                        )
                    })?;
                    at += used;
                    out.push((self.offset + at as u64, event));
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e} at byte {}", self.path.display(), self.offset + at as u64),
                    ));
                }
            }
        }
        if out.is_empty() && at == 0 && data.len() == max_bytes {
            // One frame larger than the window: read it whole.
            return self.read_more(max_bytes * 4);
        }
        self.offset += at as u64;
        Ok(out)
    }
}

/// Every complete event in one log file.
pub fn read_events(path: &Path) -> io::Result<Vec<Event>> {
    let mut reader = EventLogReader::new(path, 0);
    let mut all = Vec::new();
    loop {
        let batch = reader.read_more(8 << 20)?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch.into_iter().map(|(_, e)| e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::{EventKind, encode_frame};

    fn event(n: u8) -> Event {
        Event { id: vec![n; 16], kind: EventKind::TaskStarted as i32, time_us: n as i64, ..Default::default() }
    }

    #[test]
    fn torn_tail_is_ignored_by_readers_and_cut_by_writers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events-x.log");
        let mut frames = Vec::new();
        encode_frame(&event(1), &mut frames);
        encode_frame(&event(2), &mut frames);
        let mut w = EventLogWriter::open(&path).unwrap();
        w.append(&frames).unwrap();
        // A crash mid-write leaves half a frame.
        let mut torn = Vec::new();
        encode_frame(&event(3), &mut torn);
        w.append(&torn[..torn.len() / 2]).unwrap();
        drop(w);
        assert_eq!(read_events(&path).unwrap().len(), 2);

        let mut w = EventLogWriter::open(&path).unwrap();
        let mut more = Vec::new();
        encode_frame(&event(4), &mut more);
        w.append(&more).unwrap();
        let got: Vec<i64> = read_events(&path).unwrap().iter().map(|e| e.time_us).collect();
        assert_eq!(got, vec![1, 2, 4]);
    }

    #[test]
    fn reader_tails_a_growing_log() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events-y.log");
        let mut w = EventLogWriter::open(&path).unwrap();
        let mut r = EventLogReader::new(&path, 0);
        assert!(r.read_more(1024).unwrap().is_empty());
        let mut f = Vec::new();
        encode_frame(&event(7), &mut f);
        w.append(&f).unwrap();
        let got = r.read_more(1024).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, f.len() as u64);
        assert!(r.read_more(1024).unwrap().is_empty());
    }
}
