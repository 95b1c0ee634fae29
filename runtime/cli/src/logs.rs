//! `rayr logs`: the cluster's log files, searched and listed where they are.
//!
//! A search fans out to every live node agent (`NodeLogs.Search`), which searches its own
//! files with ripgrep's searcher and streams hits back; they are printed as they come,
//! each under its node. The files of a node that is not running (dead, or the whole
//! cluster stopped) are read here when its session is on this host, with the same planning
//! (`rayr_logsearch::files`). A node that cannot be searched (unreachable, its files on
//! another host) is named at the end with why, and the command then fails: partial results
//! are never shown as whole.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use rayr_head::short_id;
use rayr_logs::{Id, Session, hex, parse_hex};
use rayr_logsearch::files::{NodeFiles, Part};
use rayr_proto::node_logs_client::NodeLogsClient;
use rayr_proto::{LogFile, LogLine, LogListRequest, LogReadReply, LogSearchRequest, NodeRow, WorkerRow};

use crate::connect::{Cluster, EventFilter, connect};

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: LogsCommand,
}

#[derive(clap::Subcommand)]
pub enum LogsCommand {
    /// Search every node's log files for a regular expression (ripgrep's syntax).
    Search(SearchArgs),
    /// The last lines of a worker's stdout and stderr (a worker id, a task id: the worker
    /// of its latest attempt, or a log file's name as `rayr logs list` shows it).
    Tail(TailArgs),
    /// `tail`, then every line written after, as it comes (Ctrl-C to stop).
    Follow(TailArgs),
    /// The log files of every node: path, size, the worker that wrote it.
    List {
        /// Only this node (an id or a unique prefix of one).
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct SearchArgs {
    /// The regular expression.
    pub pattern: String,
    /// Lines shown before and after each match.
    #[arg(long, short = 'C', default_value_t = 0)]
    pub context: u32,
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    /// Matches per file at most.
    #[arg(long, short = 'm')]
    pub max_count: Option<u64>,
    /// Only files whose name matches this pattern (`*`, `?`), e.g. '*.err'.
    #[arg(long)]
    pub glob: Option<String>,
    /// Only this node (an id or a unique prefix of one).
    #[arg(long)]
    pub node: Option<String>,
    /// Only this worker's files (an id or a prefix of one).
    #[arg(long)]
    pub worker: Option<String>,
    /// Only the lines a task wrote (every attempt, on whichever node ran it): an id, a
    /// unique prefix, or the short form tables print.
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only the files of the worker(s) that hosted an actor (every life of it).
    #[arg(long, value_name = "ID", conflicts_with = "task")]
    pub actor: Option<String>,
    /// Only lines written since T (to within a second): an RFC 3339 time, a local date and
    /// time (2026-11-25 20:01), or a time ago (90s, 10m, 2h).
    #[arg(long, value_name = "T", value_parser = crate::query::parse_since)]
    pub since: Option<i64>,
    /// Only lines written until T (same forms).
    #[arg(long, value_name = "T", value_parser = crate::query::parse_since)]
    pub until: Option<i64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// A worker id, a task id (unique prefixes do), or a log file's name.
    pub target: String,
    /// How many lines of each file.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub lines: usize,
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    match args.command {
        LogsCommand::Search(a) => search(a).await,
        LogsCommand::Tail(a) => tail(a, false).await,
        LogsCommand::Follow(a) => tail(a, true).await,
        LogsCommand::List { node, json, address } => list(node, json, address).await,
    }
}

/// Where a node's files are read: its agent, or this host's copy of its session.
#[derive(Clone)]
enum Source {
    Agent(String),
    Here(NodeFiles),
}

impl Source {
    async fn list(&self) -> Result<Vec<LogFile>, String> {
        match self {
            Source::Agent(address) => {
                let mut c = logs_client(address).await.map_err(|e| format!("cannot reach it at {address}: {e}"))?;
                c.list(LogListRequest {}).await.map(|r| r.into_inner().files).map_err(|s| s.message().to_string())
            }
            Source::Here(files) => {
                let files = files.clone();
                tokio::task::spawn_blocking(move || local_list(&files)).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn read(&self, name: &str, offset: u64, from_end: bool, max: u32) -> Result<LogReadReply, String> {
        match self {
            Source::Agent(address) => {
                let mut c = logs_client(address).await.map_err(|e| format!("cannot reach it at {address}: {e}"))?;
                let req = rayr_proto::LogReadRequest { name: name.to_string(), offset, from_end, max_bytes: max };
                c.read(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
            }
            Source::Here(files) => {
                let (files, name) = (files.clone(), name.to_string());
                tokio::task::spawn_blocking(move || local_read(&files, &name, offset, from_end, max)).await.map_err(|e| e.to_string())?
            }
        }
    }
}

fn local_list(files: &NodeFiles) -> Vec<LogFile> {
    files.described().into_iter().map(rayr_node::log_file).collect()
}

fn local_read(files: &NodeFiles, name: &str, offset: u64, from_end: bool, max: u32) -> Result<LogReadReply, String> {
    files.read(name, offset, from_end, max).map(|(data, offset, size)| LogReadReply { data, offset, size }).map_err(|e| format!("{name}: {e}"))
}

/// A node's label (see [`Node::label`]) as lines of output show it: a short id.
/// Errors and warnings name nodes and workers in full, so that they can be pasted.
fn short_label(label: &str) -> String {
    parse_hex(label).map_or_else(|| label.to_string(), |id| short_id(&id))
}

/// A node of the cluster, and where its files can be read (or why they cannot).
struct Node {
    row: NodeRow,
    source: Result<Source, String>,
}

impl Node {
    /// The node's id in full (as lines are labelled; text output shows its short form).
    fn label(&self) -> String {
        if self.row.node_id.is_empty() { "this-host".into() } else { hex(&self.row.node_id) }
    }
    fn short(&self) -> String {
        short_label(&self.label())
    }
}

/// The cluster's nodes as `rayr logs` sees them.
struct Logs {
    cluster: Cluster,
    nodes: Vec<Node>,
    running: bool,
    workers: Vec<WorkerRow>,
}

/// Finds the cluster (running or its record) and where each node's files are read;
/// `only`: just the node that id prefix names.
async fn open(address: Option<String>, only: Option<&str>) -> anyhow::Result<Logs> {
    let mut cluster = connect(address).await?;
    let (rows, session, running) = match &mut cluster {
        Cluster::Live(client) => {
            let info = client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await.map_err(|s| anyhow!("{}", s.message()))?.into_inner();
            (info.nodes, Some(Session::open(&info.session_dir)), true)
        }
        Cluster::Offline(index) => (index.nodes()?, index.session().cloned(), false),
    };
    let workers = cluster.list_all("workers", Vec::new()).await?.workers;
    // Where node files may be on this host: the cluster's session, and this host's latest
    // one (a node that joined from here keeps its own when the head is elsewhere).
    let mut sessions: Vec<Session> = session.into_iter().chain(Session::latest(&rayr_logs::tmpdir())).filter(|s| s.logs_dir().is_dir()).collect();
    sessions.dedup_by(|a, b| std::fs::canonicalize(&a.dir).ok() == std::fs::canonicalize(&b.dir).ok());
    let own_log = |s: &Session, r: &NodeRow| {
        let h = hex(&r.node_id);
        s.logs_dir().join(format!("node-{}.log", &h[..16.min(h.len())]))
    };
    // Without a live head to say which node is its own, the head's log goes with the
    // first node started that has no log of its own (a joined node has node-<id>.log).
    let head_guess = sessions.first().and_then(|s| rows.iter().filter(|r| !own_log(s, r).exists()).min_by_key(|r| r.started_us).map(|r| r.node_id.clone()));
    let files_of = |row: &NodeRow| -> Option<NodeFiles> {
        sessions.iter().enumerate().find_map(|(i, s)| {
            let mut own_logs = vec![own_log(s, row)];
            if i == 0 && (row.is_head || (!running && head_guess.as_ref() == Some(&row.node_id))) {
                own_logs.push(s.logs_dir().join("head.log"));
            }
            let mine = workers.iter().filter(|w| w.node_id == row.node_id && !w.is_driver);
            let workers: Vec<(Id, u32)> = mine.filter_map(|w| Some((<Id>::try_from(w.worker_id.as_slice()).ok()?, w.pid))).collect();
            let files = NodeFiles { session: s.clone(), own_logs, workers };
            files.here().then_some(files)
        })
    };
    // With the cluster stopped, files no node of the record claims (a worker whose start
    // was never recorded, say) are still searched, as this host's.
    let mut unclaimed = Vec::new();
    if !running && only.is_none() {
        let claimed: std::collections::HashSet<std::path::PathBuf> = rows.iter().filter_map(files_of).flat_map(|f| f.list("").into_iter().map(|(p, _)| p)).collect();
        for s in &sessions {
            let mut left: Vec<std::path::PathBuf> = std::fs::read_dir(s.logs_dir())
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            left.retain(|p| p.is_file() && !p.extension().is_some_and(|x| x == "idx" || x == "new") && !claimed.contains(p));
            left.sort();
            if !left.is_empty() {
                unclaimed.push(NodeFiles { session: s.clone(), own_logs: left, workers: Vec::new() });
            }
        }
    }
    let rows: Vec<NodeRow> = match only {
        None => rows,
        Some(p) => {
            let p = p.trim().to_ascii_lowercase();
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--node {p:?} is not a node id (hex digits): `rayr status` lists them");
            }
            let chosen: Vec<NodeRow> = rows.into_iter().filter(|r| hex(&r.node_id).starts_with(&p)).collect();
            match chosen.len() {
                0 => bail!("no node's id starts with {p:?}: `rayr status` lists them"),
                1 => chosen,
                n => bail!("{n} nodes' ids start with {p:?}: give more of the id"),
            }
        }
    };
    let mut nodes = Vec::new();
    for row in rows {
        let source = if running && row.state == "ALIVE" && !row.grpc_address.is_empty() {
            Ok(Source::Agent(row.grpc_address.clone()))
        } else {
            match files_of(&row) {
                Some(files) => Ok(Source::Here(files)),
                None if row.state == "DEAD" => Err(format!("the node is dead ({}): its files are on its host, not this one", row.reason)),
                None if !running => Err("the cluster is not running and the node's files are on its host, not this one".into()),
                None => Err("the node serves no log search (an embedded node whose session is on another host)".into()),
            }
        };
        nodes.push(Node { row, source });
    }
    nodes.extend(unclaimed.into_iter().map(|files| Node { row: NodeRow::default(), source: Ok(Source::Here(files)) }));
    Ok(Logs { cluster, nodes, running, workers })
}

async fn logs_client(address: &str) -> anyhow::Result<NodeLogsClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.connect_timeout(Duration::from_secs(3));
    // Reads come in chunks up to 4 MiB, plus framing.
    Ok(NodeLogsClient::new(endpoint.connect().await?).max_decoding_message_size(16 << 20))
}

fn request(a: &SearchArgs) -> LogSearchRequest {
    LogSearchRequest {
        pattern: a.pattern.clone(),
        ignore_case: a.ignore_case,
        context: a.context,
        max_count: a.max_count.unwrap_or(0),
        glob: a.glob.clone().unwrap_or_default(),
        worker: a.worker.clone().unwrap_or_default(),
        ranges: Vec::new(),
        since_us: a.since.unwrap_or(0),
        until_us: a.until.unwrap_or(0),
    }
}

/// Where one attempt of a task wrote: its node, its worker, and the parts of the worker's
/// stdout and stderr; `shared` when the range also holds what other short tasks of that
/// worker wrote (only tasks of 20 µs or more, and failures, are measured on their own).
struct Attempt {
    attempt: u32,
    node: Vec<u8>,
    worker: Vec<u8>,
    pid: u32,
    ranges: Vec<rayr_proto::ByteRange>,
    shared: bool,
}

fn output_of(e: &rayr_proto::Event) -> Option<&rayr_proto::TaskDetail> {
    match &e.detail {
        Some(rayr_proto::event::Detail::Task(d)) if d.output_measured => Some(d),
        _ => None,
    }
}

/// The parts of the worker's files a task's output is in: from its start offset in the
/// generation it began in, through any generations the files rotated past while it ran, to
/// its end offset in the last.
fn ranges(d: &rayr_proto::TaskDetail) -> Vec<rayr_proto::ByteRange> {
    let mut parts = Vec::new();
    for (stream, start, end, generation, span) in
        [("out", d.out_start, d.out_end, d.out_gen, d.out_gen_span), ("err", d.err_start, d.err_end, d.err_gen, d.err_gen_span)]
    {
        let first = generation.saturating_sub(span);
        for g in first..=generation {
            parts.push(rayr_proto::ByteRange {
                stream: stream.into(),
                start: if g == first { start } else { 0 },
                end: if g == generation { end } else { u64::MAX },
                generation: g,
            });
        }
    }
    parts
}

/// The task `id` names: a task's id, or an object's (the task that made it).
async fn task_of(cluster: &mut Cluster, flag: &str, id: &str) -> anyhow::Result<Vec<u8>> {
    rayr_head::IdPattern::parse(id).map_err(|e| anyhow!("{flag} {id}: {e}"))?;
    let mut task = None;
    let filter = EventFilter { id: Some(id.to_string()), kind: 0, since_us: 0, follow: false };
    cluster
        .events(&filter, |e| {
            if task.is_none() && !e.task_id.is_empty() {
                task = Some(e.task_id.clone());
            }
            Ok(())
        })
        .await
        .map_err(|e| anyhow!("{flag} {id}: {e}"))?;
    task.ok_or_else(|| anyhow!("{flag} {id}: no task (or object a task made) has that id: `rayr list tasks` lists them"))
}

/// The attempts of `task` and where each wrote, from the event record.
async fn task_output(cluster: &mut Cluster, task: &[u8]) -> anyhow::Result<Vec<Attempt>> {
    use rayr_proto::EventKind as K;
    let mut events = Vec::new();
    let filter = EventFilter { id: Some(hex(task)), kind: 0, since_us: 0, follow: false };
    cluster
        .events(&filter, |e| {
            events.push(e.clone());
            Ok(())
        })
        .await?;
    let kind = |e: &rayr_proto::Event| K::try_from(e.kind).unwrap_or(K::Unspecified);
    let mut attempts = Vec::new();
    for started in events.iter().filter(|e| kind(e) == K::TaskStarted && e.task_id == task) {
        let (attempt, pid) = match &started.detail {
            Some(rayr_proto::event::Detail::Task(d)) => (d.attempt, if d.pid != 0 { d.pid } else { started.source_pid }),
            _ => (0, started.source_pid),
        };
        let ended = events.iter().find(|e| {
            (kind(e) == K::TaskFinished || kind(e) == K::TaskFailed)
                && e.task_id == task
                && e.worker_id == started.worker_id
                && matches!(&e.detail, Some(rayr_proto::event::Detail::Task(d)) if d.attempt == attempt)
        });
        // The worker's own measured tasks around this one bound what it wrote.
        let mut of_worker = Vec::new();
        let filter = EventFilter { id: Some(hex(&started.worker_id)), kind: 0, since_us: 0, follow: false };
        cluster
            .events(&filter, |e| {
                if (kind(e) == K::TaskFinished || kind(e) == K::TaskFailed) && output_of(e).is_some() {
                    of_worker.push(e.clone());
                }
                Ok(())
            })
            .await?;
        of_worker.sort_by_key(|e| e.time_us);
        let (ranges, shared) = match ended.and_then(|e| output_of(e).map(|d| (e, d))) {
            Some((_, d)) => (ranges(d), false),
            None => match ended.and_then(|e| of_worker.iter().find(|w| w.time_us >= e.time_us)).and_then(output_of) {
                Some(d) => (ranges(d), true),
                None => {
                    // Still running, or nothing measured after it: from the worker's last
                    // measured point before it to the end of its files.
                    let before = of_worker.iter().rev().find(|w| w.time_us <= started.time_us).and_then(output_of);
                    let (out, err) = before.map_or((0, 0), |d| (d.out_end, d.err_end));
                    let (og, eg) = before.map_or((0, 0), |d| (d.out_gen, d.err_gen));
                    let r = vec![
                        rayr_proto::ByteRange { stream: "out".into(), start: out, end: u64::MAX, generation: og },
                        rayr_proto::ByteRange { stream: "err".into(), start: err, end: u64::MAX, generation: eg },
                    ];
                    (r, ended.is_some())
                }
            },
        };
        attempts.push(Attempt { attempt, node: started.node_id.clone(), worker: started.worker_id.clone(), pid, ranges, shared });
    }
    if attempts.is_empty() {
        bail!("task {} has not started yet: it wrote nothing", hex(task));
    }
    Ok(attempts)
}

fn print(node: &str, l: &LogLine, json: bool) {
    if json {
        println!("{}", serde_json::json!({"node": node, "file": l.file, "line": l.line, "text": l.text, "match": l.is_match}));
    } else {
        let file = std::path::Path::new(&l.file).file_name().map_or(l.file.clone(), |n| n.to_string_lossy().into_owned());
        // grep's convention: ':' after a match's line number, '-' after a context line's.
        let sep = if l.is_match { ':' } else { '-' };
        println!("{}  {file}{sep}{}{sep} {}", short_label(node), l.line, l.text);
    }
}

/// Searches files of this host as a node agent would, sending lines to `tx`.
fn search_here(files: &NodeFiles, req: &LogSearchRequest, node: String, tx: tokio::sync::mpsc::Sender<(String, Result<LogLine, String>)>) {
    let query = rayr_logsearch::Query {
        pattern: req.pattern.clone(),
        ignore_case: req.ignore_case,
        context: req.context as usize,
        max_count: req.max_count,
        glob: Some(req.glob.clone()).filter(|g| !g.is_empty()),
    };
    let matcher = match query.compile() {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.blocking_send((node, Err(e)));
            return;
        }
    };
    let parts: Vec<Part> = req.ranges.iter().map(|b| Part { stream: b.stream.clone(), generation: b.generation, start: b.start, end: b.end }).collect();
    let plan = match files.plan(&req.worker, &parts, req.since_us, req.until_us) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.blocking_send((node, Err(e)));
            return;
        }
    };
    let mut send = |hit: rayr_logsearch::Hit| {
        let line = LogLine { file: hit.file.display().to_string(), line: hit.line, text: hit.text, is_match: hit.is_match, skipped: String::new() };
        tx.blocking_send((node.clone(), Ok(line))).is_ok()
    };
    let mut skipped = rayr_logsearch::search(&matcher, &query, &plan.files, &mut send);
    skipped.extend(rayr_logsearch::search_ranges(&matcher, &query, &plan.ranges, &mut send));
    for (file, why) in skipped.into_iter().map(|(f, w)| (f.display().to_string(), w)).chain(plan.gone) {
        let _ = tx.blocking_send((node.clone(), Ok(LogLine { file, skipped: why, ..Default::default() })));
    }
}

async fn search(a: SearchArgs) -> anyhow::Result<()> {
    if a.task.is_some() && (a.since.is_some() || a.until.is_some()) {
        bail!("--task already names the lines to search (what the task wrote): leave --since and --until out");
    }
    if a.task.is_some() && a.worker.is_some() {
        bail!("--task already names the worker (the one each attempt ran in): leave --worker out");
    }
    if a.max_count == Some(0) {
        bail!("--max-count 0 would show nothing: give at least 1 (or leave it out for every match)");
    }
    if let (Some(since), Some(until)) = (a.since, a.until)
        && since >= until
    {
        bail!("--since must be before --until (a time ago counts back from now: --since 20m --until 10m)");
    }
    let query = rayr_logsearch::Query { pattern: a.pattern.clone(), ignore_case: a.ignore_case, glob: a.glob.clone(), ..Default::default() };
    // A bad pattern is said once, here, not by every node.
    query.compile().map_err(|e| anyhow!("{e}"))?;
    query.check_glob().map_err(|e| anyhow!("--glob: {e}"))?;
    let mut logs = open(a.address.clone(), a.node.as_deref()).await?;
    if !logs.running {
        eprintln!("rayr: the cluster is not running: searching its nodes' files on this host");
    }
    if let Some(w) = &a.worker {
        let w = w.trim().to_ascii_lowercase();
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--worker {w:?} is not a worker id (hex digits): `rayr list workers` lists them");
        }
        // (A worker started a moment ago may not be in the record yet: a running cluster's
        // agents are asked all the same.)
        let named: Vec<&WorkerRow> = logs.workers.iter().filter(|r| hex(&r.worker_id).starts_with(&w)).collect();
        if named.is_empty() && !logs.running {
            bail!("no worker's id starts with {w:?}: `rayr list workers` lists them");
        }
        if !named.is_empty() && !named.iter().any(|r| logs.nodes.iter().any(|n| n.row.node_id == r.node_id)) {
            bail!("worker {w} ran on node {}, not on the node --node names", hex(&named[0].node_id));
        }
    }
    // What to ask of which node: everything (per the filters), or each attempt's lines.
    let mut asks: Vec<(String, Source, LogSearchRequest)> = Vec::new();
    let mut failed: Vec<(NodeRow, String)> = Vec::new();
    let node_of = |logs: &Logs, id: &[u8]| logs.nodes.iter().position(|n| n.row.node_id == id);
    if let Some(task) = &a.task {
        let task = task_of(&mut logs.cluster, "--task", task).await?;
        let attempts = task_output(&mut logs.cluster, &task).await?;
        let ran_on: Vec<String> = attempts.iter().map(|at| hex(&at.node)).collect();
        let attempts: Vec<Attempt> = attempts.into_iter().filter(|at| a.node.is_none() || node_of(&logs, &at.node).is_some()).collect();
        if attempts.is_empty() {
            bail!("task {} ran on node {}, not on the node --node names", hex(&task), ran_on.join(", "));
        }
        for at in attempts {
            if at.shared {
                eprintln!(
                    "rayr: attempt {} ran under 20 µs: its lines are searched with those of the worker's other short tasks around it",
                    at.attempt
                );
            }
            let req = LogSearchRequest { worker: hex(&at.worker), ranges: at.ranges, ..request(&a) };
            match node_of(&logs, &at.node).map(|i| &logs.nodes[i]) {
                Some(n) => match &n.source {
                    Ok(Source::Here(files)) => {
                        // The worker's files, even if its row was not indexed yet.
                        let mut files = files.clone();
                        if let Ok(w) = <Id>::try_from(at.worker.as_slice())
                            && !files.workers.iter().any(|(x, _)| *x == w)
                        {
                            files.workers.push((w, at.pid));
                        }
                        asks.push((n.label(), Source::Here(files), req));
                    }
                    Ok(s) => asks.push((n.label(), s.clone(), req)),
                    Err(why) if !failed.iter().any(|(r, _)| r.node_id == n.row.node_id) => failed.push((n.row.clone(), why.clone())),
                    Err(_) => {}
                },
                None => failed.push((NodeRow { node_id: at.node.clone(), ..Default::default() }, "the node that ran it is not in the record".into())),
            }
        }
    } else if let Some(actor) = &a.actor {
        rayr_head::IdPattern::parse(actor).map_err(|e| anyhow!("--actor {actor}: {e}"))?;
        let filter = EventFilter { id: Some(actor.clone()), kind: rayr_proto::EventKind::ActorCreated as i32, since_us: 0, follow: false };
        let mut lives: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        logs.cluster
            .events(&filter, |e| {
                lives.push((e.node_id.clone(), e.worker_id.clone()));
                Ok(())
            })
            .await
            .map_err(|e| anyhow!("--actor {actor}: {e}"))?;
        if lives.is_empty() {
            bail!("no actor {actor} was ever created: `rayr list actors` lists them");
        }
        lives.dedup();
        let all_lives = lives.len();
        lives.retain(|(node, _)| a.node.is_none() || node_of(&logs, node).is_some());
        if lives.is_empty() {
            bail!("actor {actor} never ran on the node --node names (its {all_lives} worker(s) were elsewhere)");
        }
        for (node, worker) in lives {
            let req = LogSearchRequest { worker: hex(&worker), ..request(&a) };
            match node_of(&logs, &node).map(|i| &logs.nodes[i]) {
                Some(n) => match &n.source {
                    Ok(s) => asks.push((n.label(), s.clone(), req)),
                    Err(why) if !failed.iter().any(|(r, _)| r.node_id == n.row.node_id) => failed.push((n.row.clone(), why.clone())),
                    Err(_) => {}
                },
                None => failed.push((NodeRow { node_id: node.clone(), ..Default::default() }, "the node that hosted it is not in the record".into())),
            }
        }
    } else {
        for n in &logs.nodes {
            match &n.source {
                Ok(s) => asks.push((n.label(), s.clone(), request(&a))),
                Err(why) => failed.push((n.row.clone(), why.clone())),
            }
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<LogLine, String>)>(1024);
    for (node, source, req) in asks {
        let tx = tx.clone();
        match source {
            Source::Agent(address) => {
                tokio::spawn(async move {
                    let run = async {
                        let mut stream = logs_client(&address)
                            .await
                            .map_err(|e| format!("cannot reach it at {address}: {e}"))?
                            .search(req)
                            .await
                            .map_err(|s| s.message().to_string())?
                            .into_inner();
                        while let Some(line) = stream.message().await.map_err(|s| format!("its search broke off: {}", s.message()))? {
                            if tx.send((node.clone(), Ok(line))).await.is_err() {
                                break;
                            }
                        }
                        Ok::<(), String>(())
                    };
                    if let Err(why) = run.await {
                        let _ = tx.send((node, Err(why))).await;
                    }
                });
            }
            Source::Here(files) => {
                tokio::task::spawn_blocking(move || search_here(&files, &req, node, tx));
            }
        }
    }
    drop(tx);
    let (mut matches, mut skipped) = (0u64, Vec::new());
    while let Some((node, got)) = rx.recv().await {
        match got {
            Ok(l) if !l.skipped.is_empty() => skipped.push((node, l.file, l.skipped)),
            Ok(l) => {
                matches += l.is_match as u64;
                print(&node, &l, a.json);
            }
            Err(why) => {
                let row = logs.nodes.iter().find(|n| n.label() == node).map(|n| n.row.clone()).unwrap_or_default();
                failed.push((row, why));
            }
        }
    }
    for (node, file, why) in &skipped {
        eprintln!("rayr: node {node}: {file}: {why}");
    }
    if !failed.is_empty() {
        for (n, why) in &failed {
            let h = hex(&n.node_id);
            eprintln!("rayr: node {h} ({}) was not searched: {why}", if n.address.is_empty() { "-" } else { &n.address });
        }
        bail!("{matches} match(es) from the nodes searched; {} node(s) could not be searched (above): the results are incomplete", failed.len());
    }
    if matches == 0 {
        // As grep: no match is a failure a script can test.
        bail!("no matches");
    }
    Ok(())
}

async fn list(node: Option<String>, json: bool, address: Option<String>) -> anyhow::Result<()> {
    let logs = open(address, node.as_deref()).await?;
    let mut failed = 0;
    for n in &logs.nodes {
        let node_hex = hex(&n.row.node_id);
        let files = match &n.source {
            Ok(s) => s.list().await,
            Err(why) => Err(why.clone()),
        };
        match files {
            Ok(files) => {
                for f in files {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"node": node_hex, "path": f.path, "size": f.size, "worker": if f.worker_id.is_empty() { None } else { Some(hex(&f.worker_id)) }, "pid": f.pid, "modified_us": f.modified_us})
                        );
                    } else {
                        let who = if f.worker_id.is_empty() { "node agent".to_string() } else { format!("worker {} (pid {})", short_id(&f.worker_id), f.pid) };
                        println!("{}  {:>10}  {}  {who}", n.short(), f.size, f.path);
                    }
                }
            }
            Err(why) => {
                // A dead node elsewhere is only mentioned; one that should answer fails it.
                failed += (n.row.state != "DEAD") as usize;
                eprintln!("rayr: node {} ({}) could not be listed: {why}", n.label(), n.row.address);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} node(s) could not be listed (above): the list is incomplete");
    }
    Ok(())
}

/// A file to show: its node, its name, and the worker that writes it (if a worker's).
struct Shown {
    node: usize,
    name: String,
    worker: Vec<u8>,
}

/// The files `target` names: a file by name, a worker's current stdout and stderr, or
/// those of the worker of a task's (or its object's) latest attempt.
async fn resolve_files(logs: &mut Logs, target: &str) -> anyhow::Result<Vec<Shown>> {
    let mut listed: Vec<(usize, Vec<LogFile>)> = Vec::new();
    let mut unlisted = Vec::new();
    for (i, n) in logs.nodes.iter().enumerate() {
        match &n.source {
            Ok(s) => match s.list().await {
                Ok(files) => listed.push((i, files)),
                Err(why) => unlisted.push(format!("node {}: {why}", n.label())),
            },
            Err(why) => unlisted.push(format!("node {}: {why}", n.label())),
        }
    }
    let name_of = |p: &str| std::path::Path::new(p).file_name().map_or(p.to_string(), |n| n.to_string_lossy().into_owned());
    let not_found = |what: String| {
        if unlisted.is_empty() { anyhow!("{what}") } else { anyhow!("{what}; not searched: {}", unlisted.join("; ")) }
    };
    // A file by name.
    let by_name: Vec<Shown> = listed
        .iter()
        .flat_map(|(i, files)| files.iter().filter(|f| name_of(&f.path) == target).map(move |f| Shown { node: *i, name: name_of(&f.path), worker: f.worker_id.clone() }))
        .collect();
    if !by_name.is_empty() {
        return Ok(by_name);
    }
    if !target.bytes().all(|b| b.is_ascii_hexdigit()) || target.len() < 4 {
        return Err(not_found(format!("{target:?} is neither a log file's name (`rayr logs list`) nor an id (at least 4 hex digits)")));
    }
    let of_worker = |worker: &str| -> Vec<Shown> {
        let mut found: Vec<Shown> = listed
            .iter()
            .flat_map(|(i, files)| {
                files
                    .iter()
                    .filter(|f| !f.worker_id.is_empty() && hex(&f.worker_id).starts_with(worker))
                    .map(move |f| Shown { node: *i, name: name_of(&f.path), worker: f.worker_id.clone() })
            })
            .collect();
        // The current files only (not rotated generations), stdout before stderr.
        found.retain(|f| f.name.ends_with(".out") || f.name.ends_with(".err"));
        found.sort_by(|a, b| b.name.ends_with(".out").cmp(&a.name.ends_with(".out")));
        found
    };
    let target = target.to_ascii_lowercase();
    let found = of_worker(&target);
    if !found.is_empty() {
        return Ok(found);
    }
    // A task (or the object it made): the worker of its latest attempt.
    let task = task_of(&mut logs.cluster, "", &target)
        .await
        .map_err(|_| not_found(format!("no log file, worker, task or object matches {target:?}: `rayr logs list` shows the files")))?;
    let mut worker = None;
    let filter = EventFilter { id: Some(hex(&task)), kind: rayr_proto::EventKind::TaskStarted as i32, since_us: 0, follow: false };
    logs.cluster
        .events(&filter, |e| {
            worker = Some(hex(&e.worker_id));
            Ok(())
        })
        .await?;
    match worker {
        Some(w) => {
            let found = of_worker(&w);
            if found.is_empty() {
                return Err(not_found(format!("task {} ran in worker {w}, whose files are not found", hex(&task))));
            }
            Ok(found)
        }
        None => bail!("task {} has not started yet: it wrote nothing", hex(&task)),
    }
}

/// How a worker ended, if it has (from the record).
async fn worker_end(logs: &mut Logs, worker: &[u8]) -> Option<String> {
    let filter = vec![rayr_proto::Filter { key: "worker_id".into(), value: hex(worker) }];
    let rows = logs.cluster.list_all("workers", filter).await.ok()?.workers;
    let row = rows.into_iter().find(|r| r.worker_id == worker && r.state == "DEAD")?;
    Some(if row.signal != 0 {
        format!("signal {}", row.signal)
    } else if !row.detail.is_empty() {
        row.detail
    } else {
        format!("exit code {}", row.exit_code)
    })
}

async fn tail(a: TailArgs, follow: bool) -> anyhow::Result<()> {
    let mut logs = open(a.address.clone(), None).await?;
    let files = resolve_files(&mut logs, &a.target).await?;
    let several = files.len() > 1;
    let mut at = Vec::new();
    for f in &files {
        let node = &logs.nodes[f.node];
        let source = node.source.as_ref().map_err(|e| anyhow!("{e}"))?;
        // Enough bytes for the lines asked for, most of the time.
        let want = (a.lines as u64 * 200).clamp(4096, 4 << 20);
        let r = source.read(&f.name, want, true, want as u32).await.map_err(|e| anyhow!("{e}"))?;
        let text = String::from_utf8_lossy(&r.data);
        let mut lines: Vec<&str> = text.lines().collect();
        if r.offset > 0 && !lines.is_empty() {
            lines.remove(0); // likely cut
        }
        if several {
            println!("==> {} on node {} <==", f.name, node.short());
        }
        for l in &lines[lines.len().saturating_sub(a.lines)..] {
            println!("{l}");
        }
        at.push((f, source.clone(), r.offset + r.data.len() as u64));
    }
    if !follow {
        return Ok(());
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if !logs.running {
        bail!("the cluster is not running: nothing more will be written to {}", files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));
    }
    let mut partial: HashMap<String, Vec<u8>> = HashMap::new();
    let mut last_check = std::time::Instant::now();
    loop {
        let mut quiet = true;
        for (f, source, offset) in at.iter_mut() {
            quiet &= !pump(f, source, offset, partial.entry(f.name.clone()).or_default(), several, false).await?;
        }
        // A worker that has exited writes nothing more: say so and stop following it,
        // once what it wrote last (an unfinished last line too) has been shown.
        if quiet && last_check.elapsed() >= Duration::from_secs(1) {
            last_check = std::time::Instant::now();
            let mut ended = Vec::new();
            for (i, (f, ..)) in at.iter().enumerate() {
                if !f.worker.is_empty()
                    && let Some(how) = worker_end(&mut logs, &f.worker).await
                {
                    ended.push((i, how));
                }
            }
            for (i, how) in ended.into_iter().rev() {
                let (f, source, mut offset) = at.remove(i);
                pump(f, &source, &mut offset, partial.entry(f.name.clone()).or_default(), several, true).await?;
                eprintln!("rayr: worker {} has exited ({how}): nothing more will be written to {}", hex(&f.worker), f.name);
            }
            if at.is_empty() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints what `f` gained since `offset`, whole lines only (`last`: everything, the
/// unfinished line too: nothing more will come). Whether anything came.
async fn pump(f: &Shown, source: &Source, offset: &mut u64, partial: &mut Vec<u8>, several: bool, last: bool) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut got = false;
    // (A bounded catch-up: a file that grows fast must not starve the others.)
    for _ in 0..16 {
        let r = source.read(&f.name, *offset, false, 1 << 20).await.map_err(|e| anyhow!("{} stopped answering: {e}", f.name))?;
        if r.size < *offset {
            // The file rotated: what follows starts the new one.
            *offset = 0;
            continue;
        }
        if r.data.is_empty() {
            break;
        }
        got = true;
        *offset = r.offset + r.data.len() as u64;
        partial.extend_from_slice(&r.data);
    }
    let end = if last { Some(partial.len().saturating_sub(1)) } else { partial.iter().rposition(|b| *b == b'\n') };
    if let Some(end) = end.filter(|_| !partial.is_empty()) {
        let done: Vec<u8> = partial.drain(..=end).collect();
        for l in String::from_utf8_lossy(&done).lines() {
            if several {
                println!("{}: {l}", f.name);
            } else {
                println!("{l}");
            }
        }
        let _ = std::io::stdout().flush();
    }
    Ok(got)
}
