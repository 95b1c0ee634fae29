//! [`Report`]: what the explainer found out about one id, as data.
//!
//! Its JSON form (`rayr why-died --json`) is one object: `{"id", "kind", "summary",
//! "chain", "missing_cause", "root_cause", "retries", "effects", "stderr_path",
//! "stderr_tail", "task_stdout", "task_stderr", "advice"}`, every event in the form
//! `rayr events --json` prints ([`EventJson`](crate::event::EventJson)), ids in full hex;
//! `root_cause` is the id of the chain event the advice is keyed to.

use rayr_logs::hex;
use rayr_proto::{Event, WorkerExit};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cause::{Cause, TaskError};
use crate::entity::Role;
use crate::event::{EventsJson, exit, task};
use crate::record::TaskOutput;

/// Lines of the dying worker's stderr a report keeps (its last ones).
pub const STDERR_TAIL_LINES: usize = 10;

/// What the explainer found out about one id. Prose (`summary`, `advice`) names ids in
/// full; renderers for people shorten them.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The id asked about, resolved.
    pub id: Vec<u8>,
    /// What the id names.
    pub role: Role,
    /// One sentence: what it is, how and when it ended (or where it stands).
    pub summary: String,
    /// The event that ended it, then its cause, that event's cause, … to the root.
    pub chain: Vec<Event>,
    /// Whether `chain` is a walk of cause links (else: the latest events, as recorded).
    pub walked: bool,
    /// A cause the record does not hold (its process died before recording it).
    pub missing_cause: Option<Vec<u8>>,
    /// Index in `chain` of the event the advice is keyed to.
    pub root_cause: Option<usize>,
    /// That event, classified (what the advice was chosen from).
    pub cause: Option<Cause>,
    /// TASK_RETRIED events of the task, oldest first.
    pub retries: Vec<Event>,
    /// What the ending event brought about (a worker exit's failed tasks, lost objects).
    pub effects: Vec<Event>,
    pub advice: Option<String>,
    /// What the failed attempt wrote to its worker's stdout and stderr (last lines), when
    /// the record places it and the files are on this host.
    pub task_output: Option<TaskOutput>,
}

impl Report {
    pub(crate) fn new(id: Vec<u8>, role: Role) -> Report {
        Report {
            id,
            role,
            summary: String::new(),
            chain: Vec::new(),
            walked: false,
            missing_cause: None,
            root_cause: None,
            cause: None,
            retries: Vec::new(),
            effects: Vec::new(),
            advice: None,
            task_output: None,
        }
    }

    /// The first worker exit in the chain (whose stderr the report shows): its event and exit.
    pub fn exit(&self) -> Option<(&Event, &WorkerExit)> {
        self.chain.iter().find_map(|e| exit(e).map(|x| (e, x)))
    }

    /// The last [`STDERR_TAIL_LINES`] lines that worker wrote to stderr.
    pub fn stderr_tail(&self) -> &[String] {
        let Some((_, x)) = self.exit() else { return &[] };
        &x.stderr_tail[x.stderr_tail.len().saturating_sub(STDERR_TAIL_LINES)..]
    }

    /// The backtrace of the panic the advice is about.
    pub fn backtrace(&self) -> Option<&str> {
        if !matches!(self.cause, Some(Cause::Task(TaskError::Panic { backtrace: true, .. }))) {
            return None;
        }
        let t = task(&self.chain[self.root_cause?])?;
        Some(t.backtrace.as_str())
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(13))?;
        m.serialize_entry("id", &hex(&self.id))?;
        m.serialize_entry("kind", self.role.noun())?;
        m.serialize_entry("summary", &self.summary)?;
        m.serialize_entry("chain", &EventsJson(&self.chain))?;
        m.serialize_entry("missing_cause", &self.missing_cause.as_deref().map(hex))?;
        m.serialize_entry("root_cause", &self.root_cause.map(|i| hex(&self.chain[i].id)))?;
        m.serialize_entry("retries", &EventsJson(&self.retries))?;
        m.serialize_entry("effects", &EventsJson(&self.effects))?;
        m.serialize_entry("stderr_path", &self.exit().map(|(_, x)| x.stderr_path.as_str()).filter(|p| !p.is_empty()))?;
        m.serialize_entry("stderr_tail", self.stderr_tail())?;
        m.serialize_entry("task_stdout", &self.task_output.as_ref().map(|o| &o.stdout))?;
        m.serialize_entry("task_stderr", &self.task_output.as_ref().map(|o| &o.stderr))?;
        m.serialize_entry("advice", &self.advice)?;
        m.end()
    }
}

/// A backtrace's frames, each its lines (the symbol, then its `at` line).
pub type Frame = Vec<String>;

/// The frames of a backtrace in the user's code (all frames when none is), and how many
/// frames there were. A frame is the user's when its source is neither the standard
/// library, a registry or git dependency, nor rayr itself.
pub fn user_frames(bt: &str) -> (Vec<Frame>, usize) {
    let mut frames: Vec<Frame> = Vec::new();
    for line in bt.lines() {
        let t = line.trim_start();
        let is_header = t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_header || frames.is_empty() {
            frames.push(vec![line.trim_end().to_string()]);
        } else if let Some(f) = frames.last_mut() {
            f.push(line.trim_end().to_string());
        }
    }
    let total = frames.len();
    const NOT_USER_SOURCE: [&str; 8] = [
        "/rustc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/runtime/rayr/src/",
        "/library/std/",
        "nptl/",
        "sysdeps/",
        "csu/",
    ];
    const NOT_USER_SYMBOL: [&str; 11] = [
        "std::",
        "core::",
        "alloc::",
        "rayr::",
        "<std::",
        "<core::",
        "<alloc::",
        "start_thread",
        "clone",
        "__libc",
        "_start",
    ];
    let is_user = |f: &Frame| {
        let symbol = f[0].trim_start().split_once(": ").map(|(_, s)| s).unwrap_or(&f[0]);
        let at = f.iter().skip(1).find_map(|l| l.trim_start().strip_prefix("at "));
        at.is_some_and(|at| !NOT_USER_SOURCE.iter().any(|p| at.contains(p)))
            && !NOT_USER_SYMBOL.iter().any(|p| symbol.starts_with(p))
            && !symbol.contains("__rayr_")
    };
    let user: Vec<Frame> = frames.iter().filter(|f| is_user(f)).cloned().collect();
    if user.is_empty() { (frames, total) } else { (user, total) }
}
