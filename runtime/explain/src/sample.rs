//! A small record of failures, and a [`Record`] held in memory: for the tests of the
//! explainer and of whatever renders its reports (the CLI, later the dashboard), and for
//! examples.
//!
//! [`record`] holds: a task retried after its worker was SIGKILLed whose retry's worker
//! was SIGKILLed too (final: `worker_died`); an object lost because its owner died; a task
//! that finished after a panic; a task that panicked for good; an object freed.

use rayr_logs::{Session, hex};
use rayr_proto::event::Detail;
use rayr_proto::{Event, EventKind, ObjectDetail, TaskDetail, WorkerExit, WorkerExitType, WorkerStart};

use crate::event::object;
use crate::record::{Record, RecordError, Resolved};

/// An id made by "process" `process` (its 8 bytes), counter `n`.
pub fn id(process: u8, n: u64) -> Vec<u8> {
    let mut v = vec![process; 8];
    v.extend_from_slice(&n.to_be_bytes());
    v
}
pub fn node_id() -> Vec<u8> {
    id(0xaa, 1)
}
pub fn driver() -> Vec<u8> {
    id(0xd1, 1)
}
/// The task retried after a SIGKILL, then failed for good.
pub fn task_id() -> Vec<u8> {
    id(0xd1, 100)
}
/// The workers of its two attempts.
pub fn w1() -> Vec<u8> {
    id(0xc1, 1)
}
pub fn w2() -> Vec<u8> {
    id(0xc2, 1)
}
/// The owner of [`obj`].
pub fn w3() -> Vec<u8> {
    id(0xc3, 1)
}
/// The object lost when its owner died.
pub fn obj() -> Vec<u8> {
    id(0xc3, 50)
}
/// The task that finished after a panic.
pub fn flaky() -> Vec<u8> {
    id(0xd1, 200)
}
/// The task that panicked for good.
pub fn boom() -> Vec<u8> {
    id(0xd1, 300)
}
/// The object that was freed.
pub fn freed() -> Vec<u8> {
    id(0xd1, 500)
}
/// The return object of [`task_id`], never stored.
pub fn task_return() -> Vec<u8> {
    id(0xd1, 101)
}
/// The id of event `n`.
pub fn eid(n: u64) -> Vec<u8> {
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
        reason: rayr_proto::WorkerExitReason::Signal as i32,
    }))
}

fn started(pid: u32) -> Option<Detail> {
    Some(Detail::WorkerStart(WorkerStart { pid, binary: "/bin/demo".into(), ..Default::default() }))
}

/// The sample record (see the module doc), oldest first.
pub fn record() -> Vec<Event> {
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
            e.object_id = task_return();
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
                t.error_type = rayr_proto::TaskErrorKind::WorkerDied as i32;
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
                end: rayr_proto::ObjectEndReason::OwnerDied as i32,
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
                end: rayr_proto::ObjectEndReason::OwnerDied as i32,
                ..Default::default()
            })),
            |e| {
                e.object_id = obj();
                e.worker_id = w3();
            },
        ),
        // A task that panicked once, then finished; one that panicked for good.
        ev(30, EventKind::TaskSubmitted, 0, task_detail(0, |t| t.function = "demo::flaky".into()), |e| {
            e.task_id = flaky()
        }),
        ev(
            31,
            EventKind::TaskFailed,
            30,
            task_detail(0, |t| {
                t.error_type = rayr_proto::TaskErrorKind::Panic as i32;
                t.error = "panicked: flaky (at src/main.rs:9:5)".into();
            }),
            |e| e.task_id = flaky(),
        ),
        ev(
            32,
            EventKind::TaskRetried,
            31,
            task_detail(1, |t| t.reason = "panic in attempt 0: panicked: flaky".into()),
            |e| e.task_id = flaky(),
        ),
        ev(33, EventKind::TaskFinished, 32, task_detail(1, |_| {}), |e| e.task_id = flaky()),
        ev(40, EventKind::TaskSubmitted, 0, task_detail(0, |t| t.function = "demo::boom".into()), |e| {
            e.task_id = boom()
        }),
        ev(
            41,
            EventKind::TaskFailed,
            40,
            task_detail(0, |t| {
                t.r#final = true;
                t.error_type = rayr_proto::TaskErrorKind::Panic as i32;
                t.error = "panicked: boom (at src/main.rs:3:5)".into();
                t.backtrace = "   0: std::panicking::begin_panic\n             at /rustc/x/library/std/src/panicking.rs:1\n   1: demo::boom\n             at ./src/main.rs:3:5\n   2: rayr::exec::run_task\n             at ./runtime/rayr/src/exec.rs:1:1".into();
            }),
            |e| e.task_id = boom(),
        ),
        ev(
            50,
            EventKind::ObjectFreed,
            0,
            Some(Detail::Object(ObjectDetail {
                reason: "its owner dropped the last reference".into(),
                end: rayr_proto::ObjectEndReason::Released as i32,
                ..Default::default()
            })),
            |e| e.object_id = freed(),
        ),
    ]
}

/// Every id an event names, as the head's index finds events by.
fn named(ev: &Event) -> Vec<&[u8]> {
    let peer = object(ev).map(|o| o.peer.as_slice()).unwrap_or_default();
    [
        &ev.id[..],
        &ev.cause,
        &ev.object_id,
        &ev.task_id,
        &ev.actor_id,
        &ev.worker_id,
        &ev.job_id,
        &ev.node_id,
        &ev.source_worker,
        peer,
    ]
    .into_iter()
    .filter(|id| !id.is_empty())
    .collect()
}

/// A record held in memory: events in the order given. Patterns are full ids or hex
/// prefixes (the short form is the head's to parse).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub events: Vec<Event>,
    /// Whether to answer as a running cluster.
    pub live: bool,
}

impl Record for Memory {
    fn live(&self) -> bool {
        self.live
    }

    async fn resolve(&mut self, pattern: &str, first: usize) -> Result<Resolved, RecordError> {
        let p = pattern.trim().to_ascii_lowercase();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{pattern}` is not an id").into());
        }
        let mut ids: Vec<&[u8]> = self.events.iter().flat_map(named).filter(|id| hex(id).starts_with(&p)).collect();
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [] => Ok(Resolved::Unknown(format!("no id in this session matches `{p}`"))),
            [one] => {
                let id = one.to_vec();
                Ok(Resolved::Id { first: self.events_naming(&id, first).await?, id })
            }
            many => Err(format!("`{p}` matches {} ids; give more digits", many.len()).into()),
        }
    }

    async fn events_naming(&mut self, id: &[u8], limit: usize) -> Result<Vec<Event>, RecordError> {
        Ok(self.events.iter().filter(|e| named(e).contains(&id)).take(limit).cloned().collect())
    }

    async fn events_of_kind(&mut self, kind: EventKind, limit: usize) -> Result<Vec<Event>, RecordError> {
        Ok(self.events.iter().filter(|e| e.kind == kind as i32).take(limit).cloned().collect())
    }

    async fn session(&mut self) -> Option<Session> {
        None
    }
}
