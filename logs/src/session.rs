//! The session directory: one per cluster start (or embedded `init()`).

use std::io;
use std::path::{Path, PathBuf};

/// `$RAYR_TMPDIR`, or `/tmp/rayr`.
pub fn tmpdir() -> PathBuf {
    std::env::var_os("RAYR_TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rayr"))
}

/// Longest path a Unix socket address holds (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A session directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Session {
    pub dir: PathBuf,
}

/// sockets/ paths inside a session under `tmpdir` must fit a Unix socket address.
fn fits_socket_paths(tmpdir: &Path) -> io::Result<()> {
    let longest_socket = tmpdir.as_os_str().len() + "/session_2026-11-25_20-01-02_4194304_99/sockets/node-0123456789abcdef.sock".len();
    if longest_socket > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the session directory {} is too long for Unix socket paths ({longest_socket} of at most {MAX_SOCKET_PATH} bytes): set RAYR_TMPDIR to a path of at most {} characters",
                tmpdir.display(),
                tmpdir.as_os_str().len().saturating_sub(longest_socket - MAX_SOCKET_PATH)
            ),
        ));
    }
    Ok(())
}

impl Session {
    /// Creates `session_<date>_<pid>` under `tmpdir` with its subdirectories and points
    /// `session_latest` at it (atomically: a new link renamed over the old one).
    pub fn create(tmpdir: &Path) -> io::Result<Session> {
        fits_socket_paths(tmpdir)?;
        std::fs::create_dir_all(tmpdir)?;
        // One spelling of the session's paths for every process (a relative or symlinked
        // RAYR_TMPDIR would otherwise give the same socket two names): addresses compare.
        let tmpdir = &std::fs::canonicalize(tmpdir)?;
        fits_socket_paths(tmpdir)?;
        let stamp = jiff::ZonedDateTime::now().strftime("%Y-%m-%d_%H-%M-%S");
        let base = format!("session_{stamp}_{}", std::process::id());
        let mut name = base.clone();
        let mut n = 1;
        while tmpdir.join(&name).exists() {
            n += 1;
            name = format!("{base}_{n}");
        }
        let session = Session { dir: tmpdir.join(&name) };
        for sub in ["logs", "events", "sockets", "spilled_objects"] {
            std::fs::create_dir_all(session.dir.join(sub))?;
        }
        let tmp_link = tmpdir.join(format!(".session_latest.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&name, &tmp_link)?;
        std::fs::rename(&tmp_link, tmpdir.join("session_latest"))?;
        Ok(session)
    }

    /// The session `session_latest` points at, if any.
    pub fn latest(tmpdir: &Path) -> Option<Session> {
        let dir = std::fs::canonicalize(tmpdir.join("session_latest")).ok()?;
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
    pub fn sockets_dir(&self) -> PathBuf {
        self.dir.join("sockets")
    }
    /// `events/events-<node>.log`: every event recorded on that node.
    pub fn event_log(&self, node_hex: &str) -> PathBuf {
        self.events_dir().join(format!("events-{node_hex}.log"))
    }
    /// Every event log of the session, sorted by name.
    pub fn event_logs(&self) -> io::Result<Vec<PathBuf>> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.events_dir())?
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
    /// The head's embedded store.
    pub fn head_db(&self) -> PathBuf {
        self.dir.join("head.redb")
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
        if let Ok(p) = std::fs::read_to_string(self.head_node_file()) {
            let p = PathBuf::from(p.trim());
            if p.exists() {
                return Some(p);
            }
        }
        std::fs::read_dir(self.sockets_dir())
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
    /// Names are short: a socket path must fit in 107 bytes.
    pub fn worker_socket(&self, worker_hex: &str) -> PathBuf {
        self.sockets_dir().join(format!("w-{}.sock", &worker_hex[..worker_hex.len().min(16)]))
    }
    /// The path of the head's address, if the file is there.
    pub fn head_address(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.head_address_file()).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tmpdir_too_long_for_socket_paths_is_refused_up_front() {
        let long = std::env::temp_dir().join("x".repeat(80));
        let err = Session::create(&long).unwrap_err();
        assert!(err.to_string().contains("RAYR_TMPDIR"), "{err}");
        assert!(!long.exists(), "nothing created");
    }

    #[test]
    fn create_makes_layout_and_latest_link() {
        let tmp = tempfile::tempdir().unwrap();
        let s1 = Session::create(tmp.path()).unwrap();
        for sub in ["logs", "events", "sockets", "spilled_objects"] {
            assert!(s1.dir.join(sub).is_dir(), "{sub} missing");
        }
        assert_eq!(Session::latest(tmp.path()).unwrap().dir, s1.dir.canonicalize().unwrap());
        let s2 = Session::create(tmp.path()).unwrap();
        assert_ne!(s1.dir, s2.dir);
        assert_eq!(Session::latest(tmp.path()).unwrap().dir, s2.dir.canonicalize().unwrap());
    }
}
