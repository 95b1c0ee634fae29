//! What the real-cluster tests share: running commands with a deadline, the `rayr` CLI,
//! checking that a session left nothing behind, and [`TestCluster`], a head and N node
//! agents as real processes on distinct loopback addresses.

#![allow(dead_code)] // each test file uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rayr_proto::Event;

/// The `rayr` CLI, built beside the test binaries (`cargo build --workspace --bins`).
pub fn rayr_cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let cli = exe.parent().unwrap().parent().unwrap().join("rayr");
    assert!(cli.exists(), "{} is missing: run `cargo build --workspace --bins` first", cli.display());
    cli
}

/// Runs a command to completion within `limit`, killing it if it hangs. Its output is
/// drained while it runs (a child blocked on a full pipe would never finish).
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}", tail(&out.stdout), tail(&out.stderr));
        }
    }
}

/// The end of a long output, for failure messages.
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut = text.len().saturating_sub(3000);
    let start = (cut..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    format!("{}{}", if cut > 0 { "…" } else { "" }, &text[start..])
}

/// No process of the session is alive, no socket is left, and no shm store of it remains.
pub fn assert_nothing_left(session: &Path) {
    let needle = format!("RAYR_SESSION_DIR={}", session.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .filter(|e| !std::fs::read_to_string(e.path().join("stat")).unwrap_or_default().contains(") Z"))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        let sockets: Vec<_> = std::fs::read_dir(session.join("sockets")).map(|d| d.flatten().collect()).unwrap_or_default();
        if alive.is_empty() && sockets.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: processes {alive:?}, sockets {sockets:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let session_pid = session.file_name().unwrap().to_str().unwrap().rsplit('_').next().unwrap().to_string();
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        assert!(!name.starts_with(&format!("rayr-{session_pid}-")), "shm store {name} left behind");
    }
}


/// Every event of a session's logs, oldest first.
pub fn session_events(session: &Path) -> Vec<Event> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(session.join("events")).unwrap() {
        all.extend(rayr_logs::read_events(&entry.unwrap().path()).unwrap());
    }
    all.sort_by_key(|e| e.time_us);
    all
}

/// Waits for `f` to hold, polling, for at most `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free port below the kernel's ephemeral range (32768 and up), for a head that must
/// come back on the same port: clients retrying an ephemeral-range port on loopback while
/// nothing listens can end up connected to themselves on it (TCP self-connect), holding it.
pub fn free_low_port() -> u16 {
    let start = 20_000 + (std::process::id() % 9_000) as u16;
    (start..30_000).chain(20_000..start).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a free port")
}

/// Where and how a node of a [`TestCluster`] starts.
pub struct NodeSpec {
    pub ip: String,
    /// A network namespace to start it in (see [`NetNs`]).
    pub netns: Option<String>,
    /// Directories the node must not see (as on another host): it starts in a mount
    /// namespace of its own with an empty tmpfs over each (needs root and `unshare`).
    pub hide: Vec<PathBuf>,
    /// Extra `rayr start` flags.
    pub flags: Vec<String>,
    /// Its own `RAYR_TMPDIR` (as on another host); None: the cluster's.
    pub tmpdir: Option<PathBuf>,
}

/// A network namespace joined to this one by a veth pair (this side `host_ip`, its side
/// `ns_ip`): a node agent started in it reaches the rest of the cluster only over that
/// link, which `cut` takes down and `heal` brings back. Needs root and `ip`; `create`
/// says why not otherwise. Dropping it deletes the namespace and the link.
pub struct NetNs {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
    host_if: String,
    ns_if: String,
}

impl NetNs {
    pub fn create() -> Result<NetNs, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let pid = std::process::id();
        let net = 1 + pid % 250;
        let ns = NetNs {
            name: format!("rayr-test-{pid}"),
            host_ip: format!("10.201.{net}.1"),
            ns_ip: format!("10.201.{net}.2"),
            host_if: format!("rp{pid}a"),
            ns_if: format!("rp{pid}b"),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.name.clone()],
            vec!["link".into(), "add".into(), ns.host_if.clone(), "type".into(), "veth".into(), "peer".into(), "name".into(), ns.ns_if.clone()],
            vec!["link".into(), "set".into(), ns.ns_if.clone(), "netns".into(), ns.name.clone()],
            vec!["addr".into(), "add".into(), format!("{}/24", ns.host_ip), "dev".into(), ns.host_if.clone()],
            vec!["link".into(), "set".into(), ns.host_if.clone(), "up".into()],
        ];
        for step in steps {
            ns.ip(&step).map_err(|e| format!("`ip {}` failed: {e}", step.join(" ")))?;
        }
        for step in [
            vec!["addr".to_string(), "add".into(), format!("{}/24", ns.ns_ip), "dev".into(), ns.ns_if.clone()],
            vec!["link".into(), "set".into(), ns.ns_if.clone(), "up".into()],
            vec!["link".into(), "set".into(), "lo".into(), "up".into()],
        ] {
            ns.ip_in(&step).map_err(|e| format!("`ip {}` in {} failed: {e}", step.join(" "), ns.name))?;
        }
        Ok(ns)
    }

    fn ip(&self, args: &[String]) -> Result<(), String> {
        let out = Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }

    fn ip_in(&self, args: &[String]) -> Result<(), String> {
        let mut all = vec!["netns".to_string(), "exec".into(), self.name.clone(), "ip".into()];
        all.extend_from_slice(args);
        self.ip(&all)
    }

    /// The shell command that cuts the link (for a driver program to run itself).
    pub fn cut_command(&self) -> String {
        format!("ip netns exec {} ip link set {} down", self.name, self.ns_if)
    }

    /// The namespace loses its link: nothing crosses until `heal`.
    pub fn cut(&self) {
        self.ip_in(&["link".into(), "set".into(), self.ns_if.clone(), "down".into()]).expect("cut the link");
    }

    pub fn heal(&self) {
        self.ip_in(&["link".into(), "set".into(), self.ns_if.clone(), "up".into()]).expect("heal the link");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.ip(&["link".into(), "del".into(), self.host_if.clone()]);
        let _ = self.ip(&["netns".into(), "delete".into(), self.name.clone()]);
    }
}

/// One node agent of a [`TestCluster`].
pub struct TestNode {
    pub id: String,
    pub pid: i32,
    pub ip: String,
}

/// A cluster of real processes: `rayr start --head` on 127.0.0.1 and one `rayr start
/// --address` per extra node on 127.0.0.2, .3, …, each with its own resources, in a
/// RAYR_TMPDIR of its own. Nodes can be SIGKILLed or paused; dropping it resumes what is
/// paused and stops everything (`rayr stop`).
pub struct TestCluster {
    pub tmp: tempfile::TempDir,
    pub session: PathBuf,
    pub head_address: String,
    pub head_pid: i32,
    /// The joined nodes (the head's own node is not among them).
    pub nodes: Vec<TestNode>,
    paused: std::cell::RefCell<Vec<i32>>,
}

/// The `(pid N)` in a `rayr start` line.
fn pid_in(line: &str) -> i32 {
    let at = line.find("(pid ").expect("a pid") + 5;
    line[at..].split(')').next().unwrap().parse().unwrap()
}

impl TestCluster {
    /// A head with `head_cpus` and one joined node per entry of `nodes` (extra `rayr start`
    /// flags, e.g. `["--num-cpus", "2"]`); nodes beat every `heartbeat_ms` and are dead
    /// after 10 missed beats (a beat can be late by several periods on a loaded 2-core
    /// machine: a node must not die of that while it joins).
    pub fn start(head_cpus: &str, nodes: &[&[&str]], heartbeat_ms: u32) -> TestCluster {
        Self::start_on(0, head_cpus, nodes, heartbeat_ms)
    }

    /// `start`, with the head on `port` (0: any free one).
    pub fn start_on(port: u16, head_cpus: &str, nodes: &[&[&str]], heartbeat_ms: u32) -> TestCluster {
        let specs: Vec<NodeSpec> = nodes
            .iter()
            .enumerate()
            .map(|(i, flags)| NodeSpec {
                ip: format!("127.0.0.{}", i + 2),
                netns: None,
                hide: Vec::new(),
                flags: flags.iter().map(|f| f.to_string()).collect(),
                tmpdir: None,
            })
            .collect();
        Self::start_spec(port, "127.0.0.1", head_cpus, &specs, heartbeat_ms, 10)
    }

    /// The general form: the head on `head_ip:port`, each node where its spec says (in a
    /// network namespace, for one), silent nodes dead after `missed` beats.
    pub fn start_spec(port: u16, head_ip: &str, head_cpus: &str, nodes: &[NodeSpec], heartbeat_ms: u32, missed: u32) -> TestCluster {
        Self::start_spec_in(tempfile::tempdir().unwrap(), port, head_ip, head_cpus, nodes, heartbeat_ms, missed)
    }

    /// `start_spec` with the head's `RAYR_TMPDIR` given.
    pub fn start_spec_in(
        tmp: tempfile::TempDir,
        port: u16,
        head_ip: &str,
        head_cpus: &str,
        nodes: &[NodeSpec],
        heartbeat_ms: u32,
        missed: u32,
    ) -> TestCluster {
        let hb = heartbeat_ms.to_string();
        let port = port.to_string();
        let missed = missed.to_string();
        let out = run(
            Command::new(rayr_cli())
                .args(["start", "--head", "--port", &port, "--node-ip-address", head_ip, "--num-cpus", head_cpus])
                .args(["--heartbeat-period-ms", &hb, "--missed-heartbeats", &missed])
                .env("RAYR_TMPDIR", tmp.path())
                .env_remove("RAYR_ADDRESS"),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "rayr start --head: {}", String::from_utf8_lossy(&out.stderr));
        let head_pid = pid_in(&stdout);
        let session = std::fs::canonicalize(tmp.path().join("session_latest")).unwrap();
        let head_address = std::fs::read_to_string(session.join("head_address")).unwrap().trim().to_string();
        let mut cluster = TestCluster { tmp, session, head_address, head_pid, nodes: Vec::new(), paused: Default::default() };
        for spec in nodes {
            let head = cluster.head_address.clone();
            let mut args: Vec<&str> = vec!["start", "--address", &head, "--node-ip-address", &spec.ip];
            args.extend(spec.flags.iter().map(|f| f.as_str()));
            let mut prefix: Vec<String> = Vec::new();
            if let Some(ns) = &spec.netns {
                prefix.extend(["ip", "netns", "exec", ns].map(String::from));
            }
            if !spec.hide.is_empty() {
                let mounts: Vec<String> = spec.hide.iter().map(|d| format!("mount -t tmpfs rayr-hidden '{}'", d.display())).collect();
                prefix.extend(["unshare", "-m", "sh", "-c"].map(String::from));
                prefix.push(format!("{} && exec \"$0\" \"$@\"", mounts.join(" && ")));
            }
            let mut cmd = match prefix.split_first() {
                Some((program, rest)) => {
                    let mut c = Command::new(program);
                    c.args(rest).arg(rayr_cli());
                    c
                }
                None => Command::new(rayr_cli()),
            };
            let tmpdir = spec.tmpdir.clone().unwrap_or_else(|| cluster.tmp.path().to_path_buf());
            let out = run(cmd.args(&args).env("RAYR_TMPDIR", tmpdir).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "rayr start --address: {}", String::from_utf8_lossy(&out.stderr));
            let id = stdout.split_whitespace().nth(2).unwrap().to_string();
            cluster.nodes.push(TestNode { id, pid: pid_in(&stdout), ip: spec.ip.clone() });
        }
        cluster
    }

    /// Runs the `rayr` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args)
    }

    fn cli_with(&self, args: &[&str]) -> Output {
        run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", self.tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60))
    }

    /// `rayr list nodes --json`, parsed.
    pub fn node_rows(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["list", "nodes", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// The row of node `id` in `rayr list nodes --json`.
    pub fn node_row(&self, id: &str) -> serde_json::Value {
        self.node_rows().into_iter().find(|r| r["node_id"] == id).unwrap_or_default()
    }

    pub fn kill9(&self, node: usize) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(self.nodes[node].pid, libc::SIGKILL) };
    }

    /// Freezes node `node`'s agent (SIGSTOP) and returns once every one of its threads is
    /// stopped: the signal takes effect asynchronously, and on a loaded machine a thread
    /// (the event drain, say) may otherwise run on for a moment after `kill` returns.
    pub fn pause(&self, node: usize) {
        let pid = self.nodes[node].pid;
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        self.paused.borrow_mut().push(pid);
        wait_for("every thread of the paused agent to stop", Duration::from_secs(10), || all_threads_stopped(pid));
    }

    pub fn resume(&self, node: usize) {
        unsafe { libc::kill(self.nodes[node].pid, libc::SIGCONT) };
        self.paused.borrow_mut().retain(|p| *p != self.nodes[node].pid);
    }

    pub fn events(&self) -> Vec<Event> {
        session_events(&self.session)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for pid in self.paused.borrow().iter() {
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
        let _ = Command::new(rayr_cli()).arg("stop").arg("--session").arg(&self.session).output();
        // The session goes with its RAYR_TMPDIR: its socket directory goes now, not at the
        // next sweep.
        rayr_logs::Session::open(&self.session).remove_socket_dir();
    }
}

/// Whether every thread of `pid` is stopped (state `T` or `t` in its `stat`).
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        matches!(stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()), Some("T" | "t"))
    })
}
