//! The head's clean-up sweeps: what nothing else records once a node, a job's driver or an
//! object's owner is gone. They run beside the gRPC service (`service.rs`), on its runtime,
//! reading the record (`EventIndex`) and recording through `Membership`:
//!
//! - a node whose beats stopped is declared dead (twice a heartbeat period `Membership::check`
//!   looks), and the workers, drivers' jobs and detached actors the record shows alive there
//!   end with it ([`workers_gone_with`]);
//! - tasks still open in the record some seconds after their job ended end with the job
//!   ([`end_tasks_of_ended_jobs`]);
//! - objects still alive in the record some seconds after their owner exited are lost
//!   with it ([`lose_objects_of_dead_owners`]).

use std::sync::Arc;
use std::time::Duration;

use rayr_logs::Session;
use rayr_proto::ListRequest;
use tokio::sync::watch;

use crate::index::EventIndex;
use crate::membership::Membership;
use crate::service::stopped;

/// Runs the sweeps until `stop` says true: node liveness twice a heartbeat period, the
/// record's sweeps every `SWEEP_EVERY`, each on tokio's blocking pool (index reads are
/// synchronous).
pub(crate) async fn watch(membership: Arc<Membership>, index: Arc<EventIndex>, session: Session, stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(membership.config().heartbeat_period / 2);
    let swept: Arc<parking_lot::Mutex<std::collections::HashSet<Vec<u8>>>> = Default::default();
    let owners_swept: Arc<parking_lot::Mutex<std::collections::HashSet<Vec<u8>>>> = Default::default();
    let mut last_sweep = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped(stop.clone()) => return,
        }
        let died = membership.check();
        if !died.is_empty() {
            let (membership, index, session) = (membership.clone(), index.clone(), session.clone());
            let _ = tokio::task::spawn_blocking(move || workers_gone_with(&membership, &index, &session, &died)).await;
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            let (membership, index, swept) = (membership.clone(), index.clone(), swept.clone());
            let owners = owners_swept.clone();
            let _ = tokio::task::spawn_blocking(move || {
                end_tasks_of_ended_jobs(&membership, &index, &mut swept.lock());
                lose_objects_of_dead_owners(&membership, &index, &mut owners.lock());
            })
            .await;
        }
    }
}

/// How often the head looks for tasks left open by jobs that ended.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long after its job ended a task may still report its own end (its worker's last
/// events drain as the job's workers stop) before the head ends it.
const JOB_END_GRACE_US: i64 = 5_000_000;

/// Whether the record shows job `job` running.
fn job_running(index: &EventIndex, job: &[u8]) -> bool {
    let req = ListRequest {
        entity: "jobs".into(),
        filters: vec![rayr_proto::Filter { key: "job_id".into(), value: rayr_logs::hex(job) }],
        limit: 1,
        ..Default::default()
    };
    index.list(&req).is_ok_and(|r| r.jobs.first().is_some_and(|j| j.finished_us == 0))
}

/// Ends (TASK_FAILED, job_ended, caused by the JOB_FINISHED) the tasks of jobs that ended
/// a while ago which are still submitted, scheduled or running in the record: with their
/// driver gone and the job's workers stopped, nothing else will. Each job is looked at
/// once (`swept`), when it has ended for `JOB_END_GRACE_US`.
fn end_tasks_of_ended_jobs(membership: &Membership, index: &EventIndex, swept: &mut std::collections::HashSet<Vec<u8>>) {
    let now = rayr_logs::now_us();
    let jobs = match index.list(&ListRequest { entity: "jobs".into(), limit: u32::MAX, ..Default::default() }) {
        Ok(r) => r.jobs,
        Err(e) => {
            tracing::warn!("cannot list jobs to end their tasks: {e}");
            return;
        }
    };
    let ended: Vec<&rayr_proto::JobRow> =
        jobs.iter().filter(|j| j.finished_us > 0 && j.finished_us < now - JOB_END_GRACE_US && !swept.contains(&j.job_id)).collect();
    let finished_at: std::collections::HashMap<Vec<u8>, i64> = ended.iter().map(|j| (j.job_id.clone(), j.finished_us)).collect();
    let ended: std::collections::HashSet<Vec<u8>> = ended.into_iter().map(|j| j.job_id.clone()).collect();
    if ended.is_empty() {
        return;
    }
    // Each job's JOB_FINISHED, looked up once (it is the cause of every task it ends).
    let mut job_finished: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = std::collections::HashMap::new();
    // Only tasks whose owner is gone (a detached actor outlives its job and ends its own
    // tasks) and whose worker, if one took it, is gone too (a worker spared by the job's
    // end records its own).
    let workers = match index.list(&ListRequest { entity: "workers".into(), limit: u32::MAX, ..Default::default() }) {
        Ok(r) => r.workers,
        Err(_) => return,
    };
    let alive: std::collections::HashSet<&[u8]> = workers.iter().filter(|w| w.state != "DEAD").map(|w| w.worker_id.as_slice()).collect();
    let mut waiting = std::collections::HashSet::new();
    for state in ["SUBMITTED", "SCHEDULED", "RUNNING"] {
        let req = ListRequest {
            entity: "tasks".into(),
            filters: vec![rayr_proto::Filter { key: "state".into(), value: state.into() }],
            limit: u32::MAX,
            ..Default::default()
        };
        let Ok(open) = index.list(&req) else { return };
        for task in open.tasks.iter().filter(|t| ended.contains(&t.job_id)) {
            if alive.contains(task.owner.as_slice()) || alive.contains(task.worker_id.as_slice()) {
                // Looked at again next time (an exit not recorded yet), unless its owner
                // lives on (a detached actor's).
                if !alive.contains(task.owner.as_slice()) {
                    waiting.insert(task.job_id.clone());
                }
                continue;
            }
            let cause = job_finished.entry(task.job_id.clone()).or_insert_with(|| {
                let q = rayr_head_query(&task.job_id, rayr_proto::EventKind::JobFinished);
                index.events_page(&q, 0, 1).ok().and_then(|p| p.events.into_iter().next()).map(|(_, e)| e.id)
            });
            if let Some(cause) = cause {
                membership.task_ended_with_job(task, cause);
            }
        }
    }
    // A job waited on is looked at again for a minute at most (each look scans the tasks).
    let now = rayr_logs::now_us();
    let given_up = |j: &Vec<u8>| finished_at.get(j).is_some_and(|t| now - t > JOB_END_GRACE_US + 60_000_000);
    swept.extend(ended.into_iter().filter(|j| !waiting.contains(j) || given_up(j)));
}

/// Events naming `id` of one kind.
fn rayr_head_query(id: &[u8], kind: rayr_proto::EventKind) -> crate::EventQuery {
    crate::EventQuery { id: Some(id.to_vec()), kind: kind as i32, since_us: 0 }
}

/// Records OBJECT_LOST (caused by the owner's WORKER_EXITED) for objects the record still
/// shows alive whose owner exited a while ago: an object lives in its owner (or in a
/// store on its behalf), and nothing else records the end of those it held in its own
/// memory. Each owner is looked at once (`swept`).
fn lose_objects_of_dead_owners(membership: &Membership, index: &EventIndex, swept: &mut std::collections::HashSet<Vec<u8>>) {
    let now = rayr_logs::now_us();
    let Ok(workers) = index.list(&ListRequest { entity: "workers".into(), limit: u32::MAX, ..Default::default() }) else { return };
    let gone: std::collections::HashSet<&[u8]> = workers
        .workers
        .iter()
        .filter(|w| w.state == "DEAD" && w.exited_us > 0 && w.exited_us < now - JOB_END_GRACE_US && !swept.contains(&w.worker_id))
        .map(|w| w.worker_id.as_slice())
        .collect();
    if gone.is_empty() {
        return;
    }
    let req = ListRequest {
        entity: "objects".into(),
        filters: vec![rayr_proto::Filter { key: "state".into(), value: "ALIVE".into() }],
        limit: u32::MAX,
        ..Default::default()
    };
    let Ok(alive) = index.list(&req) else { return };
    let mut exits: std::collections::HashMap<&[u8], Option<(Vec<u8>, String, bool)>> = std::collections::HashMap::new();
    for object in alive.objects.iter().filter(|o| gone.contains(o.owner.as_slice())) {
        let exit = exits.entry(object.owner.as_slice()).or_insert_with(|| {
            let q = rayr_head_query(&object.owner, rayr_proto::EventKind::WorkerExited);
            let e = index.events_page(&q, 0, 1).ok()?.events.into_iter().next()?.1;
            let (detail, failed) = match &e.detail {
                Some(rayr_proto::event::Detail::WorkerExit(x)) => (x.detail.clone(), x.exit_type == rayr_proto::WorkerExitType::SystemError as i32),
                _ => (String::new(), true),
            };
            Some((e.id, detail, failed))
        });
        if let Some((cause, detail, failed)) = exit {
            membership.object_ended_with_owner(object, cause, detail, *failed);
        }
    }
    swept.extend(gone.into_iter().map(<[u8]>::to_vec));
}

/// Records WORKER_EXITED, caused by the NODE_DIED, for every worker the record shows alive
/// on a node declared dead.
fn workers_gone_with(membership: &Membership, index: &EventIndex, session: &Session, died: &[(rayr_logs::Id, Vec<u8>)]) {
    if let Err(e) = index.catch_up(session) {
        tracing::warn!("cannot read the record to find a dead node's workers: {e}");
        return;
    }
    for (node, died_event) in died {
        let req = ListRequest {
            entity: "workers".into(),
            filters: vec![
                rayr_proto::Filter { key: "node_id".into(), value: rayr_logs::hex(node) },
                rayr_proto::Filter { key: "state".into(), value: "ALIVE".into() },
            ],
            limit: u32::MAX,
            ..Default::default()
        };
        match index.list(&req) {
            Ok(rows) => {
                for w in rows.workers {
                    let exited = membership.worker_lost_with_node(&w, died_event);
                    if w.is_driver && job_running(index, &w.job_id) {
                        membership.job_lost_with_driver(&w, &exited);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list a dead node's workers: {e}"),
        }
        // Detached actors there: their holder (that node's agent) is gone too, so nothing
        // restarts them or records their end.
        let req = ListRequest {
            entity: "actors".into(),
            filters: vec![
                rayr_proto::Filter { key: "node_id".into(), value: rayr_logs::hex(node) },
                rayr_proto::Filter { key: "lifetime".into(), value: "detached".into() },
            ],
            limit: u32::MAX,
            ..Default::default()
        };
        if let Ok(rows) = index.list(&req) {
            for a in rows.actors.iter().filter(|a| a.state != "DEAD") {
                membership.actor_lost_with_node(a, died_event);
            }
        }
    }
}
