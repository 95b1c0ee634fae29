//! `rayr::Error`: every failure a user can see, each naming the id that `rayr why-died`
//! explains further.

use crate::ids::{ActorId, NodeId, ObjectId, TaskId, WorkerId};

/// `Result<T, rayr::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[non_exhaustive]
#[derive(Clone, thiserror::Error, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// The task's code panicked or returned `Err(..)`.
    #[error("task {task} failed: {message}; run `rayr why-died {task}`")]
    TaskFailed { task: TaskId, message: String, backtrace: String },
    /// The process running the task died.
    #[error("worker {worker} died: {exit}; run `rayr why-died {worker}`")]
    WorkerDied { worker: WorkerId, exit: String },
    #[error("actor {actor} died: {cause}; run `rayr why-died {actor}`")]
    ActorDied { actor: ActorId, cause: String },
    /// The handle was made in another cluster (deserialized here from bytes saved there):
    /// its actor is not reachable from this one.
    #[error("actor {actor} belongs to another cluster ({cluster}): a handle works only in the cluster that created its actor, where `rayr why-died {actor}` explains it")]
    ForeignActor { actor: ActorId, cluster: String },
    /// No live actor has that name (`<Name>Handle::get_named`).
    #[error("no actor named {namespace}/{name} is alive in this cluster; `rayr list actors` shows those that are")]
    ActorNotFound { namespace: String, name: String },
    /// The process that owned the object died, and the object with it.
    #[error("object {object} is lost: its owner {owner}; run `rayr why-died {object}`")]
    OwnerDied { object: ObjectId, owner: String },
    #[error("object {object} is lost and cannot be rebuilt; run `rayr why-died {object}`")]
    ObjectLost { object: ObjectId },
    #[error("task {task} was killed on node {node} because memory ran out: {detail}; run `rayr why-died {task}`")]
    OutOfMemory { task: TaskId, node: NodeId, detail: String },
    #[error("node {node} died; run `rayr why-died {node}`")]
    NodeDied { node: NodeId },
    /// No node of the cluster can ever satisfy the task's resource demand.
    #[error("task {task} can never be scheduled: {demand}; run `rayr why-died {task}`")]
    Infeasible { task: TaskId, demand: String },
    #[error("timed out waiting for the object")]
    Timeout,
    #[error("the task was cancelled")]
    Cancelled,
    /// A value could not be serialized or deserialized.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// A rayr process could not be reached.
    #[error("{0}")]
    Connection(String),
    /// The node's shared-memory object store has no room for a new value, even after
    /// dropping cached copies of other nodes' objects.
    #[error("the object store of node {node} is full: {detail}; `rayr memory` shows what it holds")]
    ObjectStoreFull { node: NodeId, detail: String },
}

/// `Debug` shows the sentence a person needs (what `main` prints when it returns `Err`),
/// prefixed with the variant so matching code can still be written from it.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variant = match self {
            Error::TaskFailed { .. } => "TaskFailed",
            Error::WorkerDied { .. } => "WorkerDied",
            Error::ActorDied { .. } => "ActorDied",
            Error::ActorNotFound { .. } => "ActorNotFound",
            Error::ForeignActor { .. } => "ForeignActor",
            Error::OwnerDied { .. } => "OwnerDied",
            Error::ObjectLost { .. } => "ObjectLost",
            Error::OutOfMemory { .. } => "OutOfMemory",
            Error::NodeDied { .. } => "NodeDied",
            Error::Infeasible { .. } => "Infeasible",
            Error::Timeout => "Timeout",
            Error::Cancelled => "Cancelled",
            Error::Serialization(_) => "Serialization",
            Error::Connection(_) => "Connection",
            Error::ObjectStoreFull { .. } => "ObjectStoreFull",
        };
        write!(f, "{variant}: {self}")?;
        if let Error::TaskFailed { backtrace, .. } = self
            && !backtrace.is_empty()
            && f.alternate()
        {
            write!(f, "\n{backtrace}")?;
        }
        Ok(())
    }
}
