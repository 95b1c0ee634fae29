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

/// A session directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Session {
    pub dir: PathBuf,
}

impl Session {
    /// Creates `session_<date>_<pid>` under `tmpdir` with its subdirectories and points
    /// `session_latest` at it (atomically: a new link renamed over the old one).
    pub fn create(tmpdir: &Path) -> io::Result<Session> {
        std::fs::create_dir_all(tmpdir)?;
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
        self.sockets_dir().join(format!("node-{node_hex}.sock"))
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
