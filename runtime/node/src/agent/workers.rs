//! The worker pool service's state: the node's clients (drivers and workers registered on
//! its socket, and submitters of other nodes leasing here), the worker processes it
//! started and how they ended, idle workers by job, and the jobs' binaries. Held in the
//! agent's state lock with the lease ledger and the detached actors (see the lock order
//! in `agent.rs`): a grant picks an idle worker and takes resources in one decision.
//! Starting and reaping processes is `Agent::spawn_worker` / `worker_exited`, which record
//! events as they change this.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use rayr_logs::Id;
use rayr_proto::WorkerExit;

use super::Conn;
use crate::resources::Resources;

/// A process registered on the agent's socket: a driver, or a worker it started.
pub(super) struct Client {
    pub pid: u32,
    pub is_driver: bool,
    pub job: Id,
    pub address: String,
    /// Resources held by the current lease, if leased.
    pub lease: Option<Resources>,
    /// Who holds that lease: when the holder dies, the lease comes back.
    pub lease_holder: Option<Id>,
    /// The lease hosts an actor (that one): when it ends, the worker is stopped, not pooled.
    pub dedicated: bool,
    pub actor: Option<Id>,
    /// It has served a lease: it may own objects or actors, so it never hosts an actor
    /// (stopping it with the actor would take those along).
    pub served: bool,
    pub blocked: bool,
}

/// A worker process this agent started, until it is reaped.
pub(super) struct Spawned {
    pub job: Id,
    pub pid: u32,
    pub stderr_path: PathBuf,
    pub registered: bool,
    /// Set when rayr itself stops the worker: the reason recorded in its exit event, and
    /// whether the user asked for it.
    pub intended_exit: Option<(rayr_proto::WorkerExitReason, String)>,
    pub by_user: bool,
    pub start_event: Id,
}

/// How a reaped worker ended, and the event that says so.
pub(super) struct ExitRecord {
    pub event_id: Id,
    pub exit: WorkerExit,
}

/// A submitter of another node (RegisterClient.remote): it only holds leases here.
pub(super) struct RemoteClient {
    pub job: Id,
    pub is_driver: bool,
}

#[derive(Default)]
pub(super) struct Pool {
    pub clients: HashMap<Id, Client>,
    /// job → the binary its workers run.
    pub jobs: HashMap<Id, PathBuf>,
    /// Jobs whose driver records no events (their workers are started the same way).
    pub silent_jobs: HashSet<Id>,
    /// Registered workers not leased, by job.
    pub idle: HashMap<Id, Vec<Id>>,
    pub spawned: HashMap<Id, Spawned>,
    pub exits: HashMap<Id, ExitRecord>,
    pub exit_waiters: HashMap<Id, Vec<(Arc<Conn>, u64)>>,
    /// A start failure per job ("binary is not a rayr program"), reported to leases.
    pub start_failures: HashMap<Id, String>,
    /// Submitters of other nodes holding or asking for leases here.
    pub remote_clients: HashMap<Id, RemoteClient>,
    /// Every worker this agent started, with its pid: its log files (`rayr logs`).
    pub worker_logs: Vec<(Id, u32)>,
    /// Jobs whose driver traces (OTLP): where their workers send spans too.
    pub otlp: HashMap<Id, String>,
}

/// An idle worker of `job` for a lease, taken from the pool (`idle`): for an actor
/// (`dedicated`), only one that never served anyone (it owns nothing). Never one being
/// stopped (its job ended, say), nor one that exited while idle. (Over the pool's fields,
/// not `&mut Pool`: a grant pass reads the start failures meanwhile.)
pub(super) fn take_idle(
    idle: &mut HashMap<Id, Vec<Id>>,
    clients: &HashMap<Id, Client>,
    spawned: &HashMap<Id, Spawned>,
    job: Id,
    dedicated: bool,
) -> Option<Id> {
    let stopping = |w: &Id| spawned.get(w).is_some_and(|sp| sp.intended_exit.is_some());
    let idle = idle.get_mut(&job)?;
    if dedicated {
        let at = idle.iter().position(|w| clients.get(w).is_some_and(|c| !c.served) && !stopping(w))?;
        return Some(idle.remove(at));
    }
    while let Some(w) = idle.pop() {
        if clients.contains_key(&w) && !stopping(&w) {
            return Some(w);
        }
    }
    None
}
