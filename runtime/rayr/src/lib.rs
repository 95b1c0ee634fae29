//! rayr: distributed tasks for Rust, in which every decision the runtime makes is
//! recorded and explainable.
//!
//! This is the one crate a user imports. Mark functions `#[rayr::remote]`, wrap `main` in
//! `#[rayr::main]`, call [`init`], and submit:
//!
//! ```no_run
//! use rayr::prelude::*;
//!
//! #[rayr::remote]
//! fn square(x: u64) -> u64 { x * x }
//!
//! #[rayr::main]
//! fn main() -> rayr::Result<()> {
//!     rayr::init()?;                        // RAYR_ADDRESS, a running local cluster, or embedded
//!     let r = square::remote(7);
//!     assert_eq!(rayr::get(&r)?, 49);
//!     Ok(())
//! }
//! ```
//!
//! Actors are a struct and its impl, both marked `#[rayr::actor]`. What cannot work is
//! refused at compile time with a message, e.g. a generic method (a call names one concrete
//! signature):
//!
//! ```compile_fail
//! #[rayr::actor]
//! pub struct Bag { n: u64 }
//! #[rayr::actor]
//! impl Bag {
//!     pub fn new() -> Self { Bag { n: 0 } }
//!     pub fn add<T: Into<u64>>(&mut self, x: T) -> u64 { self.n += x.into(); self.n }
//! }
//! ```
//!
//! or a method that the generated handle already has (`id`, `get_named`; `remote` and
//! `options` on the type):
//!
//! ```compile_fail
//! #[rayr::actor]
//! pub struct Bag { n: u64 }
//! #[rayr::actor]
//! impl Bag {
//!     pub fn new() -> Self { Bag { n: 0 } }
//!     pub fn id(&self) -> u64 { self.n }
//! }
//! ```
//!
//! What lives where: [`core`](crate) (private) is the core worker inside every driver and
//! worker process: ownership, the submitter, the peer server, the event buffer. `exec` is
//! worker mode. The node agent (`rayr-node`) and the head (`rayr-head`) are separate crates;
//! an embedded `init()` starts both inside the driver process. The public surface (what
//! this file exports) is a contract: programs outside this repository compile against it,
//! so a name or a shape in it changes only with every user's consent.

mod actor;
mod api;
mod codec;
mod core;
mod error;
mod exec;
mod ids;
mod object_ref;
mod options;
mod raw;
mod registry;
mod runtime;
mod trace;

pub use actor::kill;
pub use api::{
    IntoArg, RuntimeContext, SliceGuard, available_resources, cancel, cluster_resources, get, get_all, get_slice, get_timeout, put, put_slice,
    runtime_context, store_usage, wait,
};
pub use error::{Error, Result};
pub use ids::{ActorId, JobId, NodeId, ObjectId, TaskId, WorkerId};
pub use object_ref::ObjectRef;
pub use options::{Config, TaskOptions};
pub use rayr_macros::{actor, main, remote};
pub use runtime::{init, init_with, session_dir, shutdown};

/// `use rayr::prelude::*;` brings in what user programs need.
pub mod prelude {
    pub use crate::{Config, Error, ObjectRef, TaskOptions};
}

/// Used by generated code only; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{ActorHandle, AsActorHandle, create_actor, get_named};
    pub use crate::api::{ArgValue, submit_task};
    pub use crate::exec::run_worker_if_requested;
    pub use crate::runtime::{MainReturnedErr, MainReturnedOther, main_returned};
    pub use crate::option_builders;
    pub use crate::registry::{ActorClass, ActorMethod, ArgReader, IsSync, NotSync, RemoteFunction, Returned, SyncProbe};
    pub use inventory;
    pub use serde;
}
