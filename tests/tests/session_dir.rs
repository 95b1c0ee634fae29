//! A session directory anywhere: clusters run end to end in a `RAYR_TMPDIR` far longer
//! than a Unix socket address holds (108 bytes), their sockets kept in a short directory
//! of the user's own that the session links to (see `rayr_logs::Session`). Every test
//! works in its own RAYR_TMPDIR and checks that no process, socket or shm file outlives it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod support;
use support::{assert_nothing_left, rayr_cli, run, tail, wait_for};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

/// A path of exactly `len` characters under `tmp` (not made yet: rayr makes it).
fn path_of_length(tmp: &Path, len: usize) -> PathBuf {
    let mut p = tmp.to_path_buf();
    while len - p.as_os_str().len() > 60 {
        p.push("d".repeat(50));
    }
    let rest = len - p.as_os_str().len() - 1;
    p.push("e".repeat(rest));
    assert_eq!(p.as_os_str().len(), len);
    p
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The session's socket directory, checked: `sockets` links to a directory that only this
/// user can enter, in a base only they can enter, where every socket path fits in sun_path.
fn socket_dir_of(session: &Path) -> PathBuf {
    let link = session.join("sockets");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink(), "{} is a link", link.display());
    let dir = std::fs::read_link(&link).unwrap();
    for d in [&dir, dir.parent().unwrap()] {
        let meta = std::fs::symlink_metadata(d).unwrap();
        assert!(meta.is_dir(), "{}", d.display());
        assert_eq!(meta.mode() & 0o777, 0o700, "{} is owner-only", d.display());
        assert_eq!(meta.uid(), euid(), "{} is this user's", d.display());
    }
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        assert!(e.path().as_os_str().len() < 108, "{} fits in sun_path", e.path().display());
    }
    dir
}

/// Whether every thread of process `pid` has exited (it is gone, or a zombie not reaped).
fn every_thread_exited(pid: &str) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
    threads.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        stat.rsplit(')').next().is_none_or(|rest| matches!(rest.trim_start().chars().next(), None | Some('Z' | 'X')))
    })
}

fn output_line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key} "))).unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
}

/// Stops the session when dropped, whatever the test did before.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new(rayr_cli()).arg("stop").arg("--session").arg(&self.0).output();
    }
}

/// A head and a second node agent on this host (sharing the session and its socket
/// directory) in a RAYR_TMPDIR of `len` characters: a driver runs nested tasks through
/// the sockets of both, `rayr status` and `rayr list` answer, `rayr stop` leaves nothing;
/// and after the socket directory is gone (/tmp cleared), the session starts again with
/// a new one.
fn a_cluster_runs_in_a_rayr_tmpdir_of(len: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = path_of_length(tmp.path(), len);
    let cli = |args: &[&str]| -> Output {
        run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", &tmpdir).env_remove("RAYR_ADDRESS"), Duration::from_secs(60))
    };
    let ok = |out: Output, what: &str| -> String {
        assert!(out.status.success(), "{what}: {}\n{}", tail(&out.stdout), tail(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let driver = || {
        let out = run(Command::new(SCENARIOS).arg("nested").env("RAYR_TMPDIR", &tmpdir).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
        ok(out, "the driver")
    };

    ok(cli(&["start", "--head", "--port", "0", "--num-cpus", "2"]), "rayr start --head");
    let session = std::fs::canonicalize(tmpdir.join("session_latest")).unwrap();
    let _stop = Stop(session.clone());
    let head = std::fs::read_to_string(session.join("head_address")).unwrap().trim().to_string();
    ok(cli(&["start", "--address", &head, "--node-ip-address", "127.0.0.2", "--num-cpus", "1"]), "rayr start --address");
    let sockets = socket_dir_of(&session);
    let node_sockets = |dir: &Path| {
        std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("node-")).count()
    };
    assert_eq!(node_sockets(&sockets), 4, "both node agents' sockets (client and peer) in the one directory");

    let out = driver();
    assert_eq!(output_line(&out, "SESSION"), session.display().to_string(), "the driver joined the running cluster");
    assert_eq!(output_line(&out, "NESTED"), "50");

    let status: serde_json::Value = serde_json::from_str(&ok(cli(&["status", "--json"]), "rayr status")).unwrap();
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["session_dir"], session.display().to_string());
    let nodes = status["nodes"].as_array().unwrap();
    assert!(nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "ALIVE"), "{status}");
    // level1, two level2, two level3 (the record reaches the head in batches).
    wait_for("the driver's five tasks in `rayr list tasks`", Duration::from_secs(20), || {
        let rows: serde_json::Value = serde_json::from_str(&ok(cli(&["list", "tasks", "--filter", "state=finished", "--json"]), "rayr list")).unwrap();
        rows.as_array().unwrap().len() == 5
    });

    ok(cli(&["stop"]), "rayr stop");
    assert_nothing_left(&session);
    assert_eq!(std::fs::read_dir(&sockets).unwrap().count(), 0, "no socket left");

    // /tmp cleared under the stopped session; its head starts on it again, once the old
    // one has let go of the index: `rayr stop` returns when its main thread has exited,
    // and its other threads may still hold their files a moment.
    std::fs::remove_dir_all(&sockets).unwrap();
    for pid in std::fs::read_to_string(session.join("pids")).unwrap().lines() {
        wait_for(&format!("every thread of process {pid} to exit"), Duration::from_secs(10), || every_thread_exited(pid));
    }
    ok(cli(&["start", "--head", "--session", session.to_str().unwrap(), "--port", "0", "--num-cpus", "2"]), "rayr start --head --session");
    let again = socket_dir_of(&session);
    assert_ne!(again, sockets, "a new socket directory");
    assert_eq!(output_line(&driver(), "NESTED"), "50");
    ok(cli(&["stop"]), "rayr stop");
    assert_nothing_left(&session);
    // The stopped session's socket directory stays while the session does (a handle from
    // it still names it); this test's goes with its RAYR_TMPDIR.
    assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0, "no socket left");
    let mut back_link = again.clone().into_os_string();
    back_link.push(".session");
    assert_eq!(std::fs::read_link(&back_link).unwrap(), session, "the socket directory names its session");
    rayr_logs::Session::open(&session).remove_socket_dir();
    assert!(!again.exists() && std::fs::symlink_metadata(&back_link).is_err());
}

#[test]
fn a_cluster_runs_in_a_48_character_rayr_tmpdir() {
    a_cluster_runs_in_a_rayr_tmpdir_of(48);
}

#[test]
fn a_cluster_runs_in_a_150_character_rayr_tmpdir() {
    a_cluster_runs_in_a_rayr_tmpdir_of(150);
}

#[test]
fn an_embedded_cluster_runs_in_a_150_character_rayr_tmpdir() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = path_of_length(tmp.path(), 150);
    let out = run(Command::new(SCENARIOS).arg("nested").env("RAYR_TMPDIR", &tmpdir).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", tail(&out.stderr));
    assert_eq!(output_line(&stdout, "NESTED"), "50");
    let session = PathBuf::from(output_line(&stdout, "SESSION"));
    assert!(session.starts_with(&tmpdir), "{}", session.display());
    assert_nothing_left(&session);
    let sockets = socket_dir_of(&session);
    assert_eq!(std::fs::read_dir(&sockets).unwrap().count(), 0, "no socket left");
    rayr_logs::Session::open(&session).remove_socket_dir();
    assert!(!sockets.exists());
}
