//! What ended something, as typed values: the root-cause choice.
//!
//! [`root_cause`] reads a cause chain (newest first) and picks the event that explains the
//! end, classified as a [`Cause`]; [`Cause::advice`](crate::advice) turns that value into
//! one line of advice with an exhaustive `match`.
//!
//! Several causes are still recorded as text (error types, reasons, exit details) by the
//! crates that decide them. Each place that reads such text is one function here, marked
//! *Reads text*: when the record carries typed causes (enums in `proto/schemas/events.proto`),
//! those functions become matches on the enums and nothing else changes.

use rayr_proto::{Event, EventKind, TaskDetail, WorkerExit, WorkerExitType};

use crate::event::{exit, is, kind_of, node, object, task};
use crate::signal::Signal;
use crate::words::{first_id, first_line};

/// The event that explains an end, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    /// A task's attempt failed (its final TASK_FAILED, or a failure below it in the chain).
    Task(TaskError),
    /// A worker (or driver) process ended.
    WorkerExit(ExitCause),
    ObjectLost(ObjectLoss),
    /// Not a failure: every reference to the object was dropped.
    ObjectFreed,
    /// The object was lost and rayr made it again from its lineage.
    ObjectRemade,
    /// The head declared the node dead: it stopped answering.
    NodeDied,
    NodeStopped(NodeEnd),
    /// The node's agent ended without recording a stop (killed, or crashed).
    NodeEndUnrecorded,
}

/// Why a task attempt failed (TaskDetail `error_type`), with what the advice quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// `message`: the panic's message; `backtrace`: whether one was recorded.
    Panic {
        message: String,
        backtrace: bool,
    },
    /// The task returned `Err`.
    Application {
        error: String,
    },
    /// No node has the resources it asks for.
    Infeasible,
    /// Its worker died and the record holds no exit for that worker.
    WorkerLost {
        error: String,
    },
    /// An argument failed first; `dependency`: the failed argument's id, when known.
    DependencyFailed {
        dependency: Option<String>,
        error: String,
    },
    BadArgument {
        error: String,
    },
    WorkerStartFailed {
        error: String,
    },
    /// Its job's driver ended first; `driver`: the driver's exit, when the chain has it.
    JobEnded {
        driver: WorkerExit,
    },
    /// Its return value could not be stored.
    Store {
        error: String,
    },
    /// An error type this version does not know (`error_type` may be empty).
    Other {
        error_type: String,
        error: String,
    },
}

/// How a worker (or driver) process ended, as far as advice goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// The memory monitor killed it.
    OutOfMemory { peak_rss_bytes: u64 },
    /// rayr stopped it on purpose.
    StoppedByRayr { detail: String },
    /// A driver said goodbye and exited.
    DriverExited { detail: String },
    /// A signal from outside rayr ended it.
    Signal { signal: Signal, peak_rss_bytes: u64 },
    /// The process exited by itself (`std::process::exit`) while rayr counted on it.
    ProcessExit { exit_code: i32 },
    /// A driver went without saying goodbye.
    DriverCrashed,
    /// Nothing the record says explains it.
    Unexplained,
}

/// Why an object's value is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectLoss {
    /// Its owner died; `owner_killed`: by a SIGKILL rayr did not send.
    OwnerDied { owner_killed: bool },
    /// Its only copy was on a node that died, and it could not be made again.
    NodeDied,
    /// Any other loss, in the recorder's words.
    Other { reason: String },
}

/// Why a node stopped by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEnd {
    /// On request (`rayr stop`, or its driver shut down): nothing failed.
    OnRequest,
    Other {
        reason: String,
    },
}

/// The cause that explains the end `chain` (newest first) leads to: the first event that
/// explains it, and its index; `None` when the chain shows no failure (a task that
/// finished) or nothing that explains one.
pub fn root_cause(chain: &[Event]) -> Option<(Cause, usize)> {
    for (i, ev) in chain.iter().enumerate() {
        let below = &chain[i + 1..];
        let cause = match kind_of(ev) {
            EventKind::TaskFailed => match TaskError::read(task(ev).unwrap_or(&TaskDetail::default()), below) {
                Some(e) => Cause::Task(e),
                // Its worker died: that exit, further down, explains more.
                None => continue,
            },
            EventKind::WorkerExited => Cause::WorkerExit(ExitCause::read(exit(ev).unwrap_or(&WorkerExit::default()))),
            EventKind::ObjectLost => {
                Cause::ObjectLost(ObjectLoss::read(object(ev).map(|o| o.reason.as_str()).unwrap_or_default(), below))
            }
            EventKind::ObjectFreed => Cause::ObjectFreed,
            EventKind::NodeDied => Cause::NodeDied,
            EventKind::NodeStopped => {
                Cause::NodeStopped(NodeEnd::read(node(ev).map(|n| n.reason.as_str()).unwrap_or_default()))
            }
            EventKind::TaskFinished => return None,
            _ => continue,
        };
        return Some((cause, i));
    }
    None
}

impl TaskError {
    /// *Reads text*: the `error_type` string, a panic's message after `panicked: `, and the
    /// failed argument's id inside the error. `below`: the chain under this failure.
    /// `None` when its worker died and that worker's exit is further down the chain.
    pub fn read(t: &TaskDetail, below: &[Event]) -> Option<TaskError> {
        let error = first_line(&t.error).to_string();
        Some(match t.error_type.as_str() {
            "panic" => TaskError::Panic {
                message: error.strip_prefix("panicked: ").unwrap_or(&error).to_string(),
                backtrace: !t.backtrace.trim().is_empty(),
            },
            "application" => TaskError::Application { error },
            "infeasible" => TaskError::Infeasible,
            "worker_died" | "" if below.iter().any(|e| is(e, EventKind::WorkerExited)) => return None,
            "worker_died" => TaskError::WorkerLost { error },
            "dependency_failed" => {
                TaskError::DependencyFailed { dependency: first_id(&t.error).map(String::from), error }
            }
            "bad_argument" => TaskError::BadArgument { error },
            "worker_start_failed" => TaskError::WorkerStartFailed { error },
            "job_ended" => TaskError::JobEnded {
                driver: below
                    .iter()
                    .find(|e| is(e, EventKind::WorkerExited))
                    .and_then(exit)
                    .cloned()
                    .unwrap_or_default(),
            },
            "store" => TaskError::Store { error },
            other => TaskError::Other { error_type: other.to_string(), error },
        })
    }
}

impl ExitCause {
    /// *Reads text*: whether `detail` is a driver's goodbye (`driver disconnected…`) or a
    /// driver's end at all (`driver…`).
    pub fn read(x: &WorkerExit) -> ExitCause {
        let kind = WorkerExitType::try_from(x.exit_type).unwrap_or(WorkerExitType::WorkerExitUnspecified);
        match (kind, Signal::of(x.signal)) {
            (WorkerExitType::NodeOutOfMemory, _) => ExitCause::OutOfMemory { peak_rss_bytes: x.peak_rss_bytes },
            (WorkerExitType::IntendedSystemExit, _) => ExitCause::StoppedByRayr { detail: x.detail.clone() },
            (WorkerExitType::IntendedUserExit, _) if is_driver_goodbye(x) => {
                ExitCause::DriverExited { detail: x.detail.clone() }
            }
            (_, Some(signal)) => ExitCause::Signal { signal, peak_rss_bytes: x.peak_rss_bytes },
            (WorkerExitType::UserError | WorkerExitType::IntendedUserExit, None) => {
                ExitCause::ProcessExit { exit_code: x.exit_code }
            }
            (WorkerExitType::SystemError, None) if x.detail.starts_with("driver") => ExitCause::DriverCrashed,
            _ => ExitCause::Unexplained,
        }
    }
}

/// *Reads text*: whether a recorded exit is a driver disconnecting from its node (said
/// goodbye or not), which the node agent writes as `driver disconnected…`.
pub fn is_driver_goodbye(x: &WorkerExit) -> bool {
    x.detail.starts_with("driver disconnected")
}

impl ObjectLoss {
    /// *Reads text*: the loss `reason` naming an `owner`, or a node `which is gone`.
    /// `below`: the chain under the loss (an owner's exit, a node's death).
    pub fn read(reason: &str, below: &[Event]) -> ObjectLoss {
        let owner_exit = below.iter().find_map(exit);
        if reason.contains("owner") || owner_exit.is_some() {
            return ObjectLoss::OwnerDied {
                owner_killed: owner_exit.is_some_and(|x| Signal::of(x.signal) == Some(Signal::Kill)),
            };
        }
        if below.iter().any(|e| is(e, EventKind::NodeDied)) || reason.contains("which is gone") {
            return ObjectLoss::NodeDied;
        }
        ObjectLoss::Other { reason: reason.to_string() }
    }
}

impl NodeEnd {
    /// *Reads text*: a stop `reason` saying it was `asked to stop`.
    pub fn read(reason: &str) -> NodeEnd {
        if reason.contains("asked to stop") {
            NodeEnd::OnRequest
        } else {
            NodeEnd::Other { reason: reason.to_string() }
        }
    }
}

/// *Reads text*: whether an actor's death `cause` (ActorDetail `cause`) is a crash that
/// restarts count against (`worker_died`, `creation_failed`), rather than an end restarts
/// do not apply to (its owner or its handles went).
pub fn actor_end_is_a_crash(cause: &str) -> bool {
    cause == "worker_died" || cause == "creation_failed"
}

#[cfg(test)]
mod tests {
    use rayr_proto::event::Detail;
    use rayr_proto::{NodeDetail, ObjectDetail};

    use super::*;

    fn event(kind: EventKind, detail: Detail) -> Event {
        Event { kind: kind as i32, detail: Some(detail), ..Default::default() }
    }

    fn failed(error_type: &str, error: &str) -> Event {
        let t = TaskDetail { error_type: error_type.into(), error: error.into(), r#final: true, ..Default::default() };
        event(EventKind::TaskFailed, Detail::Task(t))
    }

    fn exited(signal: i32) -> Event {
        let x = WorkerExit { exit_type: WorkerExitType::SystemError as i32, signal, pid: 5, ..Default::default() };
        event(EventKind::WorkerExited, Detail::WorkerExit(x))
    }

    #[test]
    fn a_task_that_lost_its_worker_is_explained_by_the_workers_exit() {
        let chain = [failed("worker_died", "worker x died"), exited(9)];
        assert_eq!(
            root_cause(&chain),
            Some((Cause::WorkerExit(ExitCause::Signal { signal: Signal::Kill, peak_rss_bytes: 0 }), 1))
        );
        // Without the exit in the record, the task's own words are all there is.
        let (cause, at) = root_cause(&chain[..1]).unwrap();
        assert_eq!((cause, at), (Cause::Task(TaskError::WorkerLost { error: "worker x died".into() }), 0));
    }

    #[test]
    fn a_failed_argument_names_the_id_to_ask_about_next() {
        let dep = "0123456789abcdef0123456789abcdef";
        let chain = [failed("dependency_failed", &format!("argument {dep} failed: boom"))];
        match root_cause(&chain) {
            Some((Cause::Task(TaskError::DependencyFailed { dependency, .. }), 0)) => {
                assert_eq!(dependency.as_deref(), Some(dep))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_driver_that_ended_first_is_named_with_its_exit() {
        let chain = [failed("job_ended", "the job ended"), exited(0)];
        match root_cause(&chain) {
            Some((Cause::Task(TaskError::JobEnded { driver }), 0)) => assert_eq!(driver.pid, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn losses_and_stops_are_read_from_their_reasons() {
        let lost = |reason: &str| {
            event(EventKind::ObjectLost, Detail::Object(ObjectDetail { reason: reason.into(), ..Default::default() }))
        };
        assert_eq!(
            root_cause(&[lost("its owner, worker x, died")]),
            Some((Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: false }), 0))
        );
        assert_eq!(
            root_cause(&[lost("died with it"), exited(9)]),
            Some((Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: true }), 0))
        );
        assert_eq!(
            root_cause(&[lost("its only copy was in the store of node x, which is gone: y")]),
            Some((Cause::ObjectLost(ObjectLoss::NodeDied), 0))
        );
        assert_eq!(
            root_cause(&[lost("spilled file missing")]),
            Some((Cause::ObjectLost(ObjectLoss::Other { reason: "spilled file missing".into() }), 0))
        );
        let stopped = |reason: &str| {
            event(EventKind::NodeStopped, Detail::Node(NodeDetail { reason: reason.into(), ..Default::default() }))
        };
        assert_eq!(
            root_cause(&[stopped("asked to stop (signal 15)")]),
            Some((Cause::NodeStopped(NodeEnd::OnRequest), 0))
        );
        assert_eq!(
            root_cause(&[stopped("disk full")]),
            Some((Cause::NodeStopped(NodeEnd::Other { reason: "disk full".into() }), 0))
        );
    }

    #[test]
    fn a_finished_task_has_no_root_cause() {
        let finished = Event { kind: EventKind::TaskFinished as i32, ..Default::default() };
        assert_eq!(root_cause(&[finished, exited(9)]), None);
        assert_eq!(root_cause(&[]), None);
    }

    #[test]
    fn driver_exits_are_told_apart() {
        let exit = |kind: WorkerExitType, detail: &str| WorkerExit {
            exit_type: kind as i32,
            detail: detail.into(),
            ..Default::default()
        };
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::IntendedUserExit, "driver disconnected: done")),
            ExitCause::DriverExited { detail: "driver disconnected: done".into() }
        );
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::SystemError, "driver disconnected without shutting down")),
            ExitCause::DriverCrashed
        );
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::IntendedUserExit, "exited with code 0")),
            ExitCause::ProcessExit { exit_code: 0 }
        );
        assert_eq!(ExitCause::read(&exit(WorkerExitType::SystemError, "")), ExitCause::Unexplained);
        assert!(is_driver_goodbye(&exit(WorkerExitType::SystemError, "driver disconnected without shutting down")));
    }
}
