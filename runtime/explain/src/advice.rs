//! Advice: one line saying what to do about a [`Cause`], as an exhaustive `match`, so a
//! cause added without advice does not compile.
//!
//! Advice names ids in full; renderers for people shorten them.

use rayr_proto::WorkerExitType;

use crate::cause::{Cause, ExitCause, NodeEnd, ObjectLoss, TaskError};
use crate::words::human_bytes;

/// Appended where the advice is about a crash whose stderr the report shows.
const SEE_STDERR: &str = "; its stderr is above";

impl Cause {
    /// What to do about it; `None` where the record says too little to advise.
    /// `stderr_shown`: the report shows the dying worker's stderr (the advice points to it).
    pub fn advice(&self, stderr_shown: bool) -> Option<String> {
        let see_stderr = if stderr_shown { SEE_STDERR } else { "" };
        Some(match self {
            Cause::Task(e) => e.advice(),
            Cause::WorkerExit(x) => return x.advice(see_stderr),
            Cause::ObjectLost(loss) => loss.advice(),
            Cause::ObjectFreed => "nothing failed: an object is freed once every reference to it is dropped; hold an ObjectRef for as long as you need the value".into(),
            Cause::ObjectRemade => "nothing is lost now: rayr re-ran the task that made it (Ray's lineage), which its retries allowed; a value that must survive a node's death without a re-run should be read (get) onto a live node first".into(),
            Cause::NodeDied => "the node stopped answering the head: its agent was killed, hung, or cut off from the network; see its node-<id>.log in the session's logs/ directory and `dmesg` on its host".into(),
            Cause::NodeStopped(NodeEnd::OnRequest) => {
                "nothing failed: the node was stopped on request (`rayr stop`, or its driver shut down)".into()
            }
            Cause::NodeStopped(NodeEnd::Other { reason }) => {
                format!("the node stopped: {reason}; see the head's log in the session's logs/ directory")
            }
            Cause::NodeEndUnrecorded => {
                "see the head's log in the session's logs/ directory, and `dmesg | grep -i kill`".into()
            }
        })
    }
}

impl TaskError {
    pub fn advice(&self) -> String {
        match self {
            TaskError::Panic { error, backtrace } => {
                let next = if *backtrace {
                    "see the backtrace above"
                } else {
                    "run with RUST_BACKTRACE=1 to record a backtrace"
                };
                format!("the task {error}; {next}")
            }
            TaskError::Application { error } => {
                format!(
                    "the task returned Err: {error}; handle it in the caller, or retry it with .retry_exceptions(true)"
                )
            }
            TaskError::Infeasible => {
                "no node has the resources it asks for: lower the demand or add a node with those resources".into()
            }
            TaskError::WorkerLost { error } => format!(
                "its worker died, and its node recorded no exit for it ({error}): check the kernel OOM killer: `dmesg | grep -i kill`"
            ),
            TaskError::DependencyFailed { dependency: Some(dep), .. } => {
                format!("an argument failed before the task could run: run `rayr why-died {dep}`")
            }
            TaskError::DependencyFailed { dependency: None, error } => {
                format!("an argument failed before the task could run: {error}")
            }
            TaskError::BadArgument { error } => {
                format!(
                    "an argument could not be decoded ({error}): the caller and the workers must run the same build"
                )
            }
            TaskError::WorkerStartFailed { error } => format!("rayr could not start a worker for it: {error}"),
            TaskError::JobEnded { driver } => {
                let how = if driver.exit_type == WorkerExitType::SystemError as i32 {
                    format!("its driver (pid {}) crashed or was killed", driver.pid)
                } else {
                    format!("its driver (pid {}) ended", driver.pid)
                };
                format!(
                    "{how} before the task did, and the job's tasks ended with it: keep the driver running until it has what it waits for (rayr::get), or give work that must outlive it to a detached actor"
                )
            }
            TaskError::Store { error } => format!(
                "its return value could not be stored ({error}): free objects, or start the node with more --object-store-memory"
            ),
            TaskError::ActorDied { error } => format!(
                "the actor it was sent to died ({error}): `rayr why-died` on the actor says why; give it max_restarts to outlive crashes"
            ),
            TaskError::CreationRefused { error } => format!(
                "the actor could not be created ({error}): choose another name, or reach the live actor with get_named"
            ),
            TaskError::OutOfMemory { error } => format!(
                "the memory monitor killed its worker because the node ran out of memory ({error}): use less memory per task, or declare `memory` so fewer run at once"
            ),
            TaskError::NodeGone { error } => format!(
                "its submitter's node agent was gone ({error}): restart the cluster (`rayr start`) and submit again"
            ),
            TaskError::Cancelled => "nothing failed: it was cancelled with rayr::cancel".into(),
            TaskError::Unrecorded { error } => format!("the task failed: {error}"),
        }
    }
}

impl ExitCause {
    /// `see_stderr`: appended to advice about crashes whose stderr is shown.
    pub fn advice(&self, see_stderr: &str) -> Option<String> {
        Some(match self {
            ExitCause::OutOfMemory { peak_rss_bytes } => format!(
                "the memory monitor killed it because the node ran out of memory (peak RSS {}): use less memory per task, or declare `memory` so fewer run at once",
                human_bytes(*peak_rss_bytes)
            ),
            ExitCause::StoppedByRayr { detail } => format!("nothing failed: rayr stopped it on purpose ({detail})"),
            ExitCause::DriverExited { detail } => format!("nothing failed: the driver exited normally ({detail})"),
            ExitCause::Signal { signal, peak_rss_bytes } => signal.advice(*peak_rss_bytes, see_stderr),
            ExitCause::ProcessExit { exit_code } => format!(
                "the task called std::process::exit or aborted (exit code {exit_code}){see_stderr}; return from the task instead"
            ),
            ExitCause::DriverCrashed => {
                "the driver crashed or was killed before rayr::shutdown(): see its own output".into()
            }
            ExitCause::Unexplained => return None,
        })
    }
}

impl ObjectLoss {
    pub fn advice(&self) -> String {
        match self {
            ObjectLoss::OwnerDied { owner_killed } => {
                let mut advice = "its owner died, and an owner's objects die with it: keep the ref in a longer-lived owner (the driver) or, later, a detached actor".to_string();
                if *owner_killed {
                    advice.push_str(
                        "; the owner got a SIGKILL rayr did not send: if you did not send it, check the kernel OOM killer: `dmesg | grep -i kill`",
                    );
                }
                advice
            }
            ObjectLoss::NodeDied => "its only copy was in the store of a node that died, and it could not be made again (not a task's result, or its task had no retries left): give the task `max_retries` so rayr re-runs it, or read the value (get) onto a live node while it matters".into(),
            ObjectLoss::Other { reason } => format!("its value is gone ({reason}): compute it again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use rayr_proto::WorkerExit;

    use super::*;
    use crate::signal::Signal;

    /// One value of every cause, and a phrase its advice must hold.
    fn every_cause() -> Vec<(Cause, &'static str)> {
        let task = |e: TaskError| Cause::Task(e);
        let exit = |x: ExitCause| Cause::WorkerExit(x);
        let error = || "boom".to_string();
        vec![
            (task(TaskError::Panic { error: "panicked: boom".into(), backtrace: false }), "the task panicked: boom; run with RUST_BACKTRACE=1"),
            (task(TaskError::Panic { error: "panicked: boom".into(), backtrace: true }), "see the backtrace above"),
            (task(TaskError::Application { error: error() }), ".retry_exceptions(true)"),
            (task(TaskError::Infeasible), "add a node with those resources"),
            (task(TaskError::WorkerLost { error: error() }), "recorded no exit for it (boom)"),
            (
                task(TaskError::DependencyFailed { dependency: Some("ab".repeat(16)), error: error() }),
                "rayr why-died abab",
            ),
            (task(TaskError::DependencyFailed { dependency: None, error: error() }), "could run: boom"),
            (task(TaskError::BadArgument { error: error() }), "the same build"),
            (task(TaskError::WorkerStartFailed { error: error() }), "could not start a worker for it: boom"),
            (
                task(TaskError::JobEnded {
                    driver: WorkerExit { exit_type: WorkerExitType::SystemError as i32, pid: 7, ..Default::default() },
                }),
                "its driver (pid 7) crashed or was killed before the task did",
            ),
            (
                task(TaskError::JobEnded { driver: WorkerExit { pid: 7, ..Default::default() } }),
                "its driver (pid 7) ended",
            ),
            (task(TaskError::Store { error: error() }), "--object-store-memory"),
            (task(TaskError::ActorDied { error: error() }), "max_restarts"),
            (task(TaskError::CreationRefused { error: error() }), "get_named"),
            (task(TaskError::OutOfMemory { error: error() }), "declare `memory`"),
            (task(TaskError::NodeGone { error: error() }), "submit again"),
            (task(TaskError::Cancelled), "cancelled with rayr::cancel"),
            (task(TaskError::Unrecorded { error: error() }), "the task failed: boom"),
            (exit(ExitCause::OutOfMemory { peak_rss_bytes: 3 << 30 }), "peak RSS 3.0 GiB"),
            (exit(ExitCause::StoppedByRayr { detail: "idle".into() }), "rayr stopped it on purpose (idle)"),
            (exit(ExitCause::DriverExited { detail: "bye".into() }), "the driver exited normally (bye)"),
            (exit(ExitCause::Signal { signal: Signal::Kill, peak_rss_bytes: 0 }), "dmesg | grep -i kill"),
            (exit(ExitCause::Signal { signal: Signal::Abort, peak_rss_bytes: 0 }), "its stderr is above"),
            (exit(ExitCause::ProcessExit { exit_code: 3 }), "(exit code 3); its stderr is above; return from the task"),
            (exit(ExitCause::DriverCrashed), "before rayr::shutdown()"),
            (Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: false }), "longer-lived owner"),
            (Cause::ObjectLost(ObjectLoss::OwnerDied { owner_killed: true }), "the owner got a SIGKILL"),
            (Cause::ObjectLost(ObjectLoss::NodeDied), "give the task `max_retries`"),
            (
                Cause::ObjectLost(ObjectLoss::Other { reason: "spill file gone".into() }),
                "(spill file gone): compute it again",
            ),
            (Cause::ObjectFreed, "nothing failed: an object is freed"),
            (Cause::ObjectRemade, "nothing is lost now"),
            (Cause::NodeDied, "stopped answering the head"),
            (Cause::NodeStopped(NodeEnd::OnRequest), "stopped on request"),
            (Cause::NodeStopped(NodeEnd::Other { reason: "disk full".into() }), "the node stopped: disk full;"),
            (Cause::NodeEndUnrecorded, "see the head's log"),
        ]
    }

    #[test]
    fn every_cause_has_its_advice() {
        for (cause, phrase) in every_cause() {
            let advice = cause.advice(true).unwrap_or_else(|| panic!("no advice for {cause:?}"));
            assert!(advice.contains(phrase), "{cause:?}: {advice}");
        }
        assert_eq!(Cause::WorkerExit(ExitCause::Unexplained).advice(true), None);
        let quiet = Cause::WorkerExit(ExitCause::ProcessExit { exit_code: 3 }).advice(false).unwrap();
        assert!(!quiet.contains("stderr"), "no pointer to a stderr not shown: {quiet}");
    }

    /// Every value of every recorded cause enum, read from an event as the deciders write
    /// it, has advice (or, for ends that explain nothing, leads to none by design).
    #[test]
    fn every_recorded_cause_value_has_advice() {
        use rayr_proto::event::Detail;
        use rayr_proto::{
            ActorDeathCause, Event, EventKind, NodeDetail, NodeEndReason, ObjectDetail, ObjectEndReason, TaskDetail,
            TaskErrorKind, WorkerExitReason,
        };

        use crate::cause::{actor_end_is_a_crash, root_cause};

        fn advice_of(ev: Event) -> String {
            let (cause, _) = root_cause(&[ev]).expect("a cause");
            cause.advice(false).unwrap_or_default()
        }
        let all = |n: i32| 0..=n;
        for k in all(64).filter_map(|i| TaskErrorKind::try_from(i).ok()) {
            let t = TaskDetail { error_type: k as i32, error: "boom".into(), r#final: true, ..Default::default() };
            let ev = Event { kind: EventKind::TaskFailed as i32, detail: Some(Detail::Task(t)), ..Default::default() };
            assert!(!advice_of(ev).is_empty(), "{k:?}");
        }
        for r in all(64).filter_map(|i| WorkerExitReason::try_from(i).ok()) {
            for (exit_type, signal) in [(WorkerExitType::SystemError, 9), (WorkerExitType::IntendedSystemExit, 0), (WorkerExitType::UserError, 0)] {
                let x = WorkerExit { reason: r as i32, exit_type: exit_type as i32, signal, ..Default::default() };
                let ev = Event { kind: EventKind::WorkerExited as i32, detail: Some(Detail::WorkerExit(x)), ..Default::default() };
                assert!(!advice_of(ev).is_empty(), "{r:?} {exit_type:?}");
            }
        }
        for end in all(64).filter_map(|i| ObjectEndReason::try_from(i).ok()) {
            let o = ObjectDetail { end: end as i32, reason: "gone".into(), ..Default::default() };
            let ev = Event { kind: EventKind::ObjectLost as i32, detail: Some(Detail::Object(o)), ..Default::default() };
            assert!(!advice_of(ev).is_empty(), "{end:?}");
        }
        for end in all(64).filter_map(|i| NodeEndReason::try_from(i).ok()) {
            let n = NodeDetail { end: end as i32, reason: "why".into(), ..Default::default() };
            let ev = Event { kind: EventKind::NodeStopped as i32, detail: Some(Detail::Node(n)), ..Default::default() };
            let advice = advice_of(ev);
            assert_eq!(advice.starts_with("nothing failed"), end == NodeEndReason::AskedToStop, "{end:?}: {advice}");
        }
        let crashes: Vec<ActorDeathCause> =
            all(64).filter_map(|i| ActorDeathCause::try_from(i).ok()).filter(|c| actor_end_is_a_crash(*c)).collect();
        assert_eq!(crashes, [ActorDeathCause::CreationFailed, ActorDeathCause::WorkerDied]);
    }
}
