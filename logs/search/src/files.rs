//! Which log files of a session directory are one node's, and which parts of them a
//! search covers: the node's own logs, and its workers' stdout and stderr with their
//! rotated generations (`<file>.<n>`), cut by time with each worker's index (`<stem>.idx`)
//! or to the byte ranges one task wrote. A node agent plans its searches with this; so
//! does the CLI for the files of nodes that are not running (their session is on its host).

use std::path::{Path, PathBuf};

use rayr_logs::{Id, Session, hex};

/// One node's log files in a session's logs directory. Several nodes of a host may share
/// the directory: each names only its own files.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub session: Session,
    /// The node's own logs (its agent's, the head's).
    pub own_logs: Vec<PathBuf>,
    /// The workers it started, with their pids (their files' names have both).
    pub workers: Vec<(Id, u32)>,
}

/// A log file of a node, described.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub path: PathBuf,
    pub size: u64,
    /// The worker that wrote it and its pid, if a worker's.
    pub worker: Option<(Id, u32)>,
    pub modified_us: i64,
}

/// A byte range of one stream of a worker's output, in one generation of its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// "out" or "err".
    pub stream: String,
    pub generation: u32,
    pub start: u64,
    /// `u64::MAX`: to the file's end.
    pub end: u64,
}

/// What one search reads: whole files, parts of files (`[start, end)`), and the parts
/// asked for that are gone (file, why).
#[derive(Debug, Default)]
pub struct Plan {
    pub files: Vec<PathBuf>,
    pub ranges: Vec<(PathBuf, u64, u64)>,
    pub gone: Vec<(String, String)>,
}

impl NodeFiles {
    /// The node's files that exist, oldest generation first: (path, the worker that wrote
    /// it and its pid, if a worker's). Only workers whose id starts with `worker_prefix`
    /// (and then not the node's own logs), when it is not empty.
    pub fn list(&self, worker_prefix: &str) -> Vec<(PathBuf, Option<(Id, u32)>)> {
        let mut files = Vec::new();
        if worker_prefix.is_empty() {
            files.extend(self.own_logs.iter().map(|p| (p.clone(), None)));
        }
        let names: Vec<String> = std::fs::read_dir(self.session.logs_dir())
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        let prefix = worker_prefix.to_ascii_lowercase();
        for &(w, pid) in &self.workers {
            let whex = hex(&w);
            if !whex.starts_with(&prefix) {
                continue;
            }
            for ext in ["out", "err"] {
                let current = self.session.worker_log(&whex, pid, ext);
                let base = current.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let mut rotated: Vec<u32> = names.iter().filter_map(|n| n.strip_prefix(&format!("{base}."))?.parse().ok()).collect();
                rotated.sort();
                for g in rotated {
                    files.push((PathBuf::from(format!("{}.{g}", current.display())), Some((w, pid))));
                }
                files.push((current, Some((w, pid))));
            }
        }
        files.retain(|(p, _)| p.exists());
        files
    }

    /// The node's files with their size and time of last write (unix µs).
    pub fn described(&self) -> Vec<FileInfo> {
        self.list("")
            .into_iter()
            .map(|(path, worker)| {
                let meta = std::fs::metadata(&path).ok();
                let modified_us = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_micros() as i64);
                FileInfo { size: meta.map_or(0, |m| m.len()), path, worker, modified_us }
            })
            .collect()
    }

    /// Up to `max` bytes (at most 4 MiB) of the node's file named `name` (never a path:
    /// the name may come from the network), from `offset`, or from `offset` bytes before
    /// its end: (the bytes, where they start, the file's size).
    pub fn read(&self, name: &str, offset: u64, from_end: bool, max: u32) -> std::io::Result<(Vec<u8>, u64, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.list("").into_iter().map(|(p, _)| p).find(|p| p.file_name().and_then(|n| n.to_str()) == Some(name));
        let path = path.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no log file named {name:?}: `rayr logs list` shows them")))?;
        let mut f = std::fs::File::open(&path)?;
        let size = f.metadata()?.len();
        let offset = if from_end { size.saturating_sub(offset) } else { offset.min(size) };
        f.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::new();
        f.take(max.clamp(1, 4 << 20) as u64).read_to_end(&mut data)?;
        Ok((data, offset, size))
    }

    /// Whether any of the node's files is in this directory (it ran on this host, with
    /// this session).
    pub fn here(&self) -> bool {
        !self.list("").is_empty()
    }

    /// What a search of this node's files reads: those of the workers `worker_prefix`
    /// names (all, when empty); only `parts` of them when given (one worker's: what a task
    /// wrote); else only what was written between `since` and `until` (unix µs, 0: open).
    pub fn plan(&self, worker_prefix: &str, parts: &[Part], since: i64, until: i64) -> Result<Plan, String> {
        let found = self.list(worker_prefix);
        let mut plan = Plan::default();
        if !parts.is_empty() {
            let mut workers: Vec<(Id, u32)> = found.iter().filter_map(|(_, w)| *w).collect();
            workers.dedup();
            let [(w, pid)] = workers[..] else {
                return Err(format!("searching parts of a worker's logs needs one worker: {worker_prefix:?} names {} of this node's", workers.len()));
            };
            for b in parts {
                if b.stream != "out" && b.stream != "err" {
                    return Err(format!("a range's stream is \"out\" or \"err\", not {:?}", b.stream));
                }
                // Generation g is `<file>.g` once rotated, the file itself while current,
                // and gone once older than the kept ones.
                let current = self.session.worker_log(&hex(&w), pid, &b.stream);
                let kept = rotated_generations(&current);
                let now = kept.last().map_or(0, |g| g + 1);
                if b.generation == now {
                    plan.ranges.push((current, b.start, b.end));
                } else if kept.contains(&b.generation) {
                    plan.ranges.push((PathBuf::from(format!("{}.{}", current.display(), b.generation)), b.start, b.end));
                } else {
                    plan.gone.push((format!("{}.{}", current.display(), b.generation), "rotated out: older than the generations kept (--log-rotate-keep)".to_string()));
                }
            }
            return Ok(plan);
        }
        let windowed = since > 0 || until > 0;
        for (path, w) in found {
            match w {
                // A worker's file: the part written in the window, by its index.
                Some(_) if windowed => {
                    if let Some((start, end)) = window(&path, since, until)
                        && start < end
                    {
                        plan.ranges.push((path, start, end));
                    }
                }
                // The node's own log: whole, if it was written to in the window.
                None if windowed => {
                    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                    if modified.is_some_and(|m| since == 0 || m.as_micros() as i64 >= since) {
                        plan.files.push(path);
                    }
                }
                _ => plan.files.push(path),
            }
        }
        Ok(plan)
    }
}

/// The part of a worker's log file (`worker-…-<pid>.out`, `.err`, or a rotated `….<g>`)
/// written between `since` and `until` (unix µs, 0: open), by the index the worker keeps
/// (`….idx`: every second, where its files stood), to within a second and erring wide.
pub fn window(path: &std::path::Path, since: i64, until: i64) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let meta = std::fs::metadata(path).ok()?;
    let size = meta.len();
    // Which stream and generation the file is.
    let (base, generation) = match name.rsplit_once('.') {
        Some((b, g)) if g.bytes().all(|c| c.is_ascii_digit()) => (b.to_string(), g.parse::<u32>().ok()),
        _ => (name.to_string(), None),
    };
    let (stem, stream) = base.rsplit_once('.')?;
    let stream = match stream {
        "out" => 0,
        "err" => 1,
        _ => return Some((0, size)),
    };
    let index = std::fs::read(path.with_file_name(format!("{stem}.idx"))).unwrap_or_default();
    let mut records: Vec<(i64, u32, u64)> = index
        .chunks_exact(32)
        .map(|r| {
            let t = i64::from_le_bytes(r[0..8].try_into().unwrap());
            let at = 8 + stream * 12;
            (t, u32::from_le_bytes(r[at..at + 4].try_into().unwrap()), u64::from_le_bytes(r[at + 4..at + 12].try_into().unwrap()))
        })
        .collect();
    // The current file's generation: one past the newest rotated one on disk.
    let generation = match generation {
        Some(g) => g,
        None => rotated_generations(path).last().map_or(0, |g| g + 1),
    };
    // The file's last write is a record too: the index is a second behind at most, and
    // none is written after a worker's last second (it exited, or went quiet).
    if let Ok(modified) = meta.modified()
        && let Ok(t) = modified.duration_since(std::time::UNIX_EPOCH)
    {
        records.push((t.as_micros() as i64, generation, size));
    }
    // Each record says: bytes before its offset were written before its time (the worker
    // reads the offset, then the clock). A record may say less than an earlier one knew
    // (its thread paused between the two), so the furthest point known by a time is the
    // largest (generation, offset) among the records up to it. Where that point falls in
    // this file: nowhere yet (an older generation), its end (a newer one), or the offset.
    let known_by = |t: i64| records.iter().filter(|r| r.0 <= t).map(|r| (r.1, r.2)).max();
    let place = |at: Option<(u32, u64)>| match at {
        Some((g, off)) if g == generation => off,
        Some((g, _)) if g > generation => size,
        _ => 0,
    };
    // Since: after what was known written by then.
    let start = if since > 0 { place(known_by(since)) } else { 0 };
    // Until: what was known written by a second past it (records are a second apart at
    // most when a file grows), erring wide by that second.
    const SLACK_US: i64 = 1_100_000;
    let end = if until > 0 { place(known_by(until + SLACK_US)) } else { size };
    Some((start.min(size), end.min(size)))
}

/// The generations of `path` (a current worker log file) rotated and still on disk,
/// oldest first.
pub fn rotated_generations(path: &Path) -> Vec<u32> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let mut g: Vec<u32> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix(&format!("{base}."))?.parse().ok()).collect())
        .unwrap_or_default();
    g.sort();
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session with one worker whose stdout has `text`, and an index of `records`
    /// (time µs, stdout offset).
    fn worker(text: &str, records: &[(i64, u64)]) -> (tempfile::TempDir, NodeFiles) {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::open(dir.path());
        std::fs::create_dir_all(session.logs_dir()).unwrap();
        let w: Id = [7; 16];
        std::fs::write(session.worker_log(&hex(&w), 42, "out"), text).unwrap();
        std::fs::write(session.worker_log(&hex(&w), 42, "err"), "").unwrap();
        let mut idx = Vec::new();
        for &(t, off) in records {
            idx.extend_from_slice(&t.to_le_bytes());
            idx.extend_from_slice(&0u32.to_le_bytes());
            idx.extend_from_slice(&off.to_le_bytes());
            idx.extend_from_slice(&0u32.to_le_bytes());
            idx.extend_from_slice(&0u64.to_le_bytes());
        }
        std::fs::write(session.logs_dir().join(format!("worker-{}-42.idx", hex(&w))), idx).unwrap();
        (dir, NodeFiles { session, own_logs: Vec::new(), workers: vec![(w, 42)] })
    }

    fn now_us() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
    }

    #[test]
    fn the_files_last_write_places_lines_the_index_never_noted() {
        // The worker noted only its start (offset 0), wrote, and exited within the second.
        let start = now_us() - 10_000_000;
        let (_dir, files) = worker("written after the only record\n", &[(start, 0)]);
        let out = files.list("").into_iter().find(|(p, _)| p.extension().is_some_and(|x| x == "out")).unwrap().0;
        let size = std::fs::metadata(&out).unwrap().len();
        // Until now: all of it (not cut at the start record).
        assert_eq!(window(&out, 0, now_us()), Some((0, size)));
        // Since after its last write: none of it.
        assert_eq!(window(&out, now_us() + 2_000_000, 0).map(|(s, e)| e - s), Some(0));
        // Until before the worker started: none of it.
        assert_eq!(window(&out, 0, start - 5_000_000), Some((0, 0)));
    }

    #[test]
    fn a_record_that_says_less_than_an_earlier_one_knew_does_not_widen_the_window() {
        // The worker read offset 0, paused, and only then read the clock: its record comes
        // after the line's write, yet says 0. The file's last write knows better.
        let t = now_us() - 10_000_000;
        let (_dir, files) = worker("written before the record's clock\n", &[(t - 5_000_000, 0)]);
        let out = files.list("").into_iter().find(|(p, _)| p.extension().is_some_and(|x| x == "out")).unwrap().0;
        let size = std::fs::metadata(&out).unwrap().len();
        let mtime = std::fs::metadata(&out).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        // A late record (after the write) that says offset 0.
        let idx = out.with_extension("idx");
        let mut b = std::fs::read(&idx).unwrap();
        b.extend_from_slice(&(mtime + 5_000).to_le_bytes());
        b.extend_from_slice(&[0u8; 24]);
        std::fs::write(&idx, b).unwrap();
        assert_eq!(window(&out, mtime + 10_000, 0).map(|(s, e)| e - s), Some(0), "since after the write: nothing ({size} bytes)");
    }

    #[test]
    fn parts_of_a_rotated_out_generation_are_said_gone_not_read_from_another() {
        let (_dir, files) = worker("current\n", &[]);
        let w = hex(&files.workers[0].0);
        // Generations 1 and 2 kept, 0 deleted: the current file is generation 3.
        for g in [1, 2] {
            std::fs::write(format!("{}.{g}", files.session.worker_log(&w, 42, "out").display()), format!("gen {g}\n")).unwrap();
        }
        let part = |generation| Part { stream: "out".into(), generation, start: 0, end: u64::MAX };
        let plan = files.plan(&w, &[part(0), part(2), part(3)], 0, 0).unwrap();
        assert_eq!(plan.gone.len(), 1);
        assert!(plan.gone[0].0.ends_with(".out.0") && plan.gone[0].1.contains("rotated out"), "{:?}", plan.gone);
        let read: Vec<String> = plan.ranges.iter().map(|(p, ..)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert!(read[0].ends_with(".out.2") && read[1].ends_with(".out"), "{read:?}");
        // A part of the wrong stream is refused.
        let bad = Part { stream: "log".into(), ..part(3) };
        assert!(files.plan(&w, &[bad], 0, 0).unwrap_err().contains("\"out\" or \"err\""));
        // Only this node's workers' files; none without workers.
        let other = NodeFiles { workers: Vec::new(), ..files.clone() };
        assert!(!other.here());
        assert!(files.here());
    }
}
