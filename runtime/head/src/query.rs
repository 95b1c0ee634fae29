//! `list`: rows of one view, filtered by `key=value` pairs, one page at a time.
//!
//! Filter values match as people expect them to:
//! - ids (`task_id`, `worker_id`, `owner`, …): a prefix or the `HEAD…TAIL` short form;
//! - `state`, `exit_type`, `error_type`, `location`: whole value, any case;
//! - `function`: the full path (`quickstart::square`) or its last segments (`square`);
//! - numbers (`pid`, `attempt`, …) and `is_driver`: equal.

use rayr_proto::{ActorRow, JobRow, NodeRow, WorkerRow};

use crate::HeadError;
use crate::ids::IdPattern;
use crate::index::rows::{Ids, Names, ObjectRec, TaskRec};

/// Rows per page when a request says `limit: 0`.
pub const DEFAULT_PAGE: u32 = 1000;

/// The entities `list` knows, for error messages.
pub const ENTITIES: &[&str] = &["tasks", "objects", "workers", "nodes", "jobs", "actors"];

/// One field of a row, typed by how a filter value is compared with it.
pub(crate) enum Field<'a> {
    Id(&'a [u8]),
    /// Compared whole, ignoring case.
    Word(&'a str),
    Function(&'a str),
    Number(i128),
    Bool(bool),
}

/// A row of a view as filters see it: its filterable fields.
pub(crate) trait Row {
    const KEYS: &'static [&'static str];
    /// The values `state` takes.
    const STATES: &'static [&'static str];
    fn field(&self, key: &str) -> Option<Field<'_>>;
    /// A row with every field empty, to learn a key's type from.
    fn probe(key: &str) -> Option<Field<'static>>;
}

/// A task row read from the index, with the dictionaries its numbers are in.
pub(crate) struct TaskView<'a> {
    pub id: rayr_logs::Id,
    pub rec: TaskRec,
    pub names: &'a Names,
    pub ids: &'a Ids,
}

/// An object row read from the index, with the dictionaries its numbers are in.
pub(crate) struct ObjectView<'a> {
    pub id: rayr_logs::Id,
    pub rec: ObjectRec,
    pub names: &'a Names,
    pub ids: &'a Ids,
}

impl Row for TaskView<'_> {
    const KEYS: &'static [&'static str] =
        &["task_id", "function", "state", "attempt", "worker_id", "node_id", "job_id", "owner", "error_type", "pid"];
    const STATES: &'static [&'static str] = &["SUBMITTED", "SCHEDULED", "RUNNING", "FINISHED", "FAILED"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        let r = &self.rec;
        Some(match key {
            "task_id" => Field::Id(&self.id),
            "function" => Field::Function(self.names.get(r.function)),
            "state" => Field::Word(r.state.name()),
            "attempt" => Field::Number(r.attempt.into()),
            "worker_id" => Field::Id(self.ids.get(r.worker)),
            "node_id" => Field::Id(self.ids.get(r.node)),
            "job_id" => Field::Id(self.ids.get(r.job)),
            "owner" => Field::Id(self.ids.get(r.owner)),
            "error_type" => Field::Word(self.names.get(r.error_type)),
            "pid" => Field::Number(r.pid.into()),
            _ => return None,
        })
    }
    fn probe(key: &str) -> Option<Field<'static>> {
        static NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::default);
        static IDS: std::sync::LazyLock<Ids> = std::sync::LazyLock::new(Ids::default);
        let v = TaskView { id: [0; 16], rec: TaskRec::default(), names: &NAMES, ids: &IDS };
        v.field(key).map(Field::kind)
    }
}

impl Row for ObjectView<'_> {
    const KEYS: &'static [&'static str] = &["object_id", "owner", "state", "location", "task_id", "size", "borrowers"];
    const STATES: &'static [&'static str] = &["ALIVE", "FREED", "LOST"];
    fn field(&self, key: &str) -> Option<Field<'_>> {
        let r = &self.rec;
        Some(match key {
            "object_id" => Field::Id(&self.id),
            "owner" => Field::Id(self.ids.get(r.owner)),
            "state" => Field::Word(r.state.name()),
            "location" => Field::Word(self.names.get(r.location)),
            "task_id" => Field::Id(r.task.as_ref().map_or(&[][..], |t| &t[..])),
            "size" => Field::Number(r.size.into()),
            "borrowers" => Field::Number(r.borrowers().into()),
            _ => return None,
        })
    }
    fn probe(key: &str) -> Option<Field<'static>> {
        static NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::default);
        static IDS: std::sync::LazyLock<Ids> = std::sync::LazyLock::new(Ids::default);
        let v = ObjectView { id: [0; 16], rec: ObjectRec::default(), names: &NAMES, ids: &IDS };
        v.field(key).map(Field::kind)
    }
}

impl Row for WorkerRow {
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
    fn probe(key: &str) -> Option<Field<'static>> {
        Self::default().field(key).map(Field::kind)
    }
}

impl Row for NodeRow {
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
    fn probe(key: &str) -> Option<Field<'static>> {
        Self::default().field(key).map(Field::kind)
    }
}

impl Row for JobRow {
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
    fn probe(key: &str) -> Option<Field<'static>> {
        Self::default().field(key).map(Field::kind)
    }
}

impl Row for ActorRow {
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
    fn probe(key: &str) -> Option<Field<'static>> {
        Self::default().field(key).map(Field::kind)
    }
}

impl Field<'_> {
    /// The same kind of field, empty: what a filter key's type is.
    fn kind(self) -> Field<'static> {
        match self {
            Field::Id(_) => Field::Id(&[]),
            Field::Word(_) => Field::Word(""),
            Field::Function(_) => Field::Function(""),
            Field::Number(_) => Field::Number(0),
            Field::Bool(_) => Field::Bool(false),
        }
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

/// The rows of `rows` that match the request's filters: each of the requested page is
/// handed to `page`; returns how many match in all.
pub(crate) fn select<R: Row>(
    rows: impl Iterator<Item = Result<R, HeadError>>,
    req: &rayr_proto::ListRequest,
    entity: &str,
    mut page: impl FnMut(R),
) -> Result<u64, HeadError> {
    let tests = req
        .filters
        .iter()
        .map(|f| {
            let key = f.key.trim().to_ascii_lowercase();
            match R::probe(&key) {
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
    let mut matched = 0u64;
    for row in rows {
        let row = row?;
        if !tests.iter().all(|t| row.field(&t.key).is_some_and(|f| t.matches(f))) {
            continue;
        }
        if matched >= req.offset && matched < req.offset.saturating_add(limit) {
            page(row);
        }
        matched += 1;
    }
    Ok(matched)
}
