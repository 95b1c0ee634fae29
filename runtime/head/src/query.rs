//! `list`: rows of one view, filtered by `key=value` pairs, one page at a time.
//!
//! Filter values match as people expect them to:
//! - ids (`task_id`, `worker_id`, `owner`, …): a prefix or the `HEAD…TAIL` short form;
//! - `state`, `exit_type`, `error_type`, `location`: whole value, any case;
//! - `function`: the full path (`quickstart::square`) or its last segments (`square`);
//! - numbers (`pid`, `attempt`, …) and `is_driver`: equal.

use rayr_proto::{ActorRow, JobRow, ListReply, ListRequest, Message, NodeRow, ObjectRow, TaskRow, WorkerRow};
use redb::{ReadTransaction, ReadableTable, TableDefinition};

use crate::HeadError;
use crate::ids::IdPattern;
use crate::index::{ACTORS, JOBS, NODES, OBJECTS, TASKS, WORKERS};

/// Rows per page when a request says `limit: 0`.
pub const DEFAULT_PAGE: u32 = 1000;

/// The entities `list` knows, for error messages.
pub const ENTITIES: &[&str] = &["tasks", "objects", "workers", "nodes", "jobs", "actors"];

/// One field of a row, typed by how a filter value is compared with it.
enum Field<'a> {
    Id(&'a [u8]),
    /// Compared whole, ignoring case.
    Word(&'a str),
    Function(&'a str),
    Number(i128),
    Bool(bool),
}

/// A row type of a view: its table, its filterable fields, and where it goes in a reply.
trait Row: Message + Default + Sized {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]>;
    const KEYS: &'static [&'static str];
    /// The values `state` takes.
    const STATES: &'static [&'static str];
    fn field(&self, key: &str) -> Option<Field<'_>>;
    fn push(self, reply: &mut ListReply);
}

impl Row for TaskRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = TASKS;
    const KEYS: &'static [&'static str] =
        &["task_id", "function", "state", "attempt", "worker_id", "node_id", "job_id", "owner", "error_type", "pid"];
    const STATES: &'static [&'static str] = &["SUBMITTED", "SCHEDULED", "RUNNING", "FINISHED", "FAILED"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "task_id" => Field::Id(&self.task_id),
            "function" => Field::Function(&self.function),
            "state" => Field::Word(&self.state),
            "attempt" => Field::Number(self.attempt.into()),
            "worker_id" => Field::Id(&self.worker_id),
            "node_id" => Field::Id(&self.node_id),
            "job_id" => Field::Id(&self.job_id),
            "owner" => Field::Id(&self.owner),
            "error_type" => Field::Word(&self.error_type),
            "pid" => Field::Number(self.pid.into()),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.tasks.push(self);
    }
}

impl Row for ObjectRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = OBJECTS;
    const KEYS: &'static [&'static str] = &["object_id", "owner", "state", "location", "task_id", "size", "borrowers"];
    const STATES: &'static [&'static str] = &["ALIVE", "FREED", "LOST"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "object_id" => Field::Id(&self.object_id),
            "owner" => Field::Id(&self.owner),
            "state" => Field::Word(&self.state),
            "location" => Field::Word(&self.location),
            "task_id" => Field::Id(&self.task_id),
            "size" => Field::Number(self.size.into()),
            "borrowers" => Field::Number(self.borrowers.into()),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.objects.push(self);
    }
}

impl Row for WorkerRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = WORKERS;
    const KEYS: &'static [&'static str] =
        &["worker_id", "pid", "node_id", "job_id", "is_driver", "state", "exit_type", "exit_code", "signal"];
    const STATES: &'static [&'static str] = &["ALIVE", "DEAD"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "worker_id" => Field::Id(&self.worker_id),
            "pid" => Field::Number(self.pid.into()),
            "node_id" => Field::Id(&self.node_id),
            "job_id" => Field::Id(&self.job_id),
            "is_driver" => Field::Bool(self.is_driver),
            "state" => Field::Word(&self.state),
            "exit_type" => Field::Word(&self.exit_type),
            "exit_code" => Field::Number(self.exit_code.into()),
            "signal" => Field::Number(self.signal.into()),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.workers.push(self);
    }
}

impl Row for NodeRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = NODES;
    const KEYS: &'static [&'static str] = &["node_id", "state", "address"];
    const STATES: &'static [&'static str] = &["ALIVE", "DEAD"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "node_id" => Field::Id(&self.node_id),
            "state" => Field::Word(&self.state),
            "address" => Field::Word(&self.address),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.nodes.push(self);
    }
}

impl Row for JobRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = JOBS;
    const KEYS: &'static [&'static str] = &["job_id", "state", "pid"];
    const STATES: &'static [&'static str] = &["RUNNING", "SUCCEEDED", "FAILED"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "job_id" => Field::Id(&self.job_id),
            "state" => Field::Word(&self.state),
            "pid" => Field::Number(self.pid.into()),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.jobs.push(self);
    }
}

impl Row for ActorRow {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = ACTORS;
    const KEYS: &'static [&'static str] = &["actor_id", "name", "class", "state", "lifetime", "worker_id", "pid", "node_id", "job_id", "death_cause"];
    const STATES: &'static [&'static str] = &["ALIVE", "RESTARTING", "DEAD"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        Some(match key {
            "actor_id" => Field::Id(&self.actor_id),
            "class" => Field::Function(&self.class),
            "name" => Field::Word(&self.name),
            "state" => Field::Word(&self.state),
            "lifetime" => Field::Word(&self.lifetime),
            "worker_id" => Field::Id(&self.worker_id),
            "pid" => Field::Number(self.pid.into()),
            "node_id" => Field::Id(&self.node_id),
            "job_id" => Field::Id(&self.job_id),
            "death_cause" => Field::Word(&self.death_cause),
            _ => return None,
        })
    }
    fn push(self, reply: &mut ListReply) {
        reply.actors.push(self);
    }
}

/// A filter ready to test rows: the key, and the value parsed for that key's type.
struct Test {
    key: String,
    value: String,
    id: Option<IdPattern>,
}

impl Test {
    fn matches(&self, field: Field<'_>) -> bool {
        let v = self.value.trim();
        match field {
            Field::Id(id) => self.id.as_ref().is_some_and(|p| p.matches(id)),
            Field::Word(w) => w.eq_ignore_ascii_case(v),
            Field::Function(f) => f == v || f.ends_with(&format!("::{v}")),
            Field::Number(n) => v.parse::<i128>().is_ok_and(|x| x == n),
            Field::Bool(b) => v.parse::<bool>().is_ok_and(|x| x == b),
        }
    }
}

pub(crate) fn list(txn: &ReadTransaction, req: &ListRequest) -> Result<ListReply, HeadError> {
    match req.entity.trim().to_ascii_lowercase().as_str() {
        "tasks" | "task" => list_rows::<TaskRow>(txn, req, "tasks"),
        "objects" | "object" => list_rows::<ObjectRow>(txn, req, "objects"),
        "workers" | "worker" => list_rows::<WorkerRow>(txn, req, "workers"),
        "nodes" | "node" => list_rows::<NodeRow>(txn, req, "nodes"),
        "jobs" | "job" => list_rows::<JobRow>(txn, req, "jobs"),
        "actors" | "actor" => list_rows::<ActorRow>(txn, req, "actors"),
        other => Err(HeadError::BadRequest(format!("cannot list `{other}`: the head keeps {}", ENTITIES.join(", ")))),
    }
}

fn list_rows<R: Row>(txn: &ReadTransaction, req: &ListRequest, entity: &str) -> Result<ListReply, HeadError> {
    let tests = req
        .filters
        .iter()
        .map(|f| {
            let key = f.key.trim().to_ascii_lowercase();
            let probe = R::default();
            match probe.field(&key) {
                None => Err(HeadError::BadRequest(format!(
                    "unknown filter key `{}` for {entity}; valid keys: {}",
                    f.key,
                    R::KEYS.join(", ")
                ))),
                Some(Field::Id(_)) => {
                    let pat =
                        IdPattern::parse(&f.value).map_err(|e| HeadError::BadRequest(format!("filter {key}: {e}")))?;
                    Ok(Test { key, value: f.value.clone(), id: Some(pat) })
                }
                Some(Field::Number(_)) if f.value.trim().parse::<i128>().is_err() => {
                    Err(HeadError::BadRequest(format!("filter {key}={}: expected a whole number", f.value)))
                }
                Some(Field::Bool(_)) if f.value.trim().parse::<bool>().is_err() => {
                    Err(HeadError::BadRequest(format!("filter {key}={}: expected true or false", f.value)))
                }
                Some(_) if key == "state" && !R::STATES.iter().any(|s| s.eq_ignore_ascii_case(f.value.trim())) => {
                    Err(HeadError::BadRequest(format!("filter state={}: {entity} are {}", f.value, R::STATES.join(", "))))
                }
                Some(_) => Ok(Test { key, value: f.value.clone(), id: None }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let limit = if req.limit == 0 { DEFAULT_PAGE } else { req.limit } as u64;
    let mut reply = ListReply::default();
    let table = txn.open_table(R::TABLE)?;
    let mut matched = 0u64;
    for entry in table.iter()? {
        let (_, v) = entry?;
        let row = R::decode(v.value())?;
        if !tests.iter().all(|t| row.field(&t.key).is_some_and(|f| t.matches(f))) {
            continue;
        }
        if matched >= req.offset && matched < req.offset.saturating_add(limit) {
            row.push(&mut reply);
        }
        matched += 1;
    }
    reply.total = matched;
    Ok(reply)
}
