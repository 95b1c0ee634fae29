//! Worker processes: how they are started and how their end is described.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rayr_explain::signal::Signal;
use rayr_proto::{WorkerExit, WorkerExitReason, WorkerExitType};

/// Environment variables a worker process is started with. `#[rayr::main]` checks
/// [`WORKER_MODE`](env::WORKER_MODE) before anything else in `main` runs.
pub mod env {
    pub const WORKER_MODE: &str = "RAYR_WORKER_MODE";
    pub const NODE_SOCKET: &str = "RAYR_NODE_SOCKET";
    /// The node's IP, on a node other hosts reach: the worker listens on TCP there too.
    pub const NODE_IP: &str = "RAYR_NODE_IP";
    /// The ports (`MIN-MAX`) its TCP listener may take.
    pub const WORKER_PORTS: &str = "RAYR_WORKER_PORTS";
    /// Its stdout and stderr files rotate past this many bytes, keeping this many old ones.
    pub const LOG_ROTATE_BYTES: &str = "RAYR_LOG_ROTATE_BYTES";
    pub const LOG_ROTATE_KEEP: &str = "RAYR_LOG_ROTATE_KEEP";
    pub const WORKER_ID: &str = "RAYR_WORKER_ID";
    pub const JOB_ID: &str = "RAYR_JOB_ID";
    pub const SESSION_DIR: &str = "RAYR_SESSION_DIR";
}

/// Sends `sig` to process `pid` (a worker this agent started). One already gone is no
/// error: its reaper reports its end.
pub(crate) fn send_signal(pid: u32, sig: nix::sys::signal::Signal) {
    // Never 0 or a negative number: those name process groups, or every process.
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Whether process `pid` exists (no signal is sent). Not a positive pid: assumed to, so
/// that nothing is removed on its account.
pub(crate) fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Ok(()) | Err(nix::errno::Errno::EPERM))
}

/// How a worker ended, from its wait status and, when rayr stopped it on purpose, why
/// (`by_user`: because the user asked, as with `rayr::kill`).
pub fn describe_exit(status: libc::c_int, intended: Option<(WorkerExitReason, &str)>, by_user: bool) -> WorkerExit {
    let mut exit = WorkerExit { exit_code: -1, ..Default::default() };
    if libc::WIFSIGNALED(status) {
        exit.signal = libc::WTERMSIG(status);
    } else if libc::WIFEXITED(status) {
        exit.exit_code = libc::WEXITSTATUS(status);
    }
    let (kind, reason, detail) = match (intended, exit.signal, exit.exit_code) {
        (Some((reason, why)), _, _) if by_user => (WorkerExitType::IntendedUserExit, reason, why.to_string()),
        (Some((reason, why)), _, _) => (WorkerExitType::IntendedSystemExit, reason, why.to_string()),
        (None, 0, 0) => (
            WorkerExitType::IntendedUserExit,
            WorkerExitReason::ProcessExit,
            "exited with code 0 while rayr still counted on it (std::process::exit in user code?)".to_string(),
        ),
        (None, 0, code) => (WorkerExitType::UserError, WorkerExitReason::ProcessExit, format!("exited with code {code}")),
        (None, sig, _) => (
            WorkerExitType::SystemError,
            WorkerExitReason::Signal,
            Signal::of(sig).map(Signal::exit_detail).unwrap_or_default(),
        ),
    };
    exit.exit_type = kind as i32;
    exit.reason = reason as i32;
    exit.detail = detail;
    exit
}

/// The last `lines` lines of a file (at most 64 KiB are read).
pub fn tail_lines(path: &Path, lines: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 << 10);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::new();
    let _ = f.read_to_end(&mut data);
    let text = String::from_utf8_lossy(&data);
    let mut all: Vec<String> = text.lines().map(str::to_string).collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // probably cut in the middle
    }
    let from = all.len().saturating_sub(lines);
    all.split_off(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_status(cmd: &str) -> libc::c_int {
        use std::os::unix::process::ExitStatusExt;
        std::process::Command::new("sh").arg("-c").arg(cmd).status().unwrap().into_raw()
    }

    #[test]
    fn exits_are_described_by_cause() {
        let e = describe_exit(wait_status("kill -9 $$"), None, false);
        assert_eq!(e.signal, 9);
        assert_eq!(e.exit_type, WorkerExitType::SystemError as i32);
        assert_eq!(e.reason(), WorkerExitReason::Signal);
        assert!(e.detail.contains("SIGKILL") && e.detail.contains("dmesg"), "{}", e.detail);

        let e = describe_exit(wait_status("exit 3"), None, false);
        assert_eq!((e.exit_code, e.signal), (3, 0));
        assert_eq!(e.exit_type, WorkerExitType::UserError as i32);

        let e = describe_exit(wait_status("kill -15 $$"), Some((WorkerExitReason::NodeStopping, "node shutting down")), false);
        assert_eq!(e.exit_type, WorkerExitType::IntendedSystemExit as i32);
        assert_eq!(e.reason(), WorkerExitReason::NodeStopping);
        assert_eq!(e.detail, "node shutting down");
    }

    #[test]
    fn tail_reads_last_lines() {
        let dir = std::env::temp_dir().join(format!("rayr-tail-{}", std::process::id()));
        std::fs::write(&dir, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_lines(&dir, 2), vec!["c", "d"]);
        std::fs::remove_file(&dir).unwrap();
    }
}
