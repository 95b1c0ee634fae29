//! Cluster membership: which node agents are in the cluster and whether each still
//! answers.
//!
//! A node agent joins with `RegisterNode` (the head records NODE_JOINED), then beats every
//! `heartbeat_period` with what it has free. A node whose beats stop for `missed`
//! periods is declared dead (NODE_DIED, with the time of its last beat): a dead node never
//! comes back — its next beat is answered DEAD and it exits, as a Ray node declared dead
//! by the GCS does — so what was lost with it is lost once, and explained once. A node
//! that leaves on purpose says so (`UnregisterNode`; it records NODE_STOPPED itself). The
//! head's own node agent is a member that never times out (it lives in the head's process).
//!
//! The head's decisions are events like any other, in the session's `events/` directory
//! (`events-head-<head>.log`), indexed with the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rayr_logs::{EventLogWriter, Id, Session, hex, new_id, now_us};
use rayr_proto::{Event, EventKind, NodeDetail, NodeEndReason, NodeRow, event};

/// How a head watches its nodes (`rayr start --head --heartbeat-period-ms … --missed-heartbeats …`).
#[derive(Clone, Copy, Debug)]
pub struct MembershipConfig {
    pub heartbeat_period: Duration,
    pub missed_heartbeats: u32,
}

impl Default for MembershipConfig {
    /// A node silent for 5 s is dead (Ray: 3 s × 5).
    fn default() -> Self {
        MembershipConfig { heartbeat_period: Duration::from_millis(1000), missed_heartbeats: 5 }
    }
}

struct Member {
    address: String,
    agent_socket: String,
    transfer_address: String,
    metrics_address: String,
    resources: HashMap<String, f64>,
    available: HashMap<String, f64>,
    last_beat: Instant,
    last_beat_us: i64,
    /// Why it is no longer a member (declared dead, or left).
    gone: Option<String>,
    /// Its NODE_DIED event, when the head declared it dead.
    died_event: Vec<u8>,
    is_head: bool,
    /// It registered with this head (not only known from the record of a previous one).
    confirmed: bool,
}

/// The head's table of nodes.
pub struct Membership {
    cfg: MembershipConfig,
    nodes: Mutex<HashMap<Id, Member>>,
    /// Named actors of the whole cluster: (namespace, name) → the actor, and the node of
    /// the process that owns it (its names go when that node does).
    names: Mutex<HashMap<(String, String), (rayr_proto::ActorName, Id)>>,
    log: Mutex<EventLogWriter>,
    /// The head's own id, the source of its events.
    head_id: Id,
}

/// What a node's beat is answered.
pub enum Standing {
    Ok,
    Unknown,
    Dead(String),
}

impl Membership {
    pub fn open(session: &Session, cfg: MembershipConfig) -> std::io::Result<Arc<Membership>> {
        let head_id = new_id();
        let log = EventLogWriter::open(&session.event_log(&format!("head-{}", &hex(&head_id)[..16])))?;
        Ok(Arc::new(Membership { cfg, nodes: Mutex::new(HashMap::new()), names: Mutex::new(HashMap::new()), log: Mutex::new(log), head_id }))
    }

    pub fn config(&self) -> MembershipConfig {
        self.cfg
    }

    fn record(&self, mut e: Event) -> Vec<u8> {
        if e.id.is_empty() {
            e.id = new_id().to_vec();
        }
        e.time_us = now_us();
        e.source_worker = self.head_id.to_vec();
        e.source_pid = std::process::id();
        let mut buf = Vec::with_capacity(160);
        rayr_logs::encode_single_run_frame(&e, &mut buf);
        if let Err(err) = self.log.lock().append(&buf) {
            tracing::error!("cannot append to the head's event log: {err}");
        }
        e.id
    }

    /// A worker of a node declared dead (`died`: its NODE_DIED) went with it: nobody else
    /// can record its end (its node agent, which reaps it, is gone).
    pub fn worker_lost_with_node(&self, worker: &rayr_proto::WorkerRow, died: &[u8]) -> Vec<u8> {
        self.record(Event {
            kind: EventKind::WorkerExited as i32,
            worker_id: worker.worker_id.clone(),
            node_id: worker.node_id.clone(),
            job_id: worker.job_id.clone(),
            cause: died.to_vec(),
            detail: Some(event::Detail::WorkerExit(rayr_proto::WorkerExit {
                exit_type: rayr_proto::WorkerExitType::SystemError as i32,
                reason: rayr_proto::WorkerExitReason::NodeDied as i32,
                exit_code: -1,
                pid: worker.pid,
                detail: format!("its node {} was declared dead: its agent stopped answering, and what ran there is gone", hex(&worker.node_id)),
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// A detached actor whose node (its holder's) was declared dead (`died`: its NODE_DIED).
    pub fn actor_lost_with_node(&self, actor: &rayr_proto::ActorRow, died: &[u8]) {
        self.record(Event {
            kind: EventKind::ActorDied as i32,
            actor_id: actor.actor_id.clone(),
            worker_id: actor.worker_id.clone(),
            job_id: actor.job_id.clone(),
            node_id: actor.node_id.clone(),
            cause: died.to_vec(),
            detail: Some(event::Detail::Actor(rayr_proto::ActorDetail {
                cause: rayr_proto::ActorDeathCause::NodeDied as i32,
                detail: format!("its node {} was declared dead, and the node agent that held it with it", hex(&actor.node_id)),
                class: actor.class.clone(),
                restart: actor.restarts,
                detached: true,
                ..Default::default()
            })),
            ..Default::default()
        });
    }

    /// A job whose driver went with its node (`exited`: the driver's WORKER_EXITED): its
    /// node agent, which records a job's end, is gone too.
    pub fn job_lost_with_driver(&self, driver: &rayr_proto::WorkerRow, exited: &[u8]) {
        self.record(Event {
            kind: EventKind::JobFinished as i32,
            job_id: driver.job_id.clone(),
            worker_id: driver.worker_id.clone(),
            node_id: driver.node_id.clone(),
            cause: exited.to_vec(),
            detail: Some(event::Detail::Job(rayr_proto::JobDetail { pid: driver.pid, exit_code: -1, ..Default::default() })),
            ..Default::default()
        });
    }

    /// An object the record shows alive whose owner (`exited`: its WORKER_EXITED, `how`
    /// its detail) is gone: it went with the owner, lost if the owner died (`failed`),
    /// freed if it ended on purpose.
    pub fn object_ended_with_owner(&self, object: &rayr_proto::ObjectRow, exited: &[u8], how: &str, failed: bool) {
        self.record(Event {
            kind: if failed { EventKind::ObjectLost } else { EventKind::ObjectFreed } as i32,
            object_id: object.object_id.clone(),
            worker_id: object.owner.clone(),
            cause: exited.to_vec(),
            detail: Some(event::Detail::Object(rayr_proto::ObjectDetail {
                size: object.size,
                location: object.location.clone(),
                reason: format!("its owner, worker {}, exited: {how}", hex(&object.owner)),
                end: rayr_proto::ObjectEndReason::OwnerDied as i32,
                ..Default::default()
            })),
            ..Default::default()
        });
    }

    /// A task still open when its job ended (`job_finished`: the JOB_FINISHED) that no
    /// one else will end: its owner, the driver or a worker of the job, is gone, and the
    /// job's workers were stopped with it.
    pub fn task_ended_with_job(&self, task: &rayr_proto::TaskRow, job_finished: &[u8]) {
        self.record(Event {
            kind: EventKind::TaskFailed as i32,
            task_id: task.task_id.clone(),
            job_id: task.job_id.clone(),
            worker_id: task.worker_id.clone(),
            node_id: task.node_id.clone(),
            cause: job_finished.to_vec(),
            detail: Some(event::Detail::Task(rayr_proto::TaskDetail {
                function: task.function.clone(),
                attempt: task.attempt,
                r#final: true,
                error_type: rayr_proto::TaskErrorKind::JobEnded as i32,
                error: format!("its job ended while it was {}: its driver exited, and the job's workers were stopped", task.state),
                ..Default::default()
            })),
            ..Default::default()
        });
    }

    /// The head's own node agent: a member that never times out.
    pub fn add_head_node(
        &self,
        node: Id,
        address: &str,
        agent_socket: &str,
        transfer_address: &str,
        metrics_address: &str,
        resources: HashMap<String, f64>,
    ) {
        let member = Member {
            address: address.to_string(),
            agent_socket: agent_socket.to_string(),
            transfer_address: transfer_address.to_string(),
            metrics_address: metrics_address.to_string(),
            available: resources.clone(),
            resources,
            last_beat: Instant::now(),
            last_beat_us: now_us(),
            gone: None,
            died_event: Vec::new(),
            is_head: true,
            confirmed: true,
        };
        self.nodes.lock().insert(node, member);
    }

    /// The head's own node's free resources (it does not beat: it is in this process).
    pub fn head_node_available(&self, node: &Id, available: HashMap<String, f64>) {
        if let Some(m) = self.nodes.lock().get_mut(node) {
            m.available = available;
            m.last_beat = Instant::now();
            m.last_beat_us = now_us();
        }
    }

    /// A node agent asks to join. Err: why it may not (bad input, or declared dead before).
    pub fn register(&self, r: &rayr_proto::RegisterNodeRequest) -> Result<(), String> {
        let node: Id = r.node_id.as_slice().try_into().map_err(|_| "register: a node id is 16 bytes".to_string())?;
        r.address.parse::<IpAddr>().map_err(|e| format!("register: the node's address {:?} is not an IP address: {e}", r.address))?;
        if let Some((k, v)) = r.resources.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(format!("register: resource {k} = {v} must be a non-negative number"));
        }
        let mut nodes = self.nodes.lock();
        if let Some(gone) = nodes.get(&node).and_then(|m| m.gone.clone()) {
            return Err(format!("node {} is no longer in the cluster ({gone}); start a new node agent", hex(&node)));
        }
        let rejoin = nodes.contains_key(&node);
        nodes.insert(
            node,
            Member {
                address: r.address.clone(),
                agent_socket: r.agent_socket.clone(),
                transfer_address: r.transfer_address.clone(),
                metrics_address: r.metrics_address.clone(),
                resources: r.resources.clone(),
                available: r.resources.clone(),
                last_beat: Instant::now(),
                last_beat_us: now_us(),
                gone: None,
                died_event: Vec::new(),
                is_head: false,
                confirmed: true,
            },
        );
        drop(nodes);
        let reason = if rejoin { "registered again (the head restarted or lost it)" } else { "joined" };
        let _ = self.record(Event {
            kind: EventKind::NodeJoined as i32,
            node_id: node.to_vec(),
            detail: Some(event::Detail::Node(NodeDetail {
                address: r.address.clone(),
                reason: format!("{reason}: node agent pid {}", r.pid),
                resources: r.resources.clone(),
                store_capacity: 0,
                labels: r.labels.clone(),
                end: 0,
            })),
            ..Default::default()
        });
        Ok(())
    }

    pub fn heartbeat(&self, r: &rayr_proto::HeartbeatRequest) -> Standing {
        let Ok(node) = <Id>::try_from(r.node_id.as_slice()) else { return Standing::Unknown };
        let mut nodes = self.nodes.lock();
        match nodes.get_mut(&node) {
            // Known only from the record: it registers again, saying who it is now.
            None | Some(Member { confirmed: false, gone: None, .. }) => Standing::Unknown,
            Some(m) => match &m.gone {
                Some(why) => Standing::Dead(why.clone()),
                None => {
                    m.last_beat = Instant::now();
                    m.last_beat_us = now_us();
                    m.available = r.available_resources.clone();
                    Standing::Ok
                }
            },
        }
    }

    /// A restarted head: nodes the record shows alive are expected to register again
    /// within the usual silence limit, or are declared dead (they went with the old head,
    /// or while it was down).
    pub fn expect(&self, node: Id, address: &str, resources: HashMap<String, f64>) {
        self.nodes.lock().entry(node).or_insert(Member {
            address: address.to_string(),
            agent_socket: String::new(),
            transfer_address: String::new(),
            metrics_address: String::new(),
            available: HashMap::new(),
            resources,
            last_beat: Instant::now(),
            last_beat_us: 0,
            gone: None,
            died_event: Vec::new(),
            is_head: false,
            confirmed: false,
        });
    }

    /// The node leaves on purpose (it records NODE_STOPPED itself).
    /// Claims, looks up or releases an actor's name for the whole cluster.
    pub fn actor_names(&self, r: &rayr_proto::ActorNamesRequest) -> rayr_proto::ActorNameReply {
        let reply = |actor: Option<rayr_proto::ActorName>, error: String| rayr_proto::ActorNameReply { actor, error };
        let Some(a) = &r.actor else { return reply(None, "actor names: no actor given".into()) };
        if a.name.is_empty() || a.name.len() > 1024 || a.namespace.len() > 1024 {
            return reply(None, "an actor's name must be 1 to 1024 bytes, and its namespace at most 1024".into());
        }
        let key = (a.namespace.clone(), a.name.clone());
        let mut names = self.names.lock();
        match r.op.as_str() {
            "claim" => {
                let Ok(node) = <Id>::try_from(r.node_id.as_slice()) else { return reply(None, "claim: node_id must be 16 bytes".into()) };
                if let Some((held, _)) = names.get(&key).filter(|(held, _)| held.actor_id != a.actor_id) {
                    return reply(
                        Some(held.clone()),
                        format!(
                            "the name {}/{} is taken by actor {} (names are unique in their namespace while the actor lives)",
                            a.namespace,
                            a.name,
                            hex(&held.actor_id)
                        ),
                    );
                }
                names.insert(key, (a.clone(), node));
                reply(Some(a.clone()), String::new())
            }
            "lookup" => match names.get(&key) {
                Some((held, _)) => reply(Some(held.clone()), String::new()),
                None => reply(None, format!("no actor named {}/{} is alive", a.namespace, a.name)),
            },
            "release" => {
                if names.get(&key).is_some_and(|(held, _)| held.actor_id == a.actor_id) {
                    names.remove(&key);
                }
                reply(None, String::new())
            }
            other => reply(None, format!("actor names: unknown op {other:?} (claim, lookup or release)")),
        }
    }

    /// The names held by processes of a node that is gone are free again.
    fn release_names_of(&self, node: &Id) {
        self.names.lock().retain(|_, (_, n)| n != node);
    }

    pub fn unregister(&self, r: &rayr_proto::UnregisterNodeRequest) {
        let Ok(node) = <Id>::try_from(r.node_id.as_slice()) else { return };
        self.release_names_of(&node);
        if let Some(m) = self.nodes.lock().get_mut(&node)
            && m.gone.is_none()
        {
            m.gone = Some(format!("it left: {}", r.reason));
        }
    }

    /// Declares dead every node whose beats stopped `missed` periods ago (NODE_DIED);
    /// returns them with their NODE_DIED ids.
    pub fn check(&self) -> Vec<(Id, Vec<u8>)> {
        let limit = self.cfg.heartbeat_period * self.cfg.missed_heartbeats;
        let now = Instant::now();
        let mut died = Vec::new();
        {
            let mut nodes = self.nodes.lock();
            for (id, m) in nodes.iter_mut().filter(|(_, m)| !m.is_head && m.gone.is_none()) {
                let silent = now - m.last_beat;
                if silent > limit {
                    let (end, why) = if m.confirmed {
                        (NodeEndReason::MissedHeartbeats, format!(
                            "it missed {} heartbeats: none for {} ms (period {} ms)",
                            self.cfg.missed_heartbeats,
                            silent.as_millis(),
                            self.cfg.heartbeat_period.as_millis()
                        ))
                    } else {
                        (NodeEndReason::NotReregistered, format!("it did not register again within {} ms of the head's restart", silent.as_millis()))
                    };
                    // Its NODE_DIED id is known before anyone can see it gone, so every
                    // loss caused by its death can name it.
                    let event = new_id().to_vec();
                    m.gone = Some(why.clone());
                    m.died_event = event.clone();
                    died.push((*id, m.address.clone(), end, why, event));
                }
            }
        }
        let mut out = Vec::new();
        for (node, address, end, why, event) in died {
            self.release_names_of(&node);
            tracing::warn!("node {} at {address} is dead: {why}", hex(&node));
            let id = self.record(Event {
                id: event,
                kind: EventKind::NodeDied as i32,
                node_id: node.to_vec(),
                detail: Some(event::Detail::Node(NodeDetail { address, reason: why, end: end as i32, ..Default::default() })),
                ..Default::default()
            });
            out.push((node, id));
        }
        out
    }

    /// Chooses the node an actor's worker is leased on: among live nodes with `demand` free
    /// now, the one with the most CPU free (the requester on a tie); else, among those that
    /// could ever hold it, the same way (it waits there). The demand counts as taken until
    /// that node's next beat, so placements in between spread. Records ACTOR_PLACED.
    pub fn place_actor(&self, r: &rayr_proto::PlaceActorRequest) -> rayr_proto::PlaceActorReply {
        let fits = |want: &HashMap<String, f64>, have: &HashMap<String, f64>| {
            want.iter().all(|(k, v)| *v <= 0.0 || have.get(k).copied().unwrap_or(0.0) + 1e-9 >= *v)
        };
        if let Some((k, v)) = r.demand.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return rayr_proto::PlaceActorReply { error: format!("place: resource {k} = {v} must be a non-negative number"), ..Default::default() };
        }
        let mut nodes = self.nodes.lock();
        let cpu = |m: &Member| m.available.get("CPU").copied().unwrap_or(0.0);
        let pick = |free_now: bool, nodes: &HashMap<Id, Member>| -> Option<Id> {
            nodes
                .iter()
                .filter(|(_, m)| m.gone.is_none() && m.confirmed && !m.agent_socket.is_empty())
                .filter(|(_, m)| if free_now { fits(&r.demand, &m.available) } else { fits(&r.demand, &m.resources) })
                .max_by(|(a_id, a), (b_id, b)| {
                    cpu(a).total_cmp(&cpu(b)).then_with(|| (a_id.as_slice() == r.requester_node).cmp(&(b_id.as_slice() == r.requester_node)))
                })
                .map(|(id, _)| *id)
        };
        let (node, why) = match pick(true, &nodes) {
            Some(n) => (n, "it has the most CPU free of the nodes with the actor's resources free"),
            None => match pick(false, &nodes) {
                Some(n) => (n, "no node has the actor's resources free now; it has the most CPU free of those that can hold it, and the actor waits there"),
                None => {
                    return rayr_proto::PlaceActorReply { error: "no live node can ever hold the actor's resources".into(), ..Default::default() };
                }
            },
        };
        let m = nodes.get_mut(&node).unwrap();
        let describe = |res: &HashMap<String, f64>| {
            let mut v: Vec<String> = res.iter().map(|(k, x)| format!("{k}: {x}")).collect();
            v.sort();
            format!("{{{}}}", v.join(", "))
        };
        let reason = format!("the head placed it on node {} at {}: {why} ({} free)", hex(&node), m.address, describe(&m.available));
        for (k, v) in &r.demand {
            if let Some(a) = m.available.get_mut(k) {
                *a -= v;
            }
        }
        let reply = rayr_proto::PlaceActorReply { node_id: node.to_vec(), agent_socket: m.agent_socket.clone(), reason: reason.clone(), error: String::new() };
        drop(nodes);
        self.record(Event {
            kind: EventKind::ActorPlaced as i32,
            node_id: node.to_vec(),
            actor_id: r.actor_id.clone(),
            task_id: r.task_id.clone(),
            detail: Some(event::Detail::Actor(rayr_proto::ActorDetail { detail: reason, ..Default::default() })),
            ..Default::default()
        });
        reply
    }

    /// Whether `node` registered with this head (even if it left or died since: what it
    /// recorded until then is still its history).
    pub fn registered(&self, node: &Id) -> bool {
        self.nodes.lock().get(node).is_some_and(|m| m.confirmed)
    }

    /// The nodes that were members and are not any more (what they held is gone).
    pub fn gone(&self) -> Vec<rayr_proto::GoneNode> {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .filter_map(|(id, m)| {
                let reason = m.gone.clone()?;
                Some(rayr_proto::GoneNode { node_id: id.to_vec(), reason, died_event: m.died_event.clone() })
            })
            .collect()
    }

    /// The live nodes, as every node's scheduler sees the cluster.
    pub fn view(&self) -> Vec<rayr_proto::NodeView> {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .filter(|(_, m)| m.gone.is_none() && m.confirmed)
            .map(|(id, m)| rayr_proto::NodeView {
                node_id: id.to_vec(),
                address: m.address.clone(),
                total: m.resources.clone(),
                available: m.available.clone(),
                is_head: m.is_head,
                agent_socket: m.agent_socket.clone(),
                transfer_address: m.transfer_address.clone(),
            })
            .collect()
    }

    /// Adds what only the live table knows (free resources, last beat, head or not) to the
    /// rows the event record gives; a member the record does not show yet gets a row.
    pub fn annotate(&self, rows: &mut Vec<NodeRow>) {
        let nodes = self.nodes.lock();
        for (id, m) in nodes.iter() {
            let at = match rows.iter().position(|r| r.node_id.as_slice() == id.as_slice()) {
                Some(i) => i,
                None => {
                    rows.push(NodeRow {
                        node_id: id.to_vec(),
                        address: m.address.clone(),
                        state: if m.gone.is_some() { "DEAD" } else { "ALIVE" }.into(),
                        resources: m.resources.clone(),
                        reason: m.gone.clone().unwrap_or_default(),
                        ..Default::default()
                    });
                    rows.len() - 1
                }
            };
            let row = &mut rows[at];
            row.is_head = m.is_head;
            // Membership knows a death (or a leaving) before the record is indexed that far.
            if let Some(gone) = &m.gone
                && row.state == "ALIVE"
            {
                row.state = "DEAD".into();
                row.reason = gone.clone();
            }
            if m.gone.is_none() {
                row.available_resources = m.available.clone();
                row.last_heartbeat_us = m.last_beat_us;
                row.grpc_address = m.transfer_address.clone();
                row.metrics_address = m.metrics_address.clone();
            }
        }
    }
}
