//! The node's log files, searched where they are (`rayr logs search`, `rayr logs list`):
//! the stdout and stderr of every worker this agent started, and its own log. Several
//! agents of one host may share a session directory: each answers for its own files only,
//! so a search across the cluster reports every line once, under the node that wrote it.
//!
//! Served over gRPC (`NodeLogs`) beside the object transfer service; a search runs on the
//! blocking pool and streams each hit as it is found.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use rayr_logs::{Id, hex};
use rayr_proto::node_logs_server::NodeLogs;
use rayr_proto::{LogFile, LogLine, LogListReply, LogListRequest, LogReadReply, LogReadRequest, LogSearchRequest};
use tonic::{Request, Response, Status};

use super::Agent;

impl Agent {
    /// This node's log files: (path, the worker that wrote it and its pid, if a worker's).
    fn log_files(&self, worker_prefix: &str) -> Vec<(PathBuf, Option<(Id, u32)>)> {
        let workers = self.state.lock().worker_logs.clone();
        let mut files = Vec::new();
        if worker_prefix.is_empty() {
            files.extend(self.cfg.own_logs.iter().map(|p| (p.clone(), None)));
        }
        // Rotated generations (`<file>.<n>`) are searched too, oldest first.
        let names: Vec<String> = std::fs::read_dir(self.cfg.session.logs_dir())
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        for (w, pid) in workers {
            let whex = hex(&w);
            if !whex.starts_with(&worker_prefix.to_ascii_lowercase()) {
                continue;
            }
            for ext in ["out", "err"] {
                let current = self.cfg.session.worker_log(&whex, pid, ext);
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
}

/// The part of a worker's log file (`worker-…-<pid>.out`, `.err`, or a rotated `….<g>`)
/// written between `since` and `until` (unix µs, 0: open), by the index the worker keeps
/// (`….idx`: every second, where its files stood), to within a second and erring wide.
fn window(path: &std::path::Path, since: i64, until: i64) -> Option<(u64, u64)> {
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
        records.sort_by_key(|r| r.0);
    }
    // Records are written only when a file grew, a second apart at most: bytes before a
    // record's offset were written before its time.
    const SLACK_US: i64 = 1_100_000;
    let start = match records.iter().rev().find(|r| since > 0 && r.0 <= since) {
        Some(&(_, g, off)) if g == generation => off,
        Some(&(_, g, _)) if g > generation => size,
        _ => 0,
    };
    // The last record no later than a second past `until`: what it covers was written by
    // then, give or take that second.
    let end = if until <= 0 {
        size
    } else {
        match records.iter().rev().find(|r| r.0 <= until + SLACK_US) {
            Some(&(_, g, off)) if g == generation => off,
            Some(&(_, g, _)) if g > generation => size,
            Some(_) => 0,
            None => 0,
        }
    };
    Some((start.min(size), end.min(size)))
}

/// The generations of `path` (a current worker log file) rotated and still on disk,
/// oldest first.
fn rotated_generations(path: &std::path::Path) -> Vec<u32> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let mut g: Vec<u32> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix(&format!("{base}."))?.parse().ok()).collect())
        .unwrap_or_default();
    g.sort();
    g
}

/// The gRPC face of the node's logs.
pub(super) struct Service(pub(super) Weak<Agent>);

type LineStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<LogLine, Status>> + Send>>;

#[tonic::async_trait]
impl NodeLogs for Service {
    type SearchStream = LineStream;

    async fn search(&self, request: Request<LogSearchRequest>) -> Result<Response<LineStream>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        let query = rayr_logsearch::Query {
            pattern: r.pattern,
            ignore_case: r.ignore_case,
            context: r.context.min(1000) as usize,
            max_count: r.max_count,
            glob: Some(r.glob).filter(|g| !g.is_empty()),
        };
        let matcher = query.compile().map_err(Status::invalid_argument)?;
        if !r.worker.is_empty() && !r.worker.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!("--worker {:?} is not a worker id (hex digits)", r.worker)));
        }
        query.check_glob().map_err(Status::invalid_argument)?;
        // Listing files and reading their indexes touch the disk: not on the async threads.
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let found = agent.log_files(&r.worker);
            let mut ranged = Vec::new();
            let mut gone: Vec<(String, String)> = Vec::new();
            if !r.ranges.is_empty() {
                let mut workers: Vec<(Id, u32)> = found.iter().filter_map(|(_, w)| *w).collect();
                workers.dedup();
                let [(w, pid)] = workers[..] else {
                    return Err(Status::invalid_argument(format!(
                        "searching parts of a worker's logs needs one worker: {:?} names {} of this node's",
                        r.worker,
                        workers.len()
                    )));
                };
                for b in &r.ranges {
                    if b.stream != "out" && b.stream != "err" {
                        return Err(Status::invalid_argument(format!("a range's stream is \"out\" or \"err\", not {:?}", b.stream)));
                    }
                    // Generation g is `<file>.g` once rotated, the file itself while current, and
                    // gone once older than the kept ones.
                    let current = agent.cfg.session.worker_log(&hex(&w), pid, &b.stream);
                    let kept = rotated_generations(&current);
                    let now = kept.last().map_or(0, |g| g + 1);
                    if b.generation == now {
                        ranged.push((current, b.start, b.end));
                    } else if kept.contains(&b.generation) {
                        ranged.push((PathBuf::from(format!("{}.{}", current.display(), b.generation)), b.start, b.end));
                    } else {
                        gone.push((format!("{}.{}", current.display(), b.generation), "rotated out: older than the generations kept (--log-rotate-keep)".to_string()));
                    }
                }
            }
            let (since, until) = (r.since_us, r.until_us);
            let windowed = r.ranges.is_empty() && (since > 0 || until > 0);
            let mut files: Vec<PathBuf> = Vec::new();
            // With ranges asked for (a task's lines), only those.
            let found = if r.ranges.is_empty() { found } else { Vec::new() };
            for (path, w) in found {
                match w {
                    // A worker's file: the part written in the window, by its index.
                    Some(_) if windowed => {
                        if let Some((start, end)) = window(&path, since, until)
                            && start < end
                        {
                            ranged.push((path, start, end));
                        }
                    }
                    // The agent's own log: whole, if it was written to in the window.
                    None if windowed => {
                        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                        if modified.is_some_and(|m| since == 0 || m.as_micros() as i64 >= since) {
                            files.push(path);
                        }
                    }
                    _ => files.push(path),
                }
            }
            Ok((files, ranged, gone))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let (files, ranged, gone) = prepared;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let send = |hit: rayr_logsearch::Hit| {
                // A line is sent whole up to 64 KiB: a single huge line must not break the
                // stream's message limit.
                let mut text = hit.text;
                if text.len() > 64 << 10 {
                    let mut cut = 64 << 10;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    let more = text.len() - cut;
                    text.truncate(cut);
                    text.push_str(&format!(" … ({more} more bytes)"));
                }
                let line = LogLine { file: hit.file.display().to_string(), line: hit.line, text, is_match: hit.is_match, skipped: String::new() };
                // The reader went away: stop searching.
                tx.blocking_send(Ok(line)).is_ok()
            };
            let mut send = send;
            let mut skipped = rayr_logsearch::search(&matcher, &query, &files, &mut send);
            if !ranged.is_empty() {
                skipped.extend(rayr_logsearch::search_ranges(&matcher, &query, &ranged, &mut send));
            }
            for (file, why) in skipped.into_iter().map(|(f, w)| (f.display().to_string(), w)).chain(gone) {
                let _ = tx.blocking_send(Ok(LogLine { file, skipped: why, ..Default::default() }));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn read(&self, request: Request<LogReadRequest>) -> Result<Response<LogReadReply>, Status> {
        use std::io::{Read, Seek, SeekFrom};
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        let name = r.name.clone();
        // (Listing touches the disk: not on the async threads.)
        let found = tokio::task::spawn_blocking(move || {
            // Only this node's own log files, by name: never a path the caller makes up.
            let path = agent.log_files("").into_iter().map(|(p, _)| p).find(|p| p.file_name().and_then(|n| n.to_str()) == Some(name.as_str()));
            path.ok_or_else(|| Status::not_found(format!("node {} has no log file named {name:?}: `rayr logs list` shows them", hex(&agent.cfg.node_id))))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let path = found?;
        let max = r.max_bytes.clamp(1, 4 << 20) as u64;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<LogReadReply> {
            let mut f = std::fs::File::open(&path)?;
            let size = f.metadata()?.len();
            let offset = if r.from_end { size.saturating_sub(r.offset) } else { r.offset.min(size) };
            f.seek(SeekFrom::Start(offset))?;
            let mut data = Vec::new();
            f.take(max).read_to_end(&mut data)?;
            Ok(LogReadReply { data, offset, size })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        read.map(Response::new).map_err(|e| Status::unavailable(format!("cannot read {:?}: {e}", r.name)))
    }

    async fn list(&self, _: Request<LogListRequest>) -> Result<Response<LogListReply>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let files = tokio::task::spawn_blocking(move || list_files(&agent)).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(LogListReply { files }))
    }
}

fn list_files(agent: &Agent) -> Vec<LogFile> {
    {
        agent
            .log_files("")
            .into_iter()
            .map(|(p, w)| {
                let meta = std::fs::metadata(&p).ok();
                let modified_us = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_micros() as i64);
                LogFile {
                    path: p.display().to_string(),
                    size: meta.map_or(0, |m| m.len()),
                    worker_id: w.map(|(w, _)| w.to_vec()).unwrap_or_default(),
                    pid: w.map_or(0, |(_, pid)| pid),
                    modified_us,
                }
            })
            .collect()
    }
}

pub(super) fn service(agent: &Arc<Agent>) -> rayr_proto::node_logs_server::NodeLogsServer<Service> {
    rayr_proto::node_logs_server::NodeLogsServer::new(Service(Arc::downgrade(agent)))
}
