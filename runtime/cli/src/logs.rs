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
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    match args.command {
        LogsCommand::Search(a) => search(a).await,
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
    Ok(NodeLogsClient::new(endpoint.connect().await?))
}

fn request(a: &SearchArgs) -> LogSearchRequest {
    LogSearchRequest {
        pattern: a.pattern.clone(),
        ignore_case: a.ignore_case,
        context: a.context,
        max_count: a.max_count.unwrap_or(0),
        glob: a.glob.clone().unwrap_or_default(),
        worker: a.worker.clone().unwrap_or_default(),
    }
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
    let query = rayr_logsearch::Query { pattern: a.pattern.clone(), ignore_case: a.ignore_case, ..Default::default() };
    // A bad pattern is said once, here, not by every node.
    query.compile().map_err(|e| anyhow!("{e}"))?;
    let (live, mut failed) = match nodes(a.address.clone(), a.node.as_deref()).await? {
        Ok(n) => n,
        Err(offline) => return search_here(&a, offline),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<LogLine, String>)>(1024);
    for node in &live {
        let (tx, node_hex, address, req) = (tx.clone(), hex(&node.node_id), node.grpc_address.clone(), request(&a));
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
    let session = index.session().ok_or_else(|| anyhow!("no session to search"))?;
    eprintln!("cluster not running; searching the log files of session {} on this host", session.dir.display());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(session.logs_dir())?.filter_map(|e| e.ok().map(|e| e.path())).collect();
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
