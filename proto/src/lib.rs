//! rayr's wire contract: every message that crosses a process boundary.
//!
//! The schemas live in `proto/schemas/`: `events.proto` (the typed event record),
//! `core.proto` (the hot-path frames between drivers, workers and node agents) and
//! `head.proto` (the head's gRPC service). This crate only compiles them; it holds no
//! logic beyond the frame helpers every transport shares.

#![allow(clippy::large_enum_variant)]
tonic::include_proto!("rayr");

pub use prost::Message;

/// Appends `msg` to `buf` as one frame: u32 little-endian length, then the encoded bytes.
pub fn encode_frame<M: Message>(msg: &M, buf: &mut Vec<u8>) {
    let len = msg.encoded_len();
    buf.reserve(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    msg.encode(buf).expect("Vec<u8> has room");
}

/// Largest frame any peer may send (1 GiB): a length above it means a corrupt stream.
pub const MAX_FRAME: usize = 1 << 30;

/// Splits the first complete frame off `buf`: `Ok(Some((body, consumed)))`, `Ok(None)` when
/// more bytes are needed, `Err` when the length prefix is impossible.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + len], 4 + len)))
}

impl EventKind {
    /// The name used on the command line and in JSON: `TASK_FAILED` → `task_failed`.
    pub fn cli_name(self) -> String {
        self.as_str_name().to_ascii_lowercase()
    }
    /// Parses `task_failed` or `TASK_FAILED`.
    pub fn parse_cli(s: &str) -> Option<Self> {
        Self::from_str_name(&s.to_ascii_uppercase()).filter(|k| *k != EventKind::Unspecified)
    }
}

/// Gives a cause enum its word: the name rows, JSON and the command line show
/// (`TASK_ERROR_KIND_PANIC` → `panic`; "" when unspecified), without allocating.
macro_rules! words {
    ($($ty:ident { $($variant:ident => $word:literal),* $(,)? })*) => {$(
        impl $ty {
            /// The value's name in rows, JSON and on the command line ("" when unspecified).
            pub fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word,)*
                }
            }
            /// The value named `word` (any case).
            pub fn from_word(word: &str) -> Option<Self> {
                [$($ty::$variant),*].into_iter().find(|v| !v.word().is_empty() && v.word().eq_ignore_ascii_case(word))
            }
        }
    )*};
}

words! {
    TaskErrorKind {
        Unspecified => "",
        Panic => "panic",
        Application => "application",
        Infeasible => "infeasible",
        WorkerDied => "worker_died",
        DependencyFailed => "dependency_failed",
        BadArgument => "bad_argument",
        WorkerStartFailed => "worker_start_failed",
        JobEnded => "job_ended",
        Store => "store",
        ActorDied => "actor_died",
        CreationRefused => "creation_refused",
        OutOfMemory => "out_of_memory",
        NodeGone => "node_gone",
        Cancelled => "cancelled",
    }
    WorkerExitReason {
        Unspecified => "",
        Signal => "signal",
        ProcessExit => "process_exit",
        JobEnded => "job_ended",
        ActorEnded => "actor_ended",
        KilledByUser => "killed_by_user",
        NodeStopping => "node_stopping",
        DriverShutdown => "driver_shutdown",
        DriverDisconnected => "driver_disconnected",
        DriverCutOff => "driver_cut_off",
        NodeDied => "node_died",
        OutOfMemory => "out_of_memory",
    }
    ActorDeathCause {
        Unspecified => "",
        OutOfScope => "out_of_scope",
        CreationFailed => "creation_failed",
        WorkerDied => "worker_died",
        OwnerDied => "owner_died",
        Killed => "killed",
        NodeStopped => "node_stopped",
        NodeDied => "node_died",
    }
    ObjectEndReason {
        Unspecified => "",
        Released => "released",
        FreedByOwner => "freed_by_owner",
        StoreFull => "store_full",
        OwnerDied => "owner_died",
        OwnerNodeGone => "owner_node_gone",
        NodeDied => "node_died",
        Unreadable => "unreadable",
        SpillLost => "spill_lost",
    }
    PeerKind {
        Unspecified => "",
        Borrower => "borrower",
        TaskArgument => "task_argument",
    }
    NodeEndReason {
        Unspecified => "",
        AskedToStop => "asked_to_stop",
        LostHead => "lost_head",
        RefusedByHead => "refused_by_head",
        MissedHeartbeats => "missed_heartbeats",
        NotReregistered => "not_reregistered",
    }
    PauseReason {
        Unspecified => "",
        Breakpoint => "breakpoint",
        PostMortem => "post_mortem",
        Editor => "editor",
    }
}

/// Blocking frame I/O over any byte stream (Unix sockets on the hot path).
pub mod frames {
    use std::io::{self, Read, Write};

    use prost::Message;

    /// Reads frames from a stream with one buffer reused for all of them: a read syscall
    /// typically brings in many frames at once.
    pub struct FrameReader<R> {
        inner: R,
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    impl<R: Read> FrameReader<R> {
        pub fn new(inner: R) -> Self {
            FrameReader { inner, buf: vec![0; 64 << 10], start: 0, end: 0 }
        }

        /// The next message; `Ok(None)` at a clean end of stream.
        pub fn next<M: Message + Default>(&mut self) -> io::Result<Option<M>> {
            match self.next_raw()? {
                Some(body) => M::decode(body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
                None => Ok(None),
            }
        }

        /// The next frame's body, undecoded (valid until the next call); `Ok(None)` at a
        /// clean end of stream.
        pub fn next_raw(&mut self) -> io::Result<Option<&[u8]>> {
            loop {
                match super::split_frame(&self.buf[self.start..self.end]) {
                    Ok(Some((_, used))) => {
                        let body = self.start + 4..self.start + used;
                        self.start += used;
                        return Ok(Some(&self.buf[body]));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                // Need more bytes. Nothing pending: start over at the front for free.
                // Otherwise move the pending bytes to the front only when their frame
                // cannot complete in the space left, or that space is small: moving a large
                // partial batch on every read would copy it again and again.
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                let pending = self.end - self.start;
                let want = if pending >= 4 {
                    4 + u32::from_le_bytes(self.buf[self.start..self.start + 4].try_into().unwrap()) as usize
                } else {
                    4
                };
                // (Also when little room is left: reads into a sliver of buffer would cost a
                // syscall per few bytes.)
                let tight = self.buf.len() - self.end < self.buf.len() / 4;
                if self.start + want > self.buf.len() || tight {
                    if self.start > 0 {
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                    }
                    if want > self.buf.len() {
                        self.buf.resize(want, 0);
                    } else if self.end == self.buf.len() {
                        self.buf.resize(self.buf.len() * 2, 0);
                    }
                }
                let n = self.inner.read(&mut self.buf[self.end..])?;
                if n == 0 {
                    return if self.end == 0 {
                        Ok(None)
                    } else {
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame"))
                    };
                }
                self.end += n;
            }
        }

        /// Whether a complete frame is already buffered (no syscall needed to read it).
        pub fn has_buffered_frame(&self) -> bool {
            matches!(super::split_frame(&self.buf[self.start..self.end]), Ok(Some(_)))
        }

        pub fn get_ref(&self) -> &R {
            &self.inner
        }
    }

    /// Writes one message as a frame with a single `write_all`.
    pub fn write_frame<W: Write, M: Message>(w: &mut W, msg: &M, scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        super::encode_frame(msg, scratch);
        w.write_all(scratch)
    }

    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// How long a TCP connect may take before the other side counts as unreachable.
    pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

    /// A frame stream between two processes: a Unix socket on one host, TCP across hosts.
    pub enum Stream {
        Unix(UnixStream),
        Tcp(TcpStream),
    }

    /// Where a process listens: `PATH` (a Unix socket), `PATH|IP:PORT` (the Unix socket for
    /// processes of its host, where `PATH` exists, TCP for the others), or `|IP:PORT`.
    pub fn connect(address: &str) -> io::Result<Stream> {
        let (path, tcp) = split_address(address);
        if !path.is_empty() && (tcp.is_none() || std::path::Path::new(path).exists()) {
            return UnixStream::connect(path).map(Stream::Unix);
        }
        match tcp {
            Some(addr) => {
                // A host that went away should not hold the caller for the kernel's SYN
                // retries (minutes).
                let target: std::net::SocketAddr = addr
                    .parse()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?} is not IP:PORT ({e})")))?;
                let s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
                // Frames are whole messages: send each at once.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no socket at {path}"))),
        }
    }

    /// `(path, Some("ip:port"))` of an address (see [`connect`]).
    pub fn split_address(address: &str) -> (&str, Option<&str>) {
        match address.split_once('|') {
            Some((path, tcp)) => (path, Some(tcp).filter(|t| !t.is_empty())),
            None => (address, None),
        }
    }

    impl Stream {
        pub fn try_clone(&self) -> io::Result<Stream> {
            Ok(match self {
                Stream::Unix(s) => Stream::Unix(s.try_clone()?),
                Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            })
        }
        pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
            match self {
                Stream::Unix(s) => s.set_read_timeout(t),
                Stream::Tcp(s) => s.set_read_timeout(t),
            }
        }
        pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
            match self {
                Stream::Unix(s) => s.shutdown(how),
                Stream::Tcp(s) => s.shutdown(how),
            }
        }
    }

    impl std::os::fd::AsRawFd for Stream {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            match self {
                Stream::Unix(s) => s.as_raw_fd(),
                Stream::Tcp(s) => s.as_raw_fd(),
            }
        }
    }

    impl Read for Stream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self {
                Stream::Unix(s) => s.read(buf),
                Stream::Tcp(s) => s.read(buf),
            }
        }
    }

    impl Read for &Stream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self {
                Stream::Unix(s) => (&*s).read(buf),
                Stream::Tcp(s) => (&*s).read(buf),
            }
        }
    }

    impl Write for Stream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self {
                Stream::Unix(s) => s.write(buf),
                Stream::Tcp(s) => s.write(buf),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for &Stream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self {
                Stream::Unix(s) => (&*s).write(buf),
                Stream::Tcp(s) => (&*s).write(buf),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Whether an accept failed because the listener was shut down (see `Accepting::wake`).
    fn shut_down<T>(r: &io::Result<T>) -> bool {
        matches!(r, Err(e) if e.raw_os_error() == Some(libc::EINVAL))
    }

    /// The threads accepting on a process's listeners (see [`accept_both`]).
    pub struct Accepting {
        threads: Vec<std::thread::JoinHandle<()>>,
        fds: Vec<std::os::fd::RawFd>,
    }

    impl Drop for Accepting {
        fn drop(&mut self) {
            for fd in &self.fds {
                // SAFETY: our own dups, closed once.
                unsafe { libc::close(*fd) };
            }
        }
    }

    impl Accepting {
        /// Wakes the accept loops (shutting the listening sockets down: no connection is
        /// needed, so a socket file removed meanwhile does not leave them blocked) and waits
        /// for them. The caller has made `stop()` true first.
        pub fn stop(mut self) {
            self.wake();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }

        /// `stop` without waiting for the threads (they end on their own).
        pub fn wake(&self) {
            // (Shutting a socket down reaches every descriptor of it: ours are dups.)
            for fd in &self.fds {
                // SAFETY: the listeners are owned by the accepting threads, which close
                // them only once they have ended, after seeing `stop()`.
                unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
            }
        }
    }

    /// Accepts on a Unix listener and, when given, a TCP one too (a thread each), handing
    /// every connection to `serve`, until `stop()` says so (see [`Accepting::stop`]).
    pub fn accept_both(
        unix: UnixListener,
        tcp: Option<TcpListener>,
        stop: impl Fn() -> bool + Send + Sync + 'static,
        serve: impl Fn(Stream) + Send + Sync + 'static,
    ) -> io::Result<Accepting> {
        use std::os::fd::AsRawFd;
        // Our own descriptors of the listening sockets: the accepting threads close theirs
        // when they end, and a number they freed must never be shut down later.
        // Close-on-exec, as std makes its own: a worker (or a task's subprocess) must not
        // inherit its parent's listeners and keep their ports open after they die.
        // SAFETY: duplicating descriptors this function owns.
        let dup = |fd: i32| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        let mut fds = vec![dup(unix.as_raw_fd())];
        fds.extend(tcp.as_ref().map(|t| dup(t.as_raw_fd())));
        fds.retain(|fd| *fd >= 0);
        let shared = std::sync::Arc::new((stop, serve));
        let mut threads = Vec::new();
        if let Some(tcp) = tcp {
            let shared = shared.clone();
            threads.push(std::thread::Builder::new().name("rayr-accept-tcp".into()).spawn(move || {
                for s in tcp.incoming() {
                    if (shared.0)() || shut_down(&s) {
                        break;
                    }
                    if let Ok(s) = s {
                        let _ = s.set_nodelay(true);
                        (shared.1)(Stream::Tcp(s));
                    }
                }
            })?);
        }
        threads.push(std::thread::Builder::new().name("rayr-accept".into()).spawn(move || {
            for s in unix.incoming() {
                if (shared.0)() || shut_down(&s) {
                    break;
                }
                if let Ok(s) = s {
                    (shared.1)(Stream::Unix(s));
                }
            }
        })?);
        Ok(Accepting { threads, fds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes per read, like a socket under load.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_of_every_size_survive_any_read_pattern() {
        let sizes = [0usize, 1, 3, 100, 70_000, 5, 300_000, 64 << 10, 2];
        let mut stream = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let msg = EventRun { events: vec![i as u8; *n], count: i as u32, ..Default::default() };
            encode_frame(&msg, &mut stream);
        }
        for chunk in [1, 7, 4096, 65_536, 1 << 20] {
            let mut r = frames::FrameReader::new(Trickle { data: &stream, chunk });
            for (i, n) in sizes.iter().enumerate() {
                let got: EventRun = r.next().unwrap().expect("a frame");
                assert_eq!((got.events.len(), got.count), (*n, i as u32), "chunk {chunk}");
                assert!(got.events.iter().all(|b| *b == i as u8));
            }
            assert!(r.next::<EventRun>().unwrap().is_none(), "clean end");
        }
    }
}

#[cfg(test)]
mod words_tests {
    use super::*;

    /// Each word is the schema's name without the enum's prefix, so the record, the CLI
    /// and the schema never disagree.
    fn check<E: Copy + TryFrom<i32>>(prefix: &str, word: impl Fn(E) -> &'static str, name: impl Fn(&E) -> &'static str) {
        let mut seen = 0;
        for i in 0..256 {
            let Ok(v) = E::try_from(i) else { continue };
            seen += 1;
            let expected = name(&v).strip_prefix(prefix).unwrap().to_ascii_lowercase();
            let expected = if expected == "unspecified" { String::new() } else { expected };
            assert_eq!(word(v), expected, "{}", name(&v));
        }
        assert!(seen > 2, "{prefix}: no values");
    }

    #[test]
    fn words_are_the_schemas_names() {
        check("TASK_ERROR_KIND_", TaskErrorKind::word, TaskErrorKind::as_str_name);
        check("WORKER_EXIT_REASON_", WorkerExitReason::word, WorkerExitReason::as_str_name);
        check("ACTOR_DEATH_CAUSE_", ActorDeathCause::word, ActorDeathCause::as_str_name);
        check("OBJECT_END_REASON_", ObjectEndReason::word, ObjectEndReason::as_str_name);
        check("PEER_KIND_", PeerKind::word, PeerKind::as_str_name);
        check("NODE_END_REASON_", NodeEndReason::word, NodeEndReason::as_str_name);
        check("PAUSE_REASON_", PauseReason::word, PauseReason::as_str_name);
        assert_eq!(TaskErrorKind::from_word("PANIC"), Some(TaskErrorKind::Panic));
        assert_eq!(TaskErrorKind::from_word(""), None);
    }
}
