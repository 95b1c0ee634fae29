//! The node's log files, searched where they are (`rayr logs search`, `rayr logs list`):
//! the stdout and stderr of every worker this agent started, and its own log. Several
//! agents of one host may share a session directory: each answers for its own files only,
//! so a search across the cluster reports every line once, under the node that wrote it.
//!
//! Served over gRPC (`NodeLogs`) beside the object transfer service; a search runs on the
//! blocking pool and streams each hit as it is found.

use std::sync::{Arc, Weak};

use rayr_proto::node_logs_server::NodeLogs;
use rayr_proto::{LogFile, LogLine, LogListReply, LogListRequest, LogReadReply, LogReadRequest, LogSearchRequest};
use tonic::{Request, Response, Status};

use super::Agent;

impl Agent {
    /// This node's log files in its session directory.
    fn node_files(&self) -> rayr_logsearch::files::NodeFiles {
        rayr_logsearch::files::NodeFiles {
            session: self.cfg.session.clone(),
            own_logs: self.cfg.own_logs.clone(),
            workers: self.state.lock().pool.worker_logs.clone(),
        }
    }
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
        let prepared = tokio::task::spawn_blocking(move || {
            let parts: Vec<rayr_logsearch::files::Part> = r
                .ranges
                .iter()
                .map(|b| rayr_logsearch::files::Part { stream: b.stream.clone(), generation: b.generation, start: b.start, end: b.end })
                .collect();
            agent.node_files().plan(&r.worker, &parts, r.since_us, r.until_us).map_err(Status::invalid_argument)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let rayr_logsearch::files::Plan { files, ranges: ranged, gone } = prepared;
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
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        // Only this node's own log files, by name: never a path the caller makes up.
        let read = tokio::task::spawn_blocking(move || agent.node_files().read(&r.name, r.offset, r.from_end, r.max_bytes))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match read {
            Ok((data, offset, size)) => Ok(Response::new(LogReadReply { data, offset, size })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Status::not_found(e.to_string())),
            Err(e) => Err(Status::unavailable(format!("cannot read it: {e}"))),
        }
    }

    async fn list(&self, _: Request<LogListRequest>) -> Result<Response<LogListReply>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let files = tokio::task::spawn_blocking(move || list_files(&agent)).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(LogListReply { files }))
    }
}

fn list_files(agent: &Agent) -> Vec<LogFile> {
    agent.node_files().described().into_iter().map(log_file).collect()
}

/// A log file as `NodeLogs.List` describes it (the CLI describes the files of nodes that
/// are not running the same way).
pub fn log_file(f: rayr_logsearch::files::FileInfo) -> LogFile {
    LogFile {
        path: f.path.display().to_string(),
        size: f.size,
        worker_id: f.worker.map(|(w, _)| w.to_vec()).unwrap_or_default(),
        pid: f.worker.map_or(0, |(_, pid)| pid),
        modified_us: f.modified_us,
    }
}

pub(super) fn service(agent: &Arc<Agent>) -> rayr_proto::node_logs_server::NodeLogsServer<Service> {
    rayr_proto::node_logs_server::NodeLogsServer::new(Service(Arc::downgrade(agent)))
}
