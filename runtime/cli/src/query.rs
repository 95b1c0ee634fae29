//! `rayr list`, `rayr summary` and `rayr events`: the state views and the event record,
//! as tables for people and JSON for programs.
//!
//! Everything here is presentation. The facts come from the head's views and event
//! index (`rayr_head`), reached through [`connect`](crate::connect), live or from a
//! stopped session's record; nothing is re-derived here except summary counts.
//!
//! Each row and event detail is described once, as a list of named values
//! ([`rayr_explain::Value`]; an event's in [`rayr_explain::event`], which the dashboard
//! reads too); the table, `--detail`, event lines and `--json` renderings are all read off
//! that list, so a field added there shows up everywhere. `rayr why-died` draws the steps
//! of its chains with the same [`event_line`].

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use anyhow::anyhow;
use clap::Args;
use clap::builder::PossibleValuesParser;
use rayr_explain::event::{self, kind_name};
use rayr_explain::words::{first_line, full_ids, human_bytes, local_time};
use rayr_explain::{Entity, EventJson, Value as V};
use rayr_head::short_id;
use rayr_logs::{hex, parse_hex};
use rayr_proto::{ActorRow, Event, EventKind, Filter, JobRow, NodeRow, ObjectRow, TaskRow, WorkerRow};
use serde_json::{Map, Value, json};

use crate::connect::{EventFilter, connect};

pub(crate) const ADDRESS_HELP: &str = "The head's HOST:PORT [default: $RAYR_ADDRESS, else this host's latest session]";

/// `rayr list tasks|actors|objects|workers|nodes|jobs`
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// What to list.
    #[arg(value_parser = PossibleValuesParser::new(Entity::ALL.map(Entity::view)))]
    pub entity: String,
    /// Only rows whose KEY is VALUE; repeat to require several. Ids match by prefix or by
    /// the short form tables print; `function` by full path or last segments; states in any case.
    #[arg(long = "filter", short = 'f', value_name = "KEY=VALUE", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Every field of every row, ids in full.
    #[arg(long)]
    pub detail: bool,
    /// One JSON array of objects (every field, ids in full hex).
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT", help = ADDRESS_HELP)]
    pub address: Option<String>,
}

/// `rayr summary tasks|actors|objects`
#[derive(Args, Debug, Clone)]
pub struct SummaryArgs {
    /// What to count.
    #[arg(value_parser = ["tasks", "actors", "objects"])]
    pub entity: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT", help = ADDRESS_HELP)]
    pub address: Option<String>,
}

/// `rayr events [--id ID] [--kind KIND] [--since T] [--follow] [--json]`
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Only events naming this id in any role (task, object, worker, node, job, cause, or the
    /// event's own id). A unique prefix or the short form tables print is enough.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Only events of this kind, e.g. task_failed, worker_exited, object_lost.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<EventKind>,
    /// Only events since T: an RFC 3339 time (2026-11-25T20:01:02Z), a local date and time
    /// (2026-11-25 20:01), or a time ago (90s, 10m, 2h, 1d, 1h30m).
    #[arg(long, value_name = "T", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Keep printing new events as they happen (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line (every field, ids in full hex).
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "HOST:PORT", help = ADDRESS_HELP)]
    pub address: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Handlers

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut cluster = connect(args.address.clone()).await?;
    let filters = args.filters.iter().map(|(k, v)| Filter { key: k.clone(), value: v.clone() }).collect();
    let reply = cluster.list_all(&args.entity, filters).await?;
    let out = match Entity::of_view(&args.entity) {
        Some(Entity::Task) => render(reply.tasks, &args),
        Some(Entity::Object) => render(reply.objects, &args),
        Some(Entity::Actor) => render(reply.actors, &args),
        Some(Entity::Worker) => render(reply.workers, &args),
        Some(Entity::Job) => render(reply.jobs, &args),
        Some(Entity::Node) => render(reply.nodes, &args),
        None => return Err(anyhow!("cannot list `{}`", args.entity)), // clap allows only the views
    };
    emit(&out)
}

pub async fn summary(args: SummaryArgs) -> anyhow::Result<()> {
    let mut cluster = connect(args.address.clone()).await?;
    let summary = cluster.summary(&args.entity).await?;
    let out = match args.entity.as_str() {
        "tasks" => summarize_tasks(&summary, args.json),
        "objects" => summarize_objects(&summary, args.json),
        _ => summarize_actors(&summary, args.json),
    };
    emit(&out)
}

pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let mut cluster = connect(args.address.clone()).await?;
    let filter = EventFilter {
        id: args.id.clone(),
        kind: args.kind.map(|k| k as i32).unwrap_or(0),
        since_us: args.since.unwrap_or(0),
        follow: args.follow,
    };
    let mut count = 0u64;
    cluster
        .events(&filter, |ev| {
            count += 1;
            let line = if args.json { event_json(ev).to_string() } else { event_line(ev, &EVENTS) };
            emit(&format!("{line}\n"))
        })
        .await?;
    if count == 0 && !args.json {
        eprintln!("no events match");
    }
    Ok(())
}

/// Writes to stdout. A closed pipe (`rayr events | head`) ends the command quietly, as
/// Unix tools do, instead of panicking or printing an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

// ---------------------------------------------------------------------------------------
// Argument parsers

fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE; for example --filter state=FAILED")),
    }
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::parse_cli(s).ok_or_else(|| {
        // Every kind the schema defines, so the list never goes stale.
        let names: Vec<String> = (1..256).filter_map(|n| EventKind::try_from(n).ok()).map(|k| k.cli_name()).collect();
        format!("`{s}` is not an event kind; valid kinds: {}", names.join(", "))
    })
}

/// `--since`: unix microseconds from an absolute time or a time ago.
pub(crate) fn parse_since(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>()
        && let Ok(zoned) = dt.to_zoned_datetime(jiff::tz::TimeZone::system())
    {
        return Ok(zoned.timestamp().as_microsecond());
    }
    let ago = parse_ago(s).ok_or_else(|| {
        format!("`{s}` is not a time: give an RFC 3339 time (2026-11-25T20:01:02Z), a local date and time (2026-11-25 20:01), or a time ago (90s, 10m, 2h, 1d, 1h30m)")
    })?;
    Ok(rayr_logs::now_us() - ago)
}

/// `90s`, `10m`, `2h`, `1d`, `1h30m`, `500ms` → microseconds.
fn parse_ago(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let us: i64 = match &rest[..unit_len] {
            "ms" => 1_000,
            "s" | "sec" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(us)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

// ---------------------------------------------------------------------------------------
// Values and their renderings

/// How a field's value reads for people (its JSON form is the value's own, see
/// [`rayr_explain::Value`]).
trait ForPeople {
    /// `short` abbreviates ids (also inside text) and keeps only a text's first line.
    fn text(&self, short: bool) -> String;
}

impl ForPeople for V {
    fn text(&self, short: bool) -> String {
        match self {
            V::Id(id) if id.is_empty() => "-".into(),
            V::Id(id) if short => short_id(id),
            V::Id(id) => hex(id),
            V::Text(s) if s.is_empty() => "-".into(),
            V::Text(s) if short => shorten_ids(first_line(s)),
            V::Text(s) => s.clone(),
            V::Num(n) => n.to_string(),
            V::Pid(0) => "-".into(),
            V::Pid(p) => p.to_string(),
            V::Flag(b) => b.to_string(),
            V::Bytes(n) => human_bytes(*n),
            V::Time(0) => "-".into(),
            V::Time(t) => local_time(*t),
            V::Signal(0) => "-".into(),
            V::Signal(s) => format!("{s} ({})", rayr_explain::signal::name(*s)),
            V::Lines(l) if short => format!("{} lines", l.len()),
            V::Lines(l) => l.iter().map(|line| format!("\n    {line}")).collect(),
            V::Map(m) if m.is_empty() => "-".into(),
            V::Labels(m) if m.is_empty() => "-".into(),
            V::Labels(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            V::Map(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        }
    }
}

fn to_object(fields: &[(&'static str, V)]) -> Value {
    Value::Object(fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>())
}

/// Cuts a table cell to `max` characters.
pub(crate) fn clip(s: String, max: usize) -> String {
    if s.chars().count() <= max { s } else { s.chars().take(max - 1).chain(['…']).collect() }
}

/// `text` with every full id in it replaced by its short form.
pub(crate) fn shorten_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for ids in full_ids(text) {
        out.push_str(&text[at..ids.start]);
        match parse_hex(&text[ids.clone()]) {
            Some(id) => out.push_str(&short_id(&id)),
            None => out.push_str(&text[ids.clone()]),
        }
        at = ids.end;
    }
    out.push_str(&text[at..]);
    out
}

// ---------------------------------------------------------------------------------------
// Rows

/// A row of a view, as this command shows it.
trait Listed {
    /// Singular noun for the count line.
    const NOUN: &'static str;
    /// Fields shown as table columns, in order (every field shows in --detail and --json).
    const COLUMNS: &'static [&'static str];
    fn key(&self) -> &[u8];
    /// When it began, for ordering rows oldest first.
    fn time(&self) -> i64;
    fn fields(&self) -> Vec<(&'static str, V)>;
}

impl Listed for TaskRow {
    const NOUN: &'static str = "task";
    const COLUMNS: &'static [&'static str] =
        &["task_id", "function", "state", "attempt", "worker_id", "node_id", "pid", "error_type", "error"];
    fn key(&self) -> &[u8] {
        &self.task_id
    }
    fn time(&self) -> i64 {
        self.submitted_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("task_id", V::Id(self.task_id.clone())),
            ("function", V::Text(self.function.clone())),
            ("state", V::Text(self.state.clone())),
            ("attempt", V::Num(self.attempt.into())),
            ("worker_id", V::Id(self.worker_id.clone())),
            ("node_id", V::Id(self.node_id.clone())),
            ("pid", V::Pid(self.pid)),
            ("error_type", V::Text(self.error_type.clone())),
            ("error", V::Text(self.error.clone())),
            ("owner", V::Id(self.owner.clone())),
            ("job_id", V::Id(self.job_id.clone())),
            ("submitted_us", V::Time(self.submitted_us)),
            ("finished_us", V::Time(self.finished_us)),
        ]
    }
}

impl Listed for ObjectRow {
    const NOUN: &'static str = "object";
    const COLUMNS: &'static [&'static str] =
        &["object_id", "owner", "state", "size", "location", "borrowers", "task_id", "reason"];
    fn key(&self) -> &[u8] {
        &self.object_id
    }
    fn time(&self) -> i64 {
        self.created_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("object_id", V::Id(self.object_id.clone())),
            ("owner", V::Id(self.owner.clone())),
            ("state", V::Text(self.state.clone())),
            ("size", V::Bytes(self.size)),
            ("location", V::Text(self.location.clone())),
            ("borrowers", V::Num(self.borrowers.into())),
            ("task_id", V::Id(self.task_id.clone())),
            ("reason", V::Text(self.reason.clone())),
            ("created_us", V::Time(self.created_us)),
            ("ended_us", V::Time(self.ended_us)),
        ]
    }
}

impl Listed for WorkerRow {
    const NOUN: &'static str = "worker";
    const COLUMNS: &'static [&'static str] = &[
        "worker_id",
        "is_driver",
        "pid",
        "node_id",
        "state",
        "exit_type",
        "exit_code",
        "signal",
        "peak_rss_bytes",
        "detail",
    ];
    fn key(&self) -> &[u8] {
        &self.worker_id
    }
    fn time(&self) -> i64 {
        self.started_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("worker_id", V::Id(self.worker_id.clone())),
            ("is_driver", V::Flag(self.is_driver)),
            ("pid", V::Pid(self.pid)),
            ("node_id", V::Id(self.node_id.clone())),
            ("job_id", V::Id(self.job_id.clone())),
            ("state", V::Text(self.state.clone())),
            ("exit_type", V::Text(self.exit_type.clone())),
            ("exit_code", V::Num(self.exit_code.into())),
            ("signal", V::Num(self.signal.into())),
            ("peak_rss_bytes", V::Bytes(self.peak_rss_bytes)),
            ("detail", V::Text(self.detail.clone())),
            ("started_us", V::Time(self.started_us)),
            ("exited_us", V::Time(self.exited_us)),
        ]
    }
}

impl Listed for ActorRow {
    const NOUN: &'static str = "actor";
    const COLUMNS: &'static [&'static str] = &["actor_id", "name", "class", "state", "lifetime", "pid", "node_id", "restarts", "death_cause", "detail"];
    fn key(&self) -> &[u8] {
        &self.actor_id
    }
    fn time(&self) -> i64 {
        self.created_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("actor_id", V::Id(self.actor_id.clone())),
            ("name", V::Text(self.name.clone())),
            ("class", V::Text(self.class.clone())),
            ("state", V::Text(self.state.clone())),
            ("lifetime", V::Text(self.lifetime.clone())),
            ("worker_id", V::Id(self.worker_id.clone())),
            ("pid", V::Pid(self.pid)),
            ("node_id", V::Id(self.node_id.clone())),
            ("job_id", V::Id(self.job_id.clone())),
            ("restarts", V::Num(self.restarts.into())),
            ("death_cause", V::Text(self.death_cause.clone())),
            ("detail", V::Text(self.detail.clone())),
            ("created_us", V::Time(self.created_us)),
            ("died_us", V::Time(self.died_us)),
        ]
    }
}

impl Listed for NodeRow {
    const NOUN: &'static str = "node";
    const COLUMNS: &'static [&'static str] = &["node_id", "address", "state", "resources", "labels", "store_capacity", "reason"];
    fn key(&self) -> &[u8] {
        &self.node_id
    }
    fn time(&self) -> i64 {
        self.started_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("node_id", V::Id(self.node_id.clone())),
            ("address", V::Text(self.address.clone())),
            ("state", V::Text(self.state.clone())),
            ("resources", V::Map(self.resources.iter().map(|(k, v)| (k.clone(), *v)).collect())),
            ("labels", V::Labels(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
            ("store_capacity", V::Bytes(self.store_capacity)),
            ("reason", V::Text(self.reason.clone())),
            ("started_us", V::Time(self.started_us)),
            ("stopped_us", V::Time(self.stopped_us)),
        ]
    }
}

impl Listed for JobRow {
    const NOUN: &'static str = "job";
    const COLUMNS: &'static [&'static str] = &["job_id", "state", "pid", "binary", "started_us", "finished_us"];
    fn key(&self) -> &[u8] {
        &self.job_id
    }
    fn time(&self) -> i64 {
        self.started_us
    }
    fn fields(&self) -> Vec<(&'static str, V)> {
        vec![
            ("job_id", V::Id(self.job_id.clone())),
            ("state", V::Text(self.state.clone())),
            ("pid", V::Pid(self.pid)),
            ("binary", V::Text(self.binary.clone())),
            ("started_us", V::Time(self.started_us)),
            ("finished_us", V::Time(self.finished_us)),
        ]
    }
}

/// Widest a table cell gets (errors and details can be long; --detail shows them whole).
const MAX_CELL: usize = 60;

fn render<R: Listed>(mut rows: Vec<R>, args: &ListArgs) -> String {
    // Paging a live view can meet a row twice (see Cluster::list_all); show it once.
    let mut seen = HashSet::new();
    rows.retain(|r| seen.insert(r.key().to_vec()));
    rows.sort_by(|a, b| (a.time(), a.key()).cmp(&(b.time(), b.key())));

    if args.json {
        let all: Vec<Value> = rows.iter().map(|r| to_object(&r.fields())).collect();
        return format!("{}\n", Value::Array(all));
    }
    let mut out = String::new();
    if args.detail {
        for r in &rows {
            for (k, v) in r.fields() {
                out.push_str(&format!("{k}: {}\n", v.text(false)));
            }
            out.push('\n');
        }
    } else if !rows.is_empty() {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let fields = r.fields();
                R::COLUMNS
                    .iter()
                    .map(|c| {
                        fields
                            .iter()
                            .find(|(k, _)| k == c)
                            .map(|(_, v)| clip(v.text(true), MAX_CELL))
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect();
        let headers: Vec<String> = R::COLUMNS.iter().map(|c| c.trim_end_matches("_us").to_ascii_uppercase()).collect();
        out.push_str(&table(&headers, &cells));
    }
    out.push_str(&count_line(rows.len(), R::NOUN));
    out
}

fn count_line(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}\n", if n == 1 { "" } else { "s" })
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell); // no trailing padding
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Summaries

const TASK_STATES: [&str; 5] = ["SUBMITTED", "SCHEDULED", "RUNNING", "FINISHED", "FAILED"];

/// Groups of a summary as the tables show them.
fn groups(summary: &rayr_proto::SummaryReply) -> BTreeMap<String, BTreeMap<String, u64>> {
    summary.groups.iter().map(|g| (g.group.clone(), g.states.iter().map(|(k, v)| (k.clone(), *v)).collect())).collect()
}

fn summarize_tasks(summary: &rayr_proto::SummaryReply, as_json: bool) -> String {
    let by_function = groups(summary);
    // Standard states first, then any others the head reports.
    let mut states: Vec<String> = TASK_STATES.iter().map(|s| s.to_string()).collect();
    for s in by_function.values().flat_map(|m| m.keys()) {
        if !states.contains(s) {
            states.push(s.clone());
        }
    }
    counts_by(("function", "FUNCTION", "functions"), &by_function, &states, ("task", summary.total as usize), as_json)
}

/// Actors by class: how many are alive and dead, and how the dead ones died.
fn summarize_actors(summary: &rayr_proto::SummaryReply, as_json: bool) -> String {
    let by_class = groups(summary);
    let mut states: Vec<String> = by_class.values().flat_map(|m| m.keys().cloned()).collect();
    states.sort_by_key(|s| (s != "ALIVE", s.clone()));
    states.dedup();
    counts_by(("class", "CLASS", "classes"), &by_class, &states, ("actor", summary.total as usize), as_json)
}

/// A summary: per group (a function, a class), how many rows are in each state, as a
/// table with a closing line or as JSON (`{"total", "by_<group>": [{<group>, states,
/// total}]}`).
fn counts_by(
    (group, header, groups): (&str, &str, &str),
    by: &BTreeMap<String, BTreeMap<String, u64>>,
    states: &[String],
    (noun, total): (&str, usize),
    as_json: bool,
) -> String {
    if as_json {
        let rows: Vec<Value> = by.iter().map(|(g, states)| json!({group: g, "states": states, "total": states.values().sum::<u64>()})).collect();
        return format!("{}\n", json!({"total": total, format!("by_{group}"): rows}));
    }
    if total == 0 {
        return format!("0 {noun}s\n");
    }
    let mut headers = vec![header.to_string()];
    headers.extend(states.iter().cloned());
    headers.push("TOTAL".into());
    let rows: Vec<Vec<String>> = by
        .iter()
        .map(|(g, counts)| {
            let mut row = vec![if g.is_empty() { "-".into() } else { g.clone() }];
            row.extend(states.iter().map(|s| counts.get(s).copied().unwrap_or(0).to_string()));
            row.push(counts.values().sum::<u64>().to_string());
            row
        })
        .collect();
    let mut out = table(&headers, &rows);
    let groups = if by.len() == 1 { group.to_string() } else { groups.to_string() };
    out.push_str(&format!("{} in {} {groups}\n", count_line(total, noun).trim_end(), by.len()));
    out
}

fn summarize_objects(summary: &rayr_proto::SummaryReply, as_json: bool) -> String {
    let mut by_state: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for g in &summary.groups {
        for (state, n) in &g.states {
            let e = by_state.entry(state.clone()).or_default();
            e.0 += n;
            e.1 += g.bytes.get(state).copied().unwrap_or(0);
        }
    }
    let total = summary.total as usize;
    if as_json {
        let states: Map<String, Value> =
            by_state.iter().map(|(s, (n, b))| (s.clone(), json!({"count": n, "bytes": b}))).collect();
        return format!("{}\n", json!({"total": total, "by_state": states}));
    }
    if total == 0 {
        return "0 objects\n".into();
    }
    let headers = vec!["STATE".to_string(), "COUNT".into(), "SIZE".into()];
    let rows: Vec<Vec<String>> =
        by_state.iter().map(|(s, (n, b))| vec![s.clone(), n.to_string(), human_bytes(*b)]).collect();
    let mut out = table(&headers, &rows);
    out.push_str(&count_line(total, "object"));
    out
}

// ---------------------------------------------------------------------------------------
// Events

/// How an event line is laid out: `rayr events` ([`EVENTS`]) names everything at a local
/// date and time; a step of a why-died chain shows the time of day and leaves out what the
/// report already says.
pub(crate) struct LineStyle<'a> {
    /// Only the time of day (the steps of one chain are seconds apart, not days).
    pub clock: bool,
    /// An id not to repeat: the one a report is about.
    pub subject: &'a [u8],
    /// Name the job, the recording process and the cause (a chain's order says the cause).
    pub context: bool,
}

pub(crate) const EVENTS: LineStyle<'static> = LineStyle { clock: false, subject: &[], context: true };

/// `2026-11-25 20:01:02.123  task_failed  task=d0d0d0…000007  worker=…  cause=…  attempt=1  final  error_type=panic  error="boom"`:
/// the ids the event names, then its detail's fields, numbers before text (a line cut
/// short loses words, not numbers); empty fields and those too long for a line are left out.
pub(crate) fn event_line(ev: &Event, style: &LineStyle) -> String {
    let time = if style.clock { clock(ev.time_us) } else { local_time(ev.time_us) };
    let mut parts = vec![time, format!("{:<14}", kind_name(ev.kind))];
    for (name, id) in event::ids(ev) {
        // The recording process is usually the worker the event names; say it only when not.
        let context = name == "job" || name == "source";
        if id.is_empty()
            || id == style.subject
            || (context && !style.context)
            || (name == "source" && id == ev.worker_id.as_slice())
        {
            continue;
        }
        parts.push(format!("{name}={}", short_id(id)));
    }
    if style.context && !ev.cause.is_empty() {
        parts.push(format!("cause={}", short_id(&ev.cause)));
    }
    if let Some(d) = &ev.detail {
        let (texts, numbers): (Vec<_>, Vec<_>) = event::detail_fields(d)
            .1
            .into_iter()
            .filter(|(k, v)| !v.is_empty() && !event::LONG_FIELDS.contains(k))
            .partition(|(_, v)| matches!(v, V::Text(_)));
        for (k, v) in numbers.into_iter().chain(texts) {
            // A size's unit says it is bytes.
            let label = k.strip_suffix("_bytes").unwrap_or(k);
            parts.push(match &v {
                V::Flag(_) => label.to_string(),
                V::Text(_) => format!("{label}={}", quote(&clip(v.text(true), 120))),
                _ => format!("{label}={}", v.text(true)),
            });
        }
    }
    parts.join("  ")
}

/// Local time of day with milliseconds.
pub(crate) fn clock(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(ts) => ts.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%H:%M:%S%.3f").to_string(),
        Err(_) => us.to_string(),
    }
}

/// Quotes text that would not read as one word.
pub(crate) fn quote(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        Value::String(s.to_string()).to_string()
    } else {
        s.to_string()
    }
}

/// Every field of an event, ids in full hex, its detail under `detail` with its `type`.
pub(crate) fn event_json(ev: &Event) -> Value {
    serde_json::to_value(EventJson(ev)).expect("an event is plain data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::TaskDetail;
    use rayr_proto::event::Detail;

    #[test]
    fn parses_times_ago_and_absolute() {
        assert_eq!(parse_ago("90s"), Some(90_000_000));
        assert_eq!(parse_ago("1h30m"), Some(5_400_000_000));
        assert_eq!(parse_ago("500ms"), Some(500_000));
        assert_eq!(parse_ago("10x"), None);
        assert_eq!(parse_ago("m"), None);
        assert_eq!(parse_since("2026-01-01T00:00:00Z").unwrap(), 1_767_225_600_000_000);
        assert!(parse_since("2026-01-01 10:00").is_ok());
        let err = parse_since("yesterday").unwrap_err();
        assert!(err.contains("10m"), "{err}");
    }

    #[test]
    fn bad_kinds_and_filters_say_what_is_valid() {
        assert_eq!(parse_kind("task_failed").unwrap(), EventKind::TaskFailed);
        let err = parse_kind("task_exploded").unwrap_err();
        assert!(err.contains("task_failed") && err.contains("worker_exited"), "{err}");
        assert!(!err.contains("unspecified"), "{err}");
        assert_eq!(parse_filter("state = FAILED").unwrap(), ("state".into(), "FAILED".into()));
        assert!(parse_filter("state").is_err());
    }

    fn failed_event() -> Event {
        Event {
            id: vec![1; 16],
            time_us: 1_767_225_600_000_000,
            kind: EventKind::TaskFailed as i32,
            task_id: (1..=16).collect(),
            worker_id: vec![3; 16],
            source_worker: vec![3; 16],
            cause: vec![4; 16],
            detail: Some(Detail::Task(TaskDetail {
                function: "demo::square".into(),
                error: "panicked at 'boom'\nsecond line".into(),
                error_type: rayr_proto::TaskErrorKind::Panic as i32,
                r#final: true,
                backtrace: "0: main".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn event_line_is_compact() {
        let ev = failed_event();
        let line = event_line(&ev, &EVENTS);
        assert!(line.contains("task_failed"), "{line}");
        assert!(line.contains("task=010203…0e0f10"), "{line}");
        assert!(line.contains("cause=040404…040404"), "{line}");
        assert!(line.contains("error=\"panicked at 'boom'\""), "{line}");
        assert!(line.contains(" final"), "{line}");
        assert!(!line.contains("source="), "{line}");
        assert!(!line.contains("backtrace") && !line.contains("second line"), "{line}");
        assert_eq!(event_json(&ev)["detail"]["backtrace"], "0: main", "--json has it all");
    }

    #[test]
    fn event_lines_read_numbers_first_and_ids_short() {
        let ev = Event {
            kind: EventKind::WorkerExited as i32,
            worker_id: vec![2; 16],
            job_id: vec![5; 16],
            detail: Some(Detail::WorkerExit(rayr_proto::WorkerExit {
                signal: 9,
                detail: format!("killed: worker {} {}", hex(&[2; 16]), "and more words ".repeat(10)),
                peak_rss_bytes: 50 << 20,
                pid: 102,
                ..Default::default()
            })),
            ..Default::default()
        };
        let line = event_line(&ev, &EVENTS);
        assert!(line.contains("signal=9 (SIGKILL)") && line.contains("peak_rss=50.0 MiB"), "{line}");
        assert!(line.find("pid=102") < line.find("detail="), "numbers before text: {line}");
        assert!(line.contains("detail=\"killed: worker 020202…020202 and"), "ids in text are short: {line}");
        assert!(line.contains("job=050505…050505"), "{line}");
        let step = event_line(&ev, &LineStyle { clock: true, subject: &[2; 16], context: false });
        assert!(!step.contains("worker=") && !step.contains("job="), "{step}");
        assert_eq!(step.split("  ").next().unwrap().len(), "20:01:02.123".len(), "the time of day: {step}");
    }

    #[test]
    fn list_renders_table_detail_and_json() {
        let row = |n: u8, state: &str, t: i64| TaskRow {
            task_id: vec![n; 16],
            function: "demo::square".into(),
            state: state.into(),
            submitted_us: t,
            error: if state == "FAILED" { "x".repeat(200) } else { String::new() },
            ..Default::default()
        };
        let args = |detail, json| ListArgs { entity: "tasks".into(), filters: vec![], detail, json, address: None };
        // Repeats dropped, oldest first.
        let rows = vec![row(2, "FAILED", 20), row(1, "FINISHED", 10), row(2, "FAILED", 20)];
        let table = render(rows.clone(), &args(false, false));
        let lines: Vec<&str> = table.lines().collect();
        let headers: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            headers,
            ["TASK_ID", "FUNCTION", "STATE", "ATTEMPT", "WORKER_ID", "NODE_ID", "PID", "ERROR_TYPE", "ERROR"]
        );
        assert_eq!(lines[1].split_whitespace().nth(6), Some("-"), "pid 0 means unknown: {table}");
        assert!(lines[1].starts_with("010101…010101"), "{table}");
        assert!(lines[2].contains('…') && lines[2].chars().count() < 200, "{table}");
        assert_eq!(lines.last().unwrap(), &"2 tasks");

        let detail = render(rows.clone(), &args(true, false));
        assert!(detail.contains(&format!("task_id: {}", hex(&[2; 16]))), "{detail}");
        assert!(detail.contains(&"x".repeat(200)));

        let j: Value = serde_json::from_str(&render(rows, &args(false, true))).unwrap();
        assert_eq!(j.as_array().unwrap().len(), 2);
        assert_eq!(j[1]["task_id"], hex(&[2; 16]));
        assert_eq!(j[1]["worker_id"], Value::Null);
        assert_eq!(render(Vec::<TaskRow>::new(), &args(false, false)), "0 tasks\n");
    }

    #[test]
    fn rayr_list_takes_every_view_the_head_keeps() {
        let mut ours: Vec<&str> = Entity::ALL.iter().map(|e| e.view()).collect();
        let mut heads: Vec<&str> = rayr_head::ENTITIES.to_vec();
        ours.sort();
        heads.sort();
        assert_eq!(ours, heads);
    }

    #[test]
    fn summaries_count_by_function_and_state() {
        // What the head answers for these tasks (function, state).
        let summary = |tasks: &[(&str, &str)]| {
            let mut reply = rayr_proto::SummaryReply { total: tasks.len() as u64, ..Default::default() };
            for (f, s) in tasks {
                let i = match reply.groups.iter().position(|g| g.group == *f) {
                    Some(i) => i,
                    None => {
                        reply.groups.push(rayr_proto::SummaryGroup { group: f.to_string(), ..Default::default() });
                        reply.groups.len() - 1
                    }
                };
                *reply.groups[i].states.entry(s.to_string()).or_default() += 1;
            }
            reply
        };
        let out = summarize_tasks(&summary(&[("a::f", "FINISHED"), ("a::f", "FAILED"), ("a::g", "FINISHED")]), false);
        assert!(out.lines().nth(1).unwrap().starts_with("a::f"), "{out}");
        assert!(out.ends_with("3 tasks in 2 functions\n"), "{out}");
        let j: Value = serde_json::from_str(&summarize_tasks(&summary(&[("a::f", "FAILED")]), true)).unwrap();
        assert_eq!(j["by_function"][0]["states"]["FAILED"], 1);
    }
}
