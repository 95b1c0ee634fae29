//! `ObjectRef<T>`: a reference to a value that is, or will be, somewhere in the cluster.
//!
//! Each handle counts once in its owner's books: the owner's local count when the handle
//! lives in the owner's process, a borrow otherwise. Serializing a ref (inside another
//! object or a task argument) leaves a token with the owner so the value cannot be freed
//! while the ref is in flight; deserializing it consumes the token and registers the new
//! holder as a borrower.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rayr_logs::Id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::{self, Slot};
use crate::ids::ObjectId;

#[doc(hidden)]
pub struct RefHandle {
    pub(crate) id: Id,
    pub(crate) owner: Id,
    /// Shared: every handle to an object of one owner points at one copy.
    pub(crate) owner_address: Arc<str>,
}

impl Drop for RefHandle {
    fn drop(&mut self) {
        if let Some(core) = core::current() {
            core.release_local(self.id, self.owner);
        }
    }
}

/// A reference to a task's result or a `put` value. Cheap to clone; `rayr::get` reads it.
pub struct ObjectRef<T> {
    pub(crate) handle: Arc<RefHandle>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_handle(handle: Arc<RefHandle>) -> Self {
        ObjectRef { handle, _t: PhantomData }
    }
    /// The object's id (give it to `rayr why-died` or `rayr events --id`).
    pub fn id(&self) -> ObjectId {
        ObjectId(self.handle.id)
    }
    /// The worker (or driver) that owns the object.
    pub fn owner(&self) -> crate::WorkerId {
        crate::WorkerId(self.handle.owner)
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { handle: self.handle.clone(), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", rayr_logs::hex(&self.handle.id))
    }
}

#[derive(Serialize, Deserialize)]
struct WireRef {
    id: [u8; 16],
    owner: [u8; 16],
    owner_address: String,
    /// Where the value sits in the node's shm store, when the owner serialized a sealed
    /// shm object: the receiver can then read it without asking the owner first.
    location: Option<(u64, u64, u32)>,
    /// The node whose store `location` is in: a receiver on another node ignores it.
    node: [u8; 16],
    /// Whether this copy left a token with the owner (the receiver gives it back). Copies
    /// inside task arguments carry none: the pending task keeps the object.
    token: bool,
}

thread_local! {
    /// While a task argument or a `put` value is serialized, the refs inside it are
    /// collected here: the pending task or the container keeps them alive (see
    /// `capture_nested`), so no token is needed. They are kept as handles: the value may
    /// be dropped right after it is serialized (an argument given by value), and the
    /// objects must live until the task or container has pinned them.
    static CAPTURE: std::cell::RefCell<Option<Vec<Arc<RefHandle>>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (serializing a task argument) and returns the refs serialized inside it.
pub(crate) fn capture_nested<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<RefHandle>>) {
    let outer = CAPTURE.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let nested = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)).unwrap_or_default();
    (r, nested)
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let captured = CAPTURE.with(|c| match &mut *c.borrow_mut() {
            Some(list) => {
                list.push(self.handle.clone());
                true
            }
            None => false,
        });
        let location = core::current().and_then(|core| {
            if captured { core.shm_location(&self.handle) } else { core.add_token(&self.handle) }
        });
        WireRef {
            id: self.handle.id,
            owner: self.handle.owner,
            owner_address: self.handle.owner_address.to_string(),
            location,
            node: core::current().map_or([0; 16], |c| c.node),
            token: !captured,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireRef::deserialize(d)?;
        let handle = match core::current() {
            Some(core) => {
                let location = w.location.filter(|_| w.node == core.node);
                core.adopt(w.id, w.owner, w.owner_address, location, w.token)
            }
            None => Arc::new(RefHandle { id: w.id, owner: w.owner, owner_address: w.owner_address.into() }),
        };
        Ok(ObjectRef::from_handle(handle))
    }
}

impl core::Core {
    /// Where an object this process owns sits in the shm store, if it does.
    pub(crate) fn shm_location(&self, h: &RefHandle) -> Option<(u64, u64, u32)> {
        if h.owner != self.me {
            return None;
        }
        match self.state.lock().owned.get(&h.id)?.slot {
            Slot::Shm { offset, size, format } => Some((offset, size, format)),
            _ => None,
        }
    }

    /// A serialized copy of `h` is about to travel: make sure its owner keeps the value.
    /// Returns the object's shm location when this process owns it and it is sealed there.
    pub(crate) fn add_token(self: &Arc<Self>, h: &RefHandle) -> Option<(u64, u64, u32)> {
        if h.owner == self.me {
            let mut st = self.state.lock();
            let o = st.owned.get_mut(&h.id)?;
            o.tokens += 1;
            return match o.slot {
                Slot::Shm { offset, size, format } => Some((offset, size, format)),
                _ => None,
            };
        }
        if let Ok(peer) = self.peer(&h.owner_address) {
            let msg = borrow_msg(h.id, None, true, false);
            let _ = peer.call(msg, Some(Duration::from_secs(5)));
        }
        None
    }

    /// A ref arrived in this process (deserialized): count it here and with its owner.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        id: Id,
        owner: Id,
        owner_address: String,
        location: Option<(u64, u64, u32)>,
        token: bool,
    ) -> Arc<RefHandle> {
        if owner == self.me {
            let mut st = self.state.lock();
            if let Some(o) = st.owned.get_mut(&id) {
                if token {
                    o.tokens = o.tokens.saturating_sub(1);
                }
                o.local_refs += 1;
            }
        } else {
            let first = {
                let mut st = self.state.lock();
                let e = st.borrowed.entry(id).or_insert((0, owner, owner_address.clone()));
                e.0 += 1;
                e.0 == 1
            };
            // Always consume the token; register as borrower (idempotent on the owner).
            let _ = first;
            if let Ok(peer) = self.peer(&owner_address) {
                let msg = borrow_msg(id, Some(self.me), true, token);
                // Once the owner has counted this borrow, the location stays valid while
                // the borrow lasts (see core::fetch for how owner death is noticed).
                if peer.call(msg, Some(Duration::from_secs(5))).is_ok()
                    && let Some(loc) = location
                {
                    let mut st = self.state.lock();
                    if st.borrowed.get(&id).is_some_and(|b| b.0 > 0) {
                        st.borrowed_locations.insert(id, loc);
                    }
                }
            }
        }
        let owner_address = if owner == self.me { self.handle_address.clone() } else { owner_address.into() };
        Arc::new(RefHandle { id, owner, owner_address })
    }

    /// A new handle for an object this process owns (already counted in `local_refs`).
    pub(crate) fn owned_handle(&self, id: Id) -> Arc<RefHandle> {
        Arc::new(RefHandle { id, owner: self.me, owner_address: self.handle_address.clone() })
    }

    /// Whether the value of an owned object is available (or failed) without waiting.
    pub(crate) fn is_ready_locked(st: &core::State, id: &Id) -> bool {
        st.owned.get(id).is_none_or(|o| !matches!(o.slot, Slot::Pending))
    }
}

fn borrow_msg(id: Id, borrower: Option<Id>, add: bool, consumes_token: bool) -> rayr_proto::PeerMessage {
    rayr_proto::PeerMessage {
        req_id: 0,
        body: Some(rayr_proto::peer_message::Body::Borrow(rayr_proto::BorrowerUpdate {
            object_id: id.to_vec(),
            borrower: borrower.map(|b| b.to_vec()).unwrap_or_default(),
            add,
            consumes_token,
        })),
    }
}
