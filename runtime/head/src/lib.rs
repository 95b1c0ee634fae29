//! The head: the session's event index, the state views built from it, and the head's
//! gRPC service that answers `rayr list`, `rayr events` and (later) the dashboard.
//!
//! What it owns:
//! - [`EventIndex`]: every event of the session's `events/*.log` files findable by every id
//!   it names, by kind and by time, plus the views (tasks, objects, workers, nodes, jobs,
//!   actors) that say where each entity stands and live counts of them, kept in
//!   `<session>/index/` at the rate the runtime records (see `index`'s module doc). The
//!   index is rebuilt from the logs, never the other way round: the logs are the record.
//! - [`start_head`]: the indexer thread that tails the logs, and the `Head` gRPC server.
//! - [`Membership`]: which node agents are in the cluster, their heartbeats, and the
//!   declaration of a silent node's death (NODE_JOINED, NODE_DIED).
//! - the clean-up sweeps (`sweeps.rs`): what nothing else records once a node, a job's
//!   driver or an object's owner is gone (workers lost with a dead node, tasks of ended
//!   jobs, objects of dead owners), run beside the gRPC service.
//!
//! What it must not touch: processes (starting, signalling or reaping workers is the node
//! agent's), worker sockets, and the event logs themselves (it only reads them). The views
//! are derived from events alone, so they answer the same after every process is gone.
//!
//! Reading a finished session without a running head:
//!
//! ```no_run
//! use rayr_head::EventIndex;
//! use rayr_proto::ListRequest;
//! let session = rayr_logs::Session::latest(&rayr_logs::tmpdir()).unwrap();
//! let index = EventIndex::open(&session)?;
//! index.catch_up(&session)?;
//! let failed = index.list(&ListRequest {
//!     entity: "tasks".into(),
//!     filters: vec![rayr_proto::Filter { key: "state".into(), value: "failed".into() }],
//!     ..Default::default()
//! })?;
//! println!("{} failed tasks", failed.total);
//! # Ok::<(), rayr_head::HeadError>(())
//! ```

mod ids;
mod index;
mod membership;
mod query;
mod service;
mod sweeps;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use ids::{IdPattern, short_id};
pub use index::{EventIndex, EventQuery, EventsPage, MAX_ID_MATCHES, RecentFailure, Summary, SummaryGroup};
pub use query::{DEFAULT_PAGE, ENTITIES};
pub use membership::{Membership, MembershipConfig};
pub use service::{HeadHandle, ID_PATTERN_METADATA, start_head, start_head_with};

/// What can go wrong in the head. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(
        "the event index {} is in use by another process: this session's head, or another `rayr` command \
         reading the session (such as `rayr events --follow`); if the head is running, ask it instead: pass its \
         address with --address or RAYR_ADDRESS (it is written in {})",
        path.display(),
        path.with_file_name("head_address").display()
    )]
    Locked { path: PathBuf },

    #[error("cannot open the event index {}: {source}; if it is damaged, delete the directory and it will be rebuilt from the event logs", path.display())]
    Open { path: PathBuf, source: std::io::Error },

    #[error(
        "the event index holds a record that does not decode ({0}); delete the session's index directory to rebuild it from the event logs"
    )]
    Corrupt(#[from] prost::DecodeError),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("cannot listen on {addr}: {source}; choose another port (port 0 picks a free one)")]
    Bind { addr: SocketAddr, source: std::io::Error },

    #[error("{0}")]
    Server(String),

    /// A query the head cannot answer as asked (unknown entity, filter key, …).
    #[error("{0}")]
    BadRequest(String),

    #[error(
        "no id in this session matches `{pattern}`; `rayr list tasks` (or objects, workers, …) shows the ids there are"
    )]
    UnknownId { pattern: String },

    #[error("{}", ambiguous(pattern, *total, candidates, kinds))]
    AmbiguousId { pattern: String, total: usize, candidates: Vec<Vec<u8>>, kinds: Vec<&'static str> },
}

fn ambiguous(pattern: &str, total: usize, candidates: &[Vec<u8>], kinds: &[&str]) -> String {
    let which = if total > candidates.len() { format!("The first {} are:", candidates.len()) } else { "They are:".to_string() };
    let mut s = format!("`{pattern}` matches {total} ids; give more digits. {which}");
    for (i, c) in candidates.iter().enumerate() {
        s.push_str("\n  ");
        s.push_str(&rayr_logs::hex(c));
        if let Some(kind) = kinds.get(i) {
            s.push_str(&format!("  ({kind})"));
        }
    }
    s
}

#[cfg(test)]
mod tests;
