//! Events as data for renderers: the name of each kind, the ids an event names, and the
//! fields of its detail as typed [`Value`]s.
//!
//! This is the one description of an event that `rayr events` (a line, or JSON), the
//! steps of a why-died chain, and later the dashboard all read: a field added to a detail
//! here shows up in each of them. [`EventJson`] is the JSON form (`rayr events --json`,
//! and every event inside a why-died report): every field, ids in full hex, the detail
//! under `detail` with its `type`.

use std::collections::BTreeMap;

use rayr_logs::hex;
use rayr_proto::event::Detail;
use rayr_proto::{
    ActorDetail, Event, EventKind, JobDetail, NodeDetail, ObjectDetail, TaskDetail, WorkerExit, WorkerExitType,
    WorkerStart,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// `TASK_FAILED` → `task_failed`; a kind this build does not know → `kind_<n>`.
pub fn kind_name(kind: i32) -> String {
    EventKind::try_from(kind).map(|k| k.cli_name()).unwrap_or_else(|_| format!("kind_{kind}"))
}

/// The ids an event names, in the order a reader looks for them; `source` is the process
/// that recorded it.
pub fn ids(ev: &Event) -> [(&'static str, &[u8]); 7] {
    [
        ("task", &ev.task_id),
        ("object", &ev.object_id),
        ("actor", &ev.actor_id),
        ("worker", &ev.worker_id),
        ("job", &ev.job_id),
        ("node", &ev.node_id),
        ("source", &ev.source_worker),
    ]
}

/// One field of an event's detail (or of a view's row), typed by how it is shown.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An id: full hex in JSON (`null` when empty), short in tables.
    Id(Vec<u8>),
    Text(String),
    Num(i64),
    /// A process id; 0 means not known (yet).
    Pid(u32),
    Flag(bool),
    /// A byte count: a number in JSON, `1.5 MiB` for people.
    Bytes(u64),
    /// Unix microseconds: a number in JSON, local time for people; 0 means unset.
    Time(i64),
    /// A signal number: a number in JSON, `9 (SIGKILL)` for people; 0 means none.
    Signal(i32),
    Lines(Vec<String>),
    Map(BTreeMap<String, f64>),
    Labels(BTreeMap<String, String>),
}

impl Value {
    /// Whether there is nothing worth showing in a compact line.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Id(id) => id.is_empty(),
            Value::Text(s) => s.is_empty(),
            Value::Num(n) => *n == 0,
            Value::Pid(p) => *p == 0,
            Value::Flag(b) => !b,
            Value::Bytes(n) => *n == 0,
            Value::Time(t) => *t == 0,
            Value::Signal(s) => *s == 0,
            Value::Lines(l) => l.is_empty(),
            Value::Map(m) => m.is_empty(),
            Value::Labels(m) => m.is_empty(),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Id(id) => IdJson(id).serialize(s),
            Value::Text(t) => s.serialize_str(t),
            Value::Num(n) | Value::Time(n) => s.serialize_i64(*n),
            Value::Pid(p) => s.serialize_u32(*p),
            Value::Flag(b) => s.serialize_bool(*b),
            Value::Bytes(n) => s.serialize_u64(*n),
            Value::Signal(n) => s.serialize_i32(*n),
            Value::Lines(l) => l.serialize(s),
            Value::Map(m) => m.serialize(s),
            Value::Labels(m) => m.serialize(s),
        }
    }
}

/// Fields too long for one line: `--json`, `--detail` and why-died show them.
pub const LONG_FIELDS: [&str; 4] = ["backtrace", "stderr_tail", "stdout_path", "stderr_path"];

/// The detail's type name and every one of its fields.
pub fn detail_fields(d: &Detail) -> (&'static str, Vec<(&'static str, Value)>) {
    match d {
        Detail::Task(t) => {
            let mut fields = vec![
                ("function", Value::Text(t.function.clone())),
                ("attempt", Value::Num(t.attempt.into())),
                ("max_retries", Value::Num(t.max_retries.into())),
                ("final", Value::Flag(t.r#final)),
                ("error_type", Value::Text(t.error_type().word().into())),
                ("error", Value::Text(t.error.clone())),
                ("failed_argument", Value::Id(t.failed_argument.clone())),
                ("reason", Value::Text(t.reason.clone())),
                ("spilled_to", Value::Text(t.spilled_to.clone())),
                ("pid", Value::Pid(t.pid)),
                ("backtrace", Value::Text(t.backtrace.clone())),
            ];
            if t.output_measured {
                // Where its output is in the worker's logs (`rayr logs search --task`).
                fields.extend([
                    ("out_start", Value::Num(t.out_start as i64)),
                    ("out_end", Value::Num(t.out_end as i64)),
                    ("err_start", Value::Num(t.err_start as i64)),
                    ("err_end", Value::Num(t.err_end as i64)),
                ]);
            }
            ("task", fields)
        }
        Detail::Object(o) => (
            "object",
            vec![
                ("size", Value::Bytes(o.size)),
                ("location", Value::Text(o.location.clone())),
                ("peer", Value::Id(o.peer.clone())),
                ("peer_kind", Value::Text(o.peer_kind().word().into())),
                ("end", Value::Text(o.end().word().into())),
                ("reason", Value::Text(o.reason.clone())),
                ("copy_node", Value::Id(o.copy_node.clone())),
            ],
        ),
        Detail::WorkerExit(x) => (
            "worker_exit",
            vec![
                (
                    "exit_type",
                    Value::Text(
                        WorkerExitType::try_from(x.exit_type)
                            .map(|t| t.as_str_name().to_string())
                            .unwrap_or_else(|_| x.exit_type.to_string()),
                    ),
                ),
                ("reason", Value::Text(x.reason().word().into())),
                ("exit_code", Value::Num(x.exit_code.into())),
                ("signal", Value::Signal(x.signal)),
                ("detail", Value::Text(x.detail.clone())),
                ("peak_rss_bytes", Value::Bytes(x.peak_rss_bytes)),
                ("pid", Value::Pid(x.pid)),
                ("stderr_path", Value::Text(x.stderr_path.clone())),
                ("stderr_tail", Value::Lines(x.stderr_tail.clone())),
            ],
        ),
        Detail::WorkerStart(s) => (
            "worker_start",
            vec![
                ("pid", Value::Pid(s.pid)),
                ("is_driver", Value::Flag(s.is_driver)),
                ("binary", Value::Text(s.binary.clone())),
                ("stdout_path", Value::Text(s.stdout_path.clone())),
                ("stderr_path", Value::Text(s.stderr_path.clone())),
            ],
        ),
        Detail::Node(n) => (
            "node",
            vec![
                ("address", Value::Text(n.address.clone())),
                ("end", Value::Text(n.end().word().into())),
                ("reason", Value::Text(n.reason.clone())),
                ("resources", Value::Map(n.resources.iter().map(|(k, v)| (k.clone(), *v)).collect())),
                ("store_capacity", Value::Bytes(n.store_capacity)),
            ],
        ),
        Detail::Job(j) => (
            "job",
            vec![
                ("binary", Value::Text(j.binary.clone())),
                ("pid", Value::Pid(j.pid)),
                ("exit_code", Value::Num(j.exit_code.into())),
            ],
        ),
        Detail::Actor(a) => (
            "actor",
            vec![
                ("name", Value::Text(a.name.clone())),
                ("class", Value::Text(a.class.clone())),
                ("cause", Value::Text(a.cause().word().into())),
                ("detail", Value::Text(a.detail.clone())),
                ("pid", Value::Pid(a.pid)),
                ("restart", Value::Num(a.restart.into())),
                ("max_restarts", Value::Num(a.max_restarts.into())),
                ("detached", Value::Flag(a.detached)),
            ],
        ),
    }
}

/// An id as JSON: full hex, or `null` when empty.
struct IdJson<'a>(&'a [u8]);

impl Serialize for IdJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() { s.serialize_none() } else { s.serialize_str(&hex(self.0)) }
    }
}

/// An event in its JSON form: `{"id", "time_us", "time", "kind", "cause", "source_pid",
/// "task_id", "object_id", "actor_id", "worker_id", "job_id", "node_id", "source_worker",
/// "detail": {"type", …every field} | null}`, ids in full hex (`null` when empty), `time`
/// in RFC 3339.
pub struct EventJson<'a>(pub &'a Event);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ev = self.0;
        let time = jiff::Timestamp::from_microsecond(ev.time_us).map(|t| t.to_string()).unwrap_or_default();
        let mut map = s.serialize_map(Some(14))?;
        map.serialize_entry("id", &IdJson(&ev.id))?;
        map.serialize_entry("time_us", &ev.time_us)?;
        map.serialize_entry("time", &time)?;
        map.serialize_entry("kind", &kind_name(ev.kind))?;
        map.serialize_entry("cause", &IdJson(&ev.cause))?;
        map.serialize_entry("source_pid", &ev.source_pid)?;
        for (name, id) in ids(ev) {
            let key = if name == "source" { "source_worker".to_string() } else { format!("{name}_id") };
            map.serialize_entry(&key, &IdJson(id))?;
        }
        map.serialize_entry("detail", &ev.detail.as_ref().map(DetailJson))?;
        map.end()
    }
}

struct DetailJson<'a>(&'a Detail);

impl Serialize for DetailJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (ty, fields) = detail_fields(self.0);
        let mut map = s.serialize_map(Some(fields.len() + 1))?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("type", ty)?;
        map.end()
    }
}

/// A list of events in their JSON form.
pub struct EventsJson<'a>(pub &'a [Event]);

impl Serialize for EventsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for ev in self.0 {
            seq.serialize_element(&EventJson(ev))?;
        }
        seq.end()
    }
}

// ---------------------------------------------------------------------------------------
// Reading one event

pub fn is(ev: &Event, kind: EventKind) -> bool {
    ev.kind == kind as i32
}

pub fn kind_of(ev: &Event) -> EventKind {
    EventKind::try_from(ev.kind).unwrap_or(EventKind::Unspecified)
}

pub fn task(ev: &Event) -> Option<&TaskDetail> {
    match &ev.detail {
        Some(Detail::Task(t)) => Some(t),
        _ => None,
    }
}

/// The exit a WORKER_EXITED records.
pub fn exit(ev: &Event) -> Option<&WorkerExit> {
    match &ev.detail {
        Some(Detail::WorkerExit(x)) if is(ev, EventKind::WorkerExited) => Some(x),
        _ => None,
    }
}

pub fn start(ev: &Event) -> Option<&WorkerStart> {
    match &ev.detail {
        Some(Detail::WorkerStart(s)) => Some(s),
        _ => None,
    }
}

pub fn object(ev: &Event) -> Option<&ObjectDetail> {
    match &ev.detail {
        Some(Detail::Object(o)) => Some(o),
        _ => None,
    }
}

pub fn actor(ev: &Event) -> Option<&ActorDetail> {
    match &ev.detail {
        Some(Detail::Actor(a)) => Some(a),
        _ => None,
    }
}

pub fn node(ev: &Event) -> Option<&NodeDetail> {
    match &ev.detail {
        Some(Detail::Node(n)) => Some(n),
        _ => None,
    }
}

pub fn job(ev: &Event) -> Option<&JobDetail> {
    match &ev.detail {
        Some(Detail::Job(j)) => Some(j),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A final TASK_FAILED with a two-line error and a backtrace.
    fn failed_event() -> Event {
        Event {
            id: vec![1; 16],
            time_us: 1_767_225_600_000_000,
            kind: EventKind::TaskFailed as i32,
            task_id: (1..=16).collect(),
            worker_id: vec![3; 16],
            source_worker: vec![3; 16],
            cause: vec![4; 16],
            detail: Some(Detail::Task(TaskDetail {
                function: "demo::square".into(),
                error: "panicked at 'boom'\nsecond line".into(),
                error_type: rayr_proto::TaskErrorKind::Panic as i32,
                r#final: true,
                backtrace: "0: main".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn event_json_is_complete() {
        let ev = failed_event();
        let j = serde_json::to_value(EventJson(&ev)).unwrap();
        assert_eq!(j["kind"], "task_failed");
        assert_eq!(j["task_id"], hex(&ev.task_id));
        assert_eq!(j["object_id"], serde_json::Value::Null);
        assert_eq!(j["time"], "2026-01-01T00:00:00Z");
        assert_eq!(j["detail"]["type"], "task");
        assert_eq!(j["detail"]["backtrace"], "0: main");
        assert_eq!(j["detail"]["final"], true);
    }

    #[test]
    fn a_signal_is_a_number_in_json() {
        let ev = Event {
            kind: EventKind::WorkerExited as i32,
            detail: Some(Detail::WorkerExit(WorkerExit { signal: 9, peak_rss_bytes: 1 << 20, ..Default::default() })),
            ..Default::default()
        };
        let j = serde_json::to_value(EventJson(&ev)).unwrap();
        assert_eq!(j["detail"]["signal"], 9);
        assert_eq!(j["detail"]["peak_rss_bytes"], 1 << 20);
        assert_eq!(j["id"], serde_json::Value::Null);
        assert_eq!(j["detail"]["type"], "worker_exit");
    }
}
