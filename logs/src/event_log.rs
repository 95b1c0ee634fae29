//! The append-only event log file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayr_proto::{Event, split_frame};

use crate::event_run::expand_run;

/// Appends already-encoded event frames (`EventRun`s) to one node's log.
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
    /// torn tail they ignore. Bytes that are not a whole number of frames (a peer's bug)
    /// are refused, so they cannot swallow the frames appended after them.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < frames.len() {
            match split_frame(&frames[at..]) {
                Ok(Some((_, used))) => at += used,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("refusing {} bytes of events that are not whole frames (cut at byte {at})", frames.len()),
                    ));
                }
            }
        }
        self.file.write_all(frames)
    }

    /// Appends frames given as slices (built by the caller, so not checked), in one
    /// write where the kernel takes them all. On an error (a full disk) the log is cut
    /// back to where it was, so no torn frame is left for later frames to follow.
    pub fn append_vectored(&mut self, slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        let before = self.file.metadata()?.len();
        let mut rest = slices;
        while !rest.is_empty() {
            let result = match self.file.write_vectored(rest) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    io::IoSlice::advance_slices(&mut rest, n);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let _ = self.file.set_len(before);
                return Err(e);
            }
        }
        Ok(())
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
    // Only an incomplete frame is a torn tail; a whole frame that does not decode is
    // skipped by readers, and cutting there would lose every frame after it.
    while let Ok(Some((_, used))) = split_frame(&data[at..]) {
        at += used;
    }
    Ok(at as u64)
}

/// Reads complete events from a log, remembering where it stopped so that it can be
/// called again as the log grows (tailing).
pub struct EventLogReader {
    path: PathBuf,
    offset: u64,
    skipped: u64,
}

impl EventLogReader {
    pub fn new(path: &Path, offset: u64) -> EventLogReader {
        EventLogReader { path: path.to_path_buf(), offset, skipped: 0 }
    }

    /// Runs skipped so far because they did not decode (whole frames holding garbage: a
    /// recorder's bug); what follows them is read as usual.
    pub fn skipped_runs(&self) -> u64 {
        self.skipped
    }

    /// The byte offset after the last complete frame read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads up to `max_bytes` more bytes and returns the complete events in them, each
    /// with the offset just past its run (resuming there reads what follows the run whole,
    /// so callers keep the events of one run together). An incomplete tail is left for the
    /// next call.
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
        let mut events = Vec::new();
        loop {
            match split_frame(&data[at..]) {
                Ok(Some((body, used))) => {
                    if expand_run(body, &mut events).is_err() {
                        events.clear();
                        self.skipped += 1;
                    }
                    at += used;
                    out.extend(events.drain(..).map(|e| (self.offset + at as u64, e)));
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
    use crate::event_run::encode_single_run_frame as encode_frame;
    use rayr_proto::EventKind;

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
        drop(w);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&torn[..torn.len() / 2]).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 2);

        let mut w = EventLogWriter::open(&path).unwrap();
        let mut more = Vec::new();
        encode_frame(&event(4), &mut more);
        w.append(&more).unwrap();
        let got: Vec<i64> = read_events(&path).unwrap().iter().map(|e| e.time_us).collect();
        assert_eq!(got, vec![1, 2, 4]);
    }

    #[test]
    fn garbage_is_refused_by_writers_and_skipped_by_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events-z.log");
        let mut w = EventLogWriter::open(&path).unwrap();
        let mut one = Vec::new();
        encode_frame(&event(1), &mut one);
        let err = w.append(&one[..one.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A whole frame whose body is not a run: skipped, and the next one still read.
        w.append(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
        w.append(&one).unwrap();
        let mut r = EventLogReader::new(&path, 0);
        let got = r.read_more(1 << 20).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.time_us, 1);
        assert_eq!(r.skipped_runs(), 1);
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
