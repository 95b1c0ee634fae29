//! The submitter: leases workers from the node agent, pushes tasks to them, reads their
//! results back, and retries or fails tasks whose worker died.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::LEASE_IDLE;

use rayr_logs::{Id, hex};
use rayr_proto::{ActorDeathCause, EventKind, ObjectLocation, TaskDetail, TaskError, TaskErrorKind, client_message, event};

use super::spec::encode_push_frame;
use super::{ActorQueue, Core, Leased, MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES, PeerConn, PendingTask, Queue, QueueKey, Slot, State};
use crate::error::Error;

/// How long a lease request waits before it is asked again when the node it was spilled to
/// cannot be reached.
const SPILL_TARGET_GONE_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

impl Core {
    /// Every few milliseconds: send what waits, return leases idle for `LEASE_IDLE`.
    pub(super) fn tick(self: &Arc<Self>) {
        self.send_outbox();
        if self.runs_tasks {
            self.send_stale_results();
        }
        let now = Instant::now();
        let mut st = self.state.lock();
        let idle: Vec<Id> = st
            .leased
            .iter()
            .filter(|(_, l)| !l.actor && l.in_flight.is_empty() && l.idle_since.is_some_and(|t| now - t >= LEASE_IDLE))
            .map(|(w, _)| *w)
            .collect();
        for w in idle {
            self.return_lease_locked(&mut st, w);
        }
    }

    pub(super) fn return_lease_locked(&self, st: &mut State, worker: Id) {
        if let Some(l) = st.leased.remove(&worker) {
            if let Some(q) = st.queues.get_mut(&l.key) {
                q.workers.retain(|w| *w != worker);
            }
            if l.leased_here {
                let ret = client_message::Body::ReturnLease(rayr_proto::LeaseReturn { worker_id: worker.to_vec(), ..Default::default() });
                let _ = l.lessor.as_deref().unwrap_or(&self.node_conn).send(0, ret);
            }
        }
    }


    /// Queues a task whose dependencies are resolved (an actor's call: at once, so calls
    /// keep their order; it is pushed when its dependencies are), and pushes what can be.
    pub fn enqueue_locked(self: &Arc<Self>, st: &mut State, task: Id) {
        let Some(t) = st.tasks.get(&task) else { return };
        let key = t.key.clone();
        let demand = t.demand.clone();
        let actor = t.spec.actor_id.map(|id: Id| {
            let mut a = ActorQueue::new(id, t.spec.actor_creation, false);
            a.max_concurrency = t.spec.actor_max_concurrency.max(1);
            a
        });
        let q = st.queues.entry(key.clone()).or_insert_with(|| Queue {
            demand,
            ready: VecDeque::new(),
            leases_requested: 0,
            workers: Vec::new(),
            actor,
        });
        if let Some((why, died)) = q.actor.as_ref().and_then(|a| a.dead.clone()) {
            let actor = q.actor.as_ref().unwrap().id;
            let err = Error::ActorDied { actor: crate::ActorId(actor), cause: why.clone() };
            self.fail_task_final_locked(st, task, err, TaskErrorKind::ActorDied, &format!("actor {} died: {why}", hex(&actor)), died);
            return;
        }
        q.ready.push_back(task);
        if let Some(t) = st.tasks.get_mut(&task) {
            t.in_ready_queue = true;
        }
        self.dispatch_locked(st, &key);
    }

    pub(super) fn dispatch_locked(self: &Arc<Self>, st: &mut State, key: &QueueKey) {
        let events = self.event_batch();
        let mut batches: Vec<(Arc<PeerConn>, Vec<u8>)> = Vec::new();
        loop {
            let Some(q) = st.queues.get(key) else { return };
            let Some(&task) = q.ready.front() else { break };
            if q.actor.is_some() && st.tasks.get(&task).is_some_and(|t| !t.deps.is_empty()) {
                break; // the next call waits for its arguments, and the ones after it too
            }
            let push_len = st.tasks.get(&task).map_or(0, |t| t.spec.encoded_len() + self.push_tail.len() + 16);
            // The least loaded leased worker with room (an idle one takes any size).
            let best = q
                .workers
                .iter()
                .filter_map(|w| st.leased.get(w).map(|l| (*w, l.in_flight.len(), l.in_flight_bytes, l.max_in_flight)))
                .filter(|&(_, n, bytes, most)| n == 0 || (n < most && bytes + push_len <= MAX_IN_FLIGHT_BYTES))
                .min_by_key(|&(_, n, _, _)| n)
                .map(|(w, n, _, _)| (w, n));
            let Some((worker, _)) = best else {
                let q = st.queues.get_mut(key).unwrap();
                // An actor's worker is leased once, by its owner; everyone else is given it.
                let may_lease = match q.actor.as_mut() {
                    None => true,
                    Some(a) if a.owned && !a.leased && a.dead.is_none() => {
                        a.leased = true;
                        true
                    }
                    Some(_) => false,
                };
                if may_lease && q.leases_requested == 0 {
                    q.leases_requested += 1;
                    let demand = (*q.demand).clone();
                    self.request_lease(st, key, demand, task);
                }
                break;
            };
            st.queues.get_mut(key).unwrap().ready.pop_front();
            if !st.tasks.contains_key(&task) {
                continue; // ended while queued (cancelled, or its dependency failed)
            }
            let l = st.leased.get_mut(&worker).unwrap();
            l.in_flight.insert(task, push_len);
            l.in_flight_bytes += push_len;
            l.idle_since = None;
            let conn = l.conn.clone();
            let elsewhere = l.lessor.is_some();
            let Some(t) = st.tasks.get_mut(&task) else { continue };
            t.in_ready_queue = false;
            t.worker = Some(worker);
            let id = self.emit(EventKind::TaskScheduled, |e| {
                e.task(&task).worker(&worker).cause(&t.last_event);
                // The function is named once, in TASK_SUBMITTED: fewer bytes per event.
                if t.spec.attempt > 0 {
                    e.task_detail(|d| {
                        d.attempt(t.spec.attempt);
                    });
                }
            });
            t.last_event = id;
            t.spec.scheduled_event = Some(id);
            if let Some(tr) = t.trace.as_deref() {
                crate::trace::record(crate::trace::Finished {
                    name: "rayr.task.schedule",
                    ids: (tr.ids.0, crate::trace::random_span_id()),
                    parent: Some(tr.ids.1),
                    start_ns: tr.start_ns,
                    end_ns: crate::trace::now_ns(),
                    kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Internal,
                    attrs: vec![("rayr.task_id", hex(&task)), ("rayr.worker_id", hex(&worker)), ("rayr.attempt", t.spec.attempt.to_string())],
                    error: None,
                });
            }
            let buf = match batches.iter_mut().position(|(c, _)| Arc::ptr_eq(c, &conn)) {
                Some(i) => &mut batches[i].1,
                None => {
                    batches.push((conn, Vec::with_capacity(256)));
                    &mut batches.last_mut().unwrap().1
                }
            };
            if elsewhere && t.spec.args.iter().any(|a| matches!(a.arg, Some(rayr_proto::task_arg::Arg::Shm(_)))) {
                // A worker of another node cannot map this node's store: it reads such
                // arguments from their owner (this process), which sends the bytes.
                let mut spec = t.spec.clone();
                for a in &mut spec.args {
                    if let Some(rayr_proto::task_arg::Arg::Shm(loc)) = &a.arg {
                        let r = rayr_proto::ObjectRefArg { object_id: loc.object_id.clone(), owner: self.me.to_vec(), owner_address: self.address.clone() };
                        a.arg = Some(rayr_proto::task_arg::Arg::ByRef(r));
                    }
                }
                encode_push_frame(&spec, &self.push_tail, buf);
            } else {
                encode_push_frame(&t.spec, &self.push_tail, buf);
            }
        }
        drop(events);
        for (conn, buf) in batches {
            // A failed write means the worker died; its reader thread handles that.
            let _ = conn.send_raw(&buf);
        }
    }

    pub(super) fn request_lease(self: &Arc<Self>, st: &mut State, key: &QueueKey, demand: HashMap<String, f64>, task: Id) {
        let req = self.node_conn.next_req();
        st.lease_requests.insert(req, (key.clone(), None));
        let actor = st.queues.get(key).and_then(|q| q.actor.as_ref()).map(|a| a.id.to_vec());
        let (preferred_node, preferred_bytes) = self.where_arguments_are(st, task);
        let body = client_message::Body::Lease(rayr_proto::LeaseRequest {
            resources: demand,
            job_id: self.job.to_vec(),
            task_id: task.to_vec(),
            dedicated: actor.is_some(),
            // Tasks and actors may go to another node when this one cannot hold them now.
            spillback_ok: true,
            spilled: false,
            actor_id: actor.unwrap_or_default(),
            preferred_node: preferred_node.map(|n| n.to_vec()).unwrap_or_default(),
            preferred_bytes,
        });
        if self.node_conn.closed.load(std::sync::atomic::Ordering::Acquire) || self.node_conn.send(req, body).is_err() {
            // No node agent to lease from: what waits for a worker of this shape fails now
            // instead of waiting for ever.
            st.lease_requests.remove(&req);
            let tasks: Vec<Id> = st.queues.get_mut(key).map(|q| {
                q.leases_requested = 0;
                q.ready.drain(..).collect()
            }).unwrap_or_default();
            for t in tasks {
                let why = "the node agent is gone: no worker can be leased (is the cluster still running?)";
                self.fail_task_final_locked(st, t, Error::Connection(why.into()), TaskErrorKind::NodeGone, why, None);
            }
        }
    }

    /// The other node holding the most bytes of `task`'s arguments that live in stores
    /// (results of ours made there), and how many: running it there reads them in place.
    fn where_arguments_are(&self, st: &State, task: Id) -> (Option<Id>, u64) {
        let Some(t) = st.tasks.get(&task) else { return (None, 0) };
        let mut by_node: Vec<(Id, u64)> = Vec::new();
        for a in &t.spec.args {
            let Some(rayr_proto::task_arg::Arg::ByRef(r)) = &a.arg else { continue };
            let Ok(id) = <Id>::try_from(r.object_id.as_slice()) else { continue };
            if let Some(Slot::OnNode { node, size, .. }) = st.owned.get(&id).map(|o| &o.slot) {
                match by_node.iter_mut().find(|(n, _)| n == node) {
                    Some(e) => e.1 += size,
                    None => by_node.push((*node, *size)),
                }
            }
        }
        by_node.into_iter().max_by_key(|(_, b)| *b).map_or((None, 0), |(n, b)| (Some(n), b))
    }

    /// The node agent said where to lease instead (spillback): the request goes to the
    /// agent of that node, marked spilled (it grants or queues it there).
    fn lease_elsewhere(self: &Arc<Self>, key: QueueKey, reply: rayr_proto::LeaseReply) {
        let agent = self.remote_agent(&reply.spill_to);
        if let (Ok(a), Ok(node)) = (&agent, <Id>::try_from(reply.spill_node.as_slice())) {
            *a.node.lock() = Some(node);
        }
        let mut st = self.state.lock();
        let Some(q) = st.queues.get_mut(&key) else { return };
        let Some(&task) = q.ready.front() else {
            q.leases_requested = 0; // nothing left to run there
            return;
        };
        let demand = (*q.demand).clone();
        // An actor's lease stays dedicated to it, wherever it is granted.
        let actor = q.actor.as_ref().map(|a| a.id.to_vec());
        let request = |demand| rayr_proto::LeaseRequest {
            resources: demand,
            job_id: self.job.to_vec(),
            task_id: task.to_vec(),
            spilled: true,
            dedicated: actor.is_some(),
            actor_id: actor.clone().unwrap_or_default(),
            ..Default::default()
        };
        let Ok(agent) = agent else {
            // Gone since the head heard of it: ask here again in a moment, once this
            // node's view may have caught up (the head declares that node dead, or it
            // answers again), to be placed anew; asking at once would only be sent back
            // to it, and a demand only it could hold would fail as infeasible while its
            // death is not yet known.
            let req = self.node_conn.next_req();
            st.lease_requests.insert(req, (key.clone(), None));
            drop(st);
            let body = client_message::Body::Lease(rayr_proto::LeaseRequest { spilled: false, spillback_ok: true, ..request(demand) });
            let core = self.clone();
            let _ = std::thread::Builder::new().name("rayr-respill".into()).spawn(move || {
                std::thread::sleep(SPILL_TARGET_GONE_PAUSE);
                let _ = core.node_conn.send(req, body);
            });
            return;
        };
        let req = self.node_conn.next_req();
        st.lease_requests.insert(req, (key, Some(agent.clone())));
        drop(st);
        if agent.send(req, client_message::Body::Lease(request(demand))).is_err() {
            // Its reader sees the close and asks again.
            agent.closed.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    pub(super) fn lease_granted(self: &Arc<Self>, key: QueueKey, reply: rayr_proto::LeaseReply, lessor: Option<Arc<super::NodeConn>>) {
        if !reply.spill_to.is_empty() {
            self.lease_elsewhere(key, reply);
            return;
        }
        if !reply.error.is_empty() {
            // Every queued task of this shape fails: infeasible or unstartable.
            let mut st = self.state.lock();
            let actor = st.queues.get(&key).and_then(|q| q.actor.as_ref()).map(|a| a.id);
            if let Some(actor) = actor {
                // No worker will host it: the actor is dead before it began.
                let detail = format!("no worker could be leased for it: {}", reply.error);
                self.end_actor_locked(&mut st, actor, ActorEnd { cause: ActorDeathCause::CreationFailed, detail: &detail, because: None, kill: false }, Vec::new());
            }
            let tasks: Vec<Id> = st.queues.get_mut(&key).map(|q| {
                q.leases_requested = 0;
                q.ready.drain(..).collect()
            }).unwrap_or_default();
            for t in tasks {
                let err = if reply.infeasible {
                    Error::Infeasible { task: crate::TaskId(t), demand: reply.error.clone() }
                } else {
                    Error::Connection(reply.error.clone())
                };
                let error_type = if reply.infeasible { TaskErrorKind::Infeasible } else { TaskErrorKind::WorkerStartFailed };
                self.fail_task_final_locked(&mut st, t, err, error_type, &reply.error, None);
            }
            drop(st);
            self.send_outbox();
            self.ready.notify_all();
            return;
        }
        let Ok(worker) = <Id>::try_from(reply.worker_id.as_slice()) else { return };
        let conn = match self.peer(&reply.address) {
            Ok(c) => c,
            Err(_) => {
                // It died between the grant and our connect; its reaper will tell the node.
                let mut st = self.state.lock();
                if let Some(q) = st.queues.get_mut(&key) {
                    q.leases_requested = 0;
                }
                self.dispatch_locked(&mut st, &key);
                return;
            }
        };
        *conn.worker.lock() = Some(worker);
        let mut st = self.state.lock();
        let Some(q) = st.queues.get_mut(&key) else {
            // Its actor ended and was forgotten while the worker was on the way.
            let ret = rayr_proto::LeaseReturn { worker_id: worker.to_vec(), kill: String::new() };
            let _ = lessor.as_deref().unwrap_or(&self.node_conn).send(0, client_message::Body::ReturnLease(ret));
            return;
        };
        q.leases_requested = 0;
        if q.actor.as_ref().is_some_and(|a| a.dead.is_some()) {
            // It ended while its worker was on the way (killed, say): not needed.
            let ret = rayr_proto::LeaseReturn { worker_id: worker.to_vec(), kill: String::new() };
            let _ = lessor.as_deref().unwrap_or(&self.node_conn).send(0, client_message::Body::ReturnLease(ret));
            return;
        }
        q.workers.push(worker);
        if let Some(a) = q.actor.as_mut() {
            a.location = Some((worker, reply.address.clone()));
        }
        let actor = q.actor.is_some();
        let max_in_flight = q.actor.as_ref().map_or(MAX_IN_FLIGHT, ActorQueue::max_in_flight);
        st.leased.insert(
            worker,
            Leased {
                conn: conn.clone(),
                key: key.clone(),
                in_flight: HashMap::new(),
                in_flight_bytes: 0,
                idle_since: Some(Instant::now()),
                actor,
                leased_here: true,
                max_in_flight,
                lessor,
            },
        );
        self.dispatch_locked(&mut st, &key);
        if conn.closed.load(std::sync::atomic::Ordering::Acquire) {
            // It died between the grant and now, before its reader could know it was
            // leased: what was just pushed to it is retried like any lost worker's tasks.
            // On another thread: this may be the thread that reads the lessor's replies,
            // and finding out how the worker ended waits for one.
            drop(st);
            let core = self.clone();
            let _ = std::thread::Builder::new().name("rayr-worker-lost".into()).spawn(move || core.worker_lost(worker));
            return;
        }
        // (An actor has its one worker.)
        let more = st.queues.get(&key).is_some_and(|q| !q.ready.is_empty() && q.actor.is_none());
        if more {
            // Everything leased is full and work remains: ask for one more worker.
            let q = st.queues.get_mut(&key).unwrap();
            if q.leases_requested == 0 {
                q.leases_requested = 1;
                let demand = (*q.demand).clone();
                let first = q.ready[0];
                self.request_lease(&mut st, &key, demand, first);
            }
        }
    }

    pub(super) fn task_results(self: &Arc<Self>, worker: Id, results: Vec<rayr_proto::TaskResult>) {
        // The objects created and the tasks dispatched for a burst of results: one batch.
        let events = self.event_batch();
        let mut st = self.state.lock();
        for r in results {
            self.task_result_locked(&mut st, worker, r);
        }
        // Refill the worker's pipeline once for the whole batch: one write.
        if let Some(key) = st.leased.get(&worker).map(|l| l.key.clone()) {
            self.dispatch_locked(&mut st, &key);
            if let Some(l) = st.leased.get_mut(&worker)
                && l.in_flight.is_empty() {
                    l.idle_since = Some(Instant::now());
                }
        }
        drop(st);
        drop(events);
        self.send_outbox();
        self.ready.notify_all();
    }

    pub(super) fn task_result_locked(self: &Arc<Self>, st: &mut State, worker: Id, r: rayr_proto::TaskResult) {
        let Ok(task) = <Id>::try_from(r.task_id.as_slice()) else { return };
        let finished_event: Option<Id> = r.finished_event.as_slice().try_into().ok();
        if let Some(l) = st.leased.get_mut(&worker)
            && let Some(bytes) = l.in_flight.remove(&task) {
                l.in_flight_bytes -= bytes;
            }
        let attempt_matches = st.tasks.get(&task).is_some_and(|t| t.spec.attempt == r.attempt);
        if attempt_matches {
            match r.outcome {
                Some(rayr_proto::task_result::Outcome::InlineValue(b)) => {
                    self.finish_task_locked(st, task, Slot::Inline(b.into(), crate::codec::POSTCARD), finished_event);
                }
                Some(rayr_proto::task_result::Outcome::Shm(loc)) => {
                    let slot = match <Id>::try_from(loc.node.as_slice()) {
                        Ok(node) if node != self.node => Slot::OnNode { node, offset: loc.offset, size: loc.size, format: loc.format },
                        _ => Slot::Shm { offset: loc.offset, size: loc.size, format: loc.format },
                    };
                    self.finish_task_locked(st, task, slot, finished_event);
                }
                Some(rayr_proto::task_result::Outcome::Error(err)) => {
                    let creation = st.tasks.get(&task).filter(|t| t.spec.actor_creation).and_then(|t| t.spec.actor_id);
                    let detail = format!("its constructor failed: {}", err.message);
                    if let Some(actor) = creation {
                        // No state to call: the calls queued behind the creation fail.
                        let end = ActorEnd { cause: ActorDeathCause::CreationFailed, detail: &detail, because: finished_event, kill: false };
                        self.end_actor_locked(st, actor, end, Vec::new());
                    }
                    self.task_error_locked(st, task, err, finished_event);
                }
                None => {}
            }
        }
    }

    pub(super) fn task_error_locked(self: &Arc<Self>, st: &mut State, task: Id, err: TaskError, cause: Option<Id>) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        let retry = t.spec.retry_exceptions && err.kind() != TaskErrorKind::BadArgument && t.spec.attempt < t.spec.max_retries;
        if retry {
            let reason = format!("{} in attempt {}: {}", err.kind().word(), t.spec.attempt, err.message);
            self.retry_locked(st, task, reason, cause);
            return;
        }
        let e = Error::TaskFailed { task: crate::TaskId(task), message: err.message.clone(), backtrace: err.backtrace.clone() };
        self.finish_task_locked(st, task, Slot::Failed(e), cause);
    }

    pub(super) fn retry_locked(self: &Arc<Self>, st: &mut State, task: Id, reason: String, cause: Option<Id>) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        t.spec.attempt += 1;
        t.worker = None;
        if self.record_events {
            let mut e = self.event(EventKind::TaskRetried);
            e.task_id = task.to_vec();
            if let Some(c) = cause {
                e.cause = c.to_vec();
            }
            e.detail = Some(event::Detail::Task(TaskDetail {
                function: t.spec.function.to_string(),
                attempt: t.spec.attempt,
                max_retries: t.spec.max_retries,
                reason,
                ..Default::default()
            }));
            t.last_event = self.record(e);
        }
        self.enqueue_locked(st, task);
    }

    /// Fails a task for good from the submitter's side (the worker could not report it),
    /// recording TASK_FAILED.
    pub fn fail_task_final_locked(
        self: &Arc<Self>,
        st: &mut State,
        task: Id,
        err: Error,
        error_type: TaskErrorKind,
        message: &str,
        cause: Option<Id>,
    ) {
        let why = TaskDetail { error_type: error_type as i32, error: message.to_string(), ..Default::default() };
        self.fail_task_final_as_locked(st, task, err, why, cause);
    }

    /// `fail_task_final_locked`, with the failure's detail as given (`why`: its kind,
    /// error and what it names; the task's function, attempt and retries are filled in).
    fn fail_task_final_as_locked(self: &Arc<Self>, st: &mut State, task: Id, err: Error, why: TaskDetail, cause: Option<Id>) {
        let mut failed = None;
        if let Some(t) = st.tasks.get(&task) {
            let mut e = self.event(EventKind::TaskFailed);
            e.task_id = task.to_vec();
            if let Some(w) = t.worker {
                e.worker_id = w.to_vec();
            }
            e.cause = cause.unwrap_or(t.last_event).to_vec();
            e.detail = Some(event::Detail::Task(TaskDetail {
                function: t.spec.function.to_string(),
                attempt: t.spec.attempt,
                max_retries: t.spec.max_retries,
                r#final: true,
                ..why
            }));
            failed = Some(self.record(e));
        }
        self.finish_task_locked(st, task, Slot::Failed(err), failed);
    }

    /// A task is done for good: its return object gets `slot`, its arguments are released.
    pub fn finish_task_locked(self: &Arc<Self>, st: &mut State, task: Id, slot: Slot, cause: Option<Id>) {
        let Some(t) = st.tasks.remove(&task) else { return };
        if let Some(tr) = t.trace.as_deref() {
            let error = match &slot {
                Slot::Failed(e) => Some(e.to_string()),
                _ => None,
            };
            crate::trace::record(crate::trace::Finished {
                name: "rayr.task",
                ids: tr.ids,
                parent: tr.parent,
                start_ns: tr.start_ns,
                end_ns: crate::trace::now_ns(),
                kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Producer,
                attrs: vec![("rayr.task_id", hex(&task)), ("rayr.function", t.spec.function.to_string()), ("rayr.attempts", (t.spec.attempt + 1).to_string())],
                error: error.as_deref(),
            });
        }
        if t.in_ready_queue {
            // Still in its queue (cancelled, or failed before dispatch). Only then: a task
            // that ran, or one that waited for its arguments (a million may fail with one
            // dependency), is in no queue, and must not cost a scan of one.
            if let Some(q) = st.queues.get_mut(&t.key) {
                q.ready.retain(|x| *x != task);
            }
        }
        let ret: Id = t.spec.return_id;
        if t.spec.actor_creation
            && !matches!(slot, Slot::Failed(_))
            && let Some(a) = st.queues.get_mut(&t.key).and_then(|q| q.actor.as_mut())
            && a.creation.is_none()
        {
            // What a restart re-runs (its arguments are values by now).
            a.creation = Some(t.spec.clone());
        }
        if t.spec.actor_creation
            && let Slot::Failed(e) = &slot
            && let Some(actor) = t.spec.actor_id
        {
            // No state to call (its arguments could not be sent, say): the actor ends, and
            // the calls queued behind the creation fail. (Ended already when the worker
            // reported its constructor's failure.)
            let text = e.to_string();
            let detail = format!("its creation failed: {}", text.split("; run `rayr why-died").next().unwrap_or(&text));
            self.end_actor_locked(st, actor, ActorEnd { cause: ActorDeathCause::CreationFailed, detail: &detail, because: cause, kill: false }, Vec::new());
        }
        let mut args = (t.owned_args, t.borrowed_args);
        if t.spec.actor_creation
            && !matches!(slot, Slot::Failed(_))
            && let Some(a) = st.queues.get_mut(&t.key).and_then(|q| q.actor.as_mut())
        {
            a.ready = true;
            if a.restarts_left != 0 && a.dead.is_none() {
                // A restart re-runs the constructor with these: they live as long as it may.
                a.kept_args.0.append(&mut args.0);
                a.kept_args.1.append(&mut args.1);
            }
        }
        // A result in another node's store is lost if that node goes: its task is kept to
        // run again (Ray's lineage), its arguments with it, while retries are left.
        let keep = matches!(slot, Slot::OnNode { .. })
            && t.spec.actor_id.is_none()
            && t.spec.attempt < t.spec.max_retries
            && st.owned.contains_key(&ret);
        self.object_created(st, ret, slot, Some(task), cause);
        if keep && st.owned.contains_key(&ret) {
            let (owned_args, borrowed_args) = args;
            st.lineage.insert(ret, Box::new(PendingTask { owned_args, borrowed_args, worker: None, ..*t }));
        } else {
            self.release_args_locked(st, args);
        }
    }

    /// A task's arguments are no longer needed by it: owned ones unpinned, borrowed ones
    /// released.
    pub(super) fn release_args_locked(&self, st: &mut State, (owned, borrowed): (Vec<Id>, Vec<Id>)) {
        for id in owned {
            self.unpin_locked(st, id, self.me, "the last task using it finished");
        }
        for id in borrowed {
            self.release_borrowed_locked(st, id);
        }
    }

    pub(super) fn dependency_ready(self: &Arc<Self>, st: &mut State, task: Id, dep: Id, slot: &Slot) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        let mut failed = None;
        let waiting = t.deps.len();
        t.deps.retain(|&(i, d)| {
            if d != dep {
                return true;
            }
            match slot {
                Slot::Inline(b, _) => t.spec.args[i].arg = Some(rayr_proto::task_arg::Arg::InlineValue(b.to_vec())),
                Slot::Shm { offset, size, format } => {
                    t.spec.args[i].arg = Some(rayr_proto::task_arg::Arg::Shm(ObjectLocation {
                        object_id: dep.to_vec(),
                        offset: *offset,
                        size: *size,
                        format: *format,
                        node: Vec::new(),
                    }))
                }
                // In another node's store: the worker asks us, and pulls it (or, on that
                // node, reads it in place).
                Slot::OnNode { .. } => {
                    let r = rayr_proto::ObjectRefArg { object_id: dep.to_vec(), owner: self.me.to_vec(), owner_address: self.address.clone() };
                    t.spec.args[i].arg = Some(rayr_proto::task_arg::Arg::ByRef(r))
                }
                Slot::Failed(e) => failed = Some(e.clone()),
                Slot::Pending => return true,
            }
            false
        });
        if let Some(e) = failed {
            let why = TaskDetail {
                error_type: TaskErrorKind::DependencyFailed as i32,
                error: format!("argument {} failed: {e}", hex(&dep)),
                failed_argument: dep.to_vec(),
                ..Default::default()
            };
            self.fail_task_final_as_locked(st, task, e, why, None);
            return;
        }
        // Queued once: a task that takes the same pending ref twice is told twice, and
        // the first call already resolved both.
        let Some(t) = st.tasks.get(&task).filter(|t| t.deps.is_empty() && t.deps.len() < waiting) else { return };
        if t.spec.actor_id.is_some() {
            // An actor's call is in its queue since it was submitted (calls keep their
            // order; see enqueue_locked): the queue may go on now. (Not queued again: a
            // check for that would scan the queue.)
            let key = t.key.clone();
            self.dispatch_locked(st, &key);
        } else {
            self.enqueue_locked(st, task);
        }
    }

    pub(super) fn worker_lost(self: &Arc<Self>, worker: Id) {
        let (tasks, actor, lessor): (Vec<Id>, Option<Id>, Option<Arc<super::NodeConn>>) = {
            let mut st = self.state.lock();
            let Some(l) = st.leased.remove(&worker) else { return };
            let mut actor = None;
            if let Some(q) = st.queues.get_mut(&l.key) {
                q.workers.retain(|w| *w != worker);
                actor = q.actor.as_ref().filter(|a| a.dead.is_none()).map(|a| a.id);
            }
            (l.in_flight.into_keys().collect(), actor, l.lessor)
        };
        if tasks.is_empty() && actor.is_none() {
            return;
        }
        // The node that leased the worker knows how it ended (another node's, when spilled).
        let (exit_event, detail) = self.worker_exit_from(worker, lessor.as_deref());
        let mut st = self.state.lock();
        if let Some(actor) = actor {
            let why = format!("its worker {} died: {detail}", hex(&worker));
            let owned = st.queues.get(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_ref()).is_some_and(|a| a.owned);
            if !owned {
                // Only its owner knows whether it restarts. The calls that were running run
                // again on the next life while they have retries (max_task_retries, as the
                // owner said), the others fail; what is queued waits while this process asks
                // the owner where the actor is now (or learns that it is dead).
                let key = QueueKey::Actor(actor);
                let (retries, owner_address) = match st.queues.get_mut(&key).and_then(|q| q.actor.as_mut()) {
                    Some(a) => {
                        a.lost_worker = Some(worker);
                        (a.max_task_retries, a.owner_address.clone())
                    }
                    None => (0, None),
                };
                let cause = format!("{why} while running this call");
                let mut again: Vec<(u64, Id)> = Vec::new();
                for task in tasks {
                    let Some(t) = st.tasks.get_mut(&task) else { continue };
                    if retries < 0 || (t.spec.attempt as i64) < retries as i64 {
                        t.spec.attempt += 1;
                        t.worker = None;
                        let mut e = self.event(EventKind::TaskRetried);
                        e.task_id = task.to_vec();
                        e.actor_id = actor.to_vec();
                        if let Some(c) = exit_event {
                            e.cause = c.to_vec();
                        }
                        e.detail = Some(event::Detail::Task(TaskDetail {
                            function: t.spec.function.to_string(),
                            attempt: t.spec.attempt,
                            reason: format!("{cause}; retried on the actor's next life, if it restarts"),
                            ..Default::default()
                        }));
                        t.last_event = self.record(e);
                        t.in_ready_queue = true;
                        again.push((t.seq, task));
                    } else {
                        let err = Error::ActorDied { actor: crate::ActorId(actor), cause: cause.clone() };
                        self.fail_task_final_locked(&mut st, task, err, TaskErrorKind::ActorDied, &format!("actor {} {cause}", hex(&actor)), exit_event);
                    }
                }
                again.sort_unstable();
                let waiting = match st.queues.get_mut(&key) {
                    Some(q) => {
                        for (_, task) in again.into_iter().rev() {
                            q.ready.push_front(task);
                        }
                        !q.ready.is_empty()
                    }
                    None => false,
                };
                drop(st);
                self.send_outbox();
                self.ready.notify_all();
                if waiting && let Some(owner_address) = owner_address {
                    self.start_locating(actor, &owner_address);
                }
                return;
            }
            if self.restart_actor_locked(&mut st, actor, &why, exit_event, &tasks) {
                drop(st);
                self.send_outbox();
                self.ready.notify_all();
                return;
            }
            // Its state died with its worker: every call, pending or to come, fails.
            self.end_actor_locked(&mut st, actor, ActorEnd { cause: ActorDeathCause::WorkerDied, detail: &why, because: exit_event, kill: false }, tasks);
            drop(st);
            self.send_outbox();
            self.ready.notify_all();
            return;
        }
        for task in tasks {
            let Some(t) = st.tasks.get(&task) else { continue };
            if t.spec.attempt < t.spec.max_retries {
                let reason = format!("worker {} died: {detail}", hex(&worker));
                self.retry_locked(&mut st, task, reason, exit_event);
            } else {
                let err = Error::WorkerDied { worker: crate::WorkerId(worker), exit: detail.clone() };
                let msg = format!("worker {} died: {detail}; no retries left", hex(&worker));
                self.fail_task_final_locked(&mut st, task, err, TaskErrorKind::WorkerDied, &msg, exit_event);
            }
        }
        drop(st);
        self.send_outbox();
        self.ready.notify_all();
    }
}

impl Core {
    /// An actor is gone (`cause` says why, as ACTOR_DIED records it): its queued and
    /// in-flight calls fail, later ones fail at once, and its worker, if leased here, is
    /// let go (the node agent stops it); `kill`: stopped at once, `detail` being why (the
    /// user's `rayr::kill`).
    /// `in_flight`: calls that were on its worker when that was found gone.
    pub(super) fn end_actor_locked(self: &Arc<Self>, st: &mut State, actor: Id, end: ActorEnd<'_>, in_flight: Vec<Id>) {
        let ActorEnd { cause, detail, because, kill } = end;
        let key = QueueKey::Actor(actor);
        let Some(q) = st.queues.get_mut(&key) else { return };
        let Some(a) = q.actor.as_mut() else { return };
        if let Some((why, died)) = a.dead.clone() {
            // Already ended (say, killed while its worker's death was being looked into):
            // calls still in hand fail as the others did.
            let actor = a.id;
            for task in in_flight {
                let err = Error::ActorDied { actor: crate::ActorId(actor), cause: why.clone() };
                self.fail_task_final_locked(st, task, err, TaskErrorKind::ActorDied, &format!("actor {} died: {why}", hex(&actor)), died);
            }
            return;
        }
        a.dead = Some((detail.to_string(), None));
        let owned = a.owned;
        let restarts = a.restarts;
        let max_restarts = if a.restarts_left < 0 { -1 } else { a.restarts as i32 + a.restarts_left };
        let kept = std::mem::take(&mut a.kept_args);
        if let Some(name) = a.name.take() {
            let _ = self.node_conn.send(0, client_message::Body::UnnameActor(name));
        }
        let mut tasks: Vec<Id> = q.ready.drain(..).collect();
        tasks.extend(in_flight);
        for w in std::mem::take(&mut q.workers) {
            if let Some(l) = st.leased.get(&w) {
                tasks.extend(l.in_flight.keys().copied());
            }
            if kill {
                if st.leased.remove(&w).is_some_and(|l| l.leased_here) {
                    let ret = rayr_proto::LeaseReturn { worker_id: w.to_vec(), kill: detail.to_string() };
                    let _ = self.node_conn.send(0, client_message::Body::ReturnLease(ret));
                }
            } else {
                // Put back in the list so return_lease_locked finds and removes it.
                st.queues.get_mut(&key).unwrap().workers.push(w);
                self.return_lease_locked(st, w);
            }
        }
        let died = if owned {
            let mut e = self.event(EventKind::ActorDied);
            e.actor_id = actor.to_vec();
            if let Some(c) = because {
                e.cause = c.to_vec();
            }
            e.detail = Some(event::Detail::Actor(rayr_proto::ActorDetail {
                cause: cause as i32,
                detail: detail.into(),
                restart: restarts,
                max_restarts,
                ..Default::default()
            }));
            Some(self.record(e))
        } else {
            because
        };
        if let Some(a) = st.queues.get_mut(&key).and_then(|q| q.actor.as_mut()) {
            a.dead = Some((detail.to_string(), died));
        }
        for task in tasks {
            let err = Error::ActorDied { actor: crate::ActorId(actor), cause: detail.to_string() };
            self.fail_task_final_locked(st, task, err, TaskErrorKind::ActorDied, &format!("actor {} died: {detail}", hex(&actor)), died);
        }
        // No restart will need its constructor's arguments now.
        self.release_args_locked(st, kept);
    }

    /// Its worker died (`why`): with restarts left, the actor is created again on a new
    /// worker (ACTOR_RESTARTED, caused by the exit): the calls that were on the dead
    /// worker fail, queued and later ones go to the new one. False: no restart (none left,
    /// not the owner, or nothing to re-run).
    fn restart_actor_locked(self: &Arc<Self>, st: &mut State, actor: Id, why: &str, exit_event: Option<Id>, in_flight: &[Id]) -> bool {
        let key = QueueKey::Actor(actor);
        let Some(a) = st.queues.get_mut(&key).and_then(|q| q.actor.as_mut()) else { return false };
        // (Arguments by reference are still there: the actor keeps them while it may restart.)
        if !a.owned || a.dead.is_some() || a.restarts_left == 0 || a.creation.is_none() {
            return false;
        }
        if a.restarts_left > 0 {
            a.restarts_left -= 1;
        }
        a.restarts += 1;
        a.leased = false;
        a.ready = false;
        a.location = None;
        let restart = a.restarts;
        let max_task_retries = a.max_task_retries;
        let mut spec = a.creation.clone().unwrap();
        let mut e = self.event(EventKind::ActorRestarted);
        e.actor_id = actor.to_vec();
        if let Some(c) = exit_event {
            e.cause = c.to_vec();
        }
        e.detail = Some(event::Detail::Actor(rayr_proto::ActorDetail { cause: ActorDeathCause::WorkerDied as i32, detail: why.into(), restart, ..Default::default() }));
        let restarted = self.record(e);
        let cause = format!("{why} while running this call (the actor restarts: restart {restart})");
        // Calls that were running: run again on the new life, in their order, while they
        // have retries left (max_task_retries); the others fail.
        let mut again: Vec<(u64, Id)> = Vec::new();
        for &task in in_flight {
            let Some(t) = st.tasks.get_mut(&task) else { continue };
            if max_task_retries < 0 || (t.spec.attempt as i64) < max_task_retries as i64 {
                t.spec.attempt += 1;
                t.worker = None;
                let mut e = self.event(EventKind::TaskRetried);
                e.task_id = task.to_vec();
                e.actor_id = actor.to_vec();
                e.cause = restarted.to_vec();
                e.detail = Some(event::Detail::Task(TaskDetail {
                    function: t.spec.function.to_string(),
                    attempt: t.spec.attempt,
                    reason: format!("{cause}; retried on the restarted actor"),
                    ..Default::default()
                }));
                t.last_event = self.record(e);
                t.in_ready_queue = true;
                again.push((t.seq, task));
            } else {
                let err = Error::ActorDied { actor: crate::ActorId(actor), cause: cause.clone() };
                self.fail_task_final_locked(st, task, err, TaskErrorKind::ActorDied, &format!("actor {} {cause}", hex(&actor)), Some(restarted));
            }
        }
        again.sort_unstable();
        let q = st.queues.get_mut(&key).unwrap();
        for (_, task) in again.into_iter().rev() {
            q.ready.push_front(task);
        }
        // The constructor runs again, first in the actor's queue, on a worker leased anew.
        let task = rayr_logs::new_id();
        let ret = rayr_logs::new_id();
        spec.task_id = task;
        spec.return_id = ret;
        spec.attempt = restart;
        self.own(st, ret, Slot::Pending);
        let submitted = self.emit(EventKind::TaskSubmitted, |e| {
            e.task(&task).object(&ret).actor(&actor).cause(&restarted);
            e.task_detail(|d| {
                d.function(spec.function).attempt(restart);
            });
        });
        let demand = st.queues[&key].demand.clone();
        st.tasks.insert(
            task,
            Box::new(PendingTask {
                spec,
                deps: Vec::new(),
                owned_args: Vec::new(),
                borrowed_args: Vec::new(),
                key: key.clone(),
                demand,
                worker: None,
                in_ready_queue: true,
                last_event: submitted,
                seq: 0,
                trace: None,
            }),
        );
        // The result (where the new life lives) has no reader: freed when it arrives.
        if let Some(o) = st.owned.get_mut(&ret) {
            o.local_refs = 0;
        }
        st.queues.get_mut(&key).unwrap().ready.push_front(task);
        self.dispatch_locked(st, &key);
        true
    }

    /// An actor is about to be submitted from here: its queue, with how it restarts and how
    /// many calls it runs at once, is there before its creation is queued.
    pub(crate) fn actor_configured(&self, actor: Id, opts: &crate::TaskOptions) {
        let mut a = ActorQueue::new(actor, true, false);
        a.restarts_left = opts.max_restarts;
        a.max_task_retries = opts.max_task_retries;
        a.max_concurrency = opts.max_concurrency.max(1);
        let q = Queue { demand: Arc::new(opts.resources.clone()), ready: VecDeque::new(), leases_requested: 0, workers: Vec::new(), actor: Some(a) };
        self.state.lock().queues.insert(QueueKey::Actor(actor), q);
    }

    /// An actor was just submitted: `info` (its creation's result, which its handles hold)
    /// stands for its life.
    pub(crate) fn actor_created(&self, actor: Id, info: Id) {
        self.state.lock().actors.insert(info, actor);
    }

    /// The actor now holds `name` with the node (freed when it ends).
    pub(crate) fn actor_named(&self, actor: Id, name: rayr_proto::ActorName) {
        let mut st = self.state.lock();
        let dead = match st.queues.get_mut(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_mut()) {
            Some(a) if a.dead.is_none() => {
                a.name = Some(name.clone());
                false
            }
            _ => true,
        };
        drop(st);
        if dead {
            // It ended already (its creation failed fast): give the name back.
            let _ = self.node_conn.send(0, client_message::Body::UnnameActor(name));
        }
    }

    /// An actor that could not even be submitted (`why`): its queue is dead from the start,
    /// so calls fail with ActorDied; ACTOR_DIED creation_failed is recorded.
    pub(crate) fn actor_never_created(self: &Arc<Self>, actor: Id, why: &str) {
        let key = QueueKey::Actor(actor);
        let mut st = self.state.lock();
        st.queues.insert(
            key,
            Queue {
                demand: Arc::default(),
                ready: VecDeque::new(),
                leases_requested: 0,
                workers: Vec::new(),
                actor: Some(ActorQueue::new(actor, true, true)),
            },
        );
        self.end_actor_locked(&mut st, actor, ActorEnd { cause: ActorDeathCause::CreationFailed, detail: why, because: None, kill: false }, Vec::new());
    }

    /// `rayr::kill`: the actor's worker is stopped at once and every call fails with
    /// `ActorDied`. Only its creator holds its worker's lease, so only it can, for now.
    pub(crate) fn kill_actor(self: &Arc<Self>, actor: Id, no_restart: bool) -> crate::Result<()> {
        let mut st = self.state.lock();
        let key = QueueKey::Actor(actor);
        let Some(q) = st.queues.get(&key).filter(|q| q.actor.as_ref().is_some_and(|a| a.owned)) else {
            return Err(Error::Connection(format!("actor {} was not created by this process: only its creator can kill it (for now)", hex(&actor))));
        };
        let a = q.actor.as_ref().unwrap();
        if !no_restart && a.dead.is_none() && a.restarts_left != 0 && a.creation.is_some() {
            // Its worker is stopped; seen gone, the actor restarts like after any death.
            for w in &q.workers {
                let ret = rayr_proto::LeaseReturn { worker_id: w.to_vec(), kill: "killed by rayr::kill (the actor restarts)".into() };
                let _ = self.node_conn.send(0, client_message::Body::ReturnLease(ret));
            }
            return Ok(());
        }
        let why = "killed by rayr::kill";
        self.end_actor_locked(&mut st, actor, ActorEnd { cause: ActorDeathCause::Killed, detail: why, because: None, kill: true }, Vec::new());
        drop(st);
        self.send_outbox();
        self.ready.notify_all();
        Ok(())
    }

    /// Gives this process the actor's worker to send calls to (a handle's holder that did
    /// not create the actor).
    /// Calls to an actor this process did not create, and has no worker of here: one
    /// thread asks the owner (at `owner_address`) where the actor lives — waiting while it
    /// is created or restarted, however long that takes — and sends the queued calls there,
    /// or fails them with why it is dead. Calls meanwhile queue, in order; none blocks.
    pub(crate) fn start_locating(self: &Arc<Self>, actor: Id, owner_address: &str) {
        let key = QueueKey::Actor(actor);
        let mut st = self.state.lock();
        let q = st.queues.entry(key).or_insert_with(|| Queue {
            demand: Arc::default(),
            ready: VecDeque::new(),
            leases_requested: 0,
            workers: Vec::new(),
            actor: Some(ActorQueue::new(actor, false, true)),
        });
        let has_worker = !q.workers.is_empty();
        let Some(a) = q.actor.as_mut() else { return };
        if a.owned || a.dead.is_some() || has_worker || a.locating {
            return;
        }
        a.locating = true;
        a.owner_address = Some(owner_address.to_string());
        drop(st);
        let (core, owner_address) = (self.clone(), owner_address.to_string());
        let started = std::thread::Builder::new().name("rayr-actor-locate".into()).spawn(move || {
            let result = core.locate_and_attach(actor, &owner_address);
            if let Some(a) = core.state.lock().queues.get_mut(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_mut()) {
                a.locating = false;
            }
            if let Err(why) = result {
                core.actor_dead_here(actor, ActorDeathCause::Unspecified, &why);
            }
        });
        if started.is_err() {
            self.actor_dead_here(actor, ActorDeathCause::Unspecified, "no thread could be started to find it");
        }
    }

    /// Asks the actor's owner (at `owner_address`) where the actor lives now and sends its
    /// queued calls there. Err: why it is dead (or unreachable for good).
    fn locate_and_attach(self: &Arc<Self>, actor: Id, owner_address: &str) -> Result<(), String> {
        for _ in 0..20 {
            let avoid = {
                let st = self.state.lock();
                st.queues.get(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_ref()).and_then(|a| a.lost_worker)
            };
            let found = self.find_actor(actor, owner_address, avoid)?;
            match self.attach_actor(actor, owner_address, &found) {
                Ok(()) => return Ok(()),
                // Died between the owner's answer and our connect: ask again.
                Err(_) => {
                    let mut st = self.state.lock();
                    if let Some(a) = st.queues.get_mut(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_mut()) {
                        a.lost_worker = Some(found.info.worker);
                    }
                }
            }
        }
        Err("its worker could not be reached after 20 tries".into())
    }

    fn attach_actor(self: &Arc<Self>, actor: Id, owner_address: &str, found: &FoundActor) -> std::io::Result<()> {
        let info = &found.info;
        let conn = self.peer(&info.address)?;
        *conn.worker.lock() = Some(info.worker);
        let key = QueueKey::Actor(actor);
        let mut st = self.state.lock();
        let q = st.queues.entry(key.clone()).or_insert_with(|| Queue {
            demand: Arc::default(),
            ready: VecDeque::new(),
            leases_requested: 0,
            workers: Vec::new(),
            actor: Some(ActorQueue::new(actor, false, true)),
        });
        if q.actor.as_ref().is_some_and(|a| a.dead.is_some()) || q.workers.contains(&info.worker) {
            return Ok(());
        }
        q.workers.push(info.worker);
        let max_in_flight = match q.actor.as_mut() {
            Some(a) => {
                a.max_concurrency = found.max_concurrency.max(1);
                a.max_task_retries = found.max_task_retries;
                a.owner_address = Some(owner_address.to_string());
                a.max_in_flight()
            }
            None => MAX_IN_FLIGHT,
        };
        st.leased.entry(info.worker).or_insert(Leased {
            conn: conn.clone(),
            key: key.clone(),
            in_flight: HashMap::new(),
            in_flight_bytes: 0,
            idle_since: None,
            actor: true,
            leased_here: false,
            max_in_flight,
            lessor: None,
        });
        self.dispatch_locked(&mut st, &key);
        if conn.closed.load(std::sync::atomic::Ordering::Acquire) {
            // It died before its reader knew whose it was: handled like any lost worker.
            drop(st);
            self.worker_lost(info.worker);
        }
        Ok(())
    }

    /// The owner's answer to a borrower's `ActorLocate`.
    pub(crate) fn locate_actor(&self, actor: &[u8]) -> rayr_proto::ActorLocation {
        let mut out = rayr_proto::ActorLocation::default();
        let Ok(actor) = <Id>::try_from(actor) else {
            out.dead = "not an actor id".into();
            return out;
        };
        let st = self.state.lock();
        match st.queues.get(&QueueKey::Actor(actor)).and_then(|q| q.actor.as_ref().map(|a| (q, a))) {
            None => out.dead = format!("its owner {} does not know it (it ended, or never began)", hex(&self.me)),
            Some((_, a)) if a.dead.is_some() => out.dead = a.dead.as_ref().unwrap().0.clone(),
            Some((q, a)) => match &a.location {
                Some((w, address)) if a.ready && q.workers.contains(w) => {
                    out.worker_id = w.to_vec();
                    out.address = address.clone();
                    out.max_concurrency = a.max_concurrency;
                    out.max_task_retries = a.max_task_retries;
                }
                _ => out.pending = true,
            },
        }
        out
    }

    /// Asks the actor's owner where it lives now, waiting (up to a minute) while it is
    /// being created or restarted: (worker, address), or why it is dead.
    /// A location naming `avoid` (a worker seen dead, which the owner may not know yet) is
    /// taken for "being restarted".
    fn find_actor(self: &Arc<Self>, actor: Id, owner_address: &str, avoid: Option<Id>) -> Result<FoundActor, String> {
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let conn = self.peer(owner_address).map_err(|e| format!("its owner cannot be reached ({e}): it has exited"))?;
            let msg = rayr_proto::PeerMessage { req_id: 0, body: Some(rayr_proto::peer_message::Body::Locate(rayr_proto::ActorLocate { actor_id: actor.to_vec() })) };
            let reply = conn.call(msg, Some(std::time::Duration::from_secs(10))).map_err(|_| "its owner did not answer: it has exited".to_string())?;
            let Some(rayr_proto::peer_message::Body::Location(l)) = reply.body else {
                return Err("its owner answered something else".into());
            };
            if !l.dead.is_empty() {
                return Err(l.dead);
            }
            if !l.pending
                && let Ok(worker) = <Id>::try_from(l.worker_id.as_slice())
                && Some(worker) != avoid
            {
                let info = ActorAt { worker, address: l.address };
                return Ok(FoundActor { info, max_concurrency: l.max_concurrency, max_task_retries: l.max_task_retries });
            }
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return Err("this process is shutting down".into());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// The actor is dead (`cause`, unspecified where only its owner knows; `why`), as a borrower learned or as its creator decided
    /// (its name was taken): later calls from here fail at once.
    pub(crate) fn actor_dead_here(self: &Arc<Self>, actor: Id, cause: ActorDeathCause, why: &str) {
        let key = QueueKey::Actor(actor);
        let mut st = self.state.lock();
        st.queues.entry(key).or_insert_with(|| Queue {
            demand: Arc::default(),
            ready: VecDeque::new(),
            leases_requested: 0,
            workers: Vec::new(),
            actor: Some(ActorQueue::new(actor, false, true)),
        });
        self.end_actor_locked(&mut st, actor, ActorEnd { cause, detail: why, because: None, kill: false }, Vec::new());
        drop(st);
        // Readers of the calls that just failed may be waiting.
        self.send_outbox();
        self.ready.notify_all();
    }

    /// Whether calls to the actor have a worker to go to here (or fail at once).
    pub(crate) fn actor_reachable(&self, actor: &Id) -> bool {
        let st = self.state.lock();
        st.queues
            .get(&QueueKey::Actor(*actor))
            .and_then(|q| q.actor.as_ref().map(|a| a.owned || a.dead.is_some() || !q.workers.is_empty()))
            .unwrap_or(false)
    }
}

/// Where an actor lives now, as its owner said, and how its calls are to be sent.
pub(crate) struct FoundActor {
    info: ActorAt,
    max_concurrency: u32,
    max_task_retries: i32,
}

/// An actor's worker and that worker's address (what `actor::ActorInfo` holds, as the
/// owner's `ActorLocation` answer gives it).
struct ActorAt {
    worker: Id,
    address: String,
}

/// How an actor ended (see `end_actor_locked`): the cause recorded in ACTOR_DIED, what its
/// calls' errors say, the event that caused it, and whether its worker is stopped at once.
pub(super) struct ActorEnd<'a> {
    pub cause: ActorDeathCause,
    pub detail: &'a str,
    pub because: Option<Id>,
    pub kill: bool,
}
