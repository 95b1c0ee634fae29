//! `rayr logs`: the cluster's log files, searched and listed where they are.
//!
//! A search fans out to every live node agent (`NodeLogs.Search`), which searches its own
//! files with ripgrep's searcher and streams hits back; they are printed as they come,
//! each under its node. A node that cannot be searched (dead, unreachable) is named at the
//! end with why, and the command then fails: partial results are never shown as whole.
//! When no cluster runs, the session's files on this host are searched directly.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use rayr_logs::hex;
use rayr_proto::node_logs_client::NodeLogsClient;
use rayr_proto::{LogLine, LogListRequest, LogSearchRequest, NodeRow};

use crate::connect::{Cluster, connect};

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

/// The nodes to ask: the live ones with a logs service, and why the others cannot be.
async fn nodes(address: Option<String>, only: Option<&str>) -> anyhow::Result<Result<(Vec<NodeRow>, Vec<(NodeRow, String)>), Cluster>> {
    let cluster = connect(address).await?;
    let mut client = match cluster {
        Cluster::Live(c) => c,
        offline => return Ok(Err(offline)),
    };
    let rows = client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await.map_err(|s| anyhow!("{}", s.message()))?.into_inner().nodes;
    let rows: Vec<NodeRow> = match only {
        None => rows,
        Some(p) => {
            let p = p.to_ascii_lowercase();
            let chosen: Vec<NodeRow> = rows.into_iter().filter(|r| hex(&r.node_id).starts_with(&p)).collect();
            match chosen.len() {
                0 => bail!("no node's id starts with {p:?}: `rayr status` lists them"),
                1 => chosen,
                n => bail!("{n} nodes' ids start with {p:?}: give more of the id"),
            }
        }
    };
    let (mut live, mut out) = (Vec::new(), Vec::new());
    for r in rows {
        if r.state != "ALIVE" {
            let why = format!("the node is dead ({}): its files stay on its host", r.reason);
            out.push((r, why));
        } else if r.grpc_address.is_empty() {
            out.push((r, "the node serves no log search (an embedded node: search its session's files on its host)".into()));
        } else {
            live.push(r);
        }
    }
    Ok(Ok((live, out)))
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
    ranges: Vec<rayr_proto::ByteRange>,
    shared: bool,
}

fn output_of(e: &rayr_proto::Event) -> Option<&rayr_proto::TaskDetail> {
    match &e.detail {
        Some(rayr_proto::event::Detail::Task(d)) if d.output_measured => Some(d),
        _ => None,
    }
}

fn ranges(d: &rayr_proto::TaskDetail) -> Vec<rayr_proto::ByteRange> {
    vec![
        rayr_proto::ByteRange { stream: "out".into(), start: d.out_start, end: d.out_end, generation: d.out_gen },
        rayr_proto::ByteRange { stream: "err".into(), start: d.err_start, end: d.err_end, generation: d.err_gen },
    ]
}

/// The attempts of task `id` and where each wrote, from the event record.
async fn task_output(cluster: &mut Cluster, id: &str) -> anyhow::Result<Vec<Attempt>> {
    use rayr_proto::EventKind as K;
    let mut events = Vec::new();
    let filter = crate::connect::EventFilter { id: Some(id.to_string()), kind: 0, since_us: 0, follow: false };
    cluster.events(&filter, |e| {
        events.push(e.clone());
        Ok(())
    })
    .await?;
    let kind = |e: &rayr_proto::Event| K::try_from(e.kind).unwrap_or(K::Unspecified);
    let task = events.iter().find(|e| kind(e) == K::TaskSubmitted || kind(e) == K::TaskStarted).map(|e| e.task_id.clone());
    let Some(task) = task else { bail!("no task {id} in the record: `rayr list tasks` lists them") };
    let mut attempts = Vec::new();
    for started in events.iter().filter(|e| kind(e) == K::TaskStarted && e.task_id == task) {
        let attempt = match &started.detail {
            Some(rayr_proto::event::Detail::Task(d)) => d.attempt,
            _ => 0,
        };
        let ended = events.iter().find(|e| {
            (kind(e) == K::TaskFinished || kind(e) == K::TaskFailed)
                && e.task_id == task
                && e.worker_id == started.worker_id
                && matches!(&e.detail, Some(rayr_proto::event::Detail::Task(d)) if d.attempt == attempt)
        });
        // The worker's own measured tasks around this one bound what it wrote.
        let mut of_worker = Vec::new();
        let filter = crate::connect::EventFilter { id: Some(hex(&started.worker_id)), kind: 0, since_us: 0, follow: false };
        cluster.events(&filter, |e| {
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
        attempts.push(Attempt { attempt, node: started.node_id.clone(), worker: started.worker_id.clone(), ranges, shared });
    }
    if attempts.is_empty() {
        bail!("task {} has not started yet: it wrote nothing", hex(&task));
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
        println!("{}  {file}{sep}{}{sep} {}", &node[..node.len().min(12)], l.line, l.text);
    }
}

async fn search(a: SearchArgs) -> anyhow::Result<()> {
    if a.task.is_some() && (a.since.is_some() || a.until.is_some()) {
        bail!("--task already names the lines to search (what the task wrote): leave --since and --until out");
    }
    let query = rayr_logsearch::Query { pattern: a.pattern.clone(), ignore_case: a.ignore_case, ..Default::default() };
    // A bad pattern is said once, here, not by every node.
    query.compile().map_err(|e| anyhow!("{e}"))?;
    let (live, mut failed) = match nodes(a.address.clone(), a.node.as_deref()).await? {
        Ok(n) => n,
        Err(_) if a.task.is_some() || a.actor.is_some() => {
            bail!("--task and --actor need the cluster running (its head knows where each ran)")
        }
        Err(offline) => return search_here(&a, offline),
    };
    // What to ask of which node: everything (per the filters), or each attempt's lines.
    let mut asks: Vec<(NodeRow, LogSearchRequest)> = live.iter().map(|n| (n.clone(), request(&a))).collect();
    if let Some(task) = &a.task {
        let mut cluster = connect(a.address.clone()).await?;
        asks.clear();
        // Only the nodes that ran it matter: those of them that cannot be searched.
        let down = std::mem::take(&mut failed);
        for at in task_output(&mut cluster, task).await? {
            if at.shared {
                eprintln!(
                    "rayr: attempt {} ran under 20 µs: its lines are searched with those of the worker's other short tasks around it",
                    at.attempt
                );
            }
            match live.iter().find(|n| n.node_id == at.node) {
                Some(n) => asks.push((n.clone(), LogSearchRequest { worker: hex(&at.worker), ranges: at.ranges, ..request(&a) })),
                None if failed.iter().any(|(n, _)| n.node_id == at.node) => {}
                None => match down.iter().find(|(n, _)| n.node_id == at.node) {
                    Some(d) => failed.push(d.clone()),
                    None => failed.push((NodeRow { node_id: at.node.clone(), ..Default::default() }, "the node that ran it is not in the cluster".into())),
                },
            }
        }
    }
    if let Some(actor) = &a.actor {
        let mut cluster = connect(a.address.clone()).await?;
        asks.clear();
        let down = std::mem::take(&mut failed);
        let filter = crate::connect::EventFilter { id: Some(actor.clone()), kind: rayr_proto::EventKind::ActorCreated as i32, since_us: 0, follow: false };
        let mut lives: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        cluster
            .events(&filter, |e| {
                lives.push((e.node_id.clone(), e.worker_id.clone()));
                Ok(())
            })
            .await?;
        if lives.is_empty() {
            bail!("no actor {actor} was ever created: `rayr list actors` lists them");
        }
        lives.dedup();
        for (node, worker) in lives {
            match live.iter().find(|n| n.node_id == node) {
                Some(n) => asks.push((n.clone(), LogSearchRequest { worker: hex(&worker), ..request(&a) })),
                None => match down.iter().find(|(n, _)| n.node_id == node) {
                    Some(d) => failed.push(d.clone()),
                    None => failed.push((NodeRow { node_id: node.clone(), ..Default::default() }, "the node that hosted it is not in the cluster".into())),
                },
            }
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<LogLine, String>)>(1024);
    for (node, req) in asks {
        let (tx, node_hex, address) = (tx.clone(), hex(&node.node_id), node.grpc_address.clone());
        tokio::spawn(async move {
            let run = async {
                let mut stream = logs_client(&address).await.map_err(|e| format!("cannot reach it at {address}: {e}"))?.search(req).await.map_err(|s| s.message().to_string())?.into_inner();
                while let Some(line) = stream.message().await.map_err(|s| format!("its search broke off: {}", s.message()))? {
                    if tx.send((node_hex.clone(), Ok(line))).await.is_err() {
                        break;
                    }
                }
                Ok::<(), String>(())
            };
            if let Err(why) = run.await {
                let _ = tx.send((node_hex, Err(why))).await;
            }
        });
    }
    drop(tx);
    let (mut matches, mut skipped) = (0u64, Vec::new());
    let by_id: HashMap<String, NodeRow> = live.into_iter().map(|n| (hex(&n.node_id), n)).collect();
    while let Some((node, got)) = rx.recv().await {
        match got {
            Ok(l) if !l.skipped.is_empty() => skipped.push((node, l.file, l.skipped)),
            Ok(l) => {
                matches += l.is_match as u64;
                print(&node, &l, a.json);
            }
            Err(why) => failed.push((by_id.get(&node).cloned().unwrap_or_default(), why)),
        }
    }
    for (node, file, why) in &skipped {
        eprintln!("rayr: node {}: {file}: {why}", &node[..12.min(node.len())]);
    }
    if !failed.is_empty() {
        for (n, why) in &failed {
            eprintln!("rayr: node {} ({}) was not searched: {why}", &hex(&n.node_id)[..12.min(hex(&n.node_id).len())], n.address);
        }
        bail!("{matches} match(es) from the nodes that answered; {} node(s) could not be searched (above): the results are incomplete", failed.len());
    }
    if matches == 0 {
        eprintln!("rayr: no matches");
    }
    Ok(())
}

/// No cluster runs: the files of its session on this host.
fn search_here(a: &SearchArgs, offline: Cluster) -> anyhow::Result<()> {
    let Cluster::Offline(index) = offline else { unreachable!() };
    if a.since.is_some() || a.until.is_some() {
        bail!("--since and --until need the cluster running (its node agents cut each file by when it was written)");
    }
    let session = index.session().ok_or_else(|| anyhow!("no session to search"))?;
    eprintln!("cluster not running; searching the log files of session {} on this host", session.dir.display());
    // Log files only: not the workers' time indexes (`.idx`) or a rotation's new file.
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(session.logs_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.extension().is_some_and(|x| x == "idx" || x == "new"))
        .collect();
    files.sort();
    if let Some(w) = &a.worker {
        files.retain(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("worker-{}", w.to_ascii_lowercase()))));
    }
    let query = rayr_logsearch::Query {
        pattern: a.pattern.clone(),
        ignore_case: a.ignore_case,
        context: a.context as usize,
        max_count: a.max_count.unwrap_or(0),
        glob: a.glob.clone(),
    };
    let matcher = query.compile().map_err(|e| anyhow!("{e}"))?;
    let mut matches = 0u64;
    let skipped = rayr_logsearch::search(&matcher, &query, &files, |hit| {
        matches += hit.is_match as u64;
        let line = LogLine { file: hit.file.display().to_string(), line: hit.line, text: hit.text, is_match: hit.is_match, skipped: String::new() };
        print("this-host", &line, a.json);
        true
    });
    for (file, why) in skipped {
        eprintln!("rayr: {}: {why}", file.display());
    }
    if matches == 0 {
        eprintln!("rayr: no matches");
    }
    Ok(())
}

async fn list(node: Option<String>, json: bool, address: Option<String>) -> anyhow::Result<()> {
    let (live, failed) = match nodes(address, node.as_deref()).await? {
        Ok(n) => n,
        Err(_) => bail!("no cluster is running: the log files of the latest session are in its logs/ directory"),
    };
    for n in &live {
        let node_hex = hex(&n.node_id);
        let files = match logs_client(&n.grpc_address).await {
            Ok(mut c) => c.list(LogListRequest {}).await.map(|r| r.into_inner().files).map_err(|s| s.message().to_string()),
            Err(e) => Err(e.to_string()),
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
                        let who = if f.worker_id.is_empty() { "node agent".to_string() } else { format!("worker {} (pid {})", &hex(&f.worker_id)[..12], f.pid) };
                        println!("{}  {:>10}  {}  {who}", &node_hex[..12], f.size, f.path);
                    }
                }
            }
            Err(why) => eprintln!("rayr: node {} ({}) could not be listed: {why}", &node_hex[..12], n.address),
        }
    }
    for (n, why) in &failed {
        eprintln!("rayr: node {} ({}): {why}", &hex(&n.node_id)[..12], n.address);
    }
    Ok(())
}

/// The files `target` names: (node row, file name) pairs, found by asking every live node.
async fn resolve_files(target: &str, address: Option<String>) -> anyhow::Result<Vec<(NodeRow, String)>> {
    let (live, _) = match nodes(address.clone(), None).await? {
        Ok(n) => n,
        Err(_) => bail!("no cluster is running: the log files of the latest session are in its logs/ directory"),
    };
    let mut listed = Vec::new();
    for n in &live {
        if let Ok(mut c) = logs_client(&n.grpc_address).await
            && let Ok(r) = c.list(LogListRequest {}).await
        {
            listed.push((n.clone(), r.into_inner().files));
        }
    }
    let name_of = |p: &str| std::path::Path::new(p).file_name().map_or(p.to_string(), |n| n.to_string_lossy().into_owned());
    // A file by name.
    let by_name: Vec<(NodeRow, String)> = listed
        .iter()
        .flat_map(|(n, files)| files.iter().filter(|f| name_of(&f.path) == target).map(move |f| (n.clone(), name_of(&f.path))))
        .collect();
    if !by_name.is_empty() {
        return Ok(by_name);
    }
    if !target.bytes().all(|b| b.is_ascii_hexdigit()) || target.len() < 4 {
        bail!("{target:?} is neither a log file's name (`rayr logs list`) nor an id (at least 4 hex digits)");
    }
    let of_worker = |worker: &str| -> Vec<(NodeRow, String)> {
        let mut found: Vec<(NodeRow, String, u32)> = listed
            .iter()
            .flat_map(|(n, files)| {
                files.iter().filter(|f| !f.worker_id.is_empty() && hex(&f.worker_id).starts_with(worker)).map(move |f| (n.clone(), name_of(&f.path), f.pid))
            })
            .collect();
        // The current files only (not rotated generations), stdout before stderr.
        found.retain(|f| f.1.ends_with(".out") || f.1.ends_with(".err"));
        found.sort_by(|a, b| b.1.ends_with(".out").cmp(&a.1.ends_with(".out")));
        found.into_iter().map(|(n, f, _)| (n, f)).collect()
    };
    let target = target.to_ascii_lowercase();
    let found = of_worker(&target);
    if !found.is_empty() {
        return Ok(found);
    }
    // A task: the worker of its latest attempt.
    let mut cluster = connect(address).await?;
    let mut worker = None;
    let filter = crate::connect::EventFilter { id: Some(target.clone()), kind: rayr_proto::EventKind::TaskStarted as i32, since_us: 0, follow: false };
    cluster
        .events(&filter, |e| {
            worker = Some(hex(&e.worker_id));
            Ok(())
        })
        .await
        .map_err(|_| anyhow!("no log file, worker or task matches {target:?}: `rayr logs list` shows the files"))?;
    match worker {
        Some(w) => {
            let found = of_worker(&w);
            if found.is_empty() {
                bail!("task {target} ran in worker {w}, whose node is not running or keeps no such files");
            }
            Ok(found)
        }
        None => bail!("no log file, worker or task matches {target:?}: `rayr logs list` shows the files"),
    }
}

async fn tail(a: TailArgs, follow: bool) -> anyhow::Result<()> {
    let files = resolve_files(&a.target, a.address.clone()).await?;
    let several = files.len() > 1;
    let mut at = Vec::new();
    for (node, name) in &files {
        let mut c = logs_client(&node.grpc_address).await?;
        // Enough bytes for the lines asked for, most of the time.
        let want = (a.lines as u64 * 200).clamp(4096, 4 << 20);
        let r = c
            .read(rayr_proto::LogReadRequest { name: name.clone(), offset: want, from_end: true, max_bytes: want as u32 })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        let text = String::from_utf8_lossy(&r.data);
        let mut lines: Vec<&str> = text.lines().collect();
        if r.offset > 0 && !lines.is_empty() {
            lines.remove(0); // likely cut
        }
        if several {
            println!("==> {} on node {} <==", name, &hex(&node.node_id)[..12]);
        }
        for l in &lines[lines.len().saturating_sub(a.lines)..] {
            println!("{l}");
        }
        at.push((node.clone(), name.clone(), r.offset + r.data.len() as u64, c));
    }
    if !follow {
        return Ok(());
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut partial: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        for (node, name, offset, c) in at.iter_mut() {
            let r = match c.read(rayr_proto::LogReadRequest { name: name.clone(), offset: *offset, from_end: false, max_bytes: 1 << 20 }).await {
                Ok(r) => r.into_inner(),
                Err(s) => bail!("node {} stopped answering for {name}: {}", &hex(&node.node_id)[..12], s.message()),
            };
            if r.size < *offset {
                // The file rotated: what follows starts the new one.
                *offset = 0;
                continue;
            }
            if r.data.is_empty() {
                continue;
            }
            *offset = r.offset + r.data.len() as u64;
            let buf = partial.entry(name.clone()).or_default();
            buf.extend_from_slice(&r.data);
            // Whole lines only; a partial one waits for its end.
            if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                let done: Vec<u8> = buf.drain(..=end).collect();
                for l in String::from_utf8_lossy(&done).lines() {
                    if several {
                        println!("{name}: {l}");
                    } else {
                        println!("{l}");
                    }
                }
                let _ = std::io::stdout().flush();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
