//! [`explain`]: from an id to a [`Report`].
//!
//! 1. It resolves the id (through the [`Record`]) and finds what the id names: a task,
//!    object, actor, worker, node, job, or a single event.
//! 2. It picks the event that ended it: a task's final TASK_FAILED (or says that it
//!    finished, or has not ended), a worker's first WORKER_EXITED, an object's OBJECT_LOST
//!    (OBJECT_FREED is reported as what it is, not a death), an actor's ACTOR_DIED, a
//!    node's first NODE_STOPPED or NODE_DIED, a job's JOB_FINISHED.
//! 3. From that event it follows `cause` links back to the root, one event per step. For a
//!    task it also lists the retries and reads what the failed attempt wrote; for a worker
//!    or actor, what its end brought about.
//! 4. It picks the root cause and its advice ([`crate::cause`], [`crate::advice`]).

use std::collections::HashMap;

use rayr_logs::hex;
use rayr_proto::{Event, EventKind, WorkerExitType};

use crate::cause::{Cause, actor_end_is_a_crash, is_driver_exit, root_cause};
use crate::entity::{Entity, Role};
use crate::event::{actor, exit, is, job, kind_name, kind_of, node, object, start, task};
use crate::record::{Record, RecordError, Resolved};
use crate::report::Report;
use crate::words::{first_line, human_bytes, local_time};

/// Events read to find out what an id names.
const FIRST_EVENTS: usize = 64;
/// Most events read about one task or object (its whole life is far fewer).
const ENTITY_EVENTS: usize = 100_000;
/// Most events of one kind read when looking for one worker's, node's or job's end.
const KIND_EVENTS: usize = 1_000_000;
/// Longest cause chain followed (a guard; real chains are a dozen steps at most).
const MAX_CHAIN: usize = 100;

/// Why an explanation could not be given.
#[derive(Debug)]
pub enum ExplainError {
    /// No id in the record matches `pattern`; `message` is the record's own words for it.
    UnknownId { pattern: String, message: String },
    /// The record could not be read (or the pattern is not an id, or names several).
    Record(RecordError),
}

impl std::fmt::Display for ExplainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExplainError::UnknownId { message, .. } => f.write_str(message),
            ExplainError::Record(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExplainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExplainError::UnknownId { .. } => None,
            ExplainError::Record(e) => Some(e.as_ref()),
        }
    }
}

impl From<RecordError> for ExplainError {
    fn from(e: RecordError) -> ExplainError {
        ExplainError::Record(e)
    }
}

type Result<T> = std::result::Result<T, ExplainError>;

/// Finds what ended the thing `pattern` names, and why.
pub async fn explain<R: Record>(record: &mut R, pattern: &str) -> Result<Report> {
    let (id, first) = match record.resolve(pattern, FIRST_EVENTS).await? {
        Resolved::Id { id, first } => (id, first),
        Resolved::Unknown(message) => {
            return Err(ExplainError::UnknownId { pattern: pattern.trim().to_string(), message });
        }
    };
    let mut rec = Reader { record, seen: HashMap::new() };
    rec.remember(&first);
    let role = Role::of(&id, &first);
    let mut r = Report::new(id.clone(), role);
    match role {
        Role::Entity(Entity::Task) => explain_task(&mut rec, &mut r, &id).await?,
        Role::Entity(Entity::Object) => explain_object(&mut rec, &mut r).await?,
        Role::Entity(Entity::Actor) => explain_actor(&mut rec, &mut r).await?,
        Role::Entity(Entity::Worker) => explain_worker(&mut rec, &mut r).await?,
        Role::Entity(Entity::Job) => explain_job(&mut rec, &mut r).await?,
        Role::Entity(Entity::Node) => explain_node(&mut rec, &mut r).await?,
        Role::Event => match rec.event(&id).await? {
            Some(ev) => {
                r.summary = format!("event {} is a {} at {}", hex(&id), kind_name(ev.kind), local_time(ev.time_us));
                walk(&mut rec, &mut r, ev, MAX_CHAIN).await?;
            }
            None => {
                r.summary = format!("{} is named as a cause, but the record holds no event with that id", hex(&id));
            }
        },
    }
    if r.cause.is_none() && r.walked {
        let stderr_shown = r.exit().is_some_and(|(_, x)| !x.stderr_tail.is_empty());
        if let Some((cause, at)) = root_cause(&r.chain)
            && let Some(advice) = cause.advice(stderr_shown)
        {
            (r.advice, r.root_cause, r.cause) = (Some(advice), Some(at), Some(cause));
        }
    }
    Ok(r)
}

/// The record as one explanation reads it: every event seen so far by its id (most cause
/// lookups are answered from what an earlier query brought).
struct Reader<'r, R> {
    record: &'r mut R,
    seen: HashMap<Vec<u8>, Event>,
}

impl<R: Record> Reader<'_, R> {
    fn live(&self) -> bool {
        self.record.live()
    }

    async fn naming(&mut self, id: &[u8], limit: usize) -> Result<Vec<Event>> {
        let events = self.record.events_naming(id, limit).await?;
        self.remember(&events);
        Ok(events)
    }

    /// Events of `kind` whose `field` is `id`. Read by kind, not by id: a worker, node or
    /// job is named by far more events than there are events of one lifecycle kind.
    async fn of_kind(&mut self, kind: EventKind, id: &[u8], field: fn(&Event) -> &[u8]) -> Result<Vec<Event>> {
        let mut events = self.record.events_of_kind(kind, KIND_EVENTS).await?;
        events.retain(|e| field(e) == id);
        self.remember(&events);
        Ok(events)
    }

    /// The event whose own id is `id`, if the record has it.
    async fn event(&mut self, id: &[u8]) -> Result<Option<Event>> {
        if let Some(ev) = self.seen.get(id) {
            return Ok(Some(ev.clone()));
        }
        let ev = self.record.event(id).await?;
        self.remember(ev.as_slice());
        Ok(ev)
    }

    /// Events whose `cause` is `id`: what that event brought about.
    async fn effects(&mut self, id: &[u8]) -> Result<Vec<Event>> {
        let events = self.record.effects(id).await?;
        self.remember(&events);
        Ok(events)
    }

    fn remember(&mut self, events: &[Event]) {
        for e in events {
            self.seen.entry(e.id.clone()).or_insert_with(|| e.clone());
        }
    }
}

/// Follows `cause` links from `start` to the root (at most `steps` events), into `r.chain`.
async fn walk<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report, start: Event, steps: usize) -> Result<()> {
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

async fn explain_task<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report, task_id: &[u8]) -> Result<()> {
    let mut events = rec.naming(task_id, ENTITY_EVENTS).await?;
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
        let kind = t.error_type().word();
        let what = if kind.is_empty() { String::new() } else { format!("{kind}: ") };
        r.summary = format!(
            "{name} failed for good at {}{retried} (attempt {}, max_retries {}): {what}{}",
            local_time(failed.time_us),
            t.attempt,
            t.max_retries,
            first_line(&t.error)
        );
        walk(rec, r, failed.clone(), MAX_CHAIN).await?;
        let pid = events
            .iter()
            .rev()
            .filter(|e| is(e, EventKind::TaskStarted) && e.worker_id == failed.worker_id)
            .find_map(task)
            .map(|t| t.pid);
        if let Some(pid) = pid {
            r.task_output = rec.record.task_output(failed, pid).await;
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
    match kind_of(last) {
        EventKind::TaskSubmitted => format!("SUBMITTED (waiting for a worker since {since})"),
        EventKind::TaskScheduled => {
            format!("SCHEDULED on worker {} (attempt {attempt}, since {since})", hex(&last.worker_id))
        }
        EventKind::TaskStarted => format!(
            "RUNNING on worker {} (attempt {attempt}, pid {}, since {since})",
            hex(&last.worker_id),
            task(last).map(|t| t.pid).unwrap_or(0)
        ),
        EventKind::TaskRetried => format!("waiting to run attempt {attempt} (retried at {since})"),
        EventKind::TaskFailed => format!("waiting for a retry (attempt {attempt} failed at {since})"),
        _ => format!("{} (at {since})", kind_name(last.kind)),
    }
}

async fn explain_object<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report) -> Result<()> {
    let id = r.id.clone();
    let mut events = rec.naming(&id, ENTITY_EVENTS).await?;
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
    let remade =
        lost.and_then(|l| events.iter().rev().find(|e| is(e, EventKind::ObjectCreated) && e.time_us > l.time_us));
    if let (Some(lost), Some(remade)) = (lost, remade) {
        let reason = object(lost).map(|o| o.reason.as_str()).unwrap_or_default();
        r.summary = format!(
            "{name} was lost at {} ({reason}) and made again at {} by worker {}{}",
            local_time(lost.time_us),
            local_time(remade.time_us),
            hex(&remade.worker_id),
            if freed.is_some_and(|f| f.time_us > remade.time_us) {
                ", then freed when its references were dropped"
            } else {
                ""
            }
        );
        walk(rec, r, lost.clone(), MAX_CHAIN).await?;
        r.cause = Some(Cause::ObjectRemade);
        r.advice = Cause::ObjectRemade.advice(false);
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

async fn explain_worker<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report) -> Result<()> {
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
    let who = if start.is_driver || is_driver_exit(&x) { "driver" } else { who };
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

async fn explain_actor<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report) -> Result<()> {
    let id = r.id.clone();
    let created = rec.of_kind(EventKind::ActorCreated, &id, |e| e.actor_id.as_slice()).await?;
    let died = rec.of_kind(EventKind::ActorDied, &id, |e| e.actor_id.as_slice()).await?;
    let (class, pid) =
        created.last().and_then(actor).map(|a| (a.class.clone(), a.pid)).unwrap_or_else(|| ("an actor".into(), 0));
    let worker = created.last().map(|e| format!(" in worker {} (pid {pid})", hex(&e.worker_id))).unwrap_or_default();
    let Some(died_ev) = died.into_iter().max_by_key(|e| e.time_us) else {
        r.summary = match created.last() {
            Some(c) if rec.live() => {
                format!("actor {} ({class}) is alive{worker}, created at {}", hex(&id), local_time(c.time_us))
            }
            Some(c) => format!(
                "actor {} ({class}) was created{worker} at {}; the cluster stopped before it ended",
                hex(&id),
                local_time(c.time_us)
            ),
            None => format!(
                "actor {}: no creation is recorded (its constructor may not have run yet, or failed: see its creation task)",
                hex(&id)
            ),
        };
        r.chain = created;
        return Ok(());
    };
    let d = actor(&died_ev).cloned().unwrap_or_default();
    // Restarts used and left (its owner records them in ACTOR_DIED). Restarts seen in the
    // record (each life is an ACTOR_CREATED), for ends that do not count them (its owner
    // or handles went: restarts do not apply).
    let lives = created.len().saturating_sub(1) as u32;
    let restarts = match (d.restart, d.max_restarts) {
        (_, -1) => format!(
            " after {} restart(s) (max_restarts -1: it restarts for ever, so this end was not a crash)",
            d.restart
        ),
        (0, 0) if !actor_end_is_a_crash(d.cause()) => {
            if lives > 0 {
                format!(" after {lives} restart(s)")
            } else {
                String::new()
            }
        }
        (0, 0) => " (max_restarts 0: it was never to restart)".to_string(),
        (used, max) if used as i32 >= max => format!(" after {used} restart(s) of max_restarts {max}: none left"),
        (used, max) => format!(
            " after {used} restart(s) of max_restarts {max} ({} left, not used: it did not crash)",
            max - used as i32
        ),
    };
    r.summary = format!(
        "actor {} ({class}){worker} ended at {}{restarts} ({}): {}",
        hex(&id),
        local_time(died_ev.time_us),
        d.cause().word(),
        d.detail
    );
    r.effects = rec.effects(&died_ev.id).await?;
    walk(rec, r, died_ev, MAX_CHAIN).await?;
    Ok(())
}

async fn explain_node<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report) -> Result<()> {
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
        r.cause = Some(Cause::NodeEndUnrecorded);
        r.advice = Cause::NodeEndUnrecorded.advice(false);
    }
    r.chain = starts;
    Ok(())
}

async fn explain_job<R: Record>(rec: &mut Reader<'_, R>, r: &mut Report) -> Result<()> {
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
