//! The node agent: one per host; everything local that outlives a single task.
//!
//! It owns, for its host:
//! - the **worker pool** ([`pool`]): starting the user's binary in worker mode, reaping it,
//!   and saying exactly how it ended (exit type, code or signal, peak RSS, stderr tail);
//!   a worker that dies on its own is replaced while its job runs;
//! - **leases** ([`ledger`], [`resources`]): a submitter asks for a worker with some
//!   resources; the agent grants an idle or freshly started worker when the resources are
//!   free, queues the request when not (or sends it to another node with them free:
//!   spillback, TASK_SPILLED), and fails it at once when no node could ever fit it. An
//!   actor's lease goes where the head places it;
//! - the **shm object store**: one pre-faulted arena (rayr-store), who owns each range, and
//!   copies of other nodes' objects pulled over TCP (OBJECT_EVICTED, OBJECT_LOST when an
//!   owner or its node dies);
//! - **actor names**, unique across the cluster through the head;
//! - **detached actors**: actors that outlive their creator's job, which the agent holds,
//!   restarts (re-running their constructor) and answers for on its peer socket;
//! - the node's **event log**: every process of the host packs its events into a
//!   shared-memory area it names at registration (`rayr_logs::event_area`); a drain thread
//!   moves them into `events/events-<node>.log` every few milliseconds, and once more when
//!   the process's connection closes, however it ended;
//! - its **membership** in the cluster ([`membership`]): joining a head elsewhere
//!   (register, heartbeat, event shipping) or following the head in its own process.
//!
//! Drivers and workers talk to it over a Unix socket (and submitters of other nodes over
//! TCP) with the `ClientMessage` / `NodeMessage` frames of `proto/schemas/core.proto`. It
//! does not run user code. It knows tasks only as far as leases, spills and detached actors
//! need: the owner of a task (its submitter) tracks its state and retries.
//!
//! Inside, the agent is a few services with their own state behind a thin dispatcher
//! (`src/agent.rs` and `src/agent/`): the worker pool, the lease ledger, the detached
//! actors, the store objects and the actor names. Their locks are taken in this order,
//! never the other way round (the `agent` module says why):
//!
//! 1. the state lock: worker pool, lease ledger and detached actors (a grant decides over
//!    all three at once);
//! 2. the store lock: objects, copies, pulls and streamed ranges;
//! 3. the actor names;
//! 4. short-lived views and tables (cluster view, gone nodes, head address, client
//!    connections, counters, binaries), each released before any other is taken;
//! 5. the event log: the drain lock, the event areas, then the log itself.
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
