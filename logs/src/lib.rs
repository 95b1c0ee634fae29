//! Where a rayr session keeps its files, and the append-only event log.
//!
//! This crate owns the on-disk layout of a session (the repository's ARCHITECTURE.md has it whole):
//!
//! ```text
//! $RAYR_TMPDIR (default /tmp/rayr)/
//!   session_latest -> session_<date>_<pid>/
//!   session_…/  logs/  events/  spilled_objects/
//!               sockets -> /tmp/rayr-sockets-<uid>/<key>/
//! ```
//!
//! (Unix sockets live in a short per-user directory that the session links to, so that
//! `RAYR_TMPDIR` may be of any length: a socket path must fit in 108 bytes. `session.rs`
//! says how that directory is kept owner-only, found from either side and cleaned up),
//! and the event log format: `events/events-<node>.log` is a sequence of frames, each a
//! u32 little-endian length followed by one encoded `rayr_proto::EventRun`: events of one
//! process, packed (see [`event_run`]); readers get whole `Event`s. Processes pack their
//! events into a shared-memory [`event_area`] that only the node agent drains into the log;
//! anyone may read the log. A torn frame at the tail (a crash mid-write) is invisible to
//! readers and cut off when the log is next opened for writing, so a killed process never
//! leaves a log that later appends would corrupt.
//!
//! It decides where sockets live, not what goes over them; it knows nothing of the index
//! built from the log.
//!
//! ```no_run
//! let session = rayr_logs::Session::create(&rayr_logs::tmpdir()).unwrap();
//! let mut log = rayr_logs::EventLogWriter::open(&session.event_log("ab12")).unwrap();
//! # let frames: Vec<u8> = vec![];
//! log.append(&frames).unwrap();
//! ```

pub mod event_area;
mod event_log;
pub mod event_run;
mod ids;
mod session;

pub use event_log::{EventLogReader, EventLogWriter, read_events};
pub use event_run::{EventRef, RunSource, RunView, encode_single_run_frame, expand_run};
pub use ids::{EVENT_SEQ_BIT, Id, event_id_from, hex, id_head, id_of_counter, is_event_counter, new_id, now_us, parse_hex, process_salt, split_id};
pub use session::{Session, tmpdir};
