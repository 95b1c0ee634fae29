//! Ownership: the objects this process owns, their reference counts (local handles,
//! pending tasks, borrowers, serialized copies in flight), when they are freed, and how
//! other processes read them.

use std::sync::Arc;

use rayr_logs::event_run::FREED_BY_RELEASE;
use rayr_logs::{Id, hex};
use rayr_proto::{EventKind, ObjectDetail, ObjectLocation, PeerMessage, client_message, event, peer_message};

use super::{Core, Owned, QueueKey, ServerConn, Slot, State};

impl Core {

    /// Registers a new object owned here, holding one local reference.
    pub fn own(&self, st: &mut State, id: Id, slot: Slot) {
        let mut o = Owned::new(slot);
        o.local_refs = 1;
        st.owned.insert(id, Box::new(o));
    }

    /// Records that an owned object has a value (OBJECT_CREATED, owner assigned) and wakes
    /// everything waiting for it.
    pub fn object_created(self: &Arc<Self>, st: &mut State, id: Id, slot: Slot, task: Option<Id>, cause: Option<Id>) {
        let (size, location) = match &slot {
            Slot::Inline(b, _) => (b.len() as u64, "inline"),
            Slot::Shm { size, .. } | Slot::OnNode { size, .. } => (*size, "shm"),
            _ => (0, ""),
        };
        let mut ev = None;
        if !location.is_empty() {
            ev = Some(self.emit(EventKind::ObjectCreated, |e| {
                e.object(&id).worker(&self.me);
                if let Some(t) = task {
                    e.task(&t);
                }
                if let Some(c) = cause {
                    e.cause(&c);
                }
                e.object_detail(|d| {
                    d.size(size).location(location);
                });
            }));
        }
        let Some(o) = st.owned.get_mut(&id) else {
            // Every reference was dropped before the value arrived: free it at once.
            match slot {
                Slot::Shm { .. } => self.free_in_store(&[id]),
                Slot::OnNode { node, .. } => {
                    let free = rayr_proto::FreeCopies { object_id: id.to_vec(), nodes: vec![node.to_vec()] };
                    let _ = self.node_conn.send(0, client_message::Body::FreeCopies(free));
                }
                _ => {}
            }
            return;
        };
        o.slot = slot.clone();
        if let Some(e) = ev {
            o.created_event = e;
        }
        let waiters = o.more.as_mut().map(|m| std::mem::take(&mut m.remote_waiters)).unwrap_or_default();
        let referenced = o.referenced();
        let dependents = st.waits.take(id);
        for (conn, req) in waiters {
            st.outbox.push((conn, value_message(req, id, &slot, self.node)));
        }
        for t in dependents {
            self.dependency_ready(st, t, id, &slot);
        }
        if !referenced {
            self.free_locked(st, id, "every reference was dropped before the value was computed");
        }
    }

    /// Frees an owned object once nothing refers to it and its value is in (a pending
    /// value is freed when it arrives, see `object_created`).
    fn free_if_unreferenced(&self, st: &mut State, id: Id, reason: &str) {
        if st.owned.get(&id).is_some_and(|o| !o.referenced() && !matches!(o.slot, Slot::Pending)) {
            self.free_locked(st, id, reason);
        }
    }

    pub fn release_local(&self, id: Id, owner: Id) {
        let mut st = self.state.lock();
        if owner == self.me {
            if let Some(o) = st.owned.get_mut(&id) {
                o.local_refs = o.local_refs.saturating_sub(1);
                self.free_if_unreferenced(&mut st, id, FREED_BY_RELEASE);
            }
        } else {
            self.release_borrowed_locked(&mut st, id);
        }
    }

    pub fn release_borrowed_locked(&self, st: &mut State, id: Id) {
        let Some(entry) = st.borrowed.get_mut(&id) else { return };
        entry.0 -= 1;
        if entry.0 > 0 {
            return;
        }
        let (_, owner, address) = st.borrowed.remove(&id).unwrap();
        st.borrowed_locations.remove(&id);
        if st.local_copies.get(&id).is_some_and(|c| c.1 == 0) {
            st.local_copies.remove(&id);
            self.release_copies(&[id]);
        }
        let peer = st.peers.get(&address).cloned();
        let msg = PeerMessage {
            req_id: 0,
            body: Some(peer_message::Body::Borrow(rayr_proto::BorrowerUpdate {
                object_id: id.to_vec(),
                borrower: self.me.to_vec(),
                add: false,
                consumes_token: false,
            })),
        };
        let _ = owner;
        if let Some(p) = peer {
            let _ = p.send(&msg);
        }
    }

    pub fn free_locked(&self, st: &mut State, id: Id, reason: &str) {
        let Some(o) = st.owned.remove(&id) else { return };
        // (Tasks waiting on it pin it: none can be left; this only keeps the index exact.)
        st.waits.take(id);
        // What the value held on to is let go with it.
        for inner in o.more().map_or(&[][..], |m| &m.contains) {
            self.unpin_locked(st, inner.id, inner.owner, "the object holding it was freed");
        }
        if let Slot::Shm { .. } = o.slot {
            self.free_in_store(&[id]);
        }
        // Our own pin on a copy we read goes first, so that our node drops the copy too.
        if st.local_copies.remove(&id).is_some() {
            self.release_copies(&[id]);
        }
        let mut nodes: Vec<Vec<u8>> = o.copies().iter().map(|n| n.to_vec()).collect();
        if let Slot::OnNode { node, .. } = o.slot {
            nodes.push(node.to_vec());
        }
        if !nodes.is_empty() {
            let _ = self.node_conn.send(0, client_message::Body::FreeCopies(rayr_proto::FreeCopies { object_id: id.to_vec(), nodes }));
        }
        // The task that made it is not needed to make it again any more.
        if let Some(t) = st.lineage.remove(&id) {
            self.release_args_locked(st, (t.owned_args, t.borrowed_args));
        }
        let mut freed = None;
        if !matches!(o.slot, Slot::Failed(_)) {
            freed = Some(self.emit(EventKind::ObjectFreed, |e| {
                e.object(&id).worker(&self.me).cause(&o.created_event);
                if reason != FREED_BY_RELEASE {
                    e.object_detail(|d| {
                        d.reason(reason).end(rayr_proto::ObjectEndReason::Released);
                    });
                }
            }));
        }
        if let Some(actor) = st.actors.remove(&id)
            && !matches!(o.slot, Slot::Failed(_))
        {
            // The last handle to an actor is gone (no call is pending either: each pins
            // it): the actor ends, and its worker with it. (A failed creation ends it
            // itself, with that cause.)
            self.actor_out_of_scope_locked(st, actor, freed);
        }
    }

    fn actor_out_of_scope_locked(&self, st: &mut State, actor: Id, because: Option<Id>) {
        let key = QueueKey::Actor(actor);
        let Some(q) = st.queues.get_mut(&key) else { return };
        let Some(a) = q.actor.as_mut() else { return };
        if a.dead.is_some() {
            // Nothing can call it any more: its queue goes (no memory per actor ever made).
            if q.ready.is_empty() && q.workers.is_empty() {
                st.queues.remove(&key);
            }
            return;
        }
        let why = "every handle to it was dropped";
        let (restart, max_restarts) = (a.restarts, if a.restarts_left < 0 { -1 } else { a.restarts as i32 + a.restarts_left });
        a.dead = Some((why.into(), None));
        let kept = std::mem::take(&mut a.kept_args);
        if let Some(name) = a.name.take() {
            let _ = self.node_conn.send(0, rayr_proto::client_message::Body::UnnameActor(name));
        }
        for w in q.workers.clone() {
            self.return_lease_locked(st, w);
        }
        let mut e = self.event(EventKind::ActorDied);
        e.actor_id = actor.to_vec();
        if let Some(c) = because {
            e.cause = c.to_vec();
        }
        e.detail = Some(rayr_proto::event::Detail::Actor(rayr_proto::ActorDetail {
            cause: rayr_proto::ActorDeathCause::OutOfScope as i32,
            detail: why.into(),
            restart,
            max_restarts,
            ..Default::default()
        }));
        let died = self.record(e);
        if let Some(a) = st.queues.get_mut(&key).and_then(|q| q.actor.as_mut()) {
            a.dead = Some((why.into(), Some(died)));
        }
        // No restart will need its constructor's arguments now.
        self.release_args_locked(st, kept);
        if st.queues.get(&key).is_some_and(|q| q.ready.is_empty() && q.workers.is_empty()) {
            st.queues.remove(&key);
        }
    }

    pub(crate) fn free_in_store(&self, ids: &[Id]) {
        let _ = self.node_conn.send(
            0,
            client_message::Body::FreeObjects(rayr_proto::FreeObjects { object_ids: ids.iter().map(|i| i.to_vec()).collect() }),
        );
    }

    /// The agent no longer needs to keep these copies for this process.
    pub(crate) fn release_copies(&self, ids: &[Id]) {
        let _ = self.node_conn.send(
            0,
            client_message::Body::ReleaseCopies(rayr_proto::ReleaseCopies { object_ids: ids.iter().map(|i| i.to_vec()).collect() }),
        );
    }

    /// A reader copied an object of ours into its node's store: that copy goes when the
    /// object does.
    pub(super) fn copy_made(&self, c: &rayr_proto::ObjectCopy) {
        let (Ok(id), Ok(node)) = (<Id>::try_from(c.object_id.as_slice()), <Id>::try_from(c.node.as_slice())) else { return };
        self.copy_made_locked(&mut self.state.lock(), id, node);
    }

    pub(crate) fn copy_made_locked(&self, st: &mut State, id: Id, node: Id) {
        if let Some(o) = st.owned.get_mut(&id)
            && !o.copies().contains(&node)
        {
            o.more_mut().copies.push(node);
        }
    }

    /// The node holding the value of an object of ours is gone (a reader's pull from it
    /// failed so): the task that made it runs again if it may (its readers wait for the
    /// new value), or the object is lost. Nothing happens if the value is elsewhere by now.
    pub(crate) fn object_lost_on(self: &Arc<Self>, id: Id, node: Id, cause: Vec<u8>, reason: &str) {
        let mut st = self.state.lock();
        let Some(o) = st.owned.get_mut(&id) else { return };
        if !matches!(o.slot, Slot::OnNode { node: n, .. } if n == node) {
            return;
        }
        if let Some(m) = o.more.as_mut() {
            m.copies.retain(|n| *n != node);
        }
        let rerun = st.lineage.remove(&id);
        let mut lost = self.event(EventKind::ObjectLost);
        lost.object_id = id.to_vec();
        lost.worker_id = self.me.to_vec();
        lost.cause = cause;
        let what = match &rerun {
            Some(t) => format!("; its task {} runs again (retry {} of {})", hex(&t.spec.task_id), t.spec.attempt + 1, t.spec.max_retries),
            None => "; it cannot be made again (not a task's result, or no retries left): lost".into(),
        };
        lost.detail = Some(event::Detail::Object(ObjectDetail {
            location: "shm".into(),
            copy_node: node.to_vec(),
            reason: format!("its only copy was in the store of node {}, which is gone: {reason}{what}", hex(&node)),
            end: rayr_proto::ObjectEndReason::NodeDied as i32,
            ..Default::default()
        }));
        let lost_event = self.record(lost);
        match rerun {
            Some(t) => {
                let task: Id = t.spec.task_id;
                st.owned.get_mut(&id).unwrap().slot = Slot::Pending;
                st.tasks.insert(task, t);
                let why = format!("its result {} was lost with node {}", hex(&id), hex(&node));
                self.retry_locked(&mut st, task, why, Some(lost_event));
            }
            None => {
                let slot = Slot::Failed(crate::Error::ObjectLost { object: crate::ObjectId(id) });
                let o = st.owned.get_mut(&id).unwrap();
                o.slot = slot.clone();
                let waiters = o.more.as_mut().map(|m| std::mem::take(&mut m.remote_waiters)).unwrap_or_default();
                for (conn, req) in waiters {
                    st.outbox.push((conn, value_message(req, id, &slot, self.node)));
                }
            }
        }
        drop(st);
        self.send_outbox();
        self.ready.notify_all();
    }

    pub(super) fn borrower_update(&self, b: rayr_proto::BorrowerUpdate) {
        let Ok(id) = <Id>::try_from(b.object_id.as_slice()) else { return };
        let borrower: Option<Id> = b.borrower.as_slice().try_into().ok();
        let mut st = self.state.lock();
        let Some(o) = st.owned.get_mut(&id) else { return };
        let mut event = None;
        if b.consumes_token {
            o.tokens = o.tokens.saturating_sub(1);
        }
        match (b.add, borrower) {
            (true, Some(w)) => {
                if o.more_mut().borrowers.insert(w) {
                    event = Some((EventKind::ObjectBorrowed, w));
                }
            }
            (true, None) => o.tokens += 1,
            (false, Some(w)) => {
                if o.more.as_mut().is_some_and(|m| m.borrowers.remove(&w)) {
                    event = Some((EventKind::ObjectReleased, w));
                }
            }
            (false, None) => {}
        }
        let created = o.created_event;
        if let Some((kind, w)) = event {
            self.record_borrow(kind, id, w, created, "");
        }
        self.free_if_unreferenced(&mut st, id, "its last borrower released it");
    }

    /// OBJECT_BORROWED / OBJECT_RELEASED for one borrower of an owned object.
    fn record_borrow(&self, kind: EventKind, id: Id, borrower: Id, created: Id, reason: &str) {
        let mut e = self.event(kind);
        e.object_id = id.to_vec();
        e.worker_id = self.me.to_vec();
        if created != [0; 16] {
            e.cause = created.to_vec();
        }
        e.detail = Some(event::Detail::Object(ObjectDetail {
            peer: borrower.to_vec(),
            peer_kind: rayr_proto::PeerKind::Borrower as i32,
            reason: reason.into(),
            ..Default::default()
        }));
        self.record(e);
    }

    /// Keeps an object alive on behalf of something that holds it without a handle (a
    /// pending task's argument, a container's value). Returns false when it is gone.
    pub(crate) fn pin_locked(&self, st: &mut State, id: Id, owner: Id) -> bool {
        if owner == self.me {
            match st.owned.get_mut(&id) {
                Some(o) => {
                    o.submitted += 1;
                    true
                }
                None => false,
            }
        } else {
            match st.borrowed.get_mut(&id) {
                Some(b) => {
                    b.0 += 1;
                    true
                }
                None => false,
            }
        }
    }

    /// Undoes `pin_locked`; `reason` is recorded if that frees the object.
    pub(crate) fn unpin_locked(&self, st: &mut State, id: Id, owner: Id, reason: &str) {
        if owner == self.me {
            if let Some(o) = st.owned.get_mut(&id) {
                o.submitted = o.submitted.saturating_sub(1);
                self.free_if_unreferenced(st, id, reason);
            }
        } else {
            self.release_borrowed_locked(st, id);
        }
    }

    /// A process that borrowed objects from us is gone (its connection to us closed):
    /// its borrows end, and objects nobody else holds are freed.
    pub(super) fn borrower_gone(&self, borrower: Id) {
        let mut st = self.state.lock();
        let held: Vec<Id> = st.owned.iter().filter(|(_, o)| o.more().is_some_and(|m| m.borrowers.contains(&borrower))).map(|(id, _)| id).collect();
        for id in held {
            let Some(o) = st.owned.get_mut(&id) else { continue };
            o.more_mut().borrowers.remove(&borrower);
            let created = o.created_event;
            self.record_borrow(EventKind::ObjectReleased, id, borrower, created, "the borrower's connection closed: it exited");
            self.free_if_unreferenced(&mut st, id, "its last borrower exited");
        }
    }

    /// Answers a reader's GetObject. A value in the store is answered with where it is,
    /// node included: a reader on another node has its agent pull it from there.
    pub(super) fn serve_get(self: &Arc<Self>, conn: &Arc<ServerConn>, req: u64, g: &rayr_proto::GetObject) {
        let Ok(id) = <Id>::try_from(g.object_id.as_slice()) else { return };
        if let Ok(node) = <Id>::try_from(g.lost_on_node.as_slice()) {
            self.object_lost_on(id, node, g.lost_cause.clone(), &g.lost_reason);
        }
        let mut st = self.state.lock();
        match st.owned.get_mut(&id) {
            Some(o) if matches!(o.slot, Slot::Pending) && !g.probe => {
                // Reply when the value arrives (see object_created).
                o.more_mut().remote_waiters.push((conn.clone(), req));
            }
            Some(o) => {
                let msg = value_message(req, id, &o.slot, self.node);
                drop(st);
                conn.send(&msg);
            }
            None => {
                drop(st);
                conn.send(&PeerMessage {
                    req_id: req,
                    body: Some(peer_message::Body::Value(rayr_proto::ObjectValue {
                        object_id: id.to_vec(),
                        value: Some(rayr_proto::object_value::Value::Error(format!(
                            "object {} is not held by its owner {} (freed, or never created there)",
                            hex(&id),
                            hex(&self.me)
                        ))),
                        inline_format: 0,
                    })),
                });
            }
        }
    }
}

/// An owned object's value as a reply to a remote reader; a value in the store is
/// answered with its location in the store of `node` (this process's node).
pub(super) fn value_message(req: u64, id: Id, slot: &Slot, node: Id) -> PeerMessage {
    use rayr_proto::object_value::Value;
    let mut inline_format = crate::codec::POSTCARD;
    let value = match slot {
        Slot::Inline(b, f) => {
            inline_format = *f;
            Value::InlineValue(b.to_vec())
        }
        Slot::Shm { offset, size, format } => {
            Value::Shm(ObjectLocation { object_id: id.to_vec(), offset: *offset, size: *size, format: *format, node: node.to_vec() })
        }
        Slot::OnNode { node, offset, size, format } => {
            Value::Shm(ObjectLocation { object_id: id.to_vec(), offset: *offset, size: *size, format: *format, node: node.to_vec() })
        }
        Slot::Failed(e) => Value::Failure(crate::codec::encode(e).unwrap_or_default()),
        Slot::Pending => Value::Pending(true),
    };
    PeerMessage {
        req_id: req,
        body: Some(peer_message::Body::Value(rayr_proto::ObjectValue { object_id: id.to_vec(), value: Some(value), inline_format })),
    }
}
