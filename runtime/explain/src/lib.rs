//! Why something in a rayr cluster ended, as data: the explainer behind `rayr why-died`.
//!
//! Every `rayr::Error` ends with `run rayr why-died <id>`. This crate answers it from the
//! event record alone, and answers with a structured [`Report`]: the chain of events from
//! the end back to its root cause (following each event's `cause`), the retries, what the
//! end brought about, the root cause classified ([`Cause`]), and one line of advice.
//! Renderers only present it: the CLI as one screen of text or as JSON (the report is
//! `Serialize`), and later the dashboard, the debugger and the editor.
//!
//! What it owns:
//! - [`explain`]: resolving what an id names, the cause-chain walk, the summaries
//!   ([`mod@explain`]);
//! - the root-cause choice ([`cause`]) and the advice for each cause ([`advice`]);
//! - the one description of an event for renderers: kind names, the ids it names, its
//!   detail's fields and its JSON form ([`event`]);
//! - the one list of entities a cluster keeps ([`Entity`]);
//! - signal names, what each means, and what to do about it ([`signal`]), which the node
//!   agent records worker deaths with;
//! - the words reports are written in ([`words`]);
//! - a sample record and a record held in memory, for tests and examples ([`sample`]).
//!
//! What it must not touch: terminals and formatting for them (short ids, colours, screen
//! widths are the renderer's), and where the record lives. It reads the record through
//! the [`Record`] trait, implemented by whoever holds it (the CLI, for a running head over
//! gRPC and for a stopped session's index; the head itself, for the dashboard). Its
//! dependencies stay few (the schemas, the log layout, the log search) so that any
//! process can use it.
//!
//! ```
//! use rayr_explain::{explain, sample};
//! let mut record = sample::Memory { events: sample::record(), live: false };
//! let task = rayr_logs::hex(&sample::boom());
//! let report = std::pin::pin!(explain(&mut record, &task));
//! // `Memory` answers at once; a real record is awaited on a runtime.
//! let std::task::Poll::Ready(Ok(report)) =
//!     report.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
//! else { panic!("answered") };
//! assert!(report.summary.contains("failed for good"));
//! assert_eq!(report.advice.as_deref(), Some("the task panicked: boom (at src/main.rs:3:5); see the backtrace above"));
//! ```

pub mod advice;
pub mod cause;
pub mod entity;
pub mod event;
pub mod explain;
pub mod record;
pub mod report;
pub mod signal;
pub mod words;

pub mod sample;

pub use cause::Cause;
pub use entity::{Entity, Role};
pub use event::{EventJson, Value};
pub use explain::{ExplainError, explain};
pub use record::{Record, RecordError, Resolved, TaskOutput};
pub use report::Report;

#[cfg(test)]
mod tests;
