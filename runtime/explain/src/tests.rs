//! The explainer over the sample record, held in memory: what each report says (the CLI's
//! tests check how it is rendered, and that a head and a session's index answer alike).

use std::future::Future;
use std::task::{Context, Poll, Waker};

use rayr_logs::hex;
use rayr_proto::EventKind;
use serde_json::Value;

use crate::cause::{Cause, ExitCause, TaskError};
use crate::event::{kind_name, task};
use crate::sample::{self, Memory, boom, eid, flaky, freed, obj, task_id, task_return, w2, w3};
use crate::signal::Signal;
use crate::{Entity, ExplainError, Report, Role, explain};

/// Runs a future that needs no waking: [`Memory`] answers at once.
fn now<F: Future>(f: F) -> F::Output {
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a record in memory answers at once"),
    }
}

fn why(id: &[u8]) -> Report {
    let mut record = Memory { events: sample::record(), live: false };
    now(explain(&mut record, &hex(id))).unwrap()
}

fn json(r: &Report) -> Value {
    serde_json::to_value(r).unwrap()
}

fn kinds(r: &Report) -> Vec<String> {
    r.chain.iter().map(|e| kind_name(e.kind)).collect()
}

#[test]
fn task_retried_after_sigkill_then_failed_for_good() {
    let r = why(&task_id());
    assert_eq!(r.role, Role::Entity(Entity::Task));
    assert_eq!(kinds(&r), ["task_failed", "worker_exited", "worker_started"]);
    assert_eq!(r.chain[1].worker_id, w2(), "the final failure is the second worker's death");
    assert!(r.missing_cause.is_none());
    assert_eq!(r.retries.len(), 1);
    assert!(task(&r.retries[0]).unwrap().reason.contains("signal 9"));
    assert!(r.summary.contains("failed for good") && r.summary.contains("demo::kill_self"), "{}", r.summary);
    assert!(r.summary.contains("after 1 retry") && r.summary.contains("worker_died"), "{}", r.summary);
    let advice = r.advice.clone().unwrap();
    assert!(advice.contains("dmesg | grep -i kill") && advice.contains("50.0 MiB"), "{advice}");
    assert_eq!(r.root_cause, Some(1), "the worker's exit, not the task's report of it");
    assert_eq!(r.cause, Some(Cause::WorkerExit(ExitCause::Signal { signal: Signal::Kill, peak_rss_bytes: 50 << 20 })));

    let j = json(&r);
    assert_eq!(j["id"], hex(&task_id()));
    assert_eq!(j["kind"], "task");
    assert_eq!(j["chain"][0]["kind"], "task_failed");
    assert_eq!(j["chain"][1]["worker_id"], hex(&w2()));
    assert_eq!(j["chain"][1]["detail"]["signal"], 9);
    assert_eq!(j["root_cause"], j["chain"][1]["id"]);
    assert_eq!(j["retries"][0]["detail"]["attempt"], 1);
    assert_eq!(j["stderr_tail"].as_array().unwrap().len(), 10);
    assert_eq!(j["stderr_tail"][9], "stderr line 12 of pid 102");
    assert_eq!(j["stderr_path"], "/tmp/rayr/logs/worker-102.err");
    assert_eq!(j["advice"], advice);
    assert!(j["summary"].as_str().unwrap().contains(&hex(&w2())), "JSON keeps ids whole");
    assert_eq!(j["task_stdout"], Value::Null, "the sample's output was not measured");
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "advice",
            "chain",
            "effects",
            "id",
            "kind",
            "missing_cause",
            "retries",
            "root_cause",
            "stderr_path",
            "stderr_tail",
            "summary",
            "task_stderr",
            "task_stdout"
        ]
    );
}

#[test]
fn object_lost_because_its_owner_died() {
    let r = why(&obj());
    assert_eq!(r.role, Role::Entity(Entity::Object));
    assert_eq!(kinds(&r), ["object_lost", "worker_exited", "worker_started"]);
    assert_eq!(r.chain[0].id, eid(23), "the agent's record of the loss, which says where it was");
    assert!(r.summary.contains("was lost at") && r.summary.contains("its owner"), "{}", r.summary);
    let advice = r.advice.clone().unwrap();
    assert!(advice.contains("longer-lived owner (the driver)") && advice.contains("detached actor"), "{advice}");
    assert!(advice.contains("dmesg"), "the owner's SIGKILL is worth a look too: {advice}");
    assert_eq!(json(&r)["chain"][1]["worker_id"], hex(&w3()));
}

#[test]
fn worker_ids_show_the_exit_and_what_it_took_down() {
    let r = why(&w2());
    assert_eq!(r.role, Role::Entity(Entity::Worker));
    assert_eq!(kinds(&r), ["worker_exited", "worker_started"]);
    assert!(r.summary.starts_with(&format!("worker {} (pid 102) died at", hex(&w2()))), "{}", r.summary);
    assert_eq!(r.effects.len(), 1);
    assert_eq!(r.effects[0].id, eid(11));
    assert!(r.advice.unwrap().contains("dmesg | grep -i kill"));
    // The owner's exit took the object with it (two records of the loss).
    let r = why(&w3());
    assert_eq!(r.effects.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [eid(23), eid(24)]);
}

#[test]
fn finished_tasks_panics_and_freed_objects() {
    let r = why(&flaky());
    assert!(
        r.summary.contains("finished successfully at") && r.summary.contains("(attempt 1) after 1 retry"),
        "{}",
        r.summary
    );
    assert_eq!(r.advice, None);
    assert_eq!(r.retries.len(), 1);

    let r = why(&boom());
    let advice = r.advice.clone().unwrap();
    assert_eq!(advice, "the task panicked: boom (at src/main.rs:3:5); see the backtrace above");
    assert!(matches!(r.cause, Some(Cause::Task(TaskError::Panic { backtrace: true, .. }))));
    assert!(r.backtrace().unwrap().contains("demo::boom"));

    let r = why(&freed());
    assert!(
        r.summary.contains("did not die: it was freed at") && r.summary.contains("last reference"),
        "{}",
        r.summary
    );
    assert!(r.advice.as_deref().unwrap().starts_with("nothing failed"));
    assert_eq!(r.cause, Some(Cause::ObjectFreed));
    assert_eq!(r.backtrace(), None);

    // A task's return object that never got a value is explained through its task.
    let r = why(&task_return());
    assert_eq!(r.role, Role::Entity(Entity::Object));
    assert!(
        r.summary.contains("is the return value of task") && r.summary.contains("failed for good"),
        "{}",
        r.summary
    );
    assert_eq!(kinds(&r)[0], "task_failed");
}

#[test]
fn an_event_id_is_explained_from_that_event() {
    let r = why(&eid(10));
    assert_eq!(r.role, Role::Event);
    assert!(r.summary.starts_with(&format!("event {} is a worker_exited at", hex(&eid(10)))), "{}", r.summary);
    assert_eq!(kinds(&r), ["worker_exited", "worker_started"]);
}

#[test]
fn a_running_cluster_says_what_has_not_ended_yet() {
    // The record up to the task's first start.
    let mut events = sample::record();
    events.truncate(events.iter().position(|e| e.kind == EventKind::TaskStarted as i32).unwrap() + 1);
    let mut live = Memory { events: events.clone(), live: true };
    let r = now(explain(&mut live, &hex(&task_id()))).unwrap();
    assert!(
        r.summary.contains("has not ended: it is RUNNING on worker") && r.summary.contains("pid 101"),
        "{}",
        r.summary
    );
    assert!(!r.walked && r.advice.is_none());
    let mut stopped = Memory { events, live: false };
    let r = now(explain(&mut stopped, &hex(&task_id()))).unwrap();
    assert!(r.summary.contains("never ended: the cluster stopped while it was RUNNING"), "{}", r.summary);
}

#[test]
fn an_unknown_id_is_the_records_own_error() {
    let mut record = Memory { events: sample::record(), live: false };
    match now(explain(&mut record, " 0123abcd ")) {
        Err(ExplainError::UnknownId { pattern, message }) => {
            assert_eq!(pattern, "0123abcd");
            assert!(message.contains("no id in this session matches `0123abcd`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = now(explain(&mut record, "xyz")).unwrap_err().to_string();
    assert!(err.contains("is not an id"), "{err}");
}
