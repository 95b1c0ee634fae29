//! Answering queries: events by id, kind and time; rows of the views; id prefixes; the
//! live counts.

use std::collections::{BTreeMap, BinaryHeap};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rayr_logs::event_run::{EventRef, RunView};
use rayr_logs::{EVENT_SEQ_BIT, Id, id_head, is_event_counter};
use rayr_proto::{ActorRow, Event, JobRow, ListReply, ListRequest, NodeRow, WorkerRow};

use super::ingest::{Effective, RunAttrs, effective};
use super::keys::{FxHashSet, Key};
use super::rows::{ObjectRec, ObjectState, Pages, TaskRec};
use super::runs::RunRec;
use super::table::Table;
use super::{EventQuery, EventsPage, Inner, State, decode_runs};
use crate::HeadError;
use crate::ids::IdPattern;
use crate::query::{self, ObjectView, TaskView};

/// Most events one `events_page` call examines, so a selective filter over a long record
/// still answers in bounded time (the caller continues from `next_after`).
const MAX_SCANNED_PER_PAGE: usize = 50_000;

/// Merges sorted sources (oldest first) by key: each key once, with the value of every
/// source that has it, oldest first.
pub(crate) struct Merge<'a, I: Iterator<Item = std::io::Result<(Key, &'a [u8])>>> {
    sources: Vec<I>,
    heap: BinaryHeap<std::cmp::Reverse<(Key, usize, Slice<'a>)>>,
    started: bool,
}

/// A value in the merge heap (ordered by nothing: keys and sources decide).
#[derive(Clone, Copy)]
struct Slice<'a>(&'a [u8]);
impl PartialEq for Slice<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Slice<'_> {}
impl PartialOrd for Slice<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slice<'_> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<'a, I: Iterator<Item = std::io::Result<(Key, &'a [u8])>>> Merge<'a, I> {
    pub(crate) fn new(sources: Vec<I>) -> Self {
        Merge { heap: BinaryHeap::with_capacity(sources.len()), sources, started: false }
    }

    fn advance(&mut self, i: usize) -> std::io::Result<()> {
        if let Some(e) = self.sources[i].next() {
            let (k, v) = e?;
            self.heap.push(std::cmp::Reverse((k, i, Slice(v))));
        }
        Ok(())
    }

    /// The next key and its values (source index, value), oldest source first.
    pub(crate) fn next_group(&mut self) -> std::io::Result<Option<(Key, Vec<(usize, &'a [u8])>)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        let Some(std::cmp::Reverse((key, i, v))) = self.heap.pop() else { return Ok(None) };
        let mut group = vec![(i, v.0)];
        self.advance(i)?;
        while let Some(std::cmp::Reverse((k, _, _))) = self.heap.peek() {
            if *k != key {
                break;
            }
            let std::cmp::Reverse((_, j, w)) = self.heap.pop().expect("peeked");
            group.push((j, w.0));
            self.advance(j)?;
        }
        group.sort_unstable_by_key(|(i, _)| *i);
        Ok(Some((key, group)))
    }
}

fn corrupt(e: std::io::Error) -> HeadError {
    HeadError::Io { path: "event index segment".into(), source: e }
}

/// Every row of a row table (tasks or objects), in key order: the memtable's, else the
/// newest segment's.
fn rows<'s, R: Clone + Default>(
    st: &'s State,
    table: Table,
    mem: &'s Pages<R>,
    decode: fn(&[u8]) -> Option<R>,
) -> impl Iterator<Item = Result<(Key, R), HeadError>> + 's {
    let mut from_mem = mem.sorted().into_iter().peekable();
    let mut merged = Merge::new(st.segments.iter().map(|s| s.iter(table)).collect());
    let mut next_seg = None;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        if next_seg.is_none() {
            match merged.next_group() {
                Ok(g) => next_seg = g.map(|(k, versions)| (k, versions.last().expect("a group has a version").1)),
                Err(e) => {
                    failed = true;
                    return Some(Err(corrupt(e)));
                }
            }
        }
        let mem_key = from_mem.peek().map(|(k, _)| *k);
        let seg_key = next_seg.map(|(k, _)| k);
        match (mem_key, seg_key) {
            (None, None) => None,
            (Some(m), s) if s.is_none_or(|s| m <= s) => {
                if s == Some(m) {
                    next_seg = None; // the memtable's row is the newer
                }
                let (k, r) = from_mem.next().expect("peeked");
                Some(Ok((k, r.clone())))
            }
            _ => {
                let (k, v) = next_seg.take().expect("a segment row");
                match decode(v) {
                    Some(r) => Some(Ok((k, r))),
                    None => {
                        failed = true;
                        Some(Err(HeadError::Server("an event index row does not decode; delete the session's index directory to rebuild it from the logs".into())))
                    }
                }
            }
        }
    })
}

/// Rows of one view that match `req`'s filters, one page of them, and how many match.
pub(crate) fn list(st: &State, req: &ListRequest) -> Result<ListReply, HeadError> {
    let mut reply = ListReply::default();
    let (names, ids) = (&st.names, &st.ids);
    match req.entity.trim().to_ascii_lowercase().as_str() {
        "tasks" | "task" => {
            let views = rows(st, Table::Tasks, &st.mem.tasks, TaskRec::decode)
                .map(|r| r.map(|(k, rec)| TaskView { id: k.id(), rec, names, ids }));
            reply.total = query::select(views, req, "tasks", |v| reply.tasks.push(v.rec.to_proto(&v.id, names, ids)))?;
        }
        "objects" | "object" => {
            let views = rows(st, Table::Objects, &st.mem.objects, ObjectRec::decode)
                .map(|r| r.map(|(k, rec)| ObjectView { id: k.id(), rec, names, ids }));
            reply.total = query::select(views, req, "objects", |v| reply.objects.push(v.rec.to_proto(&v.id, names, ids)))?;
        }
        "workers" | "worker" => reply.total = query::select(small(&st.workers), req, "workers", |r: WorkerRow| reply.workers.push(r))?,
        "nodes" | "node" => reply.total = query::select(small(&st.nodes), req, "nodes", |r: NodeRow| reply.nodes.push(r))?,
        "jobs" | "job" => reply.total = query::select(small(&st.jobs), req, "jobs", |r: JobRow| reply.jobs.push(r))?,
        "actors" | "actor" => reply.total = query::select(small(&st.actors), req, "actors", |r: ActorRow| reply.actors.push(r))?,
        other => {
            return Err(HeadError::BadRequest(format!("cannot list `{other}`: the head keeps {}", query::ENTITIES.join(", "))));
        }
    }
    Ok(reply)
}

/// The rows of a small view, in key order.
fn small<R: Clone>(rows: &super::keys::FxHashMap<Key, R>) -> impl Iterator<Item = Result<R, HeadError>> + '_ {
    let mut v: Vec<(&Key, &R)> = rows.iter().collect();
    v.sort_unstable_by_key(|(k, _)| **k);
    v.into_iter().map(|(_, r)| Ok(r.clone()))
}

/// Rows of a view counted by group and state (`rayr summary`), from the live counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Rows in all groups.
    pub total: u64,
    pub groups: Vec<SummaryGroup>,
}

/// One group of a [`Summary`]: a function (tasks), a class (actors), or all objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SummaryGroup {
    pub group: String,
    pub states: BTreeMap<String, u64>,
    /// Objects: bytes by state.
    pub bytes: BTreeMap<String, u64>,
}

impl Summary {
    /// As the head's `Summary` reply carries it (without the recent failures).
    pub fn to_proto(&self) -> rayr_proto::SummaryReply {
        rayr_proto::SummaryReply {
            total: self.total,
            groups: self
                .groups
                .iter()
                .map(|g| rayr_proto::SummaryGroup {
                    group: g.group.clone(),
                    states: g.states.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    bytes: g.bytes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

pub(crate) fn summary(st: &State, entity: &str) -> Result<Summary, HeadError> {
    let mut by: BTreeMap<String, SummaryGroup> = BTreeMap::new();
    let mut total = 0u64;
    match entity.trim().to_ascii_lowercase().as_str() {
        "tasks" | "task" => {
            for ((function, state), n) in &st.task_counts {
                if *n <= 0 {
                    continue;
                }
                let name = st.names.get(*function).to_string();
                let g = by.entry(name.clone()).or_insert_with(|| SummaryGroup { group: name, ..Default::default() });
                *g.states.entry(state.name().to_string()).or_insert(0) += *n as u64;
                total += *n as u64;
            }
        }
        "objects" | "object" => {
            let mut g = SummaryGroup::default();
            for state in ObjectState::ALL {
                let (n, bytes) = st.object_counts[state as usize];
                if n > 0 {
                    g.states.insert(state.name().to_string(), n as u64);
                    g.bytes.insert(state.name().to_string(), bytes.max(0) as u64);
                    total += n as u64;
                }
            }
            if total > 0 {
                by.insert(String::new(), g);
            }
        }
        "actors" | "actor" => {
            for a in st.actors.values() {
                let g = by.entry(a.class.clone()).or_insert_with(|| SummaryGroup { group: a.class.clone(), ..Default::default() });
                // How the dead ones died.
                let state = if a.state == "DEAD" && !a.death_cause.is_empty() { format!("DEAD ({})", a.death_cause) } else { a.state.clone() };
                *g.states.entry(state).or_insert(0) += 1;
                total += 1;
            }
        }
        other => return Err(HeadError::BadRequest(format!("cannot summarize `{other}`: tasks, objects or actors"))),
    }
    Ok(Summary { total, groups: by.into_values().collect() })
}

impl State {
    /// The runs posted for `key` one by one, oldest first.
    fn postings(&self, key: Key, out: &mut Vec<u32>) -> Result<(), HeadError> {
        for seg in &self.segments {
            if let Some(v) = seg.get(Table::Postings, key).map_err(corrupt)? {
                decode_runs(v, out).ok_or_else(|| HeadError::Server("event index postings do not decode".into()))?;
            }
        }
        if let Some(runs) = self.mem.postings.get(&key) {
            out.extend(runs.iter());
        }
        Ok(())
    }

    /// Every run whose events may name `id`, ascending.
    fn runs_naming(&self, id: &Id) -> Result<Vec<u32>, HeadError> {
        let key = Key::of(id);
        let mut runs = Vec::new();
        // Runs whose ranges cover it (naming it in any field, its effects' `cause`
        // included), and those that posted it whole.
        self.ranges.runs_covering(key, &mut runs);
        self.postings(key, &mut runs)?;
        // The event itself, found through its process's runs.
        if is_event_counter(key.counter)
            && let Some(r) = self.runs.of_event(key.salt, key.counter & !EVENT_SEQ_BIT)
        {
            runs.push(r);
        }
        // Runs it is an attribute of: their process, node or job.
        if let Some(ix) = self.ids.find(id) {
            let sources_of_job: FxHashSet<u32> =
                self.origins.iter().filter(|(_, (job, _))| *job == ix).filter_map(|(k, _)| self.ids.find(&k.id())).collect();
            for (n, r) in self.runs.all().iter().enumerate() {
                if r.source == ix || r.node == ix || r.job == ix || (r.job == 0 && sources_of_job.contains(&r.source)) {
                    runs.push(n as u32);
                }
            }
        }
        runs.sort_unstable();
        runs.dedup();
        Ok(runs)
    }
}

/// Whether the event names `id` in any role (what `events --id` means).
fn names(e: &EventRef<'_>, eff: &Effective, id: &Id) -> bool {
    let some = Some(*id);
    e.id == some
        || e.cause == some
        || e.object_id == some
        || e.task_id == some
        || e.actor_id == some
        || e.worker_id == some
        || eff.node == some
        || eff.job == some
        || eff.source == some
        || e.object().is_some_and(|d| d.peer == &id[..])
}

impl Inner {
    /// The log `run` is in, opened once.
    fn log_file(&self, st: &State, run: &RunRec) -> Result<Arc<std::fs::File>, HeadError> {
        let mut files = self.files.lock();
        if let Some(f) = files.get(&run.log) {
            return Ok(f.clone());
        }
        let path = &st.logs.get(run.log as usize).ok_or_else(|| HeadError::Server("a run names an unknown log".into()))?.path;
        let f = Arc::new(std::fs::File::open(path).map_err(|e| HeadError::Io { path: path.clone(), source: e })?);
        files.insert(run.log, f.clone());
        Ok(f)
    }

    /// Reads run `run`'s body from its log.
    fn run_body(&self, st: &State, run: &RunRec, buf: &mut Vec<u8>) -> Result<(), HeadError> {
        let file = self.log_file(st, run)?;
        buf.resize(run.len as usize, 0);
        file.read_exact_at(buf, run.offset).map_err(|e| HeadError::Io { path: st.logs[run.log as usize].path.clone(), source: e })
    }

    pub(super) fn events_page(&self, q: &EventQuery, after: u64, limit: usize) -> Result<EventsPage, HeadError> {
        let st = self.state.read();
        let mut page = EventsPage { next_after: after, ..Default::default() };
        let id: Option<Id> = match &q.id {
            Some(id) => match <Id>::try_from(id.as_slice()) {
                Ok(id) => Some(id),
                Err(_) => return Ok(page), // no event names an id of another length
            },
            None => None,
        };
        let first_run = st.runs.at_event(after.saturating_add(1));
        let candidates: Box<dyn Iterator<Item = u32>> = match &id {
            Some(id) => Box::new(st.runs_naming(id)?.into_iter().filter(move |r| *r >= first_run)),
            None => Box::new(first_run..st.runs.len() as u32),
        };
        let mut examined = 0usize;
        let mut buf = Vec::new();
        for n in candidates {
            let rec = *st.runs.get(n).expect("a run number from the directory");
            if (q.kind != 0 && !rec.has_kind(q.kind)) || (q.since_us != 0 && rec.max_time < q.since_us) {
                continue;
            }
            self.run_body(&st, &rec, &mut buf)?;
            let run = RunView::parse(&buf).map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
            let attrs = RunAttrs::of(&run, &st.logs[rec.log as usize]);
            for (i, e) in run.events().enumerate() {
                let ordinal = rec.first_event + i as u64;
                if ordinal <= after {
                    continue;
                }
                let e = e.map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
                examined += 1;
                page.next_after = ordinal;
                let eff = effective(&e, &attrs, &st);
                let wanted = (q.kind == 0 || e.kind == q.kind)
                    && e.time_us >= q.since_us
                    && id.as_ref().is_none_or(|id| names(&e, &eff, id));
                if wanted {
                    page.events.push((ordinal, whole_event(&e, &run, &eff)?));
                }
                if page.events.len() >= limit || examined >= MAX_SCANNED_PER_PAGE {
                    page.more = true;
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }

    /// Whether any event names `id`.
    fn named_anywhere(&self, st: &State, id: &Id) -> Result<bool, HeadError> {
        let mut buf = Vec::new();
        for n in st.runs_naming(id)? {
            let rec = *st.runs.get(n).expect("a run number from the directory");
            self.run_body(st, &rec, &mut buf)?;
            let run = RunView::parse(&buf).map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
            let attrs = RunAttrs::of(&run, &st.logs[rec.log as usize]);
            for e in run.events() {
                let e = e.map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
                if names(&e, &effective(&e, &attrs, st), id) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Up to `max` ids matching `pattern` (in id order) and how many match in all.
    pub(super) fn find_ids(&self, pattern: &str, max: usize) -> Result<(Vec<Vec<u8>>, usize), HeadError> {
        let pat = IdPattern::parse(pattern).map_err(HeadError::BadRequest)?;
        let (hv, hm) = pat.head_bits();
        let (tv, tm) = pat.tail_bits();
        let quick = |head: u64, salt: u64| head & hm == hv && salt & tm == tv;
        let st = self.state.read();
        let mut found: FxHashSet<Id> = FxHashSet::default();
        let mut consider = |id: Id| {
            if pat.matches(&id) {
                found.insert(id);
            }
        };
        // Ids with a row (tasks, objects) or posted whole …
        let mut check_key = |k: Key| {
            if quick(id_head(k.counter, k.salt), k.salt) {
                consider(k.id());
            }
        };
        for (k, _) in st.mem.tasks.sorted() {
            check_key(k);
        }
        for (k, _) in st.mem.objects.sorted() {
            check_key(k);
        }
        for k in st.mem.postings.keys() {
            check_key(*k);
        }
        for seg in &st.segments {
            for table in [Table::Tasks, Table::Objects, Table::Postings] {
                for e in seg.iter(table) {
                    check_key(e.map_err(corrupt)?.0);
                }
            }
        }
        // … those of the small views, and the ids runs share (processes, nodes, jobs) …
        for k in st.workers.keys().chain(st.nodes.keys()).chain(st.jobs.keys()).chain(st.actors.keys()) {
            check_key(*k);
        }
        for (_, id) in st.ids.iter() {
            consider(*id);
        }
        // … and every event's own id: the one that follows from its run, or the one it
        // names itself.
        let mut buf = Vec::new();
        for r in st.runs.all() {
            if r.explicit > 0 {
                self.run_body(&st, r, &mut buf)?;
                let run = RunView::parse(&buf).map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
                for (i, e) in run.events().enumerate() {
                    let e = e.map_err(|e| HeadError::Server(format!("an indexed run does not decode: {e}")))?;
                    let id = if e.explicit_id { e.id } else { Some(Key { salt: r.salt, counter: (r.first_seq + i as u64) | EVENT_SEQ_BIT }.id()) };
                    if let Some(id) = id {
                        consider(id);
                    }
                }
                continue;
            }
            if r.salt & tm != tv {
                continue;
            }
            for i in 0..r.count as u64 {
                let counter = (r.first_seq + i) | EVENT_SEQ_BIT;
                if quick(id_head(counter, r.salt), r.salt) {
                    consider(Key { salt: r.salt, counter }.id());
                }
            }
        }
        if found.is_empty() {
            // Ids only mentioned (a task's return value before it exists, a cause whose
            // event is missing): the counters the runs' ranges cover, each checked against
            // the events of the runs covering it. Only when nothing else matches: it reads
            // every range.
            let mut candidates = Vec::new();
            st.ranges.for_each_counter(|key| {
                if key.salt & tm == tv && quick(id_head(key.counter, key.salt), key.salt) && pat.matches(&key.id()) {
                    candidates.push(key.id());
                }
            });
            candidates.sort_unstable();
            candidates.dedup();
            for id in candidates {
                if self.named_anywhere(&st, &id)? {
                    found.insert(id);
                }
            }
        }
        let total = found.len();
        let mut ids: Vec<Id> = found.into_iter().collect();
        ids.sort_unstable();
        ids.truncate(max);
        Ok((ids.into_iter().map(|i| i.to_vec()).collect(), total))
    }
}

/// The whole event, with what its run and process leave out filled in.
fn whole_event(e: &EventRef<'_>, run: &RunView<'_>, eff: &Effective) -> Result<Event, HeadError> {
    let mut ev = e.to_event(run).map_err(|e| HeadError::Server(format!("an indexed event does not decode: {e}")))?;
    let fill = |slot: &mut Vec<u8>, v: Option<Id>| {
        if slot.is_empty()
            && let Some(v) = v
        {
            *slot = v.to_vec();
        }
    };
    fill(&mut ev.node_id, eff.node);
    fill(&mut ev.job_id, eff.job);
    fill(&mut ev.source_worker, eff.source);
    if ev.source_pid == 0 {
        ev.source_pid = eff.pid;
    }
    Ok(ev)
}
