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

use rayr_proto::event::Detail;
use rayr_proto::{ActorRow, Event, EventKind, JobRow, NodeRow, ObjectRow, TaskRow, WorkerExitType, WorkerRow};

/// Which view an event updates, and the key of its row.
pub(crate) enum Target<'a> {
    Task(&'a [u8]),
    Object(&'a [u8]),
    Worker(&'a [u8]),
    Node(&'a [u8]),
    Job(&'a [u8]),
    Actor(&'a [u8]),
    None,
}

pub(crate) fn target(ev: &Event) -> Target<'_> {
    use EventKind::*;
    let nonempty = |id: &[u8]| !id.is_empty();
    match EventKind::try_from(ev.kind).unwrap_or(Unspecified) {
        TaskSubmitted | TaskScheduled | TaskStarted | TaskFinished | TaskFailed | TaskRetried
            if nonempty(&ev.task_id) =>
        {
            Target::Task(&ev.task_id)
        }
        ObjectCreated | ObjectBorrowed | ObjectReleased | ObjectFreed | ObjectLost if nonempty(&ev.object_id) => {
            Target::Object(&ev.object_id)
        }
        WorkerStarted | WorkerExited => {
            // A process recording its own start may leave worker_id empty.
            let id = if nonempty(&ev.worker_id) { &ev.worker_id } else { &ev.source_worker };
            if nonempty(id) { Target::Worker(id) } else { Target::None }
        }
        NodeStarted | NodeStopped | NodeDied | NodeJoined if nonempty(&ev.node_id) => Target::Node(&ev.node_id),
        JobStarted | JobFinished if nonempty(&ev.job_id) => Target::Job(&ev.job_id),
        ActorCreated | ActorDied | ActorRestarted if nonempty(&ev.actor_id) => Target::Actor(&ev.actor_id),
        _ => Target::None,
    }
}

fn fill(slot: &mut Vec<u8>, value: &[u8]) {
    if slot.is_empty() && !value.is_empty() {
        *slot = value.to_vec();
    }
}

fn task_rank(state: &str) -> Option<u8> {
    match state {
        "SUBMITTED" => Some(0),
        "SCHEDULED" => Some(1),
        "RUNNING" => Some(2),
        "FINISHED" | "FAILED" => Some(3),
        _ => None,
    }
}

pub(crate) fn apply_task(row: &mut TaskRow, ev: &Event) {
    use EventKind::*;
    let kind = EventKind::try_from(ev.kind).unwrap_or(Unspecified);
    let detail = match &ev.detail {
        Some(Detail::Task(d)) => Some(d),
        _ => None,
    };
    fill(&mut row.task_id, &ev.task_id);

    // Facts of the task itself, the same for every attempt.
    if let Some(d) = detail
        && row.function.is_empty()
    {
        row.function = d.function.clone();
    }
    fill(&mut row.job_id, &ev.job_id);
    if kind == TaskSubmitted {
        fill(&mut row.owner, &ev.source_worker);
        if row.submitted_us == 0 || ev.time_us < row.submitted_us {
            row.submitted_us = ev.time_us;
        }
    }

    // Which attempt this event is about. Without a detail it can only mean the current one.
    let attempt = match (kind, detail) {
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
        row.state.clear();
        row.worker_id.clear();
        row.node_id.clear();
        row.pid = 0;
        row.error.clear();
        row.error_type.clear();
        row.finished_us = 0;
    }

    let next = match kind {
        TaskSubmitted | TaskRetried => Some("SUBMITTED"),
        TaskScheduled => Some("SCHEDULED"),
        TaskStarted => Some("RUNNING"),
        TaskFinished => Some("FINISHED"),
        TaskFailed if detail.is_some_and(|d| d.r#final) => Some("FAILED"),
        _ => None, // a failure that will be retried leaves the state to the retry
    };
    if let Some(next) = next
        && task_rank(&row.state).is_none_or(|now| task_rank(next).unwrap() > now)
    {
        row.state = next.to_string();
    }

    match kind {
        TaskScheduled => {
            fill(&mut row.worker_id, &ev.worker_id);
            fill(&mut row.node_id, &ev.node_id);
        }
        TaskStarted => {
            // The worker itself says where the attempt runs; TASK_SCHEDULED was recorded
            // by the submitter, on its own node (another one, when the lease spilled).
            if !ev.worker_id.is_empty() {
                row.worker_id = ev.worker_id.clone();
            }
            if !ev.node_id.is_empty() {
                row.node_id = ev.node_id.clone();
            }
            let pid = detail.map(|d| d.pid).filter(|p| *p != 0).unwrap_or(ev.source_pid);
            if row.pid == 0 {
                row.pid = pid;
            }
        }
        TaskFinished => row.finished_us = ev.time_us,
        TaskFailed => {
            if let Some(d) = detail {
                row.error = d.error.clone();
                row.error_type = d.error_type.clone();
                if d.r#final {
                    row.finished_us = ev.time_us;
                }
            }
            fill(&mut row.worker_id, &ev.worker_id);
        }
        _ => {}
    }
    if row.state.is_empty() {
        row.state = "SUBMITTED".to_string();
    }
}

fn object_rank(state: &str) -> u8 {
    match state {
        "LOST" => 2,
        "FREED" => 1,
        _ => 0,
    }
}

/// `balance` is the object's running borrow balance (+1 per borrow, -1 per release).
pub(crate) fn apply_object(row: &mut ObjectRow, balance: &mut i64, ev: &Event) {
    use EventKind::*;
    let kind = EventKind::try_from(ev.kind).unwrap_or(Unspecified);
    let detail = match &ev.detail {
        Some(Detail::Object(d)) => Some(d),
        _ => None,
    };
    fill(&mut row.object_id, &ev.object_id);
    fill(&mut row.task_id, &ev.task_id);
    match kind {
        ObjectCreated => {
            // The owner is the process that created it (event.worker_id by contract).
            let owner = if ev.worker_id.is_empty() { &ev.source_worker } else { &ev.worker_id };
            fill(&mut row.owner, owner);
            if let Some(d) = detail {
                row.size = d.size;
                row.location = d.location.clone();
            }
            // Made again after it was lost with a node (its task re-ran): alive again.
            if row.state == "LOST" && ev.time_us >= row.ended_us {
                row.state = "ALIVE".to_string();
                row.reason.clear();
                row.ended_us = 0;
            }
            row.created_us = ev.time_us;
        }
        // Task-argument pins are the owner's own bookkeeping, not other holders.
        ObjectBorrowed | ObjectReleased if detail.is_none_or(|d| d.peer_kind != "task_argument") => {
            *balance += if kind == ObjectBorrowed { 1 } else { -1 };
            row.borrowers = (*balance).clamp(0, u32::MAX as i64) as u32;
        }
        ObjectFreed | ObjectLost => {
            let next = if kind == ObjectLost { "LOST" } else { "FREED" };
            // The first end is the object's end: a loss reported after it was freed (its
            // owner's exit dropping a copy the free had not reached yet) changes nothing,
            // whichever order the two are indexed in.
            let ended = object_rank(&row.state) > 0;
            if !ended || ev.time_us < row.ended_us || (ev.time_us == row.ended_us && object_rank(next) > object_rank(&row.state)) {
                row.state = next.to_string();
                row.reason = detail.map(|d| d.reason.clone()).unwrap_or_default();
                row.ended_us = ev.time_us;
            }
        }
        _ => {}
    }
    if row.state.is_empty() {
        row.state = "ALIVE".to_string();
    }
}

pub(crate) fn apply_worker(row: &mut WorkerRow, id: &[u8], ev: &Event) {
    use EventKind::*;
    fill(&mut row.worker_id, id);
    fill(&mut row.node_id, &ev.node_id);
    fill(&mut row.job_id, &ev.job_id);
    match EventKind::try_from(ev.kind).unwrap_or(Unspecified) {
        WorkerStarted => {
            if let Some(Detail::WorkerStart(s)) = &ev.detail {
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
            if let Some(Detail::WorkerExit(x)) = &ev.detail {
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

pub(crate) fn apply_actor(row: &mut ActorRow, ev: &Event) {
    use EventKind::*;
    fill(&mut row.actor_id, &ev.actor_id);
    fill(&mut row.job_id, &ev.job_id);
    let detail = match &ev.detail {
        Some(Detail::Actor(a)) => Some(a),
        _ => None,
    };
    let restart = detail.map_or(0, |a| a.restart);
    match EventKind::try_from(ev.kind).unwrap_or(Unspecified) {
        ActorCreated if restart >= row.life || row.created_us == 0 => {
            // The latest life's worker (a late event of an earlier life changes nothing).
            row.life = restart;
            row.worker_id = ev.worker_id.clone();
            row.node_id = ev.node_id.clone();
            row.created_us = ev.time_us;
            if let Some(a) = detail {
                row.class = a.class.clone();
                row.pid = a.pid;
                row.name = a.name.clone();
                if a.detached {
                    row.lifetime = "detached".into();
                }
            }
        }
        ActorDied => {
            row.state = "DEAD".to_string();
            row.died_us = ev.time_us;
            if let Some(a) = detail {
                row.death_cause = a.cause.clone();
                row.detail = a.detail.clone();
            }
        }
        ActorRestarted => {
            if let Some(a) = detail {
                row.detail = a.detail.clone();
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

pub(crate) fn apply_node(row: &mut NodeRow, ev: &Event) {
    use EventKind::*;
    fill(&mut row.node_id, &ev.node_id);
    let detail = match &ev.detail {
        Some(Detail::Node(d)) => Some(d),
        _ => None,
    };
    if let Some(d) = detail {
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
    match EventKind::try_from(ev.kind).unwrap_or(Unspecified) {
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
            row.reason = detail.map(|d| d.reason.clone()).unwrap_or_default();
        }
        NodeJoined if row.state.is_empty() => row.state = "ALIVE".to_string(),
        _ => {}
    }
}

pub(crate) fn apply_job(row: &mut JobRow, ev: &Event) {
    use EventKind::*;
    fill(&mut row.job_id, &ev.job_id);
    let detail = match &ev.detail {
        Some(Detail::Job(d)) => Some(d),
        _ => None,
    };
    if let Some(d) = detail {
        if row.binary.is_empty() {
            row.binary = d.binary.clone();
        }
        if row.pid == 0 {
            row.pid = d.pid;
        }
    }
    match EventKind::try_from(ev.kind).unwrap_or(Unspecified) {
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
    use rayr_proto::TaskDetail;

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
            let mut row = TaskRow::default();
            for e in order {
                apply_task(&mut row, e);
            }
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
                let (mut row, mut balance) = (ObjectRow::default(), 0);
                for e in order {
                    apply_object(&mut row, &mut balance, e);
                }
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
        let mut expected = TaskRow::default();
        for e in &events {
            apply_task(&mut expected, e);
        }
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
            let mut row = TaskRow::default();
            for e in &order {
                apply_task(&mut row, e);
            }
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
                peer_kind: "borrower".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut row = ObjectRow::default();
        let mut balance = 0;
        // Release arrives before the borrow, the free before the creation.
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectReleased, ""));
        assert_eq!(row.borrowers, 0);
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectBorrowed, ""));
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectBorrowed, ""));
        assert_eq!(row.borrowers, 1);
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectFreed, "out of scope"));
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectCreated, ""));
        assert_eq!(row.state, "FREED");
        assert_eq!(row.reason, "out of scope");
        assert_eq!(row.owner, vec![2; 16]);
        assert_eq!(row.size, 5);
        apply_object(&mut row, &mut balance, &ev(EventKind::ObjectLost, "owner died"));
        assert_eq!(row.state, "LOST");
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
        apply_actor(&mut row, &ev(EventKind::ActorDied, ActorDetail { cause: "killed".into(), detail: "by rayr::kill".into(), ..Default::default() }));
        apply_actor(&mut row, &ev(EventKind::ActorCreated, ActorDetail { class: "m::Counter".into(), pid: 7, ..Default::default() }));
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
        apply_actor(&mut row, &ev(EventKind::ActorRestarted, 1, 0));
        assert_eq!((row.state.as_str(), row.restarts), ("RESTARTING", 1));
        apply_actor(&mut row, &ev(EventKind::ActorCreated, 1, 22));
        apply_actor(&mut row, &ev(EventKind::ActorCreated, 0, 11)); // the first life, late
        assert_eq!((row.state.as_str(), row.restarts, row.pid), ("ALIVE", 1, 22));
        apply_actor(&mut row, &ev(EventKind::ActorRestarted, 2, 0));
        assert_eq!((row.state.as_str(), row.restarts), ("RESTARTING", 2));
    }
}
