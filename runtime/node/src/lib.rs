//! The node agent: one per host; everything local that outlives a single task.
//!
//! It owns, for its host:
//! - the **worker pool** ([`pool`]): starting the user's binary in worker mode, reaping it,
//!   and saying exactly how it ended (exit type, code or signal, peak RSS, stderr tail);
//! - **leases** ([`resources`]): a submitter asks for a worker with some resources; the
//!   agent grants an idle or freshly started worker when the resources are free, queues the
//!   request when not, and fails it at once when no node could ever fit it;
//! - the **shm object store**: one pre-faulted arena (rayr-store) and who owns each range;
//! - the node's **event log**: every process of the host packs its events into a
//!   shared-memory area it names at registration (`rayr_logs::event_area`); a drain thread
//!   moves them into `events/events-<node>.log` every few milliseconds, and once more when
//!   the process's connection closes, however it ended;
//! - **detached actors** (`agent/detached.rs`): actors that outlive their creator's job,
//!   which the agent holds, restarts and answers for on its peer socket.
//!
//! Drivers and workers talk to it over a Unix socket with the `ClientMessage` /
//! `NodeMessage` frames of `proto/schemas/core.proto`. It does not run user code and does
//! not know task or object semantics beyond "this range belongs to that owner".
//!
//! ```no_run
//! let session = rayr_logs::Session::create(&rayr_logs::tmpdir()).unwrap();
//! let node = rayr_node::start_node(rayr_node::NodeConfig::local(session, 2.0)).unwrap();
//! println!("agent listening on {}", node.socket_path().display());
//! node.shutdown();
//! ```

mod agent;
pub mod ledger;
pub mod membership;
pub mod pool;
pub mod resources;

pub use agent::logs::log_file;
pub use agent::{NodeConfig, NodeHandle, ResourceProbe, start_node};
