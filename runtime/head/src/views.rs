//! The state views (tasks, objects, workers, nodes, jobs, actors): how each event changes a
//! row.
//!
//! Events reach the index out of order: every node has its own log, and within a node
//! batches from different processes interleave. So every rule here gives the same row
//! whatever order the events of one entity arrive in:
//!
//! - a task's position is `(attempt, rank)` with rank SUBMITTED < SCHEDULED < RUNNING <
//!   FINISHED = FAILED; a row only moves forward, and news of an older attempt is ignored
//!   except for facts true of every attempt (function, owner, job, submit time);
//! - objects, workers, nodes, jobs and actors have terminal states (FREED/LOST, DEAD,
//!   SUCCEEDED/FAILED) that a late "started" event never undoes;
//! - borrower counts are kept as a signed balance (sums commute), shown clamped at zero.
//!
//! Conventions the emitters follow: task events carry a `TaskDetail` with the attempt they
//! concern; TASK_RETRIED's `attempt` is the number of the attempt about to run (≥ 1).
//!
//! Events come as [`Ev`]: read in place from the log (`rayr_logs::EventRef`), with what the
//! record leaves out filled in (the node of the log it is in, its process's job and pid).
//! Task and object rows are the compact `index::rows` kinds (there is one per task); the
//! rest are the `rayr_proto` rows themselves.

use rayr_logs::Id;
use rayr_logs::event_run::{EventRef, FREED_BY_RELEASE, ObjectDetailRef, TaskDetailRef};
use rayr_proto::event::Detail;
use rayr_proto::{ActorRow, EventKind, JobRow, NodeRow, WorkerExitType, WorkerRow};

use crate::index::rows::{Ids, Names, ObjectRec, ObjectState, Reason, TaskRec, TaskState};

/// An event as the views see it: read in place, with the node, job, source and pid the
/// record leaves to its run or its process filled in.
#[derive(Clone, Copy)]
pub(crate) struct Ev<'a> {
    pub kind: EventKind,
    pub time_us: i64,
    pub task_id: Option<Id>,
    pub object_id: Option<Id>,
    pub actor_id: Option<Id>,
    pub worker_id: Option<Id>,
    pub node_id: Option<Id>,
    pub job_id: Option<Id>,
    pub source_worker: Option<Id>,
    pub source_pid: u32,
    /// The event's task or object detail, read once.
    pub task: Option<TaskDetailRef<'a>>,
    pub object: Option<ObjectDetailRef<'a>>,
    pub raw: EventRef<'a>,
}

impl<'a> Ev<'a> {
    /// An event with nothing filled in: what a whole event (one that names everything
    /// itself, as the node agent's do) is.
    #[cfg(test)]
    pub(crate) fn whole(raw: EventRef<'a>) -> Ev<'a> {
        Ev {
            kind: EventKind::try_from(raw.kind).unwrap_or(EventKind::Unspecified),
            time_us: raw.time_us,
            task_id: raw.task_id,
            object_id: raw.object_id,
            actor_id: raw.actor_id,
            worker_id: raw.worker_id,
            node_id: raw.node_id,
            job_id: raw.job_id,
            source_worker: raw.source_worker,
            source_pid: raw.source_pid,
            task: raw.task(),
            object: raw.object(),
            raw,
        }
    }

}

/// Which view an event updates, and the key of its row.
pub(crate) enum Target {
    Task(Id),
    Object(Id),
    Worker(Id),
    Node(Id),
    Job(Id),
    Actor(Id),
    None,
}

pub(crate) fn target(ev: &Ev<'_>) -> Target {
    use EventKind::*;
    match ev.kind {
        TaskSubmitted | TaskScheduled | TaskStarted | TaskFinished | TaskFailed | TaskRetried => {
            ev.task_id.map_or(Target::None, Target::Task)
        }
        ObjectCreated | ObjectBorrowed | ObjectReleased | ObjectFreed | ObjectLost => {
            ev.object_id.map_or(Target::None, Target::Object)
        }
        // A process recording its own start may leave worker_id empty.
        WorkerStarted | WorkerExited => ev.worker_id.or(ev.source_worker).map_or(Target::None, Target::Worker),
        NodeStarted | NodeStopped | NodeDied | NodeJoined => ev.node_id.map_or(Target::None, Target::Node),
        JobStarted | JobFinished => ev.job_id.map_or(Target::None, Target::Job),
        ActorCreated | ActorDied | ActorRestarted => ev.actor_id.map_or(Target::None, Target::Actor),
        _ => Target::None,
    }
}

fn fill(slot: &mut Vec<u8>, value: Option<Id>) {
    if slot.is_empty()
        && let Some(v) = value
    {
        *slot = v.to_vec();
    }
}

fn fill_ix(slot: &mut u32, value: Option<Id>, ids: &mut Ids) {
    if *slot == 0 && value.is_some() {
        *slot = ids.intern_opt(value);
    }
}

pub(crate) fn apply_task(row: &mut TaskRec, ev: &Ev<'_>, names: &mut Names, ids: &mut Ids) {
    use EventKind::*;
    let kind = ev.kind;
    let detail = ev.task;

    // Facts of the task itself, the same for every attempt.
    if let Some(d) = &detail
        && row.function == 0
    {
        row.function = names.intern(d.function);
    }
    fill_ix(&mut row.job, ev.job_id, ids);
    if kind == TaskSubmitted {
        fill_ix(&mut row.owner, ev.source_worker, ids);
        if row.submitted_us == 0 || ev.time_us < row.submitted_us {
            row.submitted_us = ev.time_us;
        }
    }

    // Which attempt this event is about. Without a detail it can only mean the current one.
    let attempt = match (kind, &detail) {
        (TaskRetried, Some(d)) if d.attempt > 0 => d.attempt,
        (TaskRetried, _) => row.attempt + 1,
        (_, Some(d)) => d.attempt,
        (_, None) => row.attempt,
    };
    if attempt < row.attempt {
        return; // an earlier attempt's news: the row already shows a later one
    }
    if attempt > row.attempt {
        // A new attempt: what the row said about the last one no longer holds.
        row.attempt = attempt;
        row.state = TaskState::None;
        row.worker = 0;
        row.node = 0;
        row.pid = 0;
        row.error = None;
        row.error_type = 0;
        row.finished_us = 0;
    }

    let next = match kind {
        TaskSubmitted | TaskRetried => Some(TaskState::Submitted),
        TaskScheduled => Some(TaskState::Scheduled),
        TaskStarted => Some(TaskState::Running),
        TaskFinished => Some(TaskState::Finished),
        TaskFailed if detail.is_some_and(|d| d.is_final) => Some(TaskState::Failed),
        _ => None, // a failure that will be retried leaves the state to the retry
    };
    if let Some(next) = next
        && row.state.rank().is_none_or(|now| next.rank().unwrap() > now)
    {
        row.state = next;
    }

    match kind {
        TaskScheduled => {
            fill_ix(&mut row.worker, ev.worker_id, ids);
            fill_ix(&mut row.node, ev.node_id, ids);
        }
        TaskStarted => {
            // The worker itself says where the attempt runs; TASK_SCHEDULED was recorded
            // by the submitter, on its own node (another one, when the lease spilled).
            if ev.worker_id.is_some() {
                row.worker = ids.intern_opt(ev.worker_id);
            }
            if ev.node_id.is_some() {
                row.node = ids.intern_opt(ev.node_id);
            }
            let pid = detail.map(|d| d.pid).filter(|p| *p != 0).unwrap_or(ev.source_pid);
            if row.pid == 0 {
                row.pid = pid;
            }
        }
        TaskFinished => row.finished_us = ev.time_us,
        TaskFailed => {
            if let Some(d) = &detail {
                row.error = (!d.error.is_empty()).then(|| d.error.into());
                row.error_type = names.intern(d.error_type.word());
                if d.is_final {
                    row.finished_us = ev.time_us;
                }
            }
            fill_ix(&mut row.worker, ev.worker_id, ids);
        }
        _ => {}
    }
    if row.state == TaskState::None {
        row.state = TaskState::Submitted;
    }
}

/// Applies one event to an object's row (its borrow balance included).
pub(crate) fn apply_object(row: &mut ObjectRec, ev: &Ev<'_>, names: &mut Names, ids: &mut Ids) {
    use EventKind::*;
    let kind = ev.kind;
    let detail = ev.object;
    if row.task.is_none() {
        row.task = ev.task_id;
    }
    match kind {
        ObjectCreated => {
            // The owner is the process that created it (event.worker_id by contract).
            fill_ix(&mut row.owner, ev.worker_id.or(ev.source_worker), ids);
            if let Some(d) = &detail {
                row.size = d.size;
                row.location = names.intern(d.location);
            }
            // Made again after it was lost with a node (its task re-ran): alive again.
            if row.state == ObjectState::Lost && ev.time_us >= row.ended_us {
                row.state = ObjectState::Alive;
                row.reason = Reason::None;
                row.ended_us = 0;
            }
            row.created_us = ev.time_us;
        }
        // Task-argument pins are the owner's own bookkeeping, not other holders.
        ObjectBorrowed | ObjectReleased if detail.is_none_or(|d| d.peer_kind != rayr_proto::PeerKind::TaskArgument) => {
            row.balance += if kind == ObjectBorrowed { 1 } else { -1 };
        }
        ObjectFreed | ObjectLost => {
            let next = if kind == ObjectLost { ObjectState::Lost } else { ObjectState::Freed };
            // The first end is the object's end: a loss reported after it was freed (its
            // owner's exit dropping a copy the free had not reached yet) changes nothing,
            // whichever order the two are indexed in.
            let ended = row.state.rank() > 0;
            if !ended || ev.time_us < row.ended_us || (ev.time_us == row.ended_us && next.rank() > row.state.rank()) {
                row.state = next;
                // A packed OBJECT_FREED without a reason was freed by release (see
                // rayr_logs::event_run::FREED_BY_RELEASE).
                let reason = detail.map(|d| d.reason).unwrap_or_default();
                row.reason = if reason.is_empty() && kind == ObjectFreed && ev.raw.detail.is_none_or(|d| d.field == rayr_logs::event_run::detail_field::OBJECT) {
                    Reason::of(FREED_BY_RELEASE)
                } else {
                    Reason::of(reason)
                };
                row.ended_us = ev.time_us;
            }
        }
        _ => {}
    }
    if row.state == ObjectState::None {
        row.state = ObjectState::Alive;
    }
}

fn detail(ev: &Ev<'_>) -> Option<Detail> {
    ev.raw.detail()
}

pub(crate) fn apply_worker(row: &mut WorkerRow, id: &Id, ev: &Ev<'_>) {
    use EventKind::*;
    fill(&mut row.worker_id, Some(*id));
    fill(&mut row.node_id, ev.node_id);
    fill(&mut row.job_id, ev.job_id);
    match ev.kind {
        WorkerStarted => {
            if let Some(Detail::WorkerStart(s)) = detail(ev) {
                row.pid = s.pid;
                row.is_driver = s.is_driver;
            }
            if row.pid == 0 {
                row.pid = ev.source_pid;
            }
            row.started_us = ev.time_us;
            if row.state.is_empty() {
                row.state = "ALIVE".to_string();
            }
        }
        WorkerExited => {
            row.state = "DEAD".to_string();
            row.exited_us = ev.time_us;
            if let Some(Detail::WorkerExit(x)) = detail(ev) {
                let exit_type = WorkerExitType::try_from(x.exit_type).unwrap_or(WorkerExitType::WorkerExitUnspecified);
                row.exit_type = exit_type.as_str_name().to_string();
                row.exit_code = x.exit_code;
                row.signal = x.signal;
                row.detail = x.detail.clone();
                row.peak_rss_bytes = x.peak_rss_bytes;
                if row.pid == 0 {
                    row.pid = x.pid;
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn apply_actor(row: &mut ActorRow, ev: &Ev<'_>) {
    use EventKind::*;
    fill(&mut row.actor_id, ev.actor_id);
    fill(&mut row.job_id, ev.job_id);
    let detail = match detail(ev) {
        Some(Detail::Actor(a)) => Some(a),
        _ => None,
    };
    let restart = detail.as_ref().map_or(0, |a| a.restart);
    match ev.kind {
        ActorCreated if restart >= row.life || row.created_us == 0 => {
            // The latest life's worker (a late event of an earlier life changes nothing).
            row.life = restart;
            row.worker_id = ev.worker_id.map(|w| w.to_vec()).unwrap_or_default();
            row.node_id = ev.node_id.map(|w| w.to_vec()).unwrap_or_default();
            row.created_us = ev.time_us;
            if let Some(a) = detail {
                row.class = a.class;
                row.pid = a.pid;
                row.name = a.name;
                if a.detached {
                    row.lifetime = "detached".into();
                }
            }
        }
        ActorDied => {
            row.state = "DEAD".to_string();
            row.died_us = ev.time_us;
            if let Some(a) = detail {
                row.death_cause = a.cause().word().to_string();
                row.detail = a.detail;
            }
        }
        ActorRestarted => {
            if let Some(a) = detail {
                row.detail = a.detail;
            }
        }
        _ => {}
    }
    row.restarts = row.restarts.max(restart);
    if row.state != "DEAD" {
        // Alive once the latest restart's creation is in; restarting until then.
        row.state = if row.created_us != 0 && row.life == row.restarts { "ALIVE" } else { "RESTARTING" }.to_string();
    }
}

pub(crate) fn apply_node(row: &mut NodeRow, ev: &Ev<'_>) {
    use EventKind::*;
    fill(&mut row.node_id, ev.node_id);
    let detail = match detail(ev) {
        Some(Detail::Node(d)) => Some(d),
        _ => None,
    };
    if let Some(d) = &detail {
        if row.address.is_empty() {
            row.address = d.address.clone();
        }
        if row.resources.is_empty() {
            row.resources = d.resources.clone();
        }
        if row.store_capacity == 0 {
            row.store_capacity = d.store_capacity;
        }
        if row.labels.is_empty() {
            row.labels = d.labels.clone();
        }
    }
    match ev.kind {
        NodeStarted => {
            row.started_us = ev.time_us;
            if row.state.is_empty() {
                row.state = "ALIVE".to_string();
            }
        }
        // The first end is the one that explains it (a node declared dead may still stop
        // itself later, when it learns so).
        NodeStopped | NodeDied if row.stopped_us == 0 || ev.time_us < row.stopped_us => {
            row.state = "DEAD".to_string();
            row.stopped_us = ev.time_us;
            row.reason = detail.map(|d| d.reason).unwrap_or_default();
        }
        NodeJoined if row.state.is_empty() => row.state = "ALIVE".to_string(),
        _ => {}
    }
}

pub(crate) fn apply_job(row: &mut JobRow, ev: &Ev<'_>) {
    use EventKind::*;
    fill(&mut row.job_id, ev.job_id);
    let detail = match detail(ev) {
        Some(Detail::Job(d)) => Some(d),
        _ => None,
    };
    if let Some(d) = &detail {
        if row.binary.is_empty() {
            row.binary = d.binary.clone();
        }
        if row.pid == 0 {
            row.pid = d.pid;
        }
    }
    match ev.kind {
        JobStarted => {
            row.started_us = ev.time_us;
            if row.state.is_empty() {
                row.state = "RUNNING".to_string();
            }
        }
        JobFinished => {
            let code = detail.map(|d| d.exit_code).unwrap_or(0);
            row.state = if code == 0 { "SUCCEEDED" } else { "FAILED" }.to_string();
            row.finished_us = ev.time_us;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::{Event, ObjectRow, TaskDetail, TaskRow};

    /// Reads a whole `Event` (as a test writes it) the way the index reads the log.
    fn with_ev<R>(e: &Event, f: impl FnOnce(&Ev<'_>) -> R) -> R {
        let mut wire = Vec::new();
        rayr_logs::encode_single_run_frame(e, &mut wire);
        let (body, _) = rayr_proto::split_frame(&wire).unwrap().unwrap();
        let run = rayr_logs::RunView::parse(body).unwrap();
        let raw = run.events().next().unwrap().unwrap();
        f(&Ev::whole(raw))
    }

    /// The task row `events` give, applied in this order.
    fn task_row<'a>(events: impl IntoIterator<Item = &'a Event>) -> TaskRow {
        let (mut row, mut names, mut ids) = (TaskRec::default(), Names::default(), Ids::default());
        let mut id = [0; 16];
        for e in events {
            id = e.task_id.as_slice().try_into().unwrap();
            with_ev(e, |ev| apply_task(&mut row, ev, &mut names, &mut ids));
        }
        row.to_proto(&id, &names, &ids)
    }

    /// The object row `events` give, applied in this order.
    fn object_row<'a>(events: impl IntoIterator<Item = &'a Event>) -> ObjectRow {
        let (mut row, mut names, mut ids) = (ObjectRec::default(), Names::default(), Ids::default());
        let mut id = [0; 16];
        for e in events {
            id = e.object_id.as_slice().try_into().unwrap();
            with_ev(e, |ev| apply_object(&mut row, ev, &mut names, &mut ids));
        }
        row.to_proto(&id, &names, &ids)
    }

    fn actor(row: &mut ActorRow, e: &Event) {
        with_ev(e, |ev| apply_actor(row, ev));
    }

    fn task_event(kind: EventKind, attempt: u32, t: i64) -> Event {
        Event {
            kind: kind as i32,
            time_us: t,
            task_id: vec![7; 16],
            worker_id: if kind == EventKind::TaskSubmitted { vec![] } else { vec![attempt as u8 + 1; 16] },
            source_worker: vec![9; 16],
            detail: Some(Detail::Task(TaskDetail {
                function: "m::f".into(),
                attempt,
                r#final: kind == EventKind::TaskFailed && attempt == 1,
                error: if kind == EventKind::TaskFailed { format!("boom {attempt}") } else { String::new() },
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// A spilled task: scheduled by its submitter on one node, run on another. The row
    /// names where it ran, whichever event is indexed first.
    #[test]
    fn a_task_row_names_the_node_it_ran_on_not_its_submitters() {
        use EventKind::*;
        let mut scheduled = task_event(TaskScheduled, 0, 2);
        scheduled.node_id = vec![0xa; 16];
        let mut started = task_event(TaskStarted, 0, 3);
        started.node_id = vec![0xb; 16];
        for order in [[&scheduled, &started], [&started, &scheduled]] {
            let row = task_row(order);
            assert_eq!(row.node_id, vec![0xb; 16]);
        }
    }

    /// An object's first end is its end, whichever order its ends are indexed in.
    #[test]
    fn an_object_freed_before_a_late_loss_stays_freed_and_a_lost_one_stays_lost() {
        let end = |kind: EventKind, t: i64| Event {
            kind: kind as i32,
            time_us: t,
            object_id: vec![4; 16],
            detail: Some(Detail::Object(rayr_proto::ObjectDetail { reason: format!("{kind:?}"), ..Default::default() })),
            ..Default::default()
        };
        for (first, second, expected) in [
            (end(EventKind::ObjectFreed, 10), end(EventKind::ObjectLost, 12), "FREED"),
            (end(EventKind::ObjectLost, 5), end(EventKind::ObjectFreed, 9), "LOST"),
        ] {
            for order in [[&first, &second], [&second, &first]] {
                let row = object_row(order);
                assert_eq!(row.state, expected);
            }
        }
    }

    /// Every order of the same events gives the same row.
    #[test]
    fn task_row_is_independent_of_arrival_order() {
        use EventKind::*;
        let events = vec![
            task_event(TaskSubmitted, 0, 1),
            task_event(TaskScheduled, 0, 2),
            task_event(TaskStarted, 0, 3),
            task_event(TaskFailed, 0, 4),
            task_event(TaskRetried, 1, 5),
            task_event(TaskScheduled, 1, 6),
            task_event(TaskStarted, 1, 7),
            task_event(TaskFailed, 1, 8),
        ];
        let expected = task_row(&events);
        assert_eq!(expected.state, "FAILED");
        assert_eq!(expected.attempt, 1);
        assert_eq!(expected.error, "boom 1");
        assert_eq!(expected.worker_id, vec![2; 16]);
        assert_eq!(expected.owner, vec![9; 16]);
        assert_eq!(expected.submitted_us, 1);
        assert_eq!(expected.finished_us, 8);

        // Reversed, and a rotation, give the same row.
        for order in [events.iter().rev().cloned().collect::<Vec<_>>(), {
            let mut v = events.clone();
            v.rotate_left(3);
            v
        }] {
            let row = task_row(&order);
            assert_eq!(row, expected);
        }
    }

    #[test]
    fn object_terminal_states_win_and_borrows_balance() {
        use rayr_proto::ObjectDetail;
        let ev = |kind: EventKind, reason: &str| Event {
            kind: kind as i32,
            object_id: vec![1; 16],
            worker_id: vec![2; 16],
            time_us: 10,
            detail: Some(Detail::Object(ObjectDetail {
                size: 5,
                location: "inline".into(),
                reason: reason.into(),
                peer_kind: rayr_proto::PeerKind::Borrower as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        // Release arrives before the borrow, the free before the creation.
        let mut seen = vec![ev(EventKind::ObjectReleased, "")];
        assert_eq!(object_row(&seen).borrowers, 0);
        seen.push(ev(EventKind::ObjectBorrowed, ""));
        seen.push(ev(EventKind::ObjectBorrowed, ""));
        assert_eq!(object_row(&seen).borrowers, 1);
        seen.push(ev(EventKind::ObjectFreed, "out of scope"));
        seen.push(ev(EventKind::ObjectCreated, ""));
        let row = object_row(&seen);
        assert_eq!(row.state, "FREED");
        assert_eq!(row.reason, "out of scope");
        assert_eq!(row.owner, vec![2; 16]);
        assert_eq!(row.size, 5);
        seen.push(ev(EventKind::ObjectLost, "owner died"));
        assert_eq!(object_row(&seen).state, "LOST");
    }

    #[test]
    fn an_actor_s_death_stands_whatever_order_its_events_arrive_in() {
        use rayr_proto::ActorDetail;
        let ev = |kind: EventKind, detail: ActorDetail| Event {
            kind: kind as i32,
            actor_id: vec![3; 16],
            worker_id: vec![4; 16],
            time_us: 20,
            detail: Some(Detail::Actor(detail)),
            ..Default::default()
        };
        let mut row = ActorRow::default();
        actor(&mut row, &ev(EventKind::ActorDied, ActorDetail { cause: rayr_proto::ActorDeathCause::Killed as i32, detail: "by rayr::kill".into(), ..Default::default() }));
        actor(&mut row, &ev(EventKind::ActorCreated, ActorDetail { class: "m::Counter".into(), pid: 7, ..Default::default() }));
        assert_eq!((row.state.as_str(), row.death_cause.as_str(), row.class.as_str(), row.pid), ("DEAD", "killed", "m::Counter", 7));
        assert_eq!(row.worker_id, vec![4; 16]);
    }

    #[test]
    fn an_actor_s_restarts_count_whatever_order_their_events_arrive_in() {
        use rayr_proto::ActorDetail;
        let ev = |kind: EventKind, restart: u32, pid: u32| Event {
            kind: kind as i32,
            actor_id: vec![3; 16],
            worker_id: vec![restart as u8 + 1; 16],
            time_us: 10 + restart as i64,
            detail: Some(Detail::Actor(ActorDetail { restart, pid, ..Default::default() })),
            ..Default::default()
        };
        let mut row = ActorRow::default();
        actor(&mut row, &ev(EventKind::ActorRestarted, 1, 0));
        assert_eq!((row.state.as_str(), row.restarts), ("RESTARTING", 1));
        actor(&mut row, &ev(EventKind::ActorCreated, 1, 22));
        actor(&mut row, &ev(EventKind::ActorCreated, 0, 11)); // the first life, late
        assert_eq!((row.state.as_str(), row.restarts, row.pid), ("ALIVE", 1, 22));
        actor(&mut row, &ev(EventKind::ActorRestarted, 2, 0));
        assert_eq!((row.state.as_str(), row.restarts), ("RESTARTING", 2));
    }
}
