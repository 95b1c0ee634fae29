//! The actor names service: the named actors of this node, (namespace, name) → who holds
//! the name, freed when the actor ends or its owner goes. Names are the cluster's: on a
//! node with a head, a claim, a lookup that misses here and a release go to the head too
//! (`placement::head_names`), which has the last word. The table has its own lock, taken
//! under the state lock when a detached actor ends, never the other way round (see the
//! lock order in `agent.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rayr_logs::{Id, hex};
use rayr_proto::{ActorName, ActorNameReply};

use super::Agent;

/// The names held on this node.
#[derive(Default)]
pub(super) struct ActorNames(Mutex<HashMap<(String, String), ActorName>>, Releasing);

/// Names freed here whose release the head has not confirmed yet: (namespace, name,
/// actor). A lookup the head answers with one of them meanwhile is answered "not found":
/// the actor has ended (the head's copy trails by one round trip).
#[derive(Default)]
struct Releasing(Mutex<HashMap<NameOf, usize>>);

/// (namespace, name, actor id).
type NameOf = (String, String, Vec<u8>);

impl Releasing {
    fn add(&self, n: &ActorName) {
        *self.0.lock().entry((n.namespace.clone(), n.name.clone(), n.actor_id.clone())).or_insert(0) += 1;
    }
    fn done(&self, n: &ActorName) {
        let mut r = self.0.lock();
        let key = (n.namespace.clone(), n.name.clone(), n.actor_id.clone());
        if let Some(count) = r.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                r.remove(&key);
            }
        }
    }
    fn contains(&self, n: &ActorName) -> bool {
        self.0.lock().contains_key(&(n.namespace.clone(), n.name.clone(), n.actor_id.clone()))
    }
}

impl ActorNames {
    /// Claims a name for an actor: refused while another live actor holds it.
    fn claim(&self, a: ActorName) -> ActorNameReply {
        if a.name.is_empty() {
            return ActorNameReply { actor: None, error: "an actor's name must not be empty".into() };
        }
        let mut names = self.0.lock();
        let key = (a.namespace.clone(), a.name.clone());
        if let Some(held) = names.get(&key) {
            return ActorNameReply {
                actor: Some(held.clone()),
                error: format!(
                    "the name {}/{} is taken by actor {} (names are unique in their namespace while the actor lives)",
                    a.namespace,
                    a.name,
                    hex(&held.actor_id)
                ),
            };
        }
        names.insert(key, a.clone());
        ActorNameReply { actor: Some(a), error: String::new() }
    }

    /// Frees the names that `drop` picks; returns them (to release at the head too).
    fn release_where(&self, mut drop: impl FnMut(&ActorName) -> bool) -> Vec<ActorName> {
        let mut freed = Vec::new();
        self.0.lock().retain(|_, a| {
            let keep = !drop(a);
            if !keep {
                freed.push(a.clone());
            }
            keep
        });
        freed
    }
}

impl Agent {
    /// `NameActor`: claims the name here, then at the head (unique across the cluster).
    pub(super) fn name_actor(&self, a: ActorName) -> ActorNameReply {
        let mut reply = self.actor_names.claim(a.clone());
        if reply.error.is_empty() {
            match self.head_names("claim", &a) {
                Some(Ok(h)) if !h.error.is_empty() => {
                    self.actor_names.0.lock().remove(&(a.namespace.clone(), a.name.clone()));
                    reply = h;
                }
                Some(Err(e)) => tracing::warn!("the name {}/{} is claimed on this node only: {e}", a.namespace, a.name),
                _ => {}
            }
        }
        reply
    }

    /// `LookupActor`: named here, or (named on another node) at the head.
    pub(super) fn lookup_actor(&self, a: &ActorName) -> ActorNameReply {
        let found = self.actor_names.0.lock().get(&(a.namespace.clone(), a.name.clone())).cloned();
        match found {
            Some(actor) => ActorNameReply { actor: Some(actor), error: String::new() },
            None => match self.head_names("lookup", a) {
                Some(Ok(h)) if h.actor.as_ref().is_some_and(|held| self.actor_names.1.contains(held)) => {
                    ActorNameReply { actor: None, error: format!("no actor named {}/{} is alive", a.namespace, a.name) }
                }
                Some(Ok(h)) => h,
                Some(Err(e)) => ActorNameReply {
                    actor: None,
                    error: format!("no actor named {}/{} is alive on this node, and the head could not be asked: {e}", a.namespace, a.name),
                },
                None => ActorNameReply { actor: None, error: format!("no actor named {}/{} is alive", a.namespace, a.name) },
            },
        }
    }

    /// `UnnameActor`: the name is free again, if that actor still holds it.
    pub(super) fn unname_actor(self: &Arc<Self>, a: ActorName) {
        {
            let mut names = self.actor_names.0.lock();
            let key = (a.namespace.clone(), a.name.clone());
            if names.get(&key).is_some_and(|n| n.actor_id == a.actor_id) {
                names.remove(&key);
            }
        }
        self.release_names_later(vec![a]);
    }

    /// Releases names at the head off the caller's thread (it may hold the state lock).
    /// Until the head has them, a lookup here does not take its word for them.
    pub(super) fn release_names_later(self: &Arc<Self>, names: Vec<ActorName>) {
        // (Only a networked node asks the head: see `head_names`.)
        if names.is_empty() || self.head_address.lock().is_none() || self.transfer.get().is_none() {
            return;
        }
        for n in &names {
            self.actor_names.1.add(n);
        }
        let agent = self.clone();
        let spawned = std::thread::Builder::new().name("rayr-unname".into()).spawn({
            let names = names.clone();
            move || {
                for n in &names {
                    let _ = agent.head_names("release", n);
                    agent.actor_names.1.done(n);
                }
            }
        });
        if spawned.is_err() {
            for n in &names {
                self.actor_names.1.done(n);
            }
        }
    }

    /// The named actors owned by `owner` end with it: their names are free again.
    pub(super) fn release_names_of_owner(self: &Arc<Self>, owner: Id) {
        let freed = self.actor_names.release_where(|a| a.owner == owner);
        self.release_names_later(freed);
    }

    /// Actor `actor` ended: its name is free again.
    pub(super) fn release_name_of_actor(self: &Arc<Self>, actor: Id) {
        let freed = self.actor_names.release_where(|a| a.actor_id == actor);
        self.release_names_later(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(ns: &str, n: &str, actor: u8, owner: u8) -> ActorName {
        ActorName { namespace: ns.into(), name: n.into(), actor_id: vec![actor; 16], owner: vec![owner; 16], ..Default::default() }
    }

    #[test]
    fn a_name_is_held_by_one_live_actor_per_namespace() {
        let names = ActorNames::default();
        assert!(names.claim(name("ns", "a", 1, 9)).error.is_empty());
        let taken = names.claim(name("ns", "a", 2, 9));
        assert!(taken.error.contains("is taken by actor 0101"), "{}", taken.error);
        assert_eq!(taken.actor.unwrap().actor_id, vec![1; 16]);
        assert!(names.claim(name("other", "a", 2, 9)).error.is_empty());
        assert!(!names.claim(name("ns", "", 3, 9)).error.is_empty());
        // Its owner goes: both its names are free again; another owner's stays.
        assert!(names.claim(name("ns", "b", 4, 8)).error.is_empty());
        let freed = names.release_where(|a| a.owner == [9u8; 16]);
        assert_eq!(freed.len(), 2);
        assert!(names.claim(name("ns", "a", 5, 8)).error.is_empty());
        assert!(!names.claim(name("ns", "b", 6, 8)).error.is_empty());
    }

    #[test]
    fn a_release_in_flight_masks_that_actor_only_until_the_head_has_it() {
        let r = Releasing::default();
        let (old, new) = (name("ns", "a", 1, 9), name("ns", "a", 2, 9));
        r.add(&old);
        r.add(&old);
        assert!(r.contains(&old) && !r.contains(&new), "a new holder of the name is not masked");
        r.done(&old);
        assert!(r.contains(&old), "one release is still in flight");
        r.done(&old);
        assert!(!r.contains(&old));
        r.done(&old);
        assert!(r.0.lock().is_empty());
    }
}
