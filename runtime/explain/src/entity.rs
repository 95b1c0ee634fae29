//! The things a cluster keeps state about, and what an id can name.
//!
//! [`Entity`] is the one list of them: the views `rayr list` shows, the ids a query
//! filters by, the nouns reports use. [`Role`] adds the one more thing an id can be: a
//! single event.

use rayr_proto::Event;

/// Something the cluster keeps a view of, with an id of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    Task,
    Object,
    Actor,
    Worker,
    Job,
    Node,
}

impl Entity {
    /// Every entity, the most specific first (where one id plays several roles in an
    /// event, the earlier one is what it names).
    pub const ALL: [Entity; 6] =
        [Entity::Task, Entity::Object, Entity::Actor, Entity::Worker, Entity::Job, Entity::Node];

    /// `task`
    pub fn noun(self) -> &'static str {
        match self {
            Entity::Task => "task",
            Entity::Object => "object",
            Entity::Actor => "actor",
            Entity::Worker => "worker",
            Entity::Job => "job",
            Entity::Node => "node",
        }
    }

    /// The view that lists them: `tasks` (as `rayr list tasks` and the head's `List` call name it).
    pub fn view(self) -> &'static str {
        match self {
            Entity::Task => "tasks",
            Entity::Object => "objects",
            Entity::Actor => "actors",
            Entity::Worker => "workers",
            Entity::Job => "jobs",
            Entity::Node => "nodes",
        }
    }

    /// The row field (and filter key) holding its id: `task_id`.
    pub fn id_key(self) -> &'static str {
        match self {
            Entity::Task => "task_id",
            Entity::Object => "object_id",
            Entity::Actor => "actor_id",
            Entity::Worker => "worker_id",
            Entity::Job => "job_id",
            Entity::Node => "node_id",
        }
    }

    /// The entity whose view is called `view` (`tasks`), if any.
    pub fn of_view(view: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.view() == view)
    }
}

/// What an id names: one event, or an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// One event, by its own id (or as some event's cause).
    Event,
    Entity(Entity),
}

impl Role {
    /// `event`, `task`, …: the `kind` of a report.
    pub fn noun(self) -> &'static str {
        match self {
            Role::Event => "event",
            Role::Entity(e) => e.noun(),
        }
    }

    /// What `id` is, from the roles it plays in `events`. Ids are unique across roles, but a
    /// node id is also every agent event's source and a worker id an object's peer, so the
    /// most specific role wins; an id no event names a field of is taken for an event's.
    pub fn of(id: &[u8], events: &[Event]) -> Role {
        let role = |e: &Event| {
            let peer = crate::event::object(e).map(|o| o.peer.as_slice()).unwrap_or_default();
            [
                (e.id.as_slice(), Role::Event),
                (e.task_id.as_slice(), Role::Entity(Entity::Task)),
                (e.object_id.as_slice(), Role::Entity(Entity::Object)),
                (e.actor_id.as_slice(), Role::Entity(Entity::Actor)),
                (e.worker_id.as_slice(), Role::Entity(Entity::Worker)),
                (e.job_id.as_slice(), Role::Entity(Entity::Job)),
                (e.node_id.as_slice(), Role::Entity(Entity::Node)),
                (e.source_worker.as_slice(), Role::Entity(Entity::Worker)),
                (peer, Role::Entity(Entity::Worker)),
                (e.cause.as_slice(), Role::Event),
            ]
            .into_iter()
            .find(|(field, _)| *field == id)
            .map(|(_, r)| r)
        };
        events.iter().filter_map(role).min().unwrap_or(Role::Event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_has_one_view_and_one_id_key() {
        for e in Entity::ALL {
            assert_eq!(Entity::of_view(e.view()), Some(e));
            assert_eq!(e.id_key(), format!("{}_id", e.noun()));
            assert_eq!(e.view(), format!("{}s", e.noun()));
        }
        assert_eq!(Entity::of_view("events"), None);
    }

    #[test]
    fn the_most_specific_role_wins() {
        let id = vec![7u8; 16];
        let agent_event = Event { node_id: id.clone(), source_worker: id.clone(), ..Default::default() };
        assert_eq!(Role::of(&id, std::slice::from_ref(&agent_event)), Role::Entity(Entity::Node));
        let named = Event { worker_id: id.clone(), ..Default::default() };
        assert_eq!(Role::of(&id, &[agent_event, named]), Role::Entity(Entity::Worker));
        assert_eq!(Role::of(&id, &[]), Role::Event);
        assert!(Role::Event < Role::Entity(Entity::Task));
    }
}
