//! `rayr why-died ID`: how a task, worker, object, actor, node or job ended, and why.
//!
//! The explanation is [`rayr_explain`]'s: it resolves the id, walks the cause chain, picks
//! the root cause and its advice, and returns a [`Report`]. This module gives it the record
//! to read (a running head over gRPC, or a stopped session's logs through the same
//! `EventIndex`, see [`connect`](crate::connect)), adds the known ids that look like an
//! unknown one, and renders the report:
//!
//! - as text for people: the summary, the cause chain newest first, the retries, what the
//!   end took down, the user frames of a panic's backtrace, the tail of the dying worker's
//!   stderr, what the failed attempt wrote, and the advice; ids short, one screen;
//! - with `--json`, as the report's JSON form (see [`rayr_explain::report`]): everything,
//!   ids in full hex.

use anyhow::anyhow;
use clap::Args;
use rayr_explain::event::task;
use rayr_explain::record::{Record, RecordError, Resolved};
use rayr_explain::report::user_frames;
use rayr_explain::words::first_line;
use rayr_explain::{Entity, ExplainError, Report};
use rayr_head::{ID_PATTERN_METADATA, IdPattern, short_id};
use rayr_logs::{Session, hex, parse_hex};
use rayr_proto::{Event, EventKind, EventsRequest, Filter, ListRequest};

use crate::connect::{Cluster, connect};
use crate::query::{ADDRESS_HELP, LineStyle, clip, clock, emit, event_line, shorten_ids};

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
    emit(&if args.json { format!("{}\n", json(&report)) } else { text(&report) })
}

/// What the text output shows at most of each list, to stay on one screen.
const SHOW_CHAIN: usize = 12;
const SHOW_LIST: usize = 5;
const SHOW_BACKTRACE_FRAMES: usize = 6;

/// The report on what `pattern` names; for an id nobody knows, the error lists known ids
/// that look like it.
pub(crate) async fn explain(cluster: &mut Cluster, pattern: &str) -> anyhow::Result<Report> {
    match rayr_explain::explain(cluster, pattern).await {
        Ok(report) => Ok(report),
        Err(ExplainError::UnknownId { pattern, message }) => Err(unknown_id(cluster, &pattern, message).await),
        Err(ExplainError::Record(e)) => Err(anyhow::Error::from_boxed(e)),
    }
}

/// The report as one JSON value.
pub(crate) fn json(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).expect("a report is plain data")
}

// ---------------------------------------------------------------------------------------
// Reading the record

impl Record for Cluster {
    fn live(&self) -> bool {
        matches!(self, Cluster::Live(_))
    }

    async fn resolve(&mut self, pattern: &str, first: usize) -> Result<Resolved, RecordError> {
        IdPattern::parse(pattern)?;
        match self {
            Cluster::Live(client) => {
                let mut req = tonic::Request::new(EventsRequest::default());
                let value =
                    pattern.trim().replace('…', "..").parse().map_err(|_| format!("`{pattern}` is not an id"))?;
                req.metadata_mut().insert(ID_PATTERN_METADATA, value);
                let reply = match client.events(req).await {
                    Ok(r) => r,
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        return Ok(Resolved::Unknown(s.message().to_string()));
                    }
                    Err(s) => return Err(head_error(s)),
                };
                let id = reply
                    .metadata()
                    .get(ID_PATTERN_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_hex)
                    .ok_or_else(|| {
                        format!("the rayr head did not say which id `{pattern}` names; is it an older version?")
                    })?;
                // The head streams the events naming it after its answer.
                let first = take(reply.into_inner(), first).await?;
                Ok(Resolved::Id { id, first })
            }
            Cluster::Offline(index) => (&*index).resolve(pattern, first).await,
        }
    }

    async fn events_naming(&mut self, id: &[u8], limit: usize) -> Result<Vec<Event>, RecordError> {
        self.query(Some(id), 0, limit).await
    }

    async fn events_of_kind(&mut self, kind: EventKind, limit: usize) -> Result<Vec<Event>, RecordError> {
        self.query(None, kind as i32, limit).await
    }

    async fn session(&mut self) -> Option<Session> {
        match self {
            Cluster::Live(client) => {
                let info = client.cluster_info(rayr_proto::ClusterInfoRequest { quick: true }).await.ok()?.into_inner();
                Some(Session::open(info.session_dir))
            }
            Cluster::Offline(index) => index.session().cloned(),
        }
    }
}

impl Cluster {
    /// Up to `limit` events naming `id` (`None`: any) of `kind` (0: any), in index order.
    async fn query(&mut self, id: Option<&[u8]>, kind: i32, limit: usize) -> Result<Vec<Event>, RecordError> {
        match self {
            Cluster::Live(client) => {
                let req =
                    EventsRequest { id: id.map(<[u8]>::to_vec).unwrap_or_default(), kind, since_us: 0, follow: false };
                take(client.events(req).await.map_err(head_error)?.into_inner(), limit).await
            }
            Cluster::Offline(index) => Ok(index.first_events(id, kind, limit)?),
        }
    }
}

async fn take(mut stream: tonic::Streaming<Event>, limit: usize) -> Result<Vec<Event>, RecordError> {
    let mut out = Vec::new();
    while out.len() < limit {
        match stream.message().await.map_err(head_error)? {
            Some(e) => out.push(e),
            None => break,
        }
    }
    Ok(out)
}

fn head_error(s: tonic::Status) -> RecordError {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => s.message().into(),
        tonic::Code::Unavailable => format!("lost the connection to the rayr head: {}", s.message()).into(),
        _ => format!("the rayr head failed to answer: {}", s.message()).into(),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering for people

/// The report for people: short ids, one screen.
pub(crate) fn text(r: &Report) -> String {
    let mut out = format!("{}\n", shorten_ids(&r.summary));
    if !r.chain.is_empty() {
        let at_root = r.chain.last().is_some_and(|e| e.cause.is_empty());
        out.push_str(match (r.walked, &r.missing_cause, at_root) {
            (false, _, _) => "\nlatest recorded:\n",
            (true, Some(_), _) => "\ncause chain, newest first, as far as the record goes:\n",
            (true, None, true) => "\ncause chain, newest first, down to the root:\n",
            (true, None, false) => "\ncause chain, newest first:\n",
        });
        let lines: Vec<String> = r.chain.iter().map(|e| format!("  {}", step_line(e, &r.id))).collect();
        push_capped(&mut out, &lines, SHOW_CHAIN, "steps");
        if let Some(c) = &r.missing_cause {
            out.push_str(&format!(
                "  (cause {} is not in the record: its process may have died before recording it)\n",
                short_id(c)
            ));
        }
    }
    if !r.retries.is_empty() {
        out.push_str(&format!("\nretries ({}):\n", r.retries.len()));
        let lines: Vec<String> = r.retries.iter().map(retry_line).collect();
        push_capped(&mut out, &lines, SHOW_LIST, "retries");
    }
    if !r.effects.is_empty() {
        out.push_str("\nwhat it took down:\n");
        let lines: Vec<String> = r.effects.iter().map(|e| format!("  {}", step_line(e, &r.id))).collect();
        push_capped(&mut out, &lines, SHOW_LIST, "events");
    }
    if let Some(bt) = r.backtrace() {
        let (frames, total) = user_frames(bt);
        let shown = &frames[..frames.len().min(SHOW_BACKTRACE_FRAMES)];
        out.push_str(&format!("\nbacktrace ({} of {total} frames; --json has all):\n", shown.len()));
        for line in shown.iter().flatten() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some((ev, x)) = r.exit().filter(|(_, x)| !x.stderr_path.is_empty() || !x.stderr_tail.is_empty()) {
        let tail = r.stderr_tail();
        let path =
            if x.stderr_path.is_empty() { "its log path was not recorded".to_string() } else { x.stderr_path.clone() };
        let whose = format!("worker {} (pid {})", short_id(&ev.worker_id), x.pid);
        if tail.is_empty() {
            out.push_str(&format!("\nstderr of {whose}: empty ({path})\n"));
        } else {
            out.push_str(&format!("\nstderr of {whose}, last {} line(s) of {path}:\n", tail.len()));
            for line in tail {
                out.push_str(&format!("  | {}\n", clip(line.clone(), 200)));
            }
        }
    }
    if let Some(o) = &r.task_output {
        for (name, lines, path) in [("stdout", &o.stdout, &o.stdout_path), ("stderr", &o.stderr, &o.stderr_path)] {
            if !lines.is_empty() {
                out.push_str(&format!(
                    "\nwhat the failed attempt wrote to {name} ({} line(s) of {path}; --json has them all):\n",
                    lines.len()
                ));
                let shown: Vec<String> = lines.iter().map(|l| format!("  | {}", clip(l.clone(), 200))).collect();
                push_capped(&mut out, &shown, SHOW_LIST, "lines");
            }
        }
    }
    if let Some(a) = &r.advice {
        out.push_str(&format!("\nadvice: {}\n", shorten_ids(a)));
    }
    out
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

/// `20:01:02.123  worker_exited   node=aaaaaa…000001  signal=9 (SIGKILL)  peak_rss=12.0 MiB  pid=4242  …`:
/// an event as `rayr events` shows it, at the time of day, without what the report
/// already says (the id it is about, the job, the cause: the next line).
fn step_line(ev: &Event, subject: &[u8]) -> String {
    clip(event_line(ev, &LineStyle { clock: true, subject, context: false }), 220)
}

/// `  20:01:02.123  attempt 1/3 after: worker c1c1c1…000001 died: pid 4242 killed by signal 9 …`
fn retry_line(ev: &Event) -> String {
    let t = task(ev).cloned().unwrap_or_default();
    let reason = clip(shorten_ids(first_line(&t.reason)), 150);
    format!("  {}  attempt {}/{} after: {reason}", clock(ev.time_us), t.attempt, t.max_retries)
}

// ---------------------------------------------------------------------------------------
// An id nobody knows

/// Rows looked at per view and probe.
const NEAR_ROWS: u32 = 1000;

/// The error for an id no event names (`message`: the record's words for it), listing
/// known ids that look like it (a typo, a digit left off), if any.
async fn unknown_id(cluster: &mut Cluster, pattern: &str, message: String) -> anyhow::Error {
    let near = close_matches(cluster, pattern).await.unwrap_or_default();
    if near.is_empty() {
        return anyhow!(message);
    }
    anyhow!("no id in this session matches `{pattern}`; the closest known ids are:\n{}", near.join("\n"))
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
        for entity in Entity::ALL {
            let req = ListRequest {
                entity: entity.view().into(),
                filters: vec![Filter { key: entity.id_key().into(), value: probe.clone() }],
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
                rows.actors
                    .iter()
                    .map(|a| (a.actor_id.clone(), format!("actor   {} ({}, {})", hex(&a.actor_id), a.class, a.state))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_explain::sample::{self, boom, obj, task_id, task_return, w2, w3};
    use rayr_head::EventIndex;
    use rayr_logs::EventLogWriter;

    /// A session directory holding the sample record, removed when dropped.
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
        for e in sample::record() {
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

    #[tokio::test]
    async fn task_retried_after_sigkill_then_failed_for_good() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&task_id())).await.unwrap();
        let text = text(&r);
        assert!(
            text.contains("retries (1):") && text.contains("attempt 1/1 after: worker c1c1c1…000001 died"),
            "{text}"
        );
        assert!(text.contains("signal=9 (SIGKILL)") && text.contains("peak_rss=50.0 MiB"), "{text}");
        assert!(text.contains("stderr line 12 of pid 102") && !text.contains("stderr line 2 of pid 102\n"), "{text}");
        assert!(text.contains("/tmp/rayr/logs/worker-102.err"), "{text}");
        assert!(!text.contains(&hex(&task_id())), "text keeps ids short: {text}");
        assert!(text.lines().count() < 40, "one screen: {text}");
        assert!(text.contains("cause chain, newest first, down to the root:"), "{text}");

        // The short form names the same task.
        let short = explain(&mut cluster, &short_id(&task_id())).await.unwrap();
        assert_eq!(json(&short), json(&r));
    }

    #[tokio::test]
    async fn object_lost_because_its_owner_died() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&obj())).await.unwrap();
        let text = text(&r);
        assert!(text.contains("stderr of worker c3c3c3…000001 (pid 103): empty"), "{text}");
    }

    #[tokio::test]
    async fn worker_ids_show_the_exit_and_what_it_took_down() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&w3())).await.unwrap();
        assert!(text(&r).contains("what it took down:"));
    }

    #[tokio::test]
    async fn panics_show_the_users_frames() {
        let s = session();
        let mut cluster = offline(&s);
        let r = explain(&mut cluster, &hex(&boom())).await.unwrap();
        let text = text(&r);
        assert!(text.contains("backtrace (1 of 3 frames") && text.contains("1: demo::boom"), "{text}");
        assert!(!text.contains("std::panicking"), "{text}");
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
        for id in [task_id(), obj(), w2(), boom(), task_return()] {
            let a = json(&explain(&mut off, &hex(&id)).await.unwrap());
            let b = json(&explain(&mut live, &short_id(&id)).await.unwrap());
            assert_eq!(a, b);
        }
        let mut typo = hex(&task_id());
        typo.replace_range(31..32, "f");
        let err = explain(&mut live, &typo).await.unwrap_err().to_string();
        assert!(err.contains(&hex(&task_id())), "{err}");
        let err = explain(&mut live, "0123abcd").await.unwrap_err().to_string();
        assert!(err.contains("no id in this session matches `0123abcd`"), "{err}");
        head.shutdown();
    }

    #[test]
    fn ids_in_prose_are_shortened_whole_words_only() {
        let full = hex(&task_id());
        assert_eq!(shorten_ids(&format!("task {full} died")), format!("task {} died", short_id(&task_id())));
        assert_eq!(shorten_ids(&format!("x{full}")), format!("x{full}"));
    }
}
