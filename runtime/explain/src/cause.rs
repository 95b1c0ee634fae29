//! What ended something, as typed values: the root-cause choice.
//!
//! [`root_cause`] reads a cause chain (newest first) and picks the event that explains the
//! end, classified as a [`Cause`]; [`Cause::advice`](crate::advice) turns that value into
//! one line of advice with an exhaustive `match`.
//!
//! Every cause is read from the enums the deciding code records (`TaskErrorKind`,
//! `WorkerExitReason`, `ActorDeathCause`, `ObjectEndReason`, `NodeEndReason` in
//! `proto/schemas/events.proto`), never from the words beside them: the matches below are
//! exhaustive, so a value added to the schema does not compile until it is classified.

use rayr_proto::{
    ActorDeathCause, Event, EventKind, NodeDetail, NodeEndReason, ObjectDetail, ObjectEndReason, TaskDetail, TaskErrorKind,
    WorkerExit, WorkerExitReason, WorkerExitType,
};

use crate::event::{exit, is, kind_of, node, object, task};
use crate::signal::Signal;
use crate::words::first_line;

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
    /// `error`: what the worker recorded (`panicked: <message> (at <file:line>)`);
    /// `backtrace`: whether one was recorded.
    Panic {
        error: String,
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
    /// The actor it was sent to died.
    ActorDied {
        error: String,
    },
    /// An actor's creation was refused (its name is taken).
    CreationRefused {
        error: String,
    },
    /// The memory monitor killed its worker, and the record holds no exit for that worker.
    OutOfMemory {
        error: String,
    },
    /// Its submitter's node agent was gone: no worker could be leased for it.
    NodeGone {
        error: String,
    },
    /// `rayr::cancel` stopped it.
    Cancelled,
    /// The record does not say why (written by a version that recorded no kind).
    Unrecorded {
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
                Cause::ObjectLost(ObjectLoss::read(object(ev).unwrap_or(&ObjectDetail::default()), below))
            }
            EventKind::ObjectFreed => Cause::ObjectFreed,
            EventKind::NodeDied => Cause::NodeDied,
            EventKind::NodeStopped => {
                Cause::NodeStopped(NodeEnd::read(node(ev).unwrap_or(&NodeDetail::default())))
            }
            EventKind::TaskFinished => return None,
            _ => continue,
        };
        return Some((cause, i));
    }
    None
}

impl TaskError {
    /// `below`: the chain under this failure. `None` when its worker died and that
    /// worker's exit is further down the chain (it explains more).
    pub fn read(t: &TaskDetail, below: &[Event]) -> Option<TaskError> {
        let error = first_line(&t.error).to_string();
        let exit_below = below.iter().any(|e| is(e, EventKind::WorkerExited));
        Some(match t.error_type() {
            TaskErrorKind::Panic => TaskError::Panic { error, backtrace: !t.backtrace.trim().is_empty() },
            TaskErrorKind::Application => TaskError::Application { error },
            TaskErrorKind::Infeasible => TaskError::Infeasible,
            TaskErrorKind::WorkerDied | TaskErrorKind::OutOfMemory | TaskErrorKind::Unspecified if exit_below => return None,
            TaskErrorKind::WorkerDied => TaskError::WorkerLost { error },
            TaskErrorKind::OutOfMemory => TaskError::OutOfMemory { error },
            TaskErrorKind::DependencyFailed => TaskError::DependencyFailed {
                dependency: (!t.failed_argument.is_empty()).then(|| rayr_logs::hex(&t.failed_argument)),
                error,
            },
            TaskErrorKind::BadArgument => TaskError::BadArgument { error },
            TaskErrorKind::WorkerStartFailed => TaskError::WorkerStartFailed { error },
            TaskErrorKind::JobEnded => TaskError::JobEnded {
                driver: below
                    .iter()
                    .find(|e| is(e, EventKind::WorkerExited))
                    .and_then(exit)
                    .cloned()
                    .unwrap_or_default(),
            },
            TaskErrorKind::Store => TaskError::Store { error },
            TaskErrorKind::ActorDied => TaskError::ActorDied { error },
            TaskErrorKind::CreationRefused => TaskError::CreationRefused { error },
            TaskErrorKind::NodeGone => TaskError::NodeGone { error },
            TaskErrorKind::Cancelled => TaskError::Cancelled,
            TaskErrorKind::Unspecified => TaskError::Unrecorded { error },
        })
    }
}

impl ExitCause {
    pub fn read(x: &WorkerExit) -> ExitCause {
        let kind = WorkerExitType::try_from(x.exit_type).unwrap_or(WorkerExitType::WorkerExitUnspecified);
        match (kind, x.reason(), Signal::of(x.signal)) {
            (WorkerExitType::NodeOutOfMemory, _, _) | (_, WorkerExitReason::OutOfMemory, _) => {
                ExitCause::OutOfMemory { peak_rss_bytes: x.peak_rss_bytes }
            }
            (WorkerExitType::IntendedSystemExit, _, _) => ExitCause::StoppedByRayr { detail: x.detail.clone() },
            (_, WorkerExitReason::DriverShutdown, _) => ExitCause::DriverExited { detail: x.detail.clone() },
            (_, _, Some(signal)) => ExitCause::Signal { signal, peak_rss_bytes: x.peak_rss_bytes },
            (WorkerExitType::UserError | WorkerExitType::IntendedUserExit, _, None) => {
                ExitCause::ProcessExit { exit_code: x.exit_code }
            }
            (_, WorkerExitReason::DriverDisconnected, None) => ExitCause::DriverCrashed,
            _ => ExitCause::Unexplained,
        }
    }
}

/// Whether a recorded exit is a driver's (disconnected from its node, said goodbye or
/// not, or cut off by its node's stop).
pub fn is_driver_exit(x: &WorkerExit) -> bool {
    match x.reason() {
        WorkerExitReason::DriverShutdown | WorkerExitReason::DriverDisconnected | WorkerExitReason::DriverCutOff => true,
        WorkerExitReason::Unspecified
        | WorkerExitReason::Signal
        | WorkerExitReason::ProcessExit
        | WorkerExitReason::JobEnded
        | WorkerExitReason::ActorEnded
        | WorkerExitReason::KilledByUser
        | WorkerExitReason::NodeStopping
        | WorkerExitReason::NodeDied
        | WorkerExitReason::OutOfMemory => false,
    }
}

impl ObjectLoss {
    /// `below`: the chain under the loss (an owner's exit, a node's death).
    pub fn read(o: &ObjectDetail, below: &[Event]) -> ObjectLoss {
        let owner_exit = below.iter().find_map(exit);
        let node_died = below.iter().any(|e| is(e, EventKind::NodeDied));
        let owner_died = ObjectLoss::OwnerDied {
            owner_killed: owner_exit.is_some_and(|x| Signal::of(x.signal) == Some(Signal::Kill)),
        };
        match o.end() {
            ObjectEndReason::OwnerDied | ObjectEndReason::OwnerNodeGone => owner_died,
            ObjectEndReason::NodeDied => ObjectLoss::NodeDied,
            // The chain may still show why.
            ObjectEndReason::Unspecified
            | ObjectEndReason::Released
            | ObjectEndReason::FreedByOwner
            | ObjectEndReason::StoreFull
            | ObjectEndReason::Unreadable
            | ObjectEndReason::SpillLost => match () {
                _ if owner_exit.is_some() => owner_died,
                _ if node_died => ObjectLoss::NodeDied,
                _ => ObjectLoss::Other { reason: o.reason.clone() },
            },
        }
    }
}

impl NodeEnd {
    pub fn read(n: &NodeDetail) -> NodeEnd {
        match n.end() {
            NodeEndReason::AskedToStop => NodeEnd::OnRequest,
            NodeEndReason::Unspecified
            | NodeEndReason::LostHead
            | NodeEndReason::RefusedByHead
            | NodeEndReason::MissedHeartbeats
            | NodeEndReason::NotReregistered => NodeEnd::Other { reason: n.reason.clone() },
        }
    }
}

/// Whether an actor's death is a crash that restarts count against, rather than an end
/// restarts do not apply to (its owner or its handles went, it was killed, its node went).
pub fn actor_end_is_a_crash(cause: ActorDeathCause) -> bool {
    match cause {
        ActorDeathCause::WorkerDied | ActorDeathCause::CreationFailed => true,
        ActorDeathCause::Unspecified
        | ActorDeathCause::OutOfScope
        | ActorDeathCause::OwnerDied
        | ActorDeathCause::Killed
        | ActorDeathCause::NodeStopped
        | ActorDeathCause::NodeDied => false,
    }
}

#[cfg(test)]
mod tests {
    use rayr_proto::event::Detail;
    use rayr_proto::{NodeDetail, ObjectDetail};

    use super::*;

    fn event(kind: EventKind, detail: Detail) -> Event {
        Event { kind: kind as i32, detail: Some(detail), ..Default::default() }
    }

    fn failed(error_type: TaskErrorKind, error: &str) -> Event {
        let t = TaskDetail { error_type: error_type as i32, error: error.into(), r#final: true, ..Default::default() };
        event(EventKind::TaskFailed, Detail::Task(t))
    }

    fn exited(signal: i32) -> Event {
        let x = WorkerExit { exit_type: WorkerExitType::SystemError as i32, signal, pid: 5, ..Default::default() };
        event(EventKind::WorkerExited, Detail::WorkerExit(x))
    }

    #[test]
    fn a_task_that_lost_its_worker_is_explained_by_the_workers_exit() {
        let chain = [failed(TaskErrorKind::WorkerDied, "worker x died"), exited(9)];
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
        let mut chain = [failed(TaskErrorKind::DependencyFailed, "argument failed: boom")];
        if let Some(Detail::Task(t)) = &mut chain[0].detail {
            t.failed_argument = (0..16).map(|i| u8::from_str_radix(&dep[2 * i..2 * i + 2], 16).unwrap()).collect();
        }
        match root_cause(&chain) {
            Some((Cause::Task(TaskError::DependencyFailed { dependency, .. }), 0)) => {
                assert_eq!(dependency.as_deref(), Some(dep))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_driver_that_ended_first_is_named_with_its_exit() {
        let chain = [failed(TaskErrorKind::JobEnded, "the job ended"), exited(0)];
        match root_cause(&chain) {
            Some((Cause::Task(TaskError::JobEnded { driver }), 0)) => assert_eq!(driver.pid, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn losses_and_stops_are_read_from_their_ends() {
        let lost = |end: ObjectEndReason, reason: &str| {
            let o = ObjectDetail { end: end as i32, reason: reason.into(), ..Default::default() };
            event(EventKind::ObjectLost, Detail::Object(o))
        };
        assert_eq!(
            root_cause(&[lost(ObjectEndReason::OwnerDied, "its owner, worker x, died")]),
            Some((Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: false }), 0))
        );
        // The words do not matter: the end does, and the chain below it.
        assert_eq!(
            root_cause(&[lost(ObjectEndReason::Unspecified, "died with it"), exited(9)]),
            Some((Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: true }), 0))
        );
        assert_eq!(
            root_cause(&[lost(ObjectEndReason::NodeDied, "x")]),
            Some((Cause::ObjectLost(ObjectLoss::NodeDied), 0))
        );
        assert_eq!(
            root_cause(&[lost(ObjectEndReason::SpillLost, "its owner's spilled file is missing")]),
            Some((Cause::ObjectLost(ObjectLoss::Other { reason: "its owner's spilled file is missing".into() }), 0))
        );
        let stopped = |end: NodeEndReason, reason: &str| {
            let n = NodeDetail { end: end as i32, reason: reason.into(), ..Default::default() };
            event(EventKind::NodeStopped, Detail::Node(n))
        };
        assert_eq!(
            root_cause(&[stopped(NodeEndReason::AskedToStop, "signal 15")]),
            Some((Cause::NodeStopped(NodeEnd::OnRequest), 0))
        );
        assert_eq!(
            root_cause(&[stopped(NodeEndReason::LostHead, "asked to stop, it says, but it lost its head")]),
            Some((Cause::NodeStopped(NodeEnd::Other { reason: "asked to stop, it says, but it lost its head".into() }), 0))
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
        let exit = |kind: WorkerExitType, reason: WorkerExitReason| WorkerExit {
            exit_type: kind as i32,
            reason: reason as i32,
            detail: "anything".into(),
            ..Default::default()
        };
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::IntendedUserExit, WorkerExitReason::DriverShutdown)),
            ExitCause::DriverExited { detail: "anything".into() }
        );
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::SystemError, WorkerExitReason::DriverDisconnected)),
            ExitCause::DriverCrashed
        );
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::IntendedUserExit, WorkerExitReason::ProcessExit)),
            ExitCause::ProcessExit { exit_code: 0 }
        );
        assert_eq!(
            ExitCause::read(&exit(WorkerExitType::SystemError, WorkerExitReason::OutOfMemory)),
            ExitCause::OutOfMemory { peak_rss_bytes: 0 }
        );
        assert_eq!(ExitCause::read(&exit(WorkerExitType::SystemError, WorkerExitReason::Unspecified)), ExitCause::Unexplained);
        assert!(is_driver_exit(&exit(WorkerExitType::SystemError, WorkerExitReason::DriverDisconnected)));
        assert!(is_driver_exit(&exit(WorkerExitType::IntendedSystemExit, WorkerExitReason::DriverCutOff)));
        assert!(!is_driver_exit(&exit(WorkerExitType::IntendedSystemExit, WorkerExitReason::NodeStopping)));
    }
}
