//! `rayr why-died ID`: how a task, worker, object, node or job ended, and why.
//!
//! Every `rayr::Error` ends with `run \`rayr why-died <id>\``; this command answers it from
//! the event record alone (a running head, or a stopped session's logs through the same
//! `EventIndex`, see [`connect`](crate::connect)):
//!
//! 1. It resolves the id (full hex, a unique prefix, or the `HEAD…TAIL` short form, as
//!    `rayr events --id` does) and finds what the id names: a task, worker, object, node,
//!    job, or a single event.
//! 2. It picks the event that ended it: a task's final `TASK_FAILED` (or says that it
//!    finished, or has not ended), a worker's `WORKER_EXITED`, an object's `OBJECT_LOST`
//!    (`OBJECT_FREED` is reported as what it is, not a death), a node's `NODE_STOPPED`, a
//!    job's `JOB_FINISHED`.
//! 3. From that event it follows `cause` links back to the root, one event per step, and
//!    shows each step's typed numbers (exit type, signal or exit code, peak RSS,
//!    attempt/max_retries, error, retry reason). For a task it also lists the retries.
//! 4. For a worker exit in the chain it shows the tail of that worker's stderr; for a panic
//!    the user frames of the backtrace.
//! 5. It ends with one line of advice keyed to the root cause (a SIGKILL rayr did not send,
//!    a panic, an `Err`, a dead owner, an infeasible demand, `process::exit`, …).
//!
//! `--json` prints the same as one object: `{"id", "kind", "summary", "chain", "retries",
//! "effects", "stderr_path", "stderr_tail", "advice", "root_cause", "missing_cause"}`, every
//! event in the form `rayr events --json` prints (ids in full hex); `root_cause` is the id of
//! the chain event the advice is keyed to. Text output keeps ids short and fits one screen;
//! `--json` has everything.
//!
//! This is the first version: it reads events only. Log lines around the death and a
//! latency bound on very large records come with issue #5.

use std::collections::HashMap;

use anyhow::anyhow;
use clap::Args;
use rayr_head::{HeadError, ID_PATTERN_METADATA, IdPattern, short_id};
use rayr_logs::{hex, parse_hex};
use rayr_proto::event::Detail;
use rayr_proto::{
    Event, EventKind, EventsRequest, Filter, JobDetail, ListRequest, NodeDetail, ObjectDetail, TaskDetail, WorkerExit,
    WorkerExitType, WorkerStart,
};
use serde_json::{Value, json};

use crate::connect::{Cluster, connect};
use crate::query::{ADDRESS_HELP, clip, emit, event_json, human_bytes, kind_name, local_time, quote};

/// `rayr why-died ID [--json]`
#[derive(Args, Debug, Clone)]
pub struct WhyDiedArgs {
    /// The id an error named: a task, worker, object, node or job id (or an event id). A
    /// unique prefix or the short form tables print is enough.
    #[arg(value_name = "ID")]
    pub id: String,
    /// One JSON object (every event in full, ids in full hex).
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT", help = ADDRESS_HELP)]
    pub address: Option<String>,
}

pub async fn why_died(args: WhyDiedArgs) -> anyhow::Result<()> {
    let mut cluster = connect(args.address.clone()).await?;
    let report = explain(&mut cluster, &args.id).await?;
    emit(&if args.json { format!("{}\n", report.json()) } else { report.text() })
}

/// Events read to find out what an id names.
const FIRST_EVENTS: usize = 64;
/// Most events read about one task or object (its whole life is far fewer).
const ENTITY_EVENTS: usize = 100_000;
/// Most events of one kind read when looking for one worker's, node's or job's end.
const KIND_EVENTS: usize = 1_000_000;
/// Most events read to find one event by its id (it and the events it caused).
const LOOKUP_EVENTS: usize = 10_000;
/// Longest cause chain followed (a guard; real chains are a dozen steps at most).
const MAX_CHAIN: usize = 100;
/// What the text output shows at most of each list, to stay on one screen.
const SHOW_CHAIN: usize = 12;
const SHOW_LIST: usize = 5;
const SHOW_STDERR: usize = 10;
const SHOW_BACKTRACE_FRAMES: usize = 6;

// ---------------------------------------------------------------------------------------
// Reading the record

/// The event record as this command reads it: the cluster, and every event seen so far by
/// its id (most cause lookups are answered from what an earlier query brought).
struct Record<'c> {
    cluster: &'c mut Cluster,
    seen: HashMap<Vec<u8>, Event>,
}

impl Record<'_> {
    fn live(&self) -> bool {
        matches!(self.cluster, Cluster::Live(_))
    }

    /// The lines a task attempt (its TASK_FAILED `ended`, run by `pid`) wrote, read from its
    /// worker's log files where the record says its output is, if they are on this host.
    async fn task_output(&mut self, ended: &Event, pid: u32) -> Option<TaskOutput> {
        let t = task(ended).filter(|t| t.output_measured)?;
        let session = match &mut *self.cluster {
            Cluster::Live(client) => {
                let info = client.cluster_info(rayr_proto::ClusterInfoRequest { quick: true }).await.ok()?.into_inner();
                rayr_logs::Session::open(info.session_dir)
            }
            Cluster::Offline(index) => index.session()?.clone(),
        };
        let worker = hex(&ended.worker_id);
        let files = rayr_logsearch::files::NodeFiles {
            session,
            own_logs: Vec::new(),
            workers: vec![(ended.worker_id.as_slice().try_into().ok()?, pid)],
        };
        let read = |ext: &str, start: u64, end: u64, generation: u32| -> Option<(Vec<String>, String)> {
            use std::io::{Read, Seek, SeekFrom};
            // The generation the offsets are in: rotated to `<file>.g` since, current, or
            // rotated out (then not some other generation's lines).
            let part = rayr_logsearch::files::Part { stream: ext.into(), generation, start, end };
            let plan = files.plan(&worker, &[part], 0, 0).ok()?;
            if let Some((file, why)) = plan.gone.first() {
                return Some((Vec::new(), format!("{file} ({why})")));
            }
            let path = plan.ranges.first()?.0.clone();
            let mut f = std::fs::File::open(&path).ok()?;
            f.seek(SeekFrom::Start(start)).ok()?;
            let mut bytes = Vec::new();
            // The last lines are what matter: at most 64 KiB of them.
            let from = end.saturating_sub(64 << 10).max(start);
            f.seek(SeekFrom::Start(from)).ok()?;
            f.take(end - from).read_to_end(&mut bytes).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<String> = text.lines().map(String::from).collect();
            Some((lines[lines.len().saturating_sub(TASK_OUTPUT_LINES)..].to_vec(), path.display().to_string()))
        };
        // The last lines are what matter: from the generation the output ends in.
        let from = |start: u64, span: u32| if span > 0 { 0 } else { start };
        let (stdout, stdout_path) = read("out", from(t.out_start, t.out_gen_span), t.out_end, t.out_gen)?;
        let (stderr, stderr_path) = read("err", from(t.err_start, t.err_gen_span), t.err_end, t.err_gen)?;
        Some(TaskOutput { stdout, stderr, stdout_path, stderr_path })
    }

    /// The id `pattern` names and the first events naming it; `None` when no id matches.
    async fn resolve(&mut self, pattern: &str) -> anyhow::Result<Option<(Vec<u8>, Vec<Event>)>> {
        IdPattern::parse(pattern).map_err(|e| anyhow!(e))?;
        let id = match &mut *self.cluster {
            Cluster::Live(client) => {
                let mut req = tonic::Request::new(EventsRequest::default());
                let value =
                    pattern.trim().replace('…', "..").parse().map_err(|_| anyhow!("`{pattern}` is not an id"))?;
                req.metadata_mut().insert(ID_PATTERN_METADATA, value);
                let reply = match client.events(req).await {
                    Ok(r) => r,
                    Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                    Err(s) => return Err(head_error(s)),
                };
                let id = reply
                    .metadata()
                    .get(ID_PATTERN_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_hex)
                    .ok_or_else(|| {
                        anyhow!("the rayr head did not say which id `{pattern}` names; is it an older version?")
                    })?;
                let events = take(reply.into_inner(), FIRST_EVENTS).await?;
                self.remember(&events);
                return Ok(Some((id, events)));
            }
            Cluster::Offline(index) => match index.resolve_unique(pattern) {
                Ok(id) => id,
                Err(HeadError::UnknownId { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let events = self.query(Some(&id), 0, FIRST_EVENTS).await?;
        Ok(Some((id, events)))
    }

    /// Up to `limit` events naming `id` (`None`: any) of `kind` (0: any), in index order.
    async fn query(&mut self, id: Option<&[u8]>, kind: i32, limit: usize) -> anyhow::Result<Vec<Event>> {
        let events = match &mut *self.cluster {
            Cluster::Live(client) => {
                let req =
                    EventsRequest { id: id.map(<[u8]>::to_vec).unwrap_or_default(), kind, since_us: 0, follow: false };
                take(client.events(req).await.map_err(head_error)?.into_inner(), limit).await?
            }
            Cluster::Offline(index) => {
                let q = rayr_head::EventQuery { id: id.map(<[u8]>::to_vec), kind, since_us: 0 };
                let mut out = Vec::new();
                let mut after = 0;
                while out.len() < limit {
                    let page = index.events_page(&q, after, limit - out.len())?;
                    after = page.next_after;
                    out.extend(page.events.into_iter().map(|(_, e)| e));
                    if !page.more {
                        break;
                    }
                }
                out
            }
        };
        self.remember(&events);
        Ok(events)
    }

    /// Events of `kind` whose `field` is `id`. Read by kind, not by id: a worker, node or
    /// job is named by far more events than there are events of one lifecycle kind.
    async fn of_kind(&mut self, kind: EventKind, id: &[u8], field: fn(&Event) -> &[u8]) -> anyhow::Result<Vec<Event>> {
        let mut events = self.query(None, kind as i32, KIND_EVENTS).await?;
        events.retain(|e| field(e) == id);
        Ok(events)
    }

    /// The event whose own id is `id`, if the record has it.
    async fn event(&mut self, id: &[u8]) -> anyhow::Result<Option<Event>> {
        if !self.seen.contains_key(id) {
            self.query(Some(id), 0, LOOKUP_EVENTS).await?;
        }
        Ok(self.seen.get(id).cloned())
    }

    /// Events whose `cause` is `id`: what that event brought about.
    async fn effects(&mut self, id: &[u8]) -> anyhow::Result<Vec<Event>> {
        let mut events = self.query(Some(id), 0, LOOKUP_EVENTS).await?;
        events.retain(|e| e.cause == id);
        events.sort_by_key(|e| e.time_us);
        Ok(events)
    }

    fn remember(&mut self, events: &[Event]) {
        for e in events {
            self.seen.entry(e.id.clone()).or_insert_with(|| e.clone());
        }
    }
}

async fn take(mut stream: tonic::Streaming<Event>, limit: usize) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    while out.len() < limit {
        match stream.message().await.map_err(head_error)? {
            Some(e) => out.push(e),
            None => break,
        }
    }
    Ok(out)
}

fn head_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => anyhow!("{}", s.message()),
        tonic::Code::Unavailable => anyhow!("lost the connection to the rayr head: {}", s.message()),
        _ => anyhow!("the rayr head failed to answer: {}", s.message()),
    }
}

// ---------------------------------------------------------------------------------------
// What an id names

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// One event, by its own id (or as some event's cause).
    Event,
    Task,
    Object,
    Actor,
    Worker,
    Job,
    Node,
}

impl Role {
    fn noun(self) -> &'static str {
        match self {
            Role::Event => "event",
            Role::Task => "task",
            Role::Object => "object",
            Role::Actor => "actor",
            Role::Worker => "worker",
            Role::Job => "job",
            Role::Node => "node",
        }
    }

    /// What `id` is, from the roles it plays in `events` (ids are unique across roles; a
    /// node id is also every agent event's source, so the more specific role wins).
    fn of(id: &[u8], events: &[Event]) -> Role {
        let role = |e: &Event| {
            let peer = object(e).map(|o| o.peer.as_slice()).unwrap_or_default();
            [
                (e.id.as_slice(), Role::Event),
                (e.task_id.as_slice(), Role::Task),
                (e.object_id.as_slice(), Role::Object),
                (e.actor_id.as_slice(), Role::Actor),
                (e.worker_id.as_slice(), Role::Worker),
                (e.job_id.as_slice(), Role::Job),
                (e.node_id.as_slice(), Role::Node),
                (e.source_worker.as_slice(), Role::Worker),
                (peer, Role::Worker),
                (e.cause.as_slice(), Role::Event),
            ]
            .into_iter()
            .find(|(field, _)| *field == id)
            .map(|(_, r)| r)
        };
        events.iter().filter_map(role).min().unwrap_or(Role::Event)
    }
}

// ---------------------------------------------------------------------------------------
// The explanation

/// What `why-died` found out about one id. Prose (`summary`, `advice`) names ids in full;
/// the text rendering shortens them.
#[derive(Debug)]
pub(crate) struct Report {
    id: Vec<u8>,
    role: Role,
    summary: String,
    /// The event that ended it, then its cause, that event's cause, … to the root.
    chain: Vec<Event>,
    /// Whether `chain` is a walk of cause links (else: the latest events, as recorded).
    walked: bool,
    /// A cause the record does not hold (its process died before recording it).
    missing_cause: Option<Vec<u8>>,
    /// Index in `chain` of the event the advice is keyed to.
    root_cause: Option<usize>,
    /// TASK_RETRIED events of the task, oldest first.
    retries: Vec<Event>,
    /// What the ending event brought about (a worker exit's failed tasks, lost objects).
    effects: Vec<Event>,
    advice: Option<String>,
    /// What the failed attempt wrote to its worker's stdout and stderr (last lines), when
    /// the record places it and the files are on this host.
    task_output: Option<TaskOutput>,
}

/// Lines of a failed attempt's output kept (its last ones).
const TASK_OUTPUT_LINES: usize = 200;

#[derive(Debug, Default)]
struct TaskOutput {
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdout_path: String,
    stderr_path: String,
}

/// Finds what ended the entity `pattern` names and why.
pub(crate) async fn explain(cluster: &mut Cluster, pattern: &str) -> anyhow::Result<Report> {
    let mut rec = Record { cluster, seen: HashMap::new() };
    let Some((id, first)) = rec.resolve(pattern).await? else {
        return Err(unknown_id(rec.cluster, pattern).await);
    };
    let role = Role::of(&id, &first);
    let mut r = Report {
        id: id.clone(),
        role,
        summary: String::new(),
        chain: Vec::new(),
        walked: false,
        missing_cause: None,
        root_cause: None,
        retries: Vec::new(),
        effects: Vec::new(),
        advice: None,
        task_output: None,
    };
    match role {
        Role::Task => explain_task(&mut rec, &mut r, &id).await?,
        Role::Object => explain_object(&mut rec, &mut r).await?,
        Role::Worker => explain_worker(&mut rec, &mut r).await?,
        Role::Node => explain_node(&mut rec, &mut r).await?,
        Role::Job => explain_job(&mut rec, &mut r).await?,
        Role::Event => {
            let ev = rec.event(&id).await?;
            match ev {
                Some(ev) => {
                    r.summary = format!("event {} is a {} at {}", hex(&id), kind_name(ev.kind), local_time(ev.time_us));
                    walk(&mut rec, &mut r, ev, MAX_CHAIN).await?;
                }
                None => {
                    r.summary = format!("{} is named as a cause, but the record holds no event with that id", hex(&id));
                }
            }
        }
        Role::Actor => explain_actor(&mut rec, &mut r).await?,
    }
    if r.advice.is_none() && r.walked {
        let has_stderr = r.stderr().is_some_and(|(_, x)| !x.stderr_tail.is_empty());
        (r.advice, r.root_cause) = match advise(&r.chain, has_stderr) {
            Some((advice, at)) => (Some(advice), Some(at)),
            None => (None, None),
        };
    }
    Ok(r)
}

/// Follows `cause` links from `start` to the root (at most `steps` events), into `r.chain`.
async fn walk(rec: &mut Record<'_>, r: &mut Report, start: Event, steps: usize) -> anyhow::Result<()> {
    r.chain = vec![start];
    r.walked = true;
    while r.chain.len() < steps {
        let cause = r.chain.last().expect("not empty").cause.clone();
        if cause.is_empty() || r.chain.iter().any(|e| e.id == cause) {
            break;
        }
        match rec.event(&cause).await? {
            Some(ev) => r.chain.push(ev),
            None => {
                r.missing_cause = Some(cause);
                break;
            }
        }
    }
    Ok(())
}

const TASK_KINDS: [EventKind; 6] = [
    EventKind::TaskSubmitted,
    EventKind::TaskScheduled,
    EventKind::TaskStarted,
    EventKind::TaskFinished,
    EventKind::TaskFailed,
    EventKind::TaskRetried,
];

async fn explain_task(rec: &mut Record<'_>, r: &mut Report, task_id: &[u8]) -> anyhow::Result<()> {
    let mut events = rec.query(Some(task_id), 0, ENTITY_EVENTS).await?;
    events.retain(|e| e.task_id == task_id && TASK_KINDS.iter().any(|k| is(e, *k)));
    events.sort_by_key(|e| e.time_us);
    let function = events.iter().filter_map(task).map(|t| t.function.as_str()).find(|f| !f.is_empty());
    let name = match function {
        Some(f) => format!("task {} ({f})", hex(task_id)),
        None => format!("task {}", hex(task_id)),
    };
    r.retries = events.iter().filter(|e| is(e, EventKind::TaskRetried)).cloned().collect();
    let retried = match r.retries.len() {
        0 => String::new(),
        1 => " after 1 retry".to_string(),
        n => format!(" after {n} retries"),
    };
    let failed = events.iter().rev().find(|e| is(e, EventKind::TaskFailed) && task(e).is_some_and(|t| t.r#final));
    let finished = events.iter().rev().find(|e| is(e, EventKind::TaskFinished));
    if let Some(failed) = failed {
        let t = task(failed).expect("a task event");
        let what = if t.error_type.is_empty() { String::new() } else { format!("{}: ", t.error_type) };
        r.summary = format!(
            "{name} failed for good at {}{retried} (attempt {}, max_retries {}): {what}{}",
            local_time(failed.time_us),
            t.attempt,
            t.max_retries,
            first_line(&t.error)
        );
        walk(rec, r, failed.clone(), MAX_CHAIN).await?;
        let pid = events.iter().rev().filter(|e| is(e, EventKind::TaskStarted) && e.worker_id == failed.worker_id).find_map(task).map(|t| t.pid);
        if let Some(pid) = pid {
            r.task_output = rec.task_output(failed, pid).await;
        }
    } else if let Some(done) = finished {
        let attempt = task(done).map(|t| t.attempt).unwrap_or(0);
        r.summary =
            format!("{name} finished successfully at {} (attempt {attempt}){retried}", local_time(done.time_us));
        r.chain = vec![done.clone()];
    } else if let Some(last) = events.last() {
        let state = task_state(last);
        r.summary = if rec.live() {
            format!("{name} has not ended: it is {state}")
        } else {
            format!("{name} never ended: the cluster stopped while it was {state}")
        };
        r.chain = vec![last.clone()];
    } else {
        r.summary = format!("{name}: the record holds no task events for it");
    }
    Ok(())
}

/// Where a task stands after `last`, its latest event.
fn task_state(last: &Event) -> String {
    let attempt = task(last).map(|t| t.attempt).unwrap_or(0);
    let since = local_time(last.time_us);
    match EventKind::try_from(last.kind) {
        Ok(EventKind::TaskSubmitted) => format!("SUBMITTED (waiting for a worker since {since})"),
        Ok(EventKind::TaskScheduled) => {
            format!("SCHEDULED on worker {} (attempt {attempt}, since {since})", hex(&last.worker_id))
        }
        Ok(EventKind::TaskStarted) => format!(
            "RUNNING on worker {} (attempt {attempt}, pid {}, since {since})",
            hex(&last.worker_id),
            task(last).map(|t| t.pid).unwrap_or(0)
        ),
        Ok(EventKind::TaskRetried) => format!("waiting to run attempt {attempt} (retried at {since})"),
        Ok(EventKind::TaskFailed) => format!("waiting for a retry (attempt {attempt} failed at {since})"),
        _ => format!("{} (at {since})", kind_name(last.kind)),
    }
}

async fn explain_object(rec: &mut Record<'_>, r: &mut Report) -> anyhow::Result<()> {
    let id = r.id.clone();
    let mut events = rec.query(Some(&id), 0, ENTITY_EVENTS).await?;
    events.retain(|e| e.object_id == id);
    events.sort_by_key(|e| e.time_us);
    // Both the node agent and a reader may record the loss; the first with a cause says most.
    let lost = events.iter().filter(|e| is(e, EventKind::ObjectLost)).min_by_key(|e| (e.cause.is_empty(), e.time_us));
    let freed = events.iter().find(|e| is(e, EventKind::ObjectFreed));
    let created = events.iter().find(|e| is(e, EventKind::ObjectCreated));
    // A task's return value is named by the task's submission.
    let producer =
        events.iter().find(|e| is(e, EventKind::TaskSubmitted) && !e.task_id.is_empty()).map(|e| e.task_id.clone());
    let name = format!("object {}", hex(&id));
    // Made again after it was lost (its task re-ran from lineage): the latest value lives.
    let remade = lost.and_then(|l| events.iter().rev().find(|e| is(e, EventKind::ObjectCreated) && e.time_us > l.time_us));
    if let (Some(lost), Some(remade)) = (lost, remade) {
        let reason = object(lost).map(|o| o.reason.as_str()).unwrap_or_default();
        r.summary = format!(
            "{name} was lost at {} ({reason}) and made again at {} by worker {}{}",
            local_time(lost.time_us),
            local_time(remade.time_us),
            hex(&remade.worker_id),
            if freed.is_some_and(|f| f.time_us > remade.time_us) { ", then freed when its references were dropped" } else { "" }
        );
        walk(rec, r, lost.clone(), MAX_CHAIN).await?;
        r.advice = Some("nothing is lost now: rayr re-ran the task that made it (Ray's lineage), which its retries allowed; a value that must survive a node's death without a re-run should be read (get) onto a live node first".into());
        // The loss's root: the node's death when the record has it.
        r.root_cause = r.chain.iter().position(|e| is(e, EventKind::NodeDied)).or(Some(0));
    } else if let Some(lost) = lost {
        let reason = object(lost).map(|o| o.reason.as_str()).unwrap_or_default();
        r.summary = format!("{name} was lost at {}: {reason}", local_time(lost.time_us));
        walk(rec, r, lost.clone(), MAX_CHAIN).await?;
    } else if let Some(freed) = freed {
        let reason = object(freed).map(|o| o.reason.as_str()).unwrap_or_default();
        r.summary = format!(
            "{name} did not die: it was freed at {} because {}",
            local_time(freed.time_us),
            if reason.is_empty() { "every reference to it was dropped" } else { reason }
        );
        // Not a death: how it was made is enough context, not its whole history.
        walk(rec, r, freed.clone(), 2).await?;
    } else if let Some(created) = created {
        let o = object(created).cloned().unwrap_or_default();
        r.summary = format!(
            "{name} has not died: created at {} by worker {} ({}, {}){}",
            local_time(created.time_us),
            hex(&created.worker_id),
            human_bytes(o.size),
            if o.location.is_empty() { "-" } else { &o.location },
            if rec.live() { "; it is still referenced" } else { ", and not freed before the cluster stopped" }
        );
        walk(rec, r, created.clone(), MAX_CHAIN).await?;
    } else if let Some(task_id) = producer {
        // No value was ever stored: the task that should produce it failed or has not ended.
        explain_task(rec, r, &task_id).await?;
        r.summary = format!("{name} is the return value of task {}; {}", hex(&task_id), r.summary);
    } else {
        r.summary = format!("{name}: the record holds no lifecycle events for it");
    }
    Ok(())
}

async fn explain_worker(rec: &mut Record<'_>, r: &mut Report) -> anyhow::Result<()> {
    let id = r.id.clone();
    let exits = rec.of_kind(EventKind::WorkerExited, &id, |e| e.worker_id.as_slice()).await?;
    let starts = rec.of_kind(EventKind::WorkerStarted, &id, |e| e.worker_id.as_slice()).await?;
    let start = starts.last().and_then(start).cloned().unwrap_or_default();
    let who = if start.is_driver { "driver" } else { "worker" };
    // The first exit recorded: a node declared dead records its workers gone, and if it
    // wakes, its agent records them again as it stops them; what followed named the first.
    let Some(exit_ev) = exits.into_iter().min_by_key(|e| e.time_us) else {
        let started = starts.last().map(|e| format!(", started at {}", local_time(e.time_us))).unwrap_or_default();
        r.summary = if rec.live() {
            format!("{who} {} (pid {}{started}) has not exited", hex(&id), start.pid)
        } else {
            format!(
                "{who} {} (pid {}{started}) has no recorded exit: the cluster stopped before its node agent recorded one (was the agent killed?)",
                hex(&id),
                start.pid
            )
        };
        r.chain = starts;
        return Ok(());
    };
    let x = exit(&exit_ev).cloned().unwrap_or_default();
    let intended = matches!(
        WorkerExitType::try_from(x.exit_type),
        Ok(WorkerExitType::IntendedSystemExit | WorkerExitType::IntendedUserExit)
    );
    let who = if start.is_driver || x.detail.starts_with("driver disconnected") { "driver" } else { who };
    r.summary = format!(
        "{who} {} (pid {}) {} at {}: {}",
        hex(&id),
        x.pid,
        if intended { "exited" } else { "died" },
        local_time(exit_ev.time_us),
        x.detail
    );
    r.effects = rec.effects(&exit_ev.id).await?;
    walk(rec, r, exit_ev, MAX_CHAIN).await?;
    Ok(())
}

async fn explain_actor(rec: &mut Record<'_>, r: &mut Report) -> anyhow::Result<()> {
    let id = r.id.clone();
    let created = rec.of_kind(EventKind::ActorCreated, &id, |e| e.actor_id.as_slice()).await?;
    let died = rec.of_kind(EventKind::ActorDied, &id, |e| e.actor_id.as_slice()).await?;
    let (class, pid) = created
        .last()
        .and_then(actor)
        .map(|a| (a.class.clone(), a.pid))
        .unwrap_or_else(|| ("an actor".into(), 0));
    let worker = created.last().map(|e| format!(" in worker {} (pid {pid})", hex(&e.worker_id))).unwrap_or_default();
    let Some(died_ev) = died.into_iter().max_by_key(|e| e.time_us) else {
        r.summary = match created.last() {
            Some(c) if rec.live() => format!("actor {} ({class}) is alive{worker}, created at {}", hex(&id), local_time(c.time_us)),
            Some(c) => format!("actor {} ({class}) was created{worker} at {}; the cluster stopped before it ended", hex(&id), local_time(c.time_us)),
            None => format!("actor {}: no creation is recorded (its constructor may not have run yet, or failed: see its creation task)", hex(&id)),
        };
        r.chain = created;
        return Ok(());
    };
    let d = actor(&died_ev).cloned().unwrap_or_default();
    // Restarts used and left (its owner records them in ACTOR_DIED).
    // Restarts seen in the record (each life is an ACTOR_CREATED), for ends that do not
    // count them (its owner or handles went: restarts do not apply).
    let lives = created.len().saturating_sub(1) as u32;
    let restarts = match (d.restart, d.max_restarts) {
        (_, -1) => format!(" after {} restart(s) (max_restarts -1: it restarts for ever, so this end was not a crash)", d.restart),
        (0, 0) if d.cause != "worker_died" && d.cause != "creation_failed" => {
            if lives > 0 { format!(" after {lives} restart(s)") } else { String::new() }
        }
        (0, 0) => " (max_restarts 0: it was never to restart)".to_string(),
        (used, max) if used as i32 >= max => format!(" after {used} restart(s) of max_restarts {max}: none left"),
        (used, max) => format!(" after {used} restart(s) of max_restarts {max} ({} left, not used: it did not crash)", max - used as i32),
    };
    r.summary = format!("actor {} ({class}){worker} ended at {}{restarts} ({}): {}", hex(&id), local_time(died_ev.time_us), d.cause, d.detail);
    r.effects = rec.effects(&died_ev.id).await?;
    walk(rec, r, died_ev, MAX_CHAIN).await?;
    Ok(())
}

async fn explain_node(rec: &mut Record<'_>, r: &mut Report) -> anyhow::Result<()> {
    let id = r.id.clone();
    let mut stops = rec.of_kind(EventKind::NodeStopped, &id, |e| e.node_id.as_slice()).await?;
    stops.extend(rec.of_kind(EventKind::NodeDied, &id, |e| e.node_id.as_slice()).await?);
    // The first end explains it: a node declared dead may stop itself later, told so.
    if let Some(stop) = stops.into_iter().min_by_key(|e| e.time_us) {
        let reason = node(&stop).map(|n| n.reason.clone()).unwrap_or_default();
        let how = if kind_of(&stop) == EventKind::NodeDied { "was declared dead by the head" } else { "stopped" };
        r.summary = format!("node {} {how} at {}: {reason}", hex(&id), local_time(stop.time_us));
        walk(rec, r, stop, MAX_CHAIN).await?;
        return Ok(());
    }
    let starts = rec.of_kind(EventKind::NodeStarted, &id, |e| e.node_id.as_slice()).await?;
    let started = starts.last().map(|e| format!(" (started at {})", local_time(e.time_us))).unwrap_or_default();
    if rec.live() {
        r.summary = format!("node {}{started} is running", hex(&id));
    } else {
        r.summary = format!(
            "node {}{started} has no recorded stop: its agent was killed or crashed before it could record one",
            hex(&id)
        );
        r.advice = Some("see the head's log in the session's logs/ directory, and `dmesg | grep -i kill`".into());
    }
    r.chain = starts;
    Ok(())
}

async fn explain_job(rec: &mut Record<'_>, r: &mut Report) -> anyhow::Result<()> {
    let id = r.id.clone();
    let ends = rec.of_kind(EventKind::JobFinished, &id, |e| e.job_id.as_slice()).await?;
    if let Some(end) = ends.into_iter().max_by_key(|e| e.time_us) {
        r.summary = format!("job {} finished at {}", hex(&id), local_time(end.time_us));
        walk(rec, r, end, MAX_CHAIN).await?;
        if let Some(x) = r.chain.iter().find_map(exit) {
            r.summary.push_str(&format!("; its driver, pid {}: {}", x.pid, x.detail));
        }
        return Ok(());
    }
    let starts = rec.of_kind(EventKind::JobStarted, &id, |e| e.job_id.as_slice()).await?;
    let driver = starts.last().and_then(job).map(|j| format!(" (driver pid {})", j.pid)).unwrap_or_default();
    r.summary = if rec.live() {
        format!("job {}{driver} is running", hex(&id))
    } else {
        format!("job {}{driver} has no recorded end: the cluster stopped before its driver disconnected", hex(&id))
    };
    r.chain = starts;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Advice

/// One line of advice keyed to the root cause: the first event of `chain` (newest first)
/// that explains the end, and its index. `has_stderr`: the text shows the dying worker's stderr.
fn advise(chain: &[Event], has_stderr: bool) -> Option<(String, usize)> {
    let see_stderr = if has_stderr { "; its stderr is above" } else { "" };
    for (i, ev) in chain.iter().enumerate() {
        let Ok(kind) = EventKind::try_from(ev.kind) else { continue };
        match kind {
            EventKind::TaskFailed => {
                let t = task(ev).cloned().unwrap_or_default();
                let error = first_line(&t.error);
                return Some((
                    match t.error_type.as_str() {
                        "panic" => {
                            let msg = error.strip_prefix("panicked: ").unwrap_or(&error);
                            let next = if t.backtrace.trim().is_empty() {
                                "run with RUST_BACKTRACE=1 to record a backtrace"
                            } else {
                                "see the backtrace above"
                            };
                            format!("the task panicked: {msg}; {next}")
                        }
                        "application" => format!(
                            "the task returned Err: {error}; handle it in the caller, or retry it with .retry_exceptions(true)"
                        ),
                        "infeasible" => {
                            "no node has the resources it asks for: lower the demand or add a node with those resources"
                                .into()
                        }
                        "worker_died" | "" if chain[i + 1..].iter().any(|e| is(e, EventKind::WorkerExited)) => {
                            continue;
                        }
                        "worker_died" => format!(
                            "its worker died, and its node recorded no exit for it ({error}): check the kernel OOM killer: `dmesg | grep -i kill`"
                        ),
                        "dependency_failed" => match first_id(&t.error) {
                            Some(dep) => {
                                format!("an argument failed before the task could run: run `rayr why-died {dep}`")
                            }
                            None => format!("an argument failed before the task could run: {error}"),
                        },
                        "bad_argument" => format!(
                            "an argument could not be decoded ({error}): the caller and the workers must run the same build"
                        ),
                        "worker_start_failed" => format!("rayr could not start a worker for it: {error}"),
                        "job_ended" => {
                            let driver = chain[i + 1..].iter().find(|e| is(e, EventKind::WorkerExited)).and_then(exit).cloned().unwrap_or_default();
                            let how = if driver.exit_type == rayr_proto::WorkerExitType::SystemError as i32 {
                                format!("its driver (pid {}) crashed or was killed", driver.pid)
                            } else {
                                format!("its driver (pid {}) ended", driver.pid)
                            };
                            format!(
                                "{how} before the task did, and the job's tasks ended with it: keep the driver running until it has what it waits for (rayr::get), or give work that must outlive it to a detached actor"
                            )
                        }
                        "store" => format!(
                            "its return value could not be stored ({error}): free objects, or start the node with more --object-store-memory"
                        ),
                        other => format!("the task failed ({other}): {error}"),
                    },
                    i,
                ));
            }
            EventKind::WorkerExited => {
                return exit_advice(&exit(ev).cloned().unwrap_or_default(), see_stderr).map(|a| (a, i));
            }
            EventKind::ObjectLost => {
                let reason = object(ev).map(|o| o.reason.as_str()).unwrap_or_default();
                let owner_exit = chain[i + 1..].iter().find_map(exit);
                if reason.contains("owner") || owner_exit.is_some() {
                    let mut advice = "its owner died, and an owner's objects die with it: keep the ref in a longer-lived owner (the driver) or, later, a detached actor".to_string();
                    if let Some(x) = owner_exit
                        && x.signal == libc::SIGKILL
                    {
                        advice.push_str(
                            "; the owner got a SIGKILL rayr did not send: if you did not send it, check the kernel OOM killer: `dmesg | grep -i kill`",
                        );
                    }
                    return Some((advice, i));
                }
                if chain[i + 1..].iter().any(|e| is(e, EventKind::NodeDied)) || reason.contains("which is gone") {
                    return Some((
                        "its only copy was in the store of a node that died, and it could not be made again (not a task's result, or its task had no retries left): give the task `max_retries` so rayr re-runs it, or read the value (get) onto a live node while it matters".into(),
                        i,
                    ));
                }
                return Some((format!("its value is gone ({reason}): compute it again"), i));
            }
            EventKind::ObjectFreed => {
                return Some((
                    "nothing failed: an object is freed once every reference to it is dropped; hold an ObjectRef for as long as you need the value".into(),
                    i,
                ));
            }
            EventKind::NodeDied => {
                let advice = "the node stopped answering the head: its agent was killed, hung, or cut off from the network; see its node-<id>.log in the session's logs/ directory and `dmesg` on its host".into();
                return Some((advice, i));
            }
            EventKind::NodeStopped => {
                let reason = node(ev).map(|n| n.reason.as_str()).unwrap_or_default();
                let advice = if reason.contains("asked to stop") {
                    "nothing failed: the node was stopped on request (`rayr stop`, or its driver shut down)".into()
                } else {
                    format!("the node stopped: {reason}; see the head's log in the session's logs/ directory")
                };
                return Some((advice, i));
            }
            EventKind::TaskFinished => return None,
            _ => continue,
        }
    }
    None
}

fn exit_advice(x: &WorkerExit, see_stderr: &str) -> Option<String> {
    let kind = WorkerExitType::try_from(x.exit_type).unwrap_or(WorkerExitType::WorkerExitUnspecified);
    let name = rayr_node::pool::signal_name(x.signal);
    Some(match (kind, x.signal) {
        (WorkerExitType::NodeOutOfMemory, _) => format!(
            "the memory monitor killed it because the node ran out of memory (peak RSS {}): use less memory per task, or declare `memory` so fewer run at once",
            human_bytes(x.peak_rss_bytes)
        ),
        (WorkerExitType::IntendedSystemExit, _) => format!("nothing failed: rayr stopped it on purpose ({})", x.detail),
        (WorkerExitType::IntendedUserExit, _) if x.detail.starts_with("driver disconnected") => {
            format!("nothing failed: the driver exited normally ({})", x.detail)
        }
        (_, libc::SIGKILL) => {
            let rss = if x.peak_rss_bytes > 0 {
                format!(" (its peak RSS was {})", human_bytes(x.peak_rss_bytes))
            } else {
                String::new()
            };
            format!("SIGKILL was not sent by rayr: check the kernel OOM killer: `dmesg | grep -i kill`{rss}")
        }
        (_, libc::SIGSEGV | libc::SIGBUS) => format!(
            "it crashed on an invalid memory access ({name}): look at unsafe code and native libraries the task uses{see_stderr}"
        ),
        (_, libc::SIGABRT) => {
            format!("it aborted (a panic with panic = \"abort\", or abort() in native code){see_stderr}")
        }
        (_, sig) if sig != 0 => format!("signal {sig} ({name}) was not sent by rayr: find out which process sent it"),
        (WorkerExitType::UserError, _) | (WorkerExitType::IntendedUserExit, _) => format!(
            "the task called std::process::exit or aborted (exit code {}){see_stderr}; return from the task instead",
            x.exit_code
        ),
        (WorkerExitType::SystemError, _) if x.detail.starts_with("driver") => {
            "the driver crashed or was killed before rayr::shutdown(): see its own output".into()
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Renderings

impl Report {
    /// The first worker exit in the chain: its event and its exit.
    fn stderr(&self) -> Option<(&Event, &WorkerExit)> {
        self.chain.iter().find_map(|e| exit(e).map(|x| (e, x)))
    }

    /// The backtrace of the panic the advice is about.
    fn backtrace(&self) -> Option<&str> {
        let t = task(&self.chain[self.root_cause?])?;
        (t.error_type == "panic" && !t.backtrace.trim().is_empty()).then_some(t.backtrace.as_str())
    }

    /// The last `SHOW_STDERR` stderr lines of that worker.
    fn stderr_tail(&self) -> Vec<String> {
        let Some((_, x)) = self.stderr() else { return Vec::new() };
        x.stderr_tail[x.stderr_tail.len().saturating_sub(SHOW_STDERR)..].to_vec()
    }

    pub(crate) fn json(&self) -> Value {
        let events = |v: &[Event]| Value::Array(v.iter().map(event_json).collect());
        json!({
            "id": hex(&self.id),
            "kind": self.role.noun(),
            "summary": self.summary,
            "chain": events(&self.chain),
            "missing_cause": self.missing_cause.as_ref().map(|c| hex(c)),
            "root_cause": self.root_cause.map(|i| hex(&self.chain[i].id)),
            "retries": events(&self.retries),
            "effects": events(&self.effects),
            "stderr_path": self.stderr().map(|(_, x)| x.stderr_path.clone()).filter(|p| !p.is_empty()),
            "stderr_tail": self.stderr_tail(),
            "task_stdout": self.task_output.as_ref().map(|o| &o.stdout),
            "task_stderr": self.task_output.as_ref().map(|o| &o.stderr),
            "advice": self.advice,
        })
    }

    /// For people: short ids, one screen.
    pub(crate) fn text(&self) -> String {
        let mut out = format!("{}\n", shorten_ids(&self.summary));
        if !self.chain.is_empty() {
            let at_root = self.chain.last().is_some_and(|e| e.cause.is_empty());
            out.push_str(match (self.walked, &self.missing_cause, at_root) {
                (false, _, _) => "\nlatest recorded:\n",
                (true, Some(_), _) => "\ncause chain, newest first, as far as the record goes:\n",
                (true, None, true) => "\ncause chain, newest first, down to the root:\n",
                (true, None, false) => "\ncause chain, newest first:\n",
            });
            let lines: Vec<String> = self.chain.iter().map(|e| format!("  {}", step_line(e, &self.id))).collect();
            push_capped(&mut out, &lines, SHOW_CHAIN, "steps");
            if let Some(c) = &self.missing_cause {
                out.push_str(&format!(
                    "  (cause {} is not in the record: its process may have died before recording it)\n",
                    short_id(c)
                ));
            }
        }
        if !self.retries.is_empty() {
            out.push_str(&format!("\nretries ({}):\n", self.retries.len()));
            let lines: Vec<String> = self.retries.iter().map(retry_line).collect();
            push_capped(&mut out, &lines, SHOW_LIST, "retries");
        }
        if !self.effects.is_empty() {
            out.push_str("\nwhat it took down:\n");
            let lines: Vec<String> = self.effects.iter().map(|e| format!("  {}", step_line(e, &self.id))).collect();
            push_capped(&mut out, &lines, SHOW_LIST, "events");
        }
        if let Some(bt) = self.backtrace() {
            let (frames, total) = user_frames(bt);
            out.push_str(&format!("\nbacktrace ({} of {total} frames; --json has all):\n", frames.len()));
            for line in frames.iter().flatten() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if let Some((ev, x)) = self.stderr().filter(|(_, x)| !x.stderr_path.is_empty() || !x.stderr_tail.is_empty()) {
            let tail = self.stderr_tail();
            let path = if x.stderr_path.is_empty() {
                "its log path was not recorded".to_string()
            } else {
                x.stderr_path.clone()
            };
            let whose = format!("worker {} (pid {})", short_id(&ev.worker_id), x.pid);
            if tail.is_empty() {
                out.push_str(&format!("\nstderr of {whose}: empty ({path})\n"));
            } else {
                out.push_str(&format!("\nstderr of {whose}, last {} line(s) of {path}:\n", tail.len()));
                for line in &tail {
                    out.push_str(&format!("  | {}\n", clip(line.clone(), 200)));
                }
            }
        }
        if let Some(o) = &self.task_output {
            for (name, lines, path) in [("stdout", &o.stdout, &o.stdout_path), ("stderr", &o.stderr, &o.stderr_path)] {
                if !lines.is_empty() {
                    out.push_str(&format!("\nwhat the failed attempt wrote to {name} ({} line(s) of {path}; --json has them all):\n", lines.len()));
                    let shown: Vec<String> = lines.iter().map(|l| format!("  | {}", clip(l.clone(), 200))).collect();
                    push_capped(&mut out, &shown, SHOW_LIST, "lines");
                }
            }
        }
        if let Some(a) = &self.advice {
            out.push_str(&format!("\nadvice: {}\n", shorten_ids(a)));
        }
        out
    }
}

/// Appends `lines`, keeping the first and last few when there are more than `max`.
fn push_capped(out: &mut String, lines: &[String], max: usize, noun: &str) {
    if lines.len() <= max {
        lines.iter().for_each(|l| out.push_str(&format!("{l}\n")));
        return;
    }
    let tail = 2;
    let head = max - tail - 1;
    lines[..head].iter().for_each(|l| out.push_str(&format!("{l}\n")));
    out.push_str(&format!("  … {} more {noun} (--json has all)\n", lines.len() - head - tail));
    lines[lines.len() - tail..].iter().for_each(|l| out.push_str(&format!("{l}\n")));
}

/// `20:01:02.123  worker_exited   node=aaaaaa…000001  SYSTEM_ERROR  signal=9 (SIGKILL)  peak_rss=12.0 MiB  pid=4242`
/// Ids equal to `subject` are left out: the whole report is about it.
fn step_line(ev: &Event, subject: &[u8]) -> String {
    let mut parts = vec![clock(ev.time_us), format!("{:<14}", kind_name(ev.kind))];
    for (name, id) in
        [("task", &ev.task_id), ("object", &ev.object_id), ("worker", &ev.worker_id), ("node", &ev.node_id)]
    {
        if !id.is_empty() && id.as_slice() != subject {
            parts.push(format!("{name}={}", short_id(id)));
        }
    }
    parts.extend(numbers(ev));
    clip(parts.join("  "), 220)
}

/// The typed numbers of an event's detail, for one line.
fn numbers(ev: &Event) -> Vec<String> {
    let mut out = Vec::new();
    let text = |s: &str, max: usize| quote(&clip(shorten_ids(first_line(s).as_str()), max));
    match &ev.detail {
        Some(Detail::Task(t)) => {
            if is(ev, EventKind::TaskSubmitted) {
                if !t.function.is_empty() {
                    out.push(format!("function={}", t.function));
                }
                out.push(format!("max_retries={}", t.max_retries));
            } else if is(ev, EventKind::TaskFailed) || is(ev, EventKind::TaskRetried) {
                out.push(format!("attempt={}/{}", t.attempt, t.max_retries));
            } else {
                out.push(format!("attempt={}", t.attempt));
            }
            if t.r#final {
                out.push("final".into());
            }
            if !t.error_type.is_empty() {
                out.push(t.error_type.clone());
            }
            if !t.error.is_empty() {
                out.push(format!("error={}", text(&t.error, 100)));
            }
            if !t.reason.is_empty() {
                out.push(format!("reason={}", text(&t.reason, 100)));
            }
            if t.pid != 0 {
                out.push(format!("pid={}", t.pid));
            }
        }
        Some(Detail::WorkerExit(x)) => {
            let kind = WorkerExitType::try_from(x.exit_type).map(|k| k.as_str_name()).unwrap_or("?");
            out.push(kind.to_string());
            if x.signal != 0 {
                out.push(format!("signal={} ({})", x.signal, rayr_node::pool::signal_name(x.signal)));
            } else {
                out.push(format!("exit_code={}", x.exit_code));
                // Without a signal the numbers do not say it all (a driver's goodbye, say).
                out.push(format!("detail={}", text(&x.detail, 80)));
            }
            if x.peak_rss_bytes > 0 {
                out.push(format!("peak_rss={}", human_bytes(x.peak_rss_bytes)));
            }
            if x.pid != 0 {
                out.push(format!("pid={}", x.pid));
            }
        }
        Some(Detail::WorkerStart(s)) => {
            out.push(format!("pid={}", s.pid));
            if s.is_driver {
                out.push("driver".into());
            }
            if !s.binary.is_empty() {
                out.push(format!("binary={}", basename(&s.binary)));
            }
        }
        Some(Detail::Object(o)) => {
            if o.size > 0 {
                out.push(format!("size={}", human_bytes(o.size)));
            }
            if !o.location.is_empty() {
                out.push(format!("location={}", o.location));
            }
            if !o.peer.is_empty() {
                out.push(format!("peer={}", short_id(&o.peer)));
            }
            if !o.reason.is_empty() {
                out.push(format!("reason={}", text(&o.reason, 100)));
            }
        }
        Some(Detail::Node(n)) => {
            if !n.address.is_empty() {
                out.push(format!("address={}", n.address));
            }
            if !n.reason.is_empty() {
                out.push(format!("reason={}", text(&n.reason, 100)));
            }
        }
        Some(Detail::Job(j)) => {
            if j.pid != 0 {
                out.push(format!("pid={}", j.pid));
            }
            if j.exit_code != 0 {
                out.push(format!("exit_code={}", j.exit_code));
            }
            if !j.binary.is_empty() {
                out.push(format!("binary={}", basename(&j.binary)));
            }
        }
        Some(Detail::Actor(a)) => {
            if !a.name.is_empty() {
                out.push(format!("name={}", a.name));
            }
            if !a.class.is_empty() {
                out.push(format!("class={}", a.class));
            }
            if a.detached {
                out.push("detached".into());
            }
            if !a.cause.is_empty() {
                out.push(a.cause.clone());
            }
            if !a.detail.is_empty() {
                out.push(format!("detail={}", text(&a.detail, 100)));
            }
            if a.pid != 0 {
                out.push(format!("pid={}", a.pid));
            }
        }
        None => {}
    }
    out
}

/// `  20:01:02.123  attempt 1/3 after: worker c1c1c1…000001 died: pid 4242 killed by signal 9 …`
fn retry_line(ev: &Event) -> String {
    let t = task(ev).cloned().unwrap_or_default();
    let reason = clip(shorten_ids(&first_line(&t.reason)), 150);
    format!("  {}  attempt {}/{} after: {reason}", clock(ev.time_us), t.attempt, t.max_retries)
}

/// The frames of a backtrace in the user's code (at most `SHOW_BACKTRACE_FRAMES`, each
/// with its `at` line), and how many frames there were. A frame is the user's when its
/// source is neither the standard library, a registry or git dependency, nor rayr itself.
fn user_frames(bt: &str) -> (Vec<Vec<String>>, usize) {
    let mut frames: Vec<Vec<String>> = Vec::new();
    for line in bt.lines() {
        let t = line.trim_start();
        let is_header = t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_header || frames.is_empty() {
            frames.push(vec![line.trim_end().to_string()]);
        } else if let Some(f) = frames.last_mut() {
            f.push(line.trim_end().to_string());
        }
    }
    let total = frames.len();
    const NOT_USER_SOURCE: [&str; 8] = [
        "/rustc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/runtime/rayr/src/",
        "/library/std/",
        "nptl/",
        "sysdeps/",
        "csu/",
    ];
    const NOT_USER_SYMBOL: [&str; 11] = [
        "std::",
        "core::",
        "alloc::",
        "rayr::",
        "<std::",
        "<core::",
        "<alloc::",
        "start_thread",
        "clone",
        "__libc",
        "_start",
    ];
    let is_user = |f: &Vec<String>| {
        let symbol = f[0].trim_start().split_once(": ").map(|(_, s)| s).unwrap_or(&f[0]);
        let at = f.iter().skip(1).find_map(|l| l.trim_start().strip_prefix("at "));
        at.is_some_and(|at| !NOT_USER_SOURCE.iter().any(|p| at.contains(p)))
            && !NOT_USER_SYMBOL.iter().any(|p| symbol.starts_with(p))
            && !symbol.contains("__rayr_")
    };
    let user: Vec<Vec<String>> = frames.iter().filter(|f| is_user(f)).take(SHOW_BACKTRACE_FRAMES).cloned().collect();
    if user.is_empty() { (frames.into_iter().take(SHOW_BACKTRACE_FRAMES).collect(), total) } else { (user, total) }
}

// ---------------------------------------------------------------------------------------
// An id nobody knows

/// The views searched for ids close to an unknown one, and the filter key of each.
const VIEWS: [(&str, &str); 5] = [
    ("tasks", "task_id"),
    ("objects", "object_id"),
    ("workers", "worker_id"),
    ("nodes", "node_id"),
    ("jobs", "job_id"),
];
/// Rows looked at per view and probe.
const NEAR_ROWS: u32 = 1000;

/// The error for an id no event names, listing known ids that look like it (a typo, a
/// digit left off), if any.
async fn unknown_id(cluster: &mut Cluster, pattern: &str) -> anyhow::Error {
    let plain = HeadError::UnknownId { pattern: pattern.trim().to_string() }.to_string();
    let near = close_matches(cluster, pattern).await.unwrap_or_default();
    if near.is_empty() {
        return anyhow!(plain);
    }
    anyhow!("no id in this session matches `{}`; the closest known ids are:\n{}", pattern.trim(), near.join("\n"))
}

async fn close_matches(cluster: &mut Cluster, pattern: &str) -> anyhow::Result<Vec<String>> {
    let text = IdPattern::parse(pattern).map_err(|e| anyhow!(e))?.text();
    let (head, tail) = text.split_once('…').unwrap_or((&text, ""));
    // Shorter patterns that still say something: the same process (ids share their first
    // 16 digits), half the digits, the same ending.
    let mut probes: Vec<String> = Vec::new();
    for n in [head.len().saturating_sub(1).min(16), head.len() / 2] {
        if n >= 4 {
            probes.push(head[..n].to_string());
        }
    }
    if !tail.is_empty() && head.len() >= 4 {
        probes.push(head.to_string());
    }
    // Ids end in their process's salt; the end of a full id alone finds its siblings.
    let ending = if tail.is_empty() && head.len() >= 24 { &head[head.len() - 8..] } else { tail };
    if ending.len() >= 4 {
        probes.push(format!("..{ending}"));
    }
    probes.dedup();
    let mut found: Vec<(usize, String)> = Vec::new();
    for probe in &probes {
        for (entity, key) in VIEWS {
            let req = ListRequest {
                entity: entity.into(),
                filters: vec![Filter { key: key.into(), value: probe.clone() }],
                offset: 0,
                limit: NEAR_ROWS,
            };
            let rows = cluster.list_page(req).await?;
            let mut candidates: Vec<(Vec<u8>, String)> = Vec::new();
            candidates.extend(
                rows.tasks
                    .iter()
                    .map(|t| (t.task_id.clone(), format!("task    {} ({}, {})", hex(&t.task_id), t.function, t.state))),
            );
            candidates.extend(
                rows.objects
                    .iter()
                    .map(|o| (o.object_id.clone(), format!("object  {} ({})", hex(&o.object_id), o.state))),
            );
            candidates.extend(
                rows.workers.iter().map(|w| {
                    (w.worker_id.clone(), format!("worker  {} (pid {}, {})", hex(&w.worker_id), w.pid, w.state))
                }),
            );
            candidates.extend(
                rows.nodes
                    .iter()
                    .map(|n| (n.node_id.clone(), format!("node    {} ({}, {})", hex(&n.node_id), n.address, n.state))),
            );
            candidates.extend(
                rows.jobs.iter().map(|j| (j.job_id.clone(), format!("job     {} ({})", hex(&j.job_id), j.state))),
            );
            for (id, line) in candidates {
                let score = likeness(&hex(&id), head, tail);
                if score * 4 >= (head.len() + tail.len()) * 3 && !found.iter().any(|(_, l)| *l == line) {
                    found.push((score, line));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().take(SHOW_LIST).map(|(_, l)| format!("  {l}")).collect())
}

/// How many digits of `id` agree with the pattern: `head` from the start, `tail` from the end.
fn likeness(id: &str, head: &str, tail: &str) -> usize {
    let from_start = id.bytes().zip(head.bytes()).filter(|(a, b)| a == b).count();
    let from_end = id.bytes().rev().zip(tail.bytes().rev()).filter(|(a, b)| a == b).count();
    from_start + from_end
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn is(ev: &Event, kind: EventKind) -> bool {
    ev.kind == kind as i32
}

fn task(ev: &Event) -> Option<&TaskDetail> {
    match &ev.detail {
        Some(Detail::Task(t)) => Some(t),
        _ => None,
    }
}

fn exit(ev: &Event) -> Option<&WorkerExit> {
    match &ev.detail {
        Some(Detail::WorkerExit(x)) if is(ev, EventKind::WorkerExited) => Some(x),
        _ => None,
    }
}

fn start(ev: &Event) -> Option<&WorkerStart> {
    match &ev.detail {
        Some(Detail::WorkerStart(s)) => Some(s),
        _ => None,
    }
}

fn object(ev: &Event) -> Option<&ObjectDetail> {
    match &ev.detail {
        Some(Detail::Object(o)) => Some(o),
        _ => None,
    }
}

fn kind_of(ev: &Event) -> EventKind {
    EventKind::try_from(ev.kind).unwrap_or(EventKind::Unspecified)
}

fn actor(ev: &Event) -> Option<&rayr_proto::ActorDetail> {
    match &ev.detail {
        Some(Detail::Actor(a)) => Some(a),
        _ => None,
    }
}

fn node(ev: &Event) -> Option<&NodeDetail> {
    match &ev.detail {
        Some(Detail::Node(n)) => Some(n),
        _ => None,
    }
}

fn job(ev: &Event) -> Option<&JobDetail> {
    match &ev.detail {
        Some(Detail::Job(j)) => Some(j),
        _ => None,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Local time of day with milliseconds: chain steps are seconds apart, not days.
fn clock(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(ts) => ts.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%H:%M:%S%.3f").to_string(),
        Err(_) => us.to_string(),
    }
}

/// The first 32-digit id in `text`, in full hex.
fn first_id(text: &str) -> Option<String> {
    hex_ids(text).into_iter().next().map(|(a, b)| text[a..b].to_string())
}

/// Byte ranges of the 32-digit hex ids in `text` (whole words only).
fn hex_ids(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - i == 32 && (j == b.len() || !b[j].is_ascii_alphanumeric()) {
                out.push((i, j));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// `text` with every full 32-digit id replaced by its short form.
fn shorten_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (a, b) in hex_ids(text) {
        out.push_str(&text[at..a]);
        match parse_hex(&text[a..b]) {
            Some(id) => out.push_str(&short_id(&id)),
            None => out.push_str(&text[a..b]),
        }
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_head::EventIndex;
    use rayr_logs::{EventLogWriter, Session};

    fn id(process: u8, n: u64) -> Vec<u8> {
        let mut v = vec![process; 8];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
    fn node_id() -> Vec<u8> {
        id(0xaa, 1)
    }
    fn driver() -> Vec<u8> {
        id(0xd1, 1)
    }
    fn task_id() -> Vec<u8> {
        id(0xd1, 100)
    }
    fn w1() -> Vec<u8> {
        id(0xc1, 1)
    }
    fn w2() -> Vec<u8> {
        id(0xc2, 1)
    }
    fn w3() -> Vec<u8> {
        id(0xc3, 1)
    }
    fn obj() -> Vec<u8> {
        id(0xc3, 50)
    }
    fn eid(n: u64) -> Vec<u8> {
        id(0xee, n)
    }

    /// Event `n` (its id is `eid(n)`, its time n ms after T0), caused by event `cause` (0: none).
    fn ev(n: u64, kind: EventKind, cause: u64, detail: Option<Detail>, set: impl FnOnce(&mut Event)) -> Event {
        let mut e = Event {
            id: eid(n),
            time_us: 1_767_225_600_000_000 + n as i64 * 1000,
            node_id: node_id(),
            source_worker: driver(),
            kind: kind as i32,
            cause: if cause == 0 { Vec::new() } else { eid(cause) },
            job_id: id(0xbb, 1),
            detail,
            ..Default::default()
        };
        set(&mut e);
        e
    }

    fn task_detail(attempt: u32, set: impl FnOnce(&mut TaskDetail)) -> Option<Detail> {
        let mut t = TaskDetail { attempt, max_retries: 1, ..Default::default() };
        set(&mut t);
        Some(Detail::Task(t))
    }

    fn sigkill(pid: u32, stderr_lines: usize) -> Option<Detail> {
        Some(Detail::WorkerExit(WorkerExit {
            exit_type: WorkerExitType::SystemError as i32,
            exit_code: -1,
            signal: 9,
            detail: "killed by signal 9 (SIGKILL), which rayr did not send: another process or the kernel OOM killer did (check `dmesg`)".into(),
            peak_rss_bytes: 50 << 20,
            stderr_tail: (1..=stderr_lines).map(|i| format!("stderr line {i} of pid {pid}")).collect(),
            pid,
            stderr_path: format!("/tmp/rayr/logs/worker-{pid}.err"),
        }))
    }

    fn started(pid: u32) -> Option<Detail> {
        Some(Detail::WorkerStart(WorkerStart { pid, binary: "/bin/demo".into(), ..Default::default() }))
    }

    /// A task retried after its worker was SIGKILLed, whose retry's worker was SIGKILLed too
    /// (final: worker_died); an object lost because its owner died; a task that finished
    /// after a panic; a task that panicked for good; an object freed.
    fn record() -> Vec<Event> {
        let w = |e: &mut Event, worker: Vec<u8>| {
            e.source_worker = node_id();
            e.worker_id = worker;
        };
        let on_task = |e: &mut Event, worker: Option<Vec<u8>>| {
            e.task_id = task_id();
            e.worker_id = worker.unwrap_or_default();
        };
        let died = |pid: u32| format!("pid {pid} killed by signal 9 (SIGKILL), which rayr did not send");
        vec![
            ev(1, EventKind::WorkerStarted, 0, started(101), |e| w(e, w1())),
            ev(2, EventKind::WorkerStarted, 0, started(102), |e| w(e, w2())),
            ev(3, EventKind::TaskSubmitted, 0, task_detail(0, |t| t.function = "demo::kill_self".into()), |e| {
                e.task_id = task_id();
                e.object_id = id(0xd1, 101);
            }),
            ev(4, EventKind::TaskScheduled, 3, task_detail(0, |_| {}), |e| on_task(e, Some(w1()))),
            ev(5, EventKind::TaskStarted, 4, task_detail(0, |t| t.pid = 101), |e| on_task(e, Some(w1()))),
            ev(6, EventKind::WorkerExited, 1, sigkill(101, 3), |e| w(e, w1())),
            ev(
                7,
                EventKind::TaskRetried,
                6,
                task_detail(1, |t| t.reason = format!("worker {} died: {}", hex(&w1()), died(101))),
                |e| on_task(e, None),
            ),
            ev(8, EventKind::TaskScheduled, 7, task_detail(1, |_| {}), |e| on_task(e, Some(w2()))),
            ev(9, EventKind::TaskStarted, 8, task_detail(1, |t| t.pid = 102), |e| on_task(e, Some(w2()))),
            ev(10, EventKind::WorkerExited, 2, sigkill(102, 12), |e| w(e, w2())),
            ev(
                11,
                EventKind::TaskFailed,
                10,
                task_detail(1, |t| {
                    t.function = "demo::kill_self".into();
                    t.r#final = true;
                    t.error_type = "worker_died".into();
                    t.error = format!("worker {} died: {}; no retries left", hex(&w2()), died(102));
                }),
                |e| on_task(e, Some(w2())),
            ),
            // The owner of an object dies: the agent records the loss, and so does the reader.
            ev(20, EventKind::WorkerStarted, 0, started(103), |e| w(e, w3())),
            ev(
                21,
                EventKind::ObjectCreated,
                0,
                Some(Detail::Object(ObjectDetail { size: 1 << 20, location: "shm".into(), ..Default::default() })),
                |e| {
                    e.object_id = obj();
                    e.worker_id = w3();
                    e.source_worker = w3();
                },
            ),
            ev(22, EventKind::WorkerExited, 20, sigkill(103, 0), |e| w(e, w3())),
            ev(
                23,
                EventKind::ObjectLost,
                22,
                Some(Detail::Object(ObjectDetail {
                    size: 1 << 20,
                    location: "shm".into(),
                    reason: format!("its owner, worker {}, died: killed by signal 9 (SIGKILL)", hex(&w3())),
                    ..Default::default()
                })),
                |e| {
                    e.object_id = obj();
                    e.worker_id = w3();
                    e.source_worker = node_id();
                },
            ),
            ev(
                24,
                EventKind::ObjectLost,
                22,
                Some(Detail::Object(ObjectDetail {
                    reason: format!("its owner, worker {}, died: pid 103 killed by signal 9 (SIGKILL)", hex(&w3())),
                    ..Default::default()
                })),
                |e| {
                    e.object_id = obj();
                    e.worker_id = w3();
                },
            ),
            // A task that panicked once, then finished; one that panicked for good.
            ev(30, EventKind::TaskSubmitted, 0, task_detail(0, |t| t.function = "demo::flaky".into()), |e| {
                e.task_id = id(0xd1, 200)
            }),
            ev(
                31,
                EventKind::TaskFailed,
                30,
                task_detail(0, |t| {
                    t.error_type = "panic".into();
                    t.error = "panicked: flaky (at src/main.rs:9:5)".into();
                }),
                |e| e.task_id = id(0xd1, 200),
            ),
            ev(
                32,
                EventKind::TaskRetried,
                31,
                task_detail(1, |t| t.reason = "panic in attempt 0: panicked: flaky".into()),
                |e| e.task_id = id(0xd1, 200),
            ),
            ev(33, EventKind::TaskFinished, 32, task_detail(1, |_| {}), |e| e.task_id = id(0xd1, 200)),
            ev(40, EventKind::TaskSubmitted, 0, task_detail(0, |t| t.function = "demo::boom".into()), |e| {
                e.task_id = id(0xd1, 300)
            }),
            ev(
                41,
                EventKind::TaskFailed,
                40,
                task_detail(0, |t| {
                    t.r#final = true;
                    t.error_type = "panic".into();
                    t.error = "panicked: boom (at src/main.rs:3:5)".into();
                    t.backtrace = "   0: std::panicking::begin_panic\n             at /rustc/x/library/std/src/panicking.rs:1\n   1: demo::boom\n             at ./src/main.rs:3:5\n   2: rayr::exec::run_task\n             at ./runtime/rayr/src/exec.rs:1:1".into();
                }),
                |e| e.task_id = id(0xd1, 300),
            ),
            ev(
                50,
                EventKind::ObjectFreed,
                0,
                Some(Detail::Object(ObjectDetail {
                    reason: "its owner dropped the last reference".into(),
                    ..Default::default()
                })),
                |e| e.object_id = id(0xd1, 500),
            ),
        ]
    }

    /// A session directory holding `record()`, removed when dropped.
    struct TestSession(Session);
    impl Drop for TestSession {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.dir.parent().unwrap());
        }
    }

    fn session() -> TestSession {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir().join(format!("rwd-{}-{n}", std::process::id()));
        let session = Session::create(&tmp).unwrap();
        let mut frames = Vec::new();
        for e in record() {
            rayr_logs::encode_single_run_frame(&e, &mut frames);
        }
        EventLogWriter::open(&session.event_log("aa")).unwrap().append(&frames).unwrap();
        TestSession(session)
    }

    fn offline(s: &TestSession) -> Cluster {
        let index = EventIndex::open_in_memory_for(&s.0).unwrap();
        index.catch_up(&s.0).unwrap();
        Cluster::Offline(index)
    }

    fn kinds(r: &Report) -> Vec<String> {
        r.chain.iter().map(|e| kind_name(e.kind)).collect()
    }

    #[tokio::test]
    async fn task_retried_after_sigkill_then_failed_for_good() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&task_id())).await.unwrap();
        assert_eq!(r.role, Role::Task);
        assert_eq!(kinds(&r), ["task_failed", "worker_exited", "worker_started"]);
        assert_eq!(r.chain[1].worker_id, w2(), "the final failure is the second worker's death");
        assert!(r.missing_cause.is_none());
        assert_eq!(r.retries.len(), 1);
        assert!(task(&r.retries[0]).unwrap().reason.contains("signal 9"));
        assert!(r.summary.contains("failed for good") && r.summary.contains("demo::kill_self"), "{}", r.summary);
        assert!(r.summary.contains("after 1 retry") && r.summary.contains("worker_died"), "{}", r.summary);
        let advice = r.advice.clone().unwrap();
        assert!(advice.contains("dmesg | grep -i kill") && advice.contains("50.0 MiB"), "{advice}");

        let text = r.text();
        assert!(
            text.contains("retries (1):") && text.contains("attempt 1/1 after: worker c1c1c1…000001 died"),
            "{text}"
        );
        assert!(text.contains("signal=9 (SIGKILL)") && text.contains("peak_rss=50.0 MiB"), "{text}");
        assert!(text.contains("stderr line 12 of pid 102") && !text.contains("stderr line 2 of pid 102\n"), "{text}");
        assert!(text.contains("/tmp/rayr/logs/worker-102.err"), "{text}");
        assert!(!text.contains(&hex(&task_id())), "text keeps ids short: {text}");
        assert!(text.lines().count() < 40, "one screen: {text}");

        let j = r.json();
        assert_eq!(j["id"], hex(&task_id()));
        assert_eq!(j["kind"], "task");
        assert_eq!(j["chain"][0]["kind"], "task_failed");
        assert_eq!(j["chain"][1]["worker_id"], hex(&w2()));
        assert_eq!(j["chain"][1]["detail"]["signal"], 9);
        assert_eq!(j["retries"][0]["detail"]["attempt"], 1);
        assert_eq!(j["stderr_tail"].as_array().unwrap().len(), 10);
        assert_eq!(j["stderr_tail"][9], "stderr line 12 of pid 102");
        assert_eq!(j["advice"], advice);
        assert!(j["summary"].as_str().unwrap().contains(&hex(&w2())), "JSON keeps ids whole");

        // The short form and a prefix name the same task.
        let short = explain(&mut cluster, &short_id(&task_id())).await.unwrap();
        assert_eq!(short.json(), j);
    }

    #[tokio::test]
    async fn object_lost_because_its_owner_died() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&obj())).await.unwrap();
        assert_eq!(r.role, Role::Object);
        assert_eq!(kinds(&r), ["object_lost", "worker_exited", "worker_started"]);
        assert_eq!(r.chain[0].id, eid(23), "the agent's record of the loss, which says where it was");
        assert!(r.summary.contains("was lost at") && r.summary.contains("its owner"), "{}", r.summary);
        let advice = r.advice.clone().unwrap();
        assert!(advice.contains("longer-lived owner (the driver)") && advice.contains("detached actor"), "{advice}");
        assert!(advice.contains("dmesg"), "the owner's SIGKILL is worth a look too: {advice}");
        let text = r.text();
        assert!(text.contains("stderr of worker c3c3c3…000001 (pid 103): empty"), "{text}");
        assert_eq!(r.json()["chain"][1]["worker_id"], hex(&w3()));
    }

    #[tokio::test]
    async fn worker_ids_show_the_exit_and_what_it_took_down() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&w2())).await.unwrap();
        assert_eq!(r.role, Role::Worker);
        assert_eq!(kinds(&r), ["worker_exited", "worker_started"]);
        assert!(r.summary.starts_with(&format!("worker {} (pid 102) died at", hex(&w2()))), "{}", r.summary);
        assert_eq!(r.effects.len(), 1);
        assert_eq!(r.effects[0].id, eid(11));
        assert!(r.advice.unwrap().contains("dmesg | grep -i kill"));
        // The owner's exit took the object with it (two records of the loss).
        let r = explain(&mut cluster, &hex(&w3())).await.unwrap();
        assert_eq!(r.effects.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [eid(23), eid(24)]);
        assert!(r.text().contains("what it took down:"));
    }

    #[tokio::test]
    async fn finished_tasks_panics_and_freed_objects() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&id(0xd1, 200))).await.unwrap();
        assert!(
            r.summary.contains("finished successfully at") && r.summary.contains("(attempt 1) after 1 retry"),
            "{}",
            r.summary
        );
        assert_eq!(r.advice, None);
        assert_eq!(r.retries.len(), 1);

        let r = explain(&mut cluster, &hex(&id(0xd1, 300))).await.unwrap();
        let advice = r.advice.clone().unwrap();
        assert_eq!(advice, "the task panicked: boom (at src/main.rs:3:5); see the backtrace above");
        let text = r.text();
        assert!(text.contains("backtrace (1 of 3 frames") && text.contains("1: demo::boom"), "{text}");
        assert!(!text.contains("std::panicking"), "{text}");

        let r = explain(&mut cluster, &hex(&id(0xd1, 500))).await.unwrap();
        assert!(
            r.summary.contains("did not die: it was freed at") && r.summary.contains("last reference"),
            "{}",
            r.summary
        );
        assert!(r.advice.unwrap().starts_with("nothing failed"));

        // A task's return object that never got a value is explained through its task.
        let r = explain(&mut cluster, &hex(&id(0xd1, 101))).await.unwrap();
        assert_eq!(r.role, Role::Object);
        assert!(
            r.summary.contains("is the return value of task") && r.summary.contains("failed for good"),
            "{}",
            r.summary
        );
        assert_eq!(kinds(&r)[0], "task_failed");
    }

    #[tokio::test]
    async fn unknown_ids_name_the_closest_known_ones() {
        let s = session();
        let mut cluster = offline(&s);
        let mut typo = hex(&task_id());
        typo.replace_range(31..32, "f"); // ...64 → ...6f
        let err = explain(&mut cluster, &typo).await.unwrap_err().to_string();
        assert!(err.contains("no id in this session matches") && err.contains("closest"), "{err}");
        assert!(err.contains(&format!("task    {} (demo::kill_self, FAILED)", hex(&task_id()))), "{err}");
        let err = explain(&mut cluster, "0123abcd").await.unwrap_err().to_string();
        assert!(err.contains("no id in this session matches `0123abcd`") && !err.contains("closest"), "{err}");
        let err = explain(&mut cluster, "xyz").await.unwrap_err().to_string();
        assert!(err.contains("is not an id"), "{err}");
        let err = explain(&mut cluster, "ee").await.unwrap_err().to_string();
        assert!(err.contains("matches") && err.contains("give more digits"), "{err}");
    }

    #[tokio::test]
    async fn a_live_head_gives_the_same_answers() {
        let s = session();
        let mut off = offline(&s);
        let head = rayr_head::start_head(s.0.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut live = connect(Some(head.address().to_string())).await.unwrap();
        assert!(matches!(live, Cluster::Live(_)));
        for id in [task_id(), obj(), w2(), id(0xd1, 300), id(0xd1, 101)] {
            let a = explain(&mut off, &hex(&id)).await.unwrap().json();
            let b = explain(&mut live, &short_id(&id)).await.unwrap().json();
            assert_eq!(a, b);
        }
        let mut typo = hex(&task_id());
        typo.replace_range(31..32, "f");
        let err = explain(&mut live, &typo).await.unwrap_err().to_string();
        assert!(err.contains(&hex(&task_id())), "{err}");
        head.shutdown();
    }

    #[test]
    fn ids_in_prose_are_shortened_whole_words_only() {
        let full = hex(&task_id());
        assert_eq!(shorten_ids(&format!("task {full} died")), format!("task {} died", short_id(&task_id())));
        assert_eq!(shorten_ids(&format!("x{full}")), format!("x{full}"));
        assert_eq!(first_id(&format!("argument {full} failed")), Some(full));
    }
}
