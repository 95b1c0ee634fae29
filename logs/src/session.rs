//! The session directory: one per cluster start (or embedded `init()`), and where its
//! Unix sockets live.
//!
//! A Unix socket's address must fit in `sun_path` (108 bytes with its NUL), and a session
//! directory may be anywhere (`RAYR_TMPDIR` of any length). So the sockets are not kept in
//! the session directory itself: each session has a socket directory of its own under one
//! short directory per user, and the session's `sockets` entry links to it:
//!
//! ```text
//! /tmp/rayr-sockets-<uid>/            mode 0700, the user's own (someone else's is refused)
//!   <key>/                            mode 0700: node-<id>.sock, node-<id>.peer, w-<id>.sock
//!   <key>.session -> $RAYR_TMPDIR/session_…   the session the key belongs to
//! $RAYR_TMPDIR/session_…/sockets -> /tmp/rayr-sockets-<uid>/<key>
//! ```
//!
//! The longest socket path is then 64 bytes whatever `RAYR_TMPDIR` is. Both links are
//! there so that each side finds the other: tools looking under the session (`rayr stop`,
//! `rayr memory`, drivers) find the sockets, and a process holding a socket address (a
//! worker given its node agent's socket, an actor handle naming its owner's) finds the
//! session ([`Session::of_socket`]). A key is never reused (its directory is made with
//! `mkdir`, which fails if it exists), so two sessions never share a socket directory.
//!
//! Stopping a cluster removes its sockets, not its socket directory: like the session
//! directory, that stays, so a handle from a stopped cluster still names its session. A
//! socket directory is stale once its session directory is gone and nothing listens on
//! its sockets any more; the next session created on the host removes it. A session whose
//! socket directory went (a reboot cleared /tmp) gets a new one when a node agent starts
//! on it again ([`Session::prepare_sockets`]).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `$RAYR_TMPDIR`, or `/tmp/rayr`.
pub fn tmpdir() -> PathBuf {
    std::env::var_os("RAYR_TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rayr"))
}

/// A session directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Session {
    pub dir: PathBuf,
}

/// The per-user directory holding every session's socket directory: short whatever
/// `RAYR_TMPDIR` is. In /tmp rather than `$XDG_RUNTIME_DIR`, which goes when the user's
/// last login ends, under a cluster started from it.
fn sockets_base() -> PathBuf {
    PathBuf::from(format!("/tmp/rayr-sockets-{}", euid()))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A socket directory younger than this is kept by a sweep even if it looks unused: it
/// may be one a session is being made with right now (its links are made after it).
const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// `<dir>.session`: the link from a socket directory to its session.
fn session_link(socket_dir: &Path) -> PathBuf {
    let mut name = socket_dir.as_os_str().to_owned();
    name.push(".session");
    PathBuf::from(name)
}

/// Makes (or checks) the per-user base. It must be a real directory of this user that
/// nobody else can enter: one someone else made first in the shared /tmp is refused (its
/// owner could replace the sockets in it).
fn prepare_base(base: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot make {}, where rayr keeps this user's sockets: {e}", base.display()))),
    }
    let meta = fs::symlink_metadata(base)?;
    if !meta.is_dir() || meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of yours ({}, owned by uid {}; you are uid {}), and rayr keeps your sockets there: have its owner (or root) remove it",
                base.display(),
                if meta.is_dir() { "a directory" } else if meta.is_symlink() { "a symbolic link" } else { "a file" },
                meta.uid(),
                euid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        // The user's own, opened to others since (by hand): only its owner may reach sockets.
        fs::set_permissions(base, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether `socket_dir` serves the session at `session_dir` (canonical): a directory of
/// this user that only they can enter, linked back to that session.
fn serves(socket_dir: &Path, session_dir: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(socket_dir) else { return false };
    meta.is_dir()
        && meta.uid() == euid()
        && meta.mode() & 0o077 == 0
        && fs::canonicalize(session_link(socket_dir)).is_ok_and(|s| s == session_dir)
}

/// Removes the socket directories under `base` that are stale (see the module doc), and
/// the links naming them.
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    let young = |meta: &fs::Metadata| meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age < SWEEP_GRACE);
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let link = session_link(&path);
        let stale = if meta.is_dir() {
            match fs::read_link(&link) {
                // Its session is gone (or out of sight: another mount namespace may hide
                // it), and so are the processes that listened here.
                Ok(session) => !session.is_dir() && !young(&meta) && !any_listening(&path),
                // Left half-made (its maker died before linking it).
                Err(_) => !young(&meta),
            }
        } else {
            // A `.session` link whose directory went.
            meta.is_symlink() && path.extension().is_some_and(|e| e == "session") && !path.with_extension("").exists()
        };
        if stale {
            if meta.is_dir() {
                let _ = fs::remove_dir_all(&path);
                let _ = fs::remove_file(&link);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Whether a process listens on any socket in `dir`.
fn any_listening(dir: &Path) -> bool {
    fs::read_dir(dir).map(|d| d.flatten().any(|e| listening(&e.path()))).unwrap_or(false)
}

/// Whether something listens on the Unix socket at `path`, asked without waiting (a
/// listener whose queue is full, or one stopped with SIGSTOP, counts as listening).
fn listening(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return false; // no socket can be bound there
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: creates a socket; the descriptor is checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return true; // cannot tell: keep it
    }
    // SAFETY: `addr` is an initialized sockaddr_un and its size is the one passed.
    let r = unsafe { libc::connect(fd, (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t) };
    let refused = r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN);
    // SAFETY: `fd` is this function's own descriptor, closed once.
    unsafe { libc::close(fd) };
    !refused
}

impl Session {
    /// Creates `session_<date>_<pid>` under `tmpdir` with its subdirectories and its socket
    /// directory, and points `session_latest` at it (atomically: a new link renamed over
    /// the old one). `tmpdir` may be any length (see the module doc).
    pub fn create(tmpdir: &Path) -> io::Result<Session> {
        Self::create_with_sockets_in(tmpdir, &sockets_base())
    }

    fn create_with_sockets_in(tmpdir: &Path, base: &Path) -> io::Result<Session> {
        fs::create_dir_all(tmpdir)?;
        // One spelling of the session's paths for every process (a relative or symlinked
        // RAYR_TMPDIR would otherwise give the same session two names): paths compare.
        let tmpdir = &fs::canonicalize(tmpdir)?;
        let stamp = jiff::ZonedDateTime::now().strftime("%Y-%m-%d_%H-%M-%S");
        let base_name = format!("session_{stamp}_{}", std::process::id());
        let mut name = base_name.clone();
        let mut n = 1;
        while tmpdir.join(&name).exists() {
            n += 1;
            name = format!("{base_name}_{n}");
        }
        let session = Session { dir: tmpdir.join(&name) };
        for sub in ["logs", "events", "spilled_objects"] {
            fs::create_dir_all(session.dir.join(sub))?;
        }
        if let Err(e) = session.prepare_sockets_in(base) {
            let _ = fs::remove_dir_all(&session.dir);
            return Err(e);
        }
        let tmp_link = tmpdir.join(format!(".session_latest.{}", std::process::id()));
        let _ = fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&name, &tmp_link)?;
        fs::rename(&tmp_link, tmpdir.join("session_latest"))?;
        Ok(session)
    }

    /// Makes sure the session has its socket directory and returns it: the one its
    /// `sockets` link names while that is there, this user's and closed to others; else a
    /// new one, linked both ways (a resumed session whose directory was swept or cleared
    /// with /tmp). Node agents call it before they bind; those sharing a session agree.
    pub fn prepare_sockets(&self) -> io::Result<PathBuf> {
        self.prepare_sockets_in(&sockets_base())
    }

    fn prepare_sockets_in(&self, base: &Path) -> io::Result<PathBuf> {
        let link = self.dir.join("sockets");
        let session_dir = fs::canonicalize(&self.dir)?;
        // Node agents of one host that share the session may start together: one of them
        // makes the directory, the others find it.
        let guard = fs::File::open(&session_dir)?;
        guard.lock()?;
        if let Ok(dir) = fs::read_link(&link) {
            let dir = session_dir.join(dir); // a relative link is relative to the session
            if serves(&dir, &session_dir) {
                return Ok(dir);
            }
        }
        prepare_base(base)?;
        sweep(base);
        let dir = loop {
            let dir = base.join(&crate::hex(&crate::new_id())[..8]);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("cannot make a socket directory in {}: {e}", base.display()))),
            }
        };
        // Exactly owner-only, whatever the umask.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::symlink(&session_dir, session_link(&dir))?;
        // What was there goes: a link to a directory that is gone or no longer closed to
        // others, or an empty `sockets/` of a session made before socket directories.
        match fs::symlink_metadata(&link) {
            Ok(m) if m.is_dir() => fs::remove_dir(&link).map_err(|e| io::Error::new(e.kind(), format!("cannot replace {} with a link to {}: {e}", link.display(), dir.display())))?,
            Ok(_) => fs::remove_file(&link)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&dir, &link)?;
        drop(guard);
        Ok(dir)
    }

    /// Removes the session's socket directory and the links between them, for a session
    /// directory about to be deleted (a start that failed): nothing of it stays in /tmp.
    /// Only a directory that serves this session goes.
    pub fn remove_socket_dir(&self) {
        let link = self.dir.join("sockets");
        let (Ok(dir), Ok(session_dir)) = (fs::read_link(&link), fs::canonicalize(&self.dir)) else { return };
        let dir = session_dir.join(dir);
        if serves(&dir, &session_dir) {
            let _ = fs::remove_dir_all(&dir);
            let _ = fs::remove_file(session_link(&dir));
        }
        let _ = fs::remove_file(&link);
    }

    /// The session a socket of this host belongs to (`path` may end in `|HOST:PORT`, as
    /// process addresses do), while its socket directory is there.
    pub fn of_socket(path: &Path) -> Option<Session> {
        let dir = path.parent()?;
        if let Ok(session) = fs::read_link(session_link(dir)) {
            return Some(Session { dir: session });
        }
        // A session made before socket directories: `sockets/` inside it.
        if dir.file_name()? == "sockets" { Some(Session { dir: dir.parent()?.to_path_buf() }) } else { None }
    }

    /// The session `session_latest` points at, if any.
    pub fn latest(tmpdir: &Path) -> Option<Session> {
        let dir = fs::canonicalize(tmpdir.join("session_latest")).ok()?;
        dir.is_dir().then_some(Session { dir })
    }

    pub fn open(dir: impl Into<PathBuf>) -> Session {
        Session { dir: dir.into() }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn events_dir(&self) -> PathBuf {
        self.dir.join("events")
    }
    /// Where the session's sockets are: the socket directory its `sockets` link names (see
    /// the module doc), or `sockets/` itself in a session made before socket directories.
    pub fn sockets_dir(&self) -> PathBuf {
        let link = self.dir.join("sockets");
        match fs::read_link(&link) {
            Ok(dir) => self.dir.join(dir),
            Err(_) => link,
        }
    }
    /// `events/events-<node>.log`: every event recorded on that node.
    pub fn event_log(&self, node_hex: &str) -> PathBuf {
        self.events_dir().join(format!("events-{node_hex}.log"))
    }
    /// Every event log of the session, sorted by name.
    pub fn event_logs(&self) -> io::Result<Vec<PathBuf>> {
        let mut logs: Vec<PathBuf> = fs::read_dir(self.events_dir())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("events-") && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        Ok(logs)
    }
    /// `logs/worker-<worker>-<pid>.out` / `.err`.
    pub fn worker_log(&self, worker_hex: &str, pid: u32, ext: &str) -> PathBuf {
        self.logs_dir().join(format!("worker-{worker_hex}-{pid}.{ext}"))
    }
    /// Holds `HOST:PORT` of the head's gRPC service while it runs.
    pub fn head_address_file(&self) -> PathBuf {
        self.dir.join("head_address")
    }
    /// Holds the pid of every long-lived rayr process started for this session (one a line).
    pub fn pids_file(&self) -> PathBuf {
        self.dir.join("pids")
    }
    /// The node agent's Unix socket.
    pub fn node_socket(&self, node_hex: &str) -> PathBuf {
        self.sockets_dir().join(format!("node-{}.sock", &node_hex[..node_hex.len().min(16)]))
    }
    /// Names the socket of the head's own node agent (drivers of this host connect there
    /// when several node agents share the session directory).
    pub fn head_node_file(&self) -> PathBuf {
        self.dir.join("head_node")
    }
    /// The node agent a driver of this host connects to: the head's, else the only one.
    pub fn local_node_socket(&self) -> Option<PathBuf> {
        if let Ok(p) = fs::read_to_string(self.head_node_file()) {
            let p = PathBuf::from(p.trim());
            if p.exists() {
                return Some(p);
            }
        }
        fs::read_dir(self.sockets_dir())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("node-") && n.ends_with(".sock")))
    }
    /// The node agent's peer socket: core workers ask it about the detached actors it holds
    /// (where one lives, kill it), as they would ask an actor's owner.
    pub fn node_peer_socket(&self, node_hex: &str) -> PathBuf {
        self.sockets_dir().join(format!("node-{}.peer", &node_hex[..node_hex.len().min(16)]))
    }
    /// A driver's or worker's own Unix socket (peers push tasks and ask for objects there).
    pub fn worker_socket(&self, worker_hex: &str) -> PathBuf {
        self.sockets_dir().join(format!("w-{}.sock", &worker_hex[..worker_hex.len().min(16)]))
    }
    /// The path of the head's address, if the file is there.
    pub fn head_address(&self) -> Option<String> {
        let s = fs::read_to_string(self.head_address_file()).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A session made under `tmpdir` with its socket directory under `base`.
    fn create(tmpdir: &Path, base: &Path) -> Session {
        Session::create_with_sockets_in(tmpdir, base).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    /// Makes `p`'s modification time older than a sweep's grace.
    fn age(p: &Path) {
        let old = std::time::SystemTime::now() - SWEEP_GRACE - Duration::from_secs(5);
        fs::File::open(p).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn create_makes_layout_and_latest_link() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let s1 = create(tmp.path(), base.path());
        for sub in ["logs", "events", "sockets", "spilled_objects"] {
            assert!(s1.dir.join(sub).is_dir(), "{sub} missing");
        }
        assert_eq!(Session::latest(tmp.path()).unwrap().dir, s1.dir.canonicalize().unwrap());
        let s2 = create(tmp.path(), base.path());
        assert_ne!(s1.dir, s2.dir);
        assert_eq!(Session::latest(tmp.path()).unwrap().dir, s2.dir.canonicalize().unwrap());
    }

    #[test]
    fn a_tmpdir_of_any_length_keeps_socket_paths_short() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let base = base.path().join("rayr-sockets-4294967295");
        // 150 and 400 characters: both far past what fits in sun_path.
        for len in [150, 400] {
            let mut long = tmp.path().to_path_buf();
            while long.as_os_str().len() < len {
                long.push("a-rather-long-directory-name");
            }
            let s = create(&long, &base);
            assert!(s.dir.starts_with(&long) || s.dir.starts_with(fs::canonicalize(&long).unwrap()));
            let node = "0123456789abcdef0123456789abcdef";
            for socket in [s.node_socket(node), s.node_peer_socket(node), s.worker_socket(node)] {
                assert!(socket.starts_with(&base), "{} is not under {}", socket.display(), base.display());
                assert!(socket.as_os_str().len() < 108, "{} does not fit in sun_path", socket.display());
                // Bound through its short path, found under the session, and the session
                // found from it.
                let _listener = UnixListener::bind(&socket).unwrap();
                assert!(s.dir.join("sockets").join(socket.file_name().unwrap()).exists());
                assert_eq!(Session::of_socket(&socket).unwrap().dir, s.dir);
            }
            assert_eq!(s.local_node_socket().unwrap(), s.node_socket(node));
            let tail = format!("{}|127.0.0.1:4242", s.worker_socket(node).display());
            assert_eq!(Session::of_socket(Path::new(&tail)).unwrap().dir, s.dir, "an address with a TCP tail");
        }
    }

    #[test]
    fn socket_directories_are_the_users_alone_and_never_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let base = base.path().join("sockets");
        let sessions: Vec<Session> = (0..5).map(|_| create(tmp.path(), &base)).collect();
        assert_eq!(mode(&base), 0o700);
        let mut dirs: Vec<PathBuf> = sessions.iter().map(|s| s.sockets_dir()).collect();
        for d in &dirs {
            assert_eq!(mode(d), 0o700, "{}", d.display());
            assert_eq!(fs::metadata(d).unwrap().uid(), euid());
        }
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), sessions.len(), "two sessions share a socket directory");
        // Node agents sharing a session (and a resumed one) use the directory it has.
        for s in &sessions {
            assert_eq!(s.prepare_sockets_in(&base).unwrap(), s.sockets_dir());
        }
    }

    #[test]
    fn a_base_opened_to_others_is_closed_and_one_not_the_users_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        fs::create_dir(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        create(&tmp.path().join("t"), &base);
        assert_eq!(mode(&base), 0o700, "closed to others again");

        // Someone made a link where the base goes (to a directory of theirs, say).
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = tmp.path().join("linked");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = Session::create_with_sockets_in(&tmp.path().join("t"), &link).unwrap_err();
        assert!(err.to_string().contains("not a directory of yours") && err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing made there");
        // Nothing half-made is left in the session's place either.
        let t = fs::canonicalize(tmp.path().join("t")).unwrap();
        assert_eq!(fs::read_dir(&t).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("session_2")).count(), 1);

        if euid() == 0 {
            let theirs = tmp.path().join("theirs");
            fs::DirBuilder::new().mode(0o700).create(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
            let err = Session::create_with_sockets_in(&tmp.path().join("t"), &theirs).unwrap_err();
            assert!(err.to_string().contains("owned by uid 4242"), "{err}");
        }
    }

    #[test]
    fn a_socket_directory_that_went_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let s = create(tmp.path(), base.path());
        let first = s.sockets_dir();
        // /tmp cleared under a stopped session, then a node agent starts on it again.
        fs::remove_dir_all(&first).unwrap();
        let again = s.prepare_sockets_in(base.path()).unwrap();
        assert_ne!(again, first);
        assert_eq!(s.sockets_dir(), again);
        assert_eq!(mode(&again), 0o700);
        assert_eq!(Session::of_socket(&s.node_socket("ab")).unwrap().dir, s.dir);
        // A link to a directory opened to others is not trusted either.
        fs::set_permissions(&again, fs::Permissions::from_mode(0o755)).unwrap();
        let third = s.prepare_sockets_in(base.path()).unwrap();
        assert!(third != again && s.sockets_dir() == third);
    }

    #[test]
    fn a_deleted_session_takes_its_socket_directory_along() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let (s, other) = (create(tmp.path(), base.path()), create(tmp.path(), base.path()));
        let dir = s.sockets_dir();
        s.remove_socket_dir();
        assert!(fs::symlink_metadata(&dir).is_err() && fs::symlink_metadata(session_link(&dir)).is_err());
        assert!(fs::symlink_metadata(s.dir.join("sockets")).is_err());
        assert!(other.sockets_dir().is_dir(), "another session's stays");
        // A link made to point at another session's directory does not take that one along.
        std::os::unix::fs::symlink(other.sockets_dir(), s.dir.join("sockets")).unwrap();
        s.remove_socket_dir();
        assert!(other.sockets_dir().is_dir());
    }

    #[test]
    fn stale_socket_directories_go_and_live_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let session = |name: &str| create(&tmp.path().join(name), base);
        // Sessions whose directories are deleted: one with a process still listening, one
        // whose process died (its socket file left), one with no socket at all.
        let (listening, dead, empty) = (session("a"), session("b"), session("c"));
        let _listener = UnixListener::bind(listening.worker_socket("aa")).unwrap();
        drop(UnixListener::bind(dead.worker_socket("bb")).unwrap());
        // A session that is still there (stopped: its socket directory stays with it), and
        // one deleted just now (younger than the grace).
        let (kept, recent) = (session("d"), session("e"));
        // Half-made: a socket directory never linked to a session, old and new.
        let (half_old, half_new) = (base.join("0000aaaa"), base.join("0000bbbb"));
        fs::create_dir(&half_old).unwrap();
        fs::create_dir(&half_new).unwrap();
        for s in [&listening, &dead, &empty, &kept] {
            age(&s.sockets_dir());
        }
        age(&half_old);
        let dirs = [&listening, &dead, &empty, &kept, &recent].map(|s| s.sockets_dir());
        for s in [&listening, &dead, &empty, &recent] {
            fs::remove_dir_all(s.dir.parent().unwrap()).unwrap();
        }
        session("f"); // sweeps
        let there = |p: &Path| fs::symlink_metadata(p).is_ok();
        assert!(there(&dirs[0]) && there(&session_link(&dirs[0])), "a listening process keeps its directory");
        assert!(!there(&dirs[1]) && !there(&session_link(&dirs[1])), "dead sockets of a deleted session go");
        assert!(!there(&dirs[2]) && !there(&session_link(&dirs[2])), "an empty directory of a deleted session goes");
        assert!(there(&dirs[3]), "a session that is still there keeps its directory");
        assert!(there(&dirs[4]), "a directory younger than the grace stays");
        assert!(!there(&half_old) && there(&half_new), "half-made: the old one goes, the new one may be in the making");
        // A `.session` link whose directory went goes too.
        let orphan = base.join("0000cccc.session");
        std::os::unix::fs::symlink(&kept.dir, &orphan).unwrap();
        session("g");
        assert!(fs::symlink_metadata(&orphan).is_err());
    }
}
