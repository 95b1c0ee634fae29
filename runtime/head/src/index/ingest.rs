//! Indexing: reading runs from the event logs into the memtable.
//!
//! Per event this is a few hash-map updates and no allocation: the event is read in place
//! (`rayr_logs::EventRef`), ids its run shares are not posted (the run directory finds
//! them), an id is posted once per run, and a task's or object's row is changed in place.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use rayr_logs::event_run::{EventRef, RunView};
use rayr_logs::Id;
use rayr_proto::EventKind;
use rayr_proto::event::Detail;

use super::keys::{FxHashMap, Key};
use super::manifest::Failure;
use super::rows::{ObjectRec, ObjectState, Pages, TaskRec, TaskState};
use super::ranges::RunRanges;
use super::runs::{RunRec, kind_bit};
use super::table::{SegmentRef, Table};
use super::{Inner, LogPos, READ_WINDOW, RECENT_FAILURES, State, Writer};
use crate::HeadError;
use crate::views::{self, Ev, Target};

/// What the record leaves out of an event, filled in: its node (its run's, else its log's),
/// its process (its run's), and that process's job and pid (its run's, else those its
/// WORKER_STARTED gave). The index and every reader fill them the same way.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Effective {
    pub node: Option<Id>,
    pub source: Option<Id>,
    pub job: Option<Id>,
    pub pid: u32,
    /// The job came from the process's WORKER_STARTED, not from the event or its run.
    pub job_from_origin: bool,
}

/// The attributes of a run every event of it shares unless it names its own.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunAttrs {
    pub node: Option<Id>,
    pub source: Option<Id>,
    pub job: Option<Id>,
    pub pid: u32,
}

impl RunAttrs {
    pub(crate) fn of(run: &RunView<'_>, log: &LogPos) -> RunAttrs {
        RunAttrs {
            node: <Id>::try_from(run.node_id).ok().or(log.node),
            source: <Id>::try_from(run.source_worker).ok(),
            job: <Id>::try_from(run.job_id).ok(),
            pid: run.source_pid,
        }
    }
}

pub(crate) fn effective(e: &EventRef<'_>, run: &RunAttrs, st: &State) -> Effective {
    let source = e.source_worker.or(run.source);
    let mut job = e.job_id.or(run.job);
    let mut pid = if e.source_pid != 0 { e.source_pid } else { run.pid };
    let mut job_from_origin = false;
    if (job.is_none() || pid == 0)
        && let Some(s) = source
        && let Some((j, p)) = st.origins.get(&Key::of(&s))
    {
        if job.is_none() && *j != 0 {
            job = <Id>::try_from(st.ids.get(*j)).ok();
            job_from_origin = true;
        }
        if pid == 0 {
            pid = *p;
        }
    }
    Effective { node: e.node_id.or(run.node), source, job, pid, job_from_origin }
}

impl Inner {
    /// Indexes what `path` gained (whole runs, about `limit` events at most).
    pub(super) fn ingest_log(&self, path: &Path, events_dir: &Path, writer: &mut Writer, limit: u64) -> Result<u64, HeadError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let (log, mut offset) = {
            let mut st = self.state.write();
            match st.logs.iter().position(|l| l.name == name) {
                Some(i) => (i as u32, st.logs[i].offset),
                None => {
                    st.logs.push(LogPos::new(name.clone(), events_dir, 0));
                    st.dirty = true;
                    ((st.logs.len() - 1) as u32, 0)
                }
            }
        };
        let io = |e: std::io::Error| HeadError::Io { path: path.to_path_buf(), source: e };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len < offset {
            // Logs only grow; a shorter one was replaced by hand. Indexing it again from 0
            // would duplicate what is already here, so leave it and say so.
            tracing::warn!(log = %path.display(), len, offset, "event log is shorter than the part already indexed; not indexing it");
            return Ok(0);
        }
        let mut indexed = 0u64;
        let mut window = READ_WINDOW;
        while offset < len && indexed < limit {
            let want = ((len - offset) as usize).min(window);
            writer.buf.resize(want, 0);
            let got = read_at(&file, &mut writer.buf, offset).map_err(io)?;
            writer.buf.truncate(got);
            let mut at = 0usize;
            let mut st = self.state.write();
            let skipped_before = writer.skipped_runs;
            let mut scratch = Scratch::default();
            while indexed < limit {
                match rayr_proto::split_frame(&writer.buf[at..]) {
                    Ok(Some((body, used))) => {
                        let body_at = offset + at as u64 + 4;
                        match st.ingest_run(self, log, body_at, body, &mut scratch) {
                            Some(n) => indexed += n as u64,
                            None => writer.skipped_runs += 1,
                        }
                        at += used;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e} at byte {}", offset + at as u64))));
                    }
                }
            }
            offset += at as u64;
            st.logs[log as usize].offset = offset;
            st.dirty = true;
            drop(st);
            if writer.skipped_runs > skipped_before {
                tracing::warn!(log = %path.display(), skipped = writer.skipped_runs, "event runs that do not decode were skipped");
            }
            if at == 0 {
                if got < want || (want as u64) == len - offset {
                    break; // an incomplete frame at the end: the rest is still being written
                }
                window = window.saturating_mul(4); // one frame larger than the window
            }
        }
        Ok(indexed)
    }
}

fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl State {
    /// Indexes one run (its frame body at `offset` in log `log`); `None` when it does not
    /// decode (then nothing of it is indexed).
    fn ingest_run<'b>(&mut self, inner: &Inner, log: u32, offset: u64, body: &'b [u8], scratch: &mut Scratch<'b>) -> Option<usize> {
        let run = RunView::parse(body).ok()?;
        // A run is indexed whole or not at all, as readers expand it.
        let events = &mut scratch.events;
        events.clear();
        for e in run.events() {
            events.push(e.ok()?);
        }
        if events.is_empty() {
            return Some(0);
        }
        let attrs = RunAttrs::of(&run, &self.logs[log as usize]);
        let run_no = self.runs.len() as u32;
        let (events, ranges) = (&scratch.events, &mut scratch.ranges);
        let mut rec = RunRec {
            log,
            offset,
            len: body.len() as u32,
            count: events.len() as u32,
            first_event: self.events + 1,
            salt: run.salt,
            first_seq: run.first_seq,
            source: self.ids.intern_opt(attrs.source),
            node: self.ids.intern_opt(attrs.node),
            job: self.ids.intern_opt(attrs.job),
            min_time: i64::MAX,
            max_time: i64::MIN,
            kinds: 0,
            explicit: 0,
        };
        let shared = [attrs.source, attrs.node, attrs.job];
        ranges.clear();
        for e in events.iter() {
            rec.kinds |= kind_bit(e.kind);
            rec.min_time = rec.min_time.min(e.time_us);
            rec.max_time = rec.max_time.max(e.time_us);
            if let Some(c) = inner.counts.get(e.kind.clamp(0, 63) as usize) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let eff = effective(e, &attrs, self);
            let kind = EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified);
            if kind == EventKind::TaskFailed && e.task().is_some_and(|d| d.is_final) {
                inner.final_failures.fetch_add(1, Ordering::Relaxed);
            }

            let task = e.task();
            let object = e.object();
            // Every id the event names except those its run shares: as a range of its
            // block (or, past the blocks a run keeps, posted whole).
            let mut note = |id: Option<Id>| {
                if let Some(id) = id
                    && !shared.contains(&Some(id))
                {
                    let key = Key::of(&id);
                    if !ranges.note(key) {
                        self.mem.postings.entry(key).or_default().push(run_no);
                    }
                }
            };
            if e.explicit_id {
                rec.explicit += 1;
                note(e.id);
            }
            note(e.cause);
            note(e.object_id);
            note(e.task_id);
            note(e.actor_id);
            note(e.worker_id);
            note(e.node_id);
            note(e.source_worker);
            if !eff.job_from_origin {
                note(eff.job);
            }
            if let Some(peer) = object.and_then(|d| <Id>::try_from(d.peer).ok()) {
                note(Some(peer));
            }

            let ev = Ev {
                kind,
                time_us: e.time_us,
                task_id: e.task_id,
                object_id: e.object_id,
                actor_id: e.actor_id,
                worker_id: e.worker_id,
                node_id: eff.node,
                job_id: eff.job,
                source_worker: eff.source,
                source_pid: eff.pid,
                task,
                object,
                raw: *e,
            };
            if kind == EventKind::WorkerStarted
                && let Some(w) = e.worker_id
            {
                let pid = match e.detail() {
                    Some(Detail::WorkerStart(s)) => s.pid,
                    _ => eff.pid,
                };
                let job = self.ids.intern_opt(eff.job);
                self.origins.insert(Key::of(&w), (job, pid));
            }
            self.apply(&ev);
        }
        self.ranges.add(run_no, ranges);
        self.runs.push(rec);
        self.events += events.len() as u64;
        self.dirty = true;
        Some(events.len())
    }

    /// Applies one event to the row it concerns, keeping the live counts.
    fn apply(&mut self, ev: &Ev<'_>) {
        match views::target(ev) {
            Target::Task(id) => {
                let key = Key::of(&id);
                let State { mem, segments, task_high, names, ids, task_counts, failures, .. } = self;
                let row = row_mut(&mut mem.tasks, segments, task_high, Table::Tasks, key, TaskRec::decode);
                let before = (row.function, row.state);
                views::apply_task(row, ev, names, ids);
                let after = (row.function, row.state);
                if before != after {
                    if before.1 != TaskState::None {
                        *task_counts.entry(before).or_insert(0) -= 1;
                    }
                    *task_counts.entry(after).or_insert(0) += 1;
                    if after.1 == TaskState::Failed && before.1 != TaskState::Failed {
                        if failures.len() >= RECENT_FAILURES {
                            failures.pop_front();
                        }
                        let error = row.error.as_deref().unwrap_or("").lines().next().unwrap_or("").chars().take(300).collect();
                        failures.push_back(Failure { time_us: ev.time_us, task: id, function: row.function, error_type: row.error_type, error });
                    }
                }
            }
            Target::Object(id) => {
                let key = Key::of(&id);
                let State { mem, segments, object_high, names, ids, object_counts, .. } = self;
                let row = row_mut(&mut mem.objects, segments, object_high, Table::Objects, key, ObjectRec::decode);
                let before = (row.state, row.size);
                views::apply_object(row, ev, names, ids);
                let after = (row.state, row.size);
                if before != after {
                    if before.0 != ObjectState::None {
                        object_counts[before.0 as usize].0 -= 1;
                        object_counts[before.0 as usize].1 -= before.1 as i64;
                    }
                    object_counts[after.0 as usize].0 += 1;
                    object_counts[after.0 as usize].1 += after.1 as i64;
                }
            }
            Target::Worker(id) => views::apply_worker(self.workers.entry(Key::of(&id)).or_default(), &id, ev),
            Target::Node(id) => views::apply_node(self.nodes.entry(Key::of(&id)).or_default(), ev),
            Target::Job(id) => views::apply_job(self.jobs.entry(Key::of(&id)).or_default(), ev),
            Target::Actor(id) => views::apply_actor(self.actors.entry(Key::of(&id)).or_default(), ev),
            Target::None => {}
        }
    }
}

/// The memtable's row for `key`, read back from the segments first when it may be in one
/// (see the module doc of `index`: rows are changed whole, never merged from pieces).
fn row_mut<'m, R: Default>(
    mem: &'m mut Pages<R>,
    segments: &[SegmentRef],
    high: &FxHashMap<(u64, u64), u64>,
    table: Table,
    key: Key,
    decode: fn(&[u8]) -> Option<R>,
) -> &'m mut R {
    mem.entry(key, || {
        let maybe_flushed = high.get(&key.block()).is_some_and(|max| key.counter <= *max);
        if !maybe_flushed {
            return R::default();
        }
        for seg in segments.iter().rev() {
            match seg.get(table, key) {
                Ok(Some(v)) => match decode(v) {
                    Some(row) => return row,
                    None => {
                        tracing::warn!(segment = %seg.name, "an event index row does not decode; starting it again");
                        return R::default();
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(segment = %seg.name, error = %e, "an event index segment does not read; starting the row again");
                    return R::default();
                }
            }
        }
        R::default()
    })
}

/// What indexing a run needs besides the state, kept across the runs of a window.
#[derive(Default)]
struct Scratch<'b> {
    events: Vec<EventRef<'b>>,
    ranges: RunRanges,
}
