//! How the explainer reads the event record: the [`Record`] trait.
//!
//! The explainer asks a handful of questions (which id a pattern names, the events naming
//! an id, the events of one kind, one event by its id, what an event caused, what a failed
//! attempt wrote) and never cares who answers them: the CLI answers from a running head
//! over gRPC or from a stopped session's `EventIndex`; the head can answer from its own
//! index for the dashboard; tests answer from a vector ([`crate::sample::Memory`]).

use std::future::Future;

use rayr_logs::{Session, hex};
use rayr_proto::{Event, EventKind};

use crate::event::task;

/// Whatever went wrong reading the record, in the reader's own words (they say what to do).
pub type RecordError = Box<dyn std::error::Error + Send + Sync>;

/// What a pattern someone typed names.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// The one id it names, and the first events naming it (as many as were asked for).
    Id { id: Vec<u8>, first: Vec<Event> },
    /// No id in the record matches it: the record's message saying so.
    Unknown(String),
}

/// Most events read to find one event by its id (it and the events it caused).
pub const LOOKUP_EVENTS: usize = 10_000;
/// Lines of a failed attempt's output kept (its last ones).
pub const TASK_OUTPUT_LINES: usize = 200;

/// What a failed task attempt wrote to its worker's stdout and stderr (the last
/// [`TASK_OUTPUT_LINES`] lines of each), and the files it was read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOutput {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub stdout_path: String,
    pub stderr_path: String,
}

/// The event record of one session, as the explainer reads it. Results come in the
/// record's order; the explainer sorts by time where order matters.
pub trait Record: Send {
    /// Whether the cluster is running: then what has not ended yet may still.
    fn live(&self) -> bool;

    /// The id `pattern` names (a full id, a unique prefix, or the short form tables print)
    /// and up to `first` events naming it: one question, as a head answers it in one round
    /// trip. `Err` for a pattern that is not an id, or names several (the message lists them).
    fn resolve(&mut self, pattern: &str, first: usize) -> impl Future<Output = Result<Resolved, RecordError>> + Send;

    /// Up to `limit` events naming `id` in any role (its own id, a cause, a task, …).
    fn events_naming(
        &mut self,
        id: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, RecordError>> + Send;

    /// Up to `limit` events of `kind`.
    fn events_of_kind(
        &mut self,
        kind: EventKind,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, RecordError>> + Send;

    /// The session whose log files hold what tasks wrote, if they are readable here.
    fn session(&mut self) -> impl Future<Output = Option<Session>> + Send;

    /// The event whose own id is `id`, if the record has it.
    fn event(&mut self, id: &[u8]) -> impl Future<Output = Result<Option<Event>, RecordError>> + Send {
        async move { Ok(self.events_naming(id, LOOKUP_EVENTS).await?.into_iter().find(|e| e.id == id)) }
    }

    /// The events whose `cause` is `id` (what that event brought about), oldest first.
    fn effects(&mut self, id: &[u8]) -> impl Future<Output = Result<Vec<Event>, RecordError>> + Send {
        async move {
            let mut events = self.events_naming(id, LOOKUP_EVENTS).await?;
            events.retain(|e| e.cause == id);
            events.sort_by_key(|e| e.time_us);
            Ok(events)
        }
    }

    /// What the attempt that `ended` (its TASK_FAILED, run by `pid`) wrote, read from its
    /// worker's log files where the record says its output is, if they are on this host.
    fn task_output(&mut self, ended: &Event, pid: u32) -> impl Future<Output = Option<TaskOutput>> + Send {
        async move {
            let session = self.session().await?;
            read_task_output(session, ended, pid)
        }
    }
}

/// Reads what a task attempt wrote from its worker's log files in `session`: the byte
/// ranges its TASK_FAILED records, in the file generation they are in.
pub fn read_task_output(session: Session, ended: &Event, pid: u32) -> Option<TaskOutput> {
    let t = task(ended).filter(|t| t.output_measured)?;
    let worker = hex(&ended.worker_id);
    let files = rayr_logsearch::files::NodeFiles {
        session,
        own_logs: Vec::new(),
        workers: vec![(ended.worker_id.as_slice().try_into().ok()?, pid)],
    };
    let read = |ext: &str, start: u64, end: u64, generation: u32| -> Option<(Vec<String>, String)> {
        use std::io::{Read, Seek, SeekFrom};
        // The generation the offsets are in: rotated to `<file>.g` since, current, or
        // rotated out (then not some other generation's lines).
        let part = rayr_logsearch::files::Part { stream: ext.into(), generation, start, end };
        let plan = files.plan(&worker, &[part], 0, 0).ok()?;
        if let Some((file, why)) = plan.gone.first() {
            return Some((Vec::new(), format!("{file} ({why})")));
        }
        let path = plan.ranges.first()?.0.clone();
        let mut f = std::fs::File::open(&path).ok()?;
        // The last lines are what matter: at most 64 KiB of them.
        let from = end.saturating_sub(64 << 10).max(start);
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut bytes = Vec::new();
        f.take(end - from).read_to_end(&mut bytes).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text.lines().map(String::from).collect();
        Some((lines[lines.len().saturating_sub(TASK_OUTPUT_LINES)..].to_vec(), path.display().to_string()))
    };
    // The last lines are what matter: from the generation the output ends in.
    let from = |start: u64, span: u32| if span > 0 { 0 } else { start };
    let (stdout, stdout_path) = read("out", from(t.out_start, t.out_gen_span), t.out_end, t.out_gen)?;
    let (stderr, stderr_path) = read("err", from(t.err_start, t.err_gen_span), t.err_end, t.err_gen)?;
    Some(TaskOutput { stdout, stderr, stdout_path, stderr_path })
}
