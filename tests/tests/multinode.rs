//! Clusters of several node agents (issue #4): a head on 127.0.0.1 and nodes joined with
//! `rayr start --address` on 127.0.0.2, .3, … — real processes, killed and paused for real.

use std::process::Command;
use std::time::Duration;

use rayr_proto::{EventKind, event};

mod support;
use support::{NetNs, NodeSpec, TestCluster, assert_nothing_left, rayr_cli, run, wait_for};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

fn kind(e: &rayr_proto::Event) -> EventKind {
    EventKind::try_from(e.kind).unwrap()
}

fn hexid(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn nodes_join_show_in_status_and_leave_on_purpose_with_rayr_stop() {
    // The third node's every port given (as behind a firewall), and labels.
    let first = support::free_low_port();
    let second = (first + 1..30_000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a second free port");
    let (agent_port, transfer_port) = (first.to_string(), second.to_string());
    let (agent_port, transfer_port) = (agent_port.as_str(), transfer_port.as_str());
    let third_flags = [
        "--num-cpus", "3", "--resources", r#"{"ssd": 1}"#, "--labels", r#"{"zone": "eu-1", "disk": "nvme"}"#,
        "--node-manager-port", agent_port, "--object-manager-port", transfer_port, "--min-worker-port", "31000", "--max-worker-port", "31050",
    ];
    let cluster = TestCluster::start("1", &[&["--num-cpus", "2"], &third_flags], 100);
    for port in [agent_port, transfer_port] {
        assert!(std::net::TcpListener::bind(("127.0.0.3", port.parse::<u16>().unwrap())).is_err(), "the node listens on 127.0.0.3:{port}");
    }
    let out = cluster.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    assert!(nodes.iter().all(|n| n["state"] == "ALIVE"), "{status}");
    assert_eq!(nodes.iter().filter(|n| n["is_head"] == true).count(), 1, "{status}");
    for n in &cluster.nodes {
        let row = nodes.iter().find(|r| r["node_id"] == n.id.as_str()).unwrap_or_else(|| panic!("{} in {status}", n.id));
        assert_eq!(row["address"], n.ip.as_str());
    }
    let third = nodes.iter().find(|r| r["node_id"] == cluster.nodes[1].id.as_str()).unwrap();
    assert_eq!(third["resources"]["CPU"], 3.0);
    assert_eq!(third["resources"]["ssd"], 1.0);
    assert_eq!(third["labels"]["zone"], "eu-1", "{third}");
    assert_eq!(third["labels"]["disk"], "nvme", "{third}");
    let text = String::from_utf8_lossy(&cluster.cli(&["status"]).stdout).to_string();
    assert!(text.contains("labels disk=nvme,zone=eu-1"), "{text}");
    let listed = cluster.node_row(&cluster.nodes[1].id);
    assert_eq!(listed["labels"]["zone"], "eu-1", "{listed}");
    // Its heartbeats carry what it has free.
    assert_eq!(third["available_resources"]["CPU"], 3.0, "{third}");
    assert!(third["last_heartbeat_us"].as_i64().unwrap() > 0);
    // The head recorded each admission.
    let joined: Vec<Vec<u8>> = cluster.events().iter().filter(|e| kind(e) == EventKind::NodeJoined).map(|e| e.node_id.clone()).collect();
    for n in &cluster.nodes {
        assert!(joined.contains(&hexid(&n.id)), "NODE_JOINED for {}", n.id);
    }

    let out = cluster.cli(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&cluster.session);
    for row in cluster.node_rows() {
        assert_eq!(row["state"], "DEAD", "{row}");
        assert!(row["reason"].as_str().unwrap().contains("on purpose"), "every node says it left on purpose: {row}");
    }
}

#[test]
fn a_killed_node_is_declared_dead_and_a_paused_one_exits_when_it_wakes() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1"], &["--num-cpus", "1"]], 100);
    cluster.kill9(0);
    cluster.pause(1);
    for n in &cluster.nodes {
        wait_for(&format!("node {} declared dead", n.id), Duration::from_secs(10), || cluster.node_row(&n.id)["state"] == "DEAD");
        let reason = cluster.node_row(&n.id)["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("missed 10 heartbeats") && reason.contains("period 100 ms"), "{reason}");
    }
    let out = cluster.cli(&["why-died", &cluster.nodes[0].id, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let why: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = why["summary"].as_str().unwrap();
    assert!(summary.contains("was declared dead by the head") && summary.contains("missed 10 heartbeats"), "{why}");
    assert!(why["advice"].as_str().unwrap().contains("stopped answering the head"), "{why}");
    // The head logged it too (its tracing output is its log file), where `rayr logs` finds it.
    let out = cluster.cli(&["logs", "search", "is dead: it missed", "--json"]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.lines().any(|l| l.contains("head.log") && l.contains(&cluster.nodes[0].id) && l.contains("WARN")),
        "{found}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A dead node never comes back: woken, it learns it was declared dead and exits.
    cluster.resume(1);
    let paused = &cluster.nodes[1];
    wait_for("the woken node to exit", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/stat", paused.pid)).map_or(true, |s| s.contains(") Z"))
    });
    let events = cluster.events();
    let node = hexid(&paused.id);
    let died = events.iter().find(|e| kind(e) == EventKind::NodeDied && e.node_id == node).expect("NODE_DIED");
    let stopped = events.iter().find(|e| kind(e) == EventKind::NodeStopped && e.node_id == node).expect("its own NODE_STOPPED");
    let Some(event::Detail::Node(d)) = &stopped.detail else { panic!() };
    assert!(d.reason.contains("the head declared this node dead"), "{}", d.reason);
    assert!(died.time_us < stopped.time_us);
    // The view keeps the first end: why it was lost.
    let reason = cluster.node_row(&paused.id)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("missed 10 heartbeats"), "{reason}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_node_that_loses_the_head_keeps_going_for_its_window_then_exits_saying_so() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--head-timeout-s", "1"]], 100);
    let node = &cluster.nodes[0];
    // SAFETY: the head process this test started.
    unsafe { libc::kill(cluster.head_pid, libc::SIGKILL) };
    wait_for("the node to give up on the head", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{}/stat", node.pid)).map_or(true, |s| s.contains(") Z"))
    });
    let log = std::fs::read_to_string(cluster.session.join("logs").join(format!("node-{}.log", &node.id[..16]))).unwrap();
    assert!(log.contains("lost the head at") && log.contains("for 1 s"), "{log}");
    let stopped = cluster
        .events()
        .into_iter()
        .find(|e| kind(e) == EventKind::NodeStopped && e.node_id == hexid(&node.id))
        .expect("NODE_STOPPED of the node");
    let Some(event::Detail::Node(d)) = &stopped.detail else { panic!() };
    assert!(d.reason.contains("lost the head"), "{}", d.reason);
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn joining_with_bad_input_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // Nothing listens there (a port just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = cli(&["start", "--address", &format!("127.0.0.1:{port}")]);
    assert!(err.contains("no rayr head answers at"), "{err}");
    let err = cli(&["start", "--address", "not an address"]);
    assert!(err.contains("HOST:PORT"), "{err}");
    let err = cli(&["start", "--head", "--address", "127.0.0.1:1"]);
    assert!(err.contains("give one of them"), "{err}");
    let err = cli(&["start"]);
    assert!(err.contains("rayr start --head") && err.contains("--address"), "{err}");
    let cluster = TestCluster::start("1", &[], 100);
    let out = cluster.cli(&["start", "--address", &cluster.head_address, "--node-ip-address", "127.0.0.999"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not an IP address"), "{err}");
    let out = cluster.cli(&["start", "--head", "--heartbeat-period-ms", "0"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    let out = cluster.cli(&["start", "--address", &cluster.head_address, "--node-ip-address", "127.0.0.2", "--min-worker-port", "30010"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("give both"), "{err}");
    let out = cluster.cli(&["start", "--address", &cluster.head_address, "--node-ip-address", "127.0.0.2", "--labels", "[1]"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a JSON object of strings"), "{err}");
    // Options that would be ignored or would clash are refused, saying which.
    let refused = |args: &[&str], says: &str| {
        let out = cluster.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    };
    let head = cluster.head_address.clone();
    let join = |more: &[&'static str]| -> Vec<String> {
        ["start", "--address", &head, "--node-ip-address", "127.0.0.2"].iter().chain(more).map(|s| s.to_string()).collect()
    };
    let refused_join = |more: &[&'static str], says: &str| refused(&join(more).iter().map(String::as_str).collect::<Vec<_>>(), says);
    refused_join(&["--port", "7000"], "--port set(s) the head");
    refused_join(&["--resources", r#"{"CPU": 4}"#], "give CPU with --num-cpus");
    refused_join(&["--object-store-memory", "10"], "at least 16777216 bytes");
    refused(&["start", "--address", &cluster.head_address, "--node-ip-address", "0.0.0.0"], "must be one of this host's own");
    refused_join(&["--object-manager-port", "31000", "--metrics-export-port", "31000"], "are both 31000");
    // A second head beside the running one would take `session_latest` from it.
    let latest = std::fs::read_link(cluster.tmp.path().join("session_latest")).unwrap();
    refused(&["start", "--head", "--port", "0"], "already running here");
    assert_eq!(std::fs::read_link(cluster.tmp.path().join("session_latest")).unwrap(), latest);
    drop(cluster);
    // A port taken is said before anything is made.
    let tmp = tempfile::tempdir().unwrap();
    let rayr = |args: &[&str]| run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(30));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = rayr(&["start", "--head", "--port", "0", "--metrics-export-port", &port]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--metrics-export-port"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing made under RAYR_TMPDIR");
    // A head that fails once started (its node's port is taken) leaves no session behind,
    // and `session_latest` names the session it named before (a stopped cluster's record).
    let out = rayr(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rayr(&["stop"]).status.success());
    let before = std::fs::read_link(tmp.path().join("session_latest")).unwrap();
    let out = rayr(&["start", "--head", "--port", "0", "--num-cpus", "1", "--node-manager-port", &port]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exited") && err.contains(&port), "{err}");
    assert_eq!(std::fs::read_link(tmp.path().join("session_latest")).unwrap(), before);
    let sessions = std::fs::read_dir(tmp.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("session_2")).count();
    assert_eq!(sessions, 1, "only the stopped cluster's session");
    drop(taken);
}

#[test]
fn a_demand_only_another_node_can_hold_runs_there_and_one_none_can_hold_fails_naming_the_largest() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "2"], &["--num-cpus", "3"]], 100);
    let out = run(Command::new(SCENARIOS).arg("infeasible_cluster").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!(line("OTHER_NODE"), "4", "a demand only another node can hold runs there");
    let none = line("NO_NODE");
    assert!(none.contains("{CPU: 8}") && none.contains("the largest node (127.0.0.3 of 3) has {CPU: 3}"), "{none}");
    assert_eq!(line("CLUSTER_CPUS"), "6", "cluster_resources() sums the live nodes");
    assert_eq!(line("FITS"), "25");
}

#[test]
fn tasks_that_fill_the_drivers_node_spill_to_the_others_with_their_large_values() {
    let cluster = TestCluster::start(
        "1",
        &[&["--num-cpus", "2"], &["--num-cpus", "2", "--resources", r#"{"far": 1}"#]],
        100,
    );
    let out = run(
        Command::new(SCENARIOS).arg("spread_tasks").env("RAYR_TMPDIR", cluster.tmp.path()).env("CLUSTER_CPUS", "5").env_remove("RAYR_ADDRESS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!(line("RESULTS_OK"), "true", "10k results, each right");
    let far = cluster.nodes[1].id.clone();
    assert_eq!(line("NODES").split(',').count(), 3, "the tasks ran on every node: {}", line("NODES"));
    assert_eq!(line("BIG_ARG_OK"), "true", "a 1 MB argument in the driver's store reached another node");
    assert_eq!(line("BIG_ARG_NODES"), far);
    assert_eq!(line("BIG_RESULT_OK"), "true", "1 MB results made on another node reached the driver");
    assert_eq!(line("BIG_RESULT_NODES"), far);
    // 100 MB created on the driver's node, read (zero-copy, from a copy in that node's
    // store) on another: every byte is 1, so every u64 word is 0x0101…01.
    let hundred = line("HUNDRED_MB");
    let words = 100_000_000u64 / 8;
    let expect = words.wrapping_mul(0x0101_0101_0101_0101);
    assert!(hundred.starts_with(&format!("{far} {expect} ")), "{hundred}");
    assert_eq!(line("HUNDRED_MB_AGAIN"), "true");
    // Each object crossed once to the far node (its readers there, concurrent or later,
    // shared one pull), from the driver's node, into a copy its owner freed with it.
    let pulled_ids: Vec<Vec<u8>> = line("PULLED_IDS").split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let far_id = rayr_logs::parse_hex(&far).unwrap();
    let events = cluster.events();
    for id in &pulled_ids {
        let created = events.iter().find(|e| e.object_id == *id && kind(e) == EventKind::ObjectCreated).expect("created");
        let pulls: Vec<&rayr_proto::Event> = events.iter().filter(|e| e.object_id == *id && kind(e) == EventKind::ObjectPulled).collect();
        assert_eq!(pulls.len(), 1, "one pull per object and node: {pulls:?}");
        assert_eq!(pulls[0].node_id, far_id);
        let Some(event::Detail::Object(d)) = &pulls[0].detail else { panic!() };
        assert_eq!(d.copy_node, created.node_id, "pulled from the node that holds it");
        assert!(d.reason.contains("GB/s"), "{d:?}");
    }
    wait_for("the far node to drop the copies their owner freed", Duration::from_secs(10), || {
        let events = cluster.events();
        pulled_ids.iter().all(|id| {
            events.iter().any(|e| {
                e.object_id == *id
                    && kind(e) == EventKind::ObjectEvicted
                    && e.node_id == far_id
                    && matches!(&e.detail, Some(event::Detail::Object(d)) if d.reason.contains("owner freed"))
            })
        })
    });
    // Each spillback is recorded by the node that sent the lease away, naming where.
    let events = cluster.events();
    let spilled: Vec<&rayr_proto::Event> = events.iter().filter(|e| kind(e) == EventKind::TaskSpilled).collect();
    assert!(!spilled.is_empty(), "TASK_SPILLED recorded");
    for e in &spilled {
        let Some(event::Detail::Task(d)) = &e.detail else { panic!() };
        assert!(cluster.nodes.iter().any(|n| d.spilled_to.contains(&n.id)), "{d:?}");
        assert!(d.reason.contains("free"), "{d:?}");
    }
    let started_on: std::collections::HashSet<Vec<u8>> =
        events.iter().filter(|e| kind(e) == EventKind::TaskStarted).map(|e| e.node_id.clone()).collect();
    assert_eq!(started_on.len(), 3, "TASK_STARTED on every node");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn copies_of_other_nodes_objects_are_evicted_first_when_the_store_is_full() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#, "--object-store-memory", "100000000"]], 100);
    let out = run(
        Command::new(SCENARIOS).arg("copies_under_pressure").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!(line("PRESSURE_OK"), "true", "every read saw its object's bytes");
    let ids: Vec<Vec<u8>> = line("PRESSURE_IDS").split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let far = rayr_logs::parse_hex(&cluster.nodes[0].id).unwrap();
    let events = cluster.events();
    let on_far = |k: EventKind| -> Vec<Vec<u8>> {
        events.iter().filter(|e| kind(e) == k && e.node_id == far).map(|e| e.object_id.clone()).collect()
    };
    assert_eq!(line("PRIMARY_NODE"), cluster.nodes[0].id, "the big result was made on the far node");
    // Pulled to the far node: 1, 2, 3 (1's second read came from its copy there).
    assert_eq!(on_far(EventKind::ObjectPulled), vec![ids[0].clone(), ids[1].clone(), ids[2].clone()]);
    let evicted = |why: &str| -> Vec<Vec<u8>> {
        cluster
            .events()
            .iter()
            .filter(|e| kind(e) == EventKind::ObjectEvicted && e.node_id == far)
            .filter(|e| matches!(&e.detail, Some(event::Detail::Object(d)) if d.reason.contains(why)))
            .map(|e| e.object_id.clone())
            .collect()
    };
    // 3 took the room of 2, the least recently used copy; not 1, not the primary.
    assert_eq!(evicted("secondary copies go first"), vec![ids[1].clone()]);
    // The driver read the primary: pulled from the far node to the head's.
    let pulled_elsewhere: Vec<&rayr_proto::Event> =
        events.iter().filter(|e| kind(e) == EventKind::ObjectPulled && e.object_id == ids[3]).collect();
    assert_eq!(pulled_elsewhere.len(), 1);
    assert!(matches!(&pulled_elsewhere[0].detail, Some(event::Detail::Object(d)) if d.copy_node == far));
    // What is left on the far node (copies of 1 and 3, the primary) goes with its owner's
    // objects.
    // (Freed by the owner as it shut down, or dropped when its node said it exited,
    // whichever reaches the far node first.)
    wait_for("the far node to drop what the driver owned", Duration::from_secs(10), || {
        let mut freed = evicted("owner freed");
        freed.extend(evicted("exited"));
        freed.sort();
        freed.dedup();
        let mut want = vec![ids[0].clone(), ids[2].clone()];
        want.sort();
        freed == want
    });
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_result_lost_with_its_node_is_made_again_from_its_task_or_reported_lost() {
    let cluster = TestCluster::start(
        "1",
        &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#], &["--num-cpus", "1", "--resources", r#"{"far": 1}"#]],
        100,
    );
    let pids: Vec<String> = cluster.nodes.iter().map(|n| format!("{}:{}", n.id, n.pid)).collect();
    let out = run(
        Command::new(SCENARIOS).arg("result_node_dies").env("RAYR_TMPDIR", cluster.tmp.path()).env("NODE_PIDS", pids.join(",")).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!(line("KEPT_OK"), "true", "the result with retries left was made again on the other node");
    assert_eq!(line("LOST_OK"), "true", "the one without is ObjectLost");
    let killed = rayr_logs::parse_hex(&line("KILLED")).unwrap();
    let ids: Vec<Vec<u8>> = line("IDS").split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let events = cluster.events();
    // The chain: node died → object lost → task re-run, each the cause of the next.
    let died = events.iter().find(|e| kind(e) == EventKind::NodeDied && e.node_id == killed).expect("NODE_DIED");
    let lost_kept = events.iter().find(|e| kind(e) == EventKind::ObjectLost && e.object_id == ids[0]).expect("OBJECT_LOST for the kept one");
    assert_eq!(lost_kept.cause, died.id);
    let Some(event::Detail::Object(d)) = &lost_kept.detail else { panic!() };
    assert_eq!(d.copy_node, killed);
    assert!(d.reason.contains("runs again"), "{d:?}");
    let retried = events.iter().find(|e| kind(e) == EventKind::TaskRetried && e.cause == lost_kept.id).expect("TASK_RETRIED caused by the loss");
    assert!(events.iter().any(|e| kind(e) == EventKind::TaskStarted && e.task_id == retried.task_id && e.node_id != killed));
    let lost = events.iter().find(|e| kind(e) == EventKind::ObjectLost && e.object_id == ids[1]).expect("OBJECT_LOST for the other");
    assert_eq!(lost.cause, died.id);
    let Some(event::Detail::Object(d)) = &lost.detail else { panic!() };
    assert!(d.reason.contains("cannot be made again"), "{d:?}");
    // why-died follows each chain from the object to the node's death, and says which was
    // made again.
    let ids_hex: Vec<String> = line("IDS").split(' ').map(String::from).collect();
    let why = |id: &str| -> serde_json::Value {
        let out = cluster.cli(&["why-died", id, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let died_hex = rayr_logs::hex(&died.id);
    let remade = why(&ids_hex[0]);
    assert!(remade["summary"].as_str().unwrap().contains("made again"), "{remade}");
    assert_eq!(remade["root_cause"], died_hex.as_str(), "{remade}");
    assert!(remade["advice"].as_str().unwrap().contains("re-ran"), "{remade}");
    let gone = why(&ids_hex[1]);
    assert!(gone["summary"].as_str().unwrap().contains("was lost"), "{gone}");
    let chain: Vec<&str> = gone["chain"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(chain, ["object_lost", "node_died"], "{gone}");
    assert_eq!(gone["chain"][1]["node_id"], rayr_logs::hex(&killed).as_str());
    assert!(gone["advice"].as_str().unwrap().contains("max_retries"), "{gone}");
    let text = String::from_utf8_lossy(&cluster.cli(&["why-died", &ids_hex[1]]).stdout).to_string();
    assert!(text.contains("node_died") && text.contains("max_retries"), "{text}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_task_runs_where_its_large_arguments_are() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"x": 1}"#], &["--num-cpus", "1"]], 100);
    let out = run(
        Command::new(SCENARIOS).arg("locality").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    let x = cluster.nodes[0].id.clone();
    assert_eq!(line("LOCALITY"), format!("{x} 20000000"), "the reader ran on the node holding its argument");
    let ids: Vec<Vec<u8>> = line("LOCALITY_IDS").split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let events = cluster.events();
    assert!(!events.iter().any(|e| kind(e) == EventKind::ObjectPulled && e.object_id == ids[0]), "read in place, never copied");
    let task = events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && e.object_id == ids[1]).expect("submitted").task_id.clone();
    let spilled = events.iter().find(|e| kind(e) == EventKind::TaskSpilled && e.task_id == task).expect("TASK_SPILLED for the reader");
    let Some(event::Detail::Task(d)) = &spilled.detail else { panic!() };
    assert!(d.reason.contains("20.0 MB of its arguments"), "{d:?}");
    assert!(d.spilled_to.starts_with(&x), "{d:?}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_node_cut_off_by_a_partition_is_declared_dead_and_exits_when_its_window_ends() {
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: the partition test needs root and `ip netns` to put a node in a network namespace ({why})");
            return;
        }
    };
    let flags = |extra: &[&str]| -> Vec<String> {
        ["--num-cpus", "1", "--resources", r#"{"far": 1}"#].iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let nodes = [
        NodeSpec { ip: ns.ns_ip.clone(), netns: Some(ns.name.clone()), hide: Vec::new(), flags: flags(&["--head-timeout-s", "3"]), tmpdir: None },
        NodeSpec { ip: "127.0.0.2".into(), netns: None, hide: Vec::new(), flags: flags(&[]), tmpdir: None },
    ];
    let cluster = TestCluster::start_spec(0, &ns.host_ip, "1", &nodes, 100, 5);
    let cut_off = cluster.nodes[0].id.clone();
    let pids: Vec<String> = cluster.nodes.iter().map(|n| format!("{}:{}", n.id, n.pid)).collect();
    let out = run(
        Command::new(SCENARIOS)
            .arg("result_node_dies")
            .env("RAYR_TMPDIR", cluster.tmp.path())
            .env("NODE_PIDS", pids.join(","))
            .env("TARGET_NODE", &cut_off)
            .env("CUT_CMD", ns.cut_command())
            .env_remove("RAYR_ADDRESS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!(line("KILLED"), cut_off);
    assert_eq!(line("KEPT_OK"), "true", "the result held across the partition was made again on the other node");
    assert_eq!(line("LOST_OK"), "true");
    let id = rayr_logs::parse_hex(&cut_off).unwrap();
    // The head stopped hearing it and declared it dead; the values it held were lost with
    // that cause.
    let events = cluster.events();
    let died = events.iter().find(|e| kind(e) == EventKind::NodeDied && e.node_id == id).expect("NODE_DIED");
    let Some(event::Detail::Node(d)) = &died.detail else { panic!() };
    assert!(d.reason.contains("missed 5 heartbeats"), "{d:?}");
    assert!(events.iter().any(|e| kind(e) == EventKind::ObjectLost && e.cause == died.id), "OBJECT_LOST caused by the NODE_DIED");
    // Cut off, the node keeps going for its window (3 s), then exits saying why.
    let pid = cluster.nodes[0].pid;
    wait_for("the cut-off node to exit", Duration::from_secs(30), || !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    wait_for("its NODE_STOPPED", Duration::from_secs(10), || {
        cluster.events().iter().any(|e| {
            kind(e) == EventKind::NodeStopped
                && e.node_id == id
                && matches!(&e.detail, Some(event::Detail::Node(d)) if d.reason.contains("lost the head"))
        })
    });
    ns.heal();
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

/// A path no file has yet (removed with the process's temp files).
fn tmp_marker() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rayr-test-hold-{}-{}", std::process::id(), rayr_logs::hex(&rayr_logs::new_id())))
}

/// Runs `rayr stop` for the latest session under a `RAYR_TMPDIR` when dropped.
struct StopSessionOnDrop(std::path::PathBuf);

impl Drop for StopSessionOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(rayr_cli()).arg("stop").env("RAYR_TMPDIR", &self.0).env_remove("RAYR_ADDRESS").output();
    }
}

/// TCP ports in LISTEN state on `ip` (IPv4), from /proc/net/tcp.
fn listening_ports(ip: &str) -> Vec<u16> {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let want = format!("{:08X}", u32::from_le_bytes(ip.octets()));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, port) = f.get(1)?.split_once(':')?;
            (addr == want && f.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

#[test]
fn a_node_without_the_drivers_binary_fetches_it_by_hash_once() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: hiding the driver's binary from a node (as on another host) needs root for a mount namespace");
        return;
    }
    // The driver runs from a directory the far node cannot see.
    let bin = tempfile::tempdir().unwrap();
    let driver = bin.path().join("driver");
    std::fs::copy(SCENARIOS, &driver).unwrap();
    let nodes = [NodeSpec {
        ip: "127.0.0.2".into(),
        netns: None,
        hide: vec![bin.path().to_path_buf()],
        flags: ["--num-cpus", "1", "--resources", r#"{"far": 1}"#].map(String::from).to_vec(),
        tmpdir: None,
    }];
    let cluster = TestCluster::start_spec(0, "127.0.0.1", "1", &nodes, 100, 5);
    let far = &cluster.nodes[0];
    let hidden = Command::new("nsenter").args(["-t", &far.pid.to_string(), "-m", "test", "-e"]).arg(&driver).status().unwrap();
    assert!(!hidden.success(), "the far node must not see {}", driver.display());
    // Two jobs of the same binary: the first makes the far node fetch it, the second finds it.
    for _ in 0..2 {
        let out = run(
            Command::new(&driver).arg("far_tasks").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("FAR_TASKS ok {}", far.id)), "{stdout}");
    }
    let events = cluster.events();
    let far_id = rayr_logs::parse_hex(&far.id).unwrap();
    let fetched: Vec<&rayr_proto::Event> = events.iter().filter(|e| kind(e) == EventKind::JobBinaryFetched).collect();
    assert_eq!(fetched.len(), 1, "fetched once: {fetched:?}");
    assert_eq!(fetched[0].node_id, far_id);
    let Some(event::Detail::Job(d)) = &fetched[0].detail else { panic!() };
    let name = std::path::Path::new(&d.binary).file_name().unwrap().to_string_lossy().to_string();
    assert!(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()), "kept by its SHA-256: {}", d.binary);
    assert!(d.binary.starts_with(&cluster.session.display().to_string()), "under the session: {}", d.binary);
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_node_on_another_host_joins_runs_the_job_and_its_events_reach_the_head() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: simulating another host (mount namespaces) needs root");
        return;
    }
    // "Another host": the node sees neither the head's session directory nor the driver's
    // binary, and keeps its own session; the driver does not see the node's sockets.
    let bin = tempfile::tempdir().unwrap();
    let driver = bin.path().join("driver");
    std::fs::copy(SCENARIOS, &driver).unwrap();
    let there = tempfile::tempdir().unwrap();
    let head_tmp = tempfile::tempdir().unwrap();
    // Every port it listens on given: its agent's two, and a range for its workers (on an
    // address of its own, so that no other test's listeners mix in).
    let first = support::free_low_port();
    let mut free = (first + 1..30_000).filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
    let agent_ports = [first, free.next().unwrap(), free.next().unwrap()];
    let (manager, transfer, metrics) = (agent_ports[0].to_string(), agent_ports[1].to_string(), agent_ports[2].to_string());
    let nodes = [NodeSpec {
        ip: "127.0.0.42".into(),
        netns: None,
        hide: vec![bin.path().to_path_buf(), head_tmp.path().to_path_buf()],
        flags: [
            "--num-cpus", "1", "--resources", r#"{"far": 1}"#, "--min-worker-port", "31100", "--max-worker-port", "31150",
            "--node-manager-port", &manager, "--object-manager-port", &transfer, "--metrics-export-port", &metrics,
        ]
        .map(String::from)
        .to_vec(),
        tmpdir: Some(there.path().to_path_buf()),
    }];
    let cluster = TestCluster::start_spec_in(head_tmp, 0, "127.0.0.1", "1", &nodes, 100, 5);
    // Its session is not the cluster's: stopped here even if the test fails.
    let _stop_there = StopSessionOnDrop(there.path().to_path_buf());
    let far = cluster.nodes[0].id.clone();
    let far_id = rayr_logs::parse_hex(&far).unwrap();
    let far_session = std::fs::canonicalize(there.path().join("session_latest")).expect("the node made a session of its own");
    assert_ne!(far_session, cluster.session);
    let hide_far = format!("mount -t tmpfs rayr-hidden '{}' && exec \"$0\" \"$@\"", there.path().display());
    // The driver holds its job (its workers stay) until the ports are checked.
    let hold = tmp_marker();
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &hide_far])
        .arg(&driver)
        .arg("other_host")
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env("HOLD_UNTIL", &hold)
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(l)) = lines.next() {
            stdout.push_str(&l);
            stdout.push('\n');
            if l.starts_with("OTHER_HOST_OBJECTS") {
                break;
            }
        }
        // It listens on the ports it was given and no others: its agent's, its metrics',
        // its workers' within their range.
        let listening = listening_ports("127.0.0.42");
        std::fs::write(&hold, b"").unwrap();
        for l in lines.map_while(Result::ok) {
            stdout.push_str(&l);
            stdout.push('\n');
        }
        assert!(child.wait().unwrap().success(), "{stdout}");
        let _ = std::fs::remove_file(&hold);
        assert!(stdout.contains(&format!("FAR_TASKS ok {far}")), "{stdout}");
        assert!(stdout.contains("OTHER_HOST_OBJECTS ok"), "{stdout}");
        assert!(agent_ports.iter().all(|p| listening.contains(p)), "{listening:?}");
        assert!(listening.iter().any(|p| (31100..=31150).contains(p)), "a worker listens in 31100-31150: {listening:?}");
        assert!(listening.iter().all(|p| agent_ports.contains(p) || (31100..=31150).contains(p)), "{listening:?}");
    }
    // Its events are in its own session, and shipped to the head's record.
    assert!(far_session.join("events").join(format!("events-{far}.log")).exists());
    wait_for("the far node's events in the head's record", Duration::from_secs(10), || {
        let events = cluster.events();
        let on_far = |k: EventKind| events.iter().any(|e| kind(e) == k && e.node_id == far_id);
        on_far(EventKind::TaskStarted) && on_far(EventKind::ObjectPulled) && on_far(EventKind::JobBinaryFetched)
    });
    // Stopped on its host, it leaves on purpose, and says so in the head's record too.
    let out = run(Command::new(rayr_cli()).arg("stop").env("RAYR_TMPDIR", there.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("its NODE_STOPPED in the head's record", Duration::from_secs(10), || {
        cluster.events().iter().any(|e| kind(e) == EventKind::NodeStopped && e.node_id == far_id)
    });
    // The head's copy of its log is its log: every frame once, in order.
    let name = format!("events-{far}.log");
    let mine = std::fs::read(far_session.join("events").join(&name)).unwrap();
    let copy = std::fs::read(cluster.session.join("events").join(&name)).unwrap();
    assert!(copy == mine, "the head's copy ({} bytes) differs from the node's log ({} bytes)", copy.len(), mine.len());
    assert_nothing_left(&far_session);
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn rayr_logs_search_finds_a_line_a_task_printed_on_another_node_and_names_nodes_it_could_not_search() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#], &["--num-cpus", "1"]], 100);
    let marker = format!("MARK-{}-{}", std::process::id(), rayr_logs::hex(&rayr_logs::new_id()));
    let out = run(
        Command::new(SCENARIOS).arg("log_marker").env("MARKER", &marker).env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let far = cluster.nodes[0].id.clone();
    assert!(stdout.contains(&format!("SAID_ON {far}")), "{stdout}");
    let search = |args: &[&str]| {
        let out = cluster.cli(&[&["logs", "search"], args].concat());
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // One match, under the node that ran the task, in a worker's stdout, with its context.
    let (ok, found, err) = search(&[&marker, "--json", "-C", "1"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = found.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let hits: Vec<&serde_json::Value> = lines.iter().filter(|l| l["match"] == true && l["text"] == format!("{marker} here").as_str()).collect();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["node"], far.as_str());
    assert_eq!(hits[0]["text"], format!("{marker} here"));
    assert!(hits[0]["file"].as_str().unwrap().ends_with(".out"), "{}", hits[0]);
    let context: Vec<&str> = lines.iter().filter(|l| l["match"] == false).map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(context[..2], ["line-before", "line-after"]);
    // --task: only what each task wrote, though both wrote to the same worker's stdout.
    let ids: Vec<Vec<u8>> = stdout.lines().find_map(|l| l.strip_prefix("SAID_IDS ")).unwrap().split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let events = cluster.events();
    let task_of = |object: &[u8]| {
        rayr_logs::hex(&events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && e.object_id == object).expect("submitted").task_id)
    };
    let (first, second) = (task_of(&ids[0]), task_of(&ids[1]));
    let (ok, found, err) = search(&[&marker, "--task", &first]);
    assert!(ok, "{err}");
    assert!(found.contains(&format!("{marker} here")) && !found.contains("from the second task"), "{found}");
    let (ok, found, err) = search(&[&marker, "--task", &second[..12]]);
    assert!(ok, "{err}");
    assert!(found.contains("from the second task") && !found.contains(&format!("{marker} here")), "{found}");
    // Calls side by side on an actor: each one's lines, all of them, though the other
    // call's output was measured in between.
    let overlap: Vec<Vec<u8>> = stdout.lines().find_map(|l| l.strip_prefix("OVERLAP ")).unwrap().split(' ').map(|h| rayr_logs::parse_hex(h).unwrap()).collect();
    let (ok, found, err) = search(&[&marker, "--task", &task_of(&overlap[0])]);
    assert!(ok && found.contains("long-begins") && found.contains("long-ends"), "{found}{err}");
    let (ok, found, err) = search(&[&marker, "--task", &task_of(&overlap[1])]);
    // (What the other call wrote while this one ran is in its range too: lines are
    // attributed by when they were written.)
    assert!(ok && found.contains("short-said"), "{found}{err}");
    // --actor: only the files of the worker hosting the actor.
    let actor = stdout.lines().find_map(|l| l.strip_prefix("ACTOR ")).unwrap().to_string();
    let (ok, found, err) = search(&[&marker, "--actor", &actor]);
    assert!(ok, "{err}");
    assert!(found.contains("from the actor") && !found.contains("from the second task"), "{found}");
    // The worker's id narrows it; a glob that excludes stdout finds nothing; -i folds case.
    let worker = std::path::Path::new(hits[0]["file"].as_str().unwrap()).file_name().unwrap().to_str().unwrap()["worker-".len()..]
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let (ok, found, _) = search(&[&marker, "--worker", &worker[..8]]);
    assert!(ok && found.contains(&format!("{marker} here")), "{found}");
    let (ok, found, err) = search(&[&marker, "--glob", "*.err"]);
    assert!(!ok && found.is_empty() && err.contains("no matches"), "as grep, no match fails: {found}{err}");
    let (ok, found, _) = search(&[&marker.to_lowercase(), "-i"]);
    assert!(ok && found.contains(&format!("{marker} here")), "{found}");
    // tail: the last lines of the worker's stdout (by worker, by task, by file name).
    let tail = |target: &str| {
        let out = cluster.cli(&["logs", "tail", target, "-n", "3"]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, text, err) = tail(&worker[..10]);
    assert!(ok && text.contains("from the second task") && text.contains("line-after"), "{text}{err}");
    let (ok, text, err) = tail(&first);
    assert!(ok && text.contains("from the second task"), "{text}{err}");
    let file = std::path::Path::new(hits[0]["file"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
    let (ok, text, err) = tail(&file);
    assert!(ok && text.lines().count() == 3 && text.contains("from the second task"), "{text}{err}");
    let (ok, _, err) = tail("no-such-file.log");
    assert!(!ok && err.contains("neither a log file's name"), "{err}");
    // Listing shows the worker's files on that node.
    let out = cluster.cli(&["logs", "list", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.contains(&far) && l.contains(&worker)), "{listed}");
    // Bad input says what is wrong.
    let (ok, _, err) = search(&["(unclosed"]);
    assert!(!ok && err.contains("not a valid regular expression"), "{err}");
    // A node that cannot be searched is named, and the results say they are incomplete.
    cluster.kill9(1);
    let (ok, found, err) = search(&[&marker]);
    assert!(!ok, "an incomplete search fails");
    assert!(found.contains(&format!("{marker} here")), "what the others found is still shown: {found}");
    assert!(err.contains(&cluster.nodes[1].id[..12]) && err.contains("incomplete"), "{err}");
    // Once the head has declared it dead, its files (in this host's session) are read here.
    let dead = cluster.nodes[1].id.clone();
    wait_for("the killed node declared dead", Duration::from_secs(10), || cluster.node_row(&dead)["state"] == "DEAD");
    let (ok, found, err) = search(&[&marker]);
    assert!(ok && found.contains(&format!("{marker} here")), "{found}{err}");
    let (ok, found, err) = search(&["joining the cluster", "--node", &dead[..8]]);
    assert!(ok && found.contains(&format!("node-{}", &dead[..16])), "the dead node's own log: {found}{err}");
    // A task's lines by the id of the object it made.
    let (ok, found, err) = search(&[&marker, "--task", &rayr_logs::hex(&ids[1])]);
    assert!(ok && found.contains("from the second task") && !found.contains(&format!("{marker} here")), "{found}{err}");
    // Filters that contradict each other, or name nothing, say so.
    let (ok, _, err) = search(&[&marker, "--task", &first, "--worker", &worker[..8]]);
    assert!(!ok && err.contains("leave --worker out"), "{err}");
    let (ok, _, err) = search(&[&marker, "--worker", "zzz"]);
    assert!(!ok && err.contains("not a worker id"), "{err}");
    let (ok, _, err) = search(&[&marker, "--task", &first, "--node", &dead[..8]]);
    assert!(!ok && err.contains("not on the node --node names"), "{err}");
    let (ok, _, err) = search(&[&marker, "-m", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = search(&[&marker, "--since", "10m", "--until", "20m"]);
    assert!(!ok && err.contains("--since must be before --until"), "{err}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    // With the cluster stopped, the record and this host's files still answer.
    let (ok, found, err) = search(&[&marker, "--task", &first]);
    assert!(ok && found.contains(&format!("{marker} here")) && !found.contains("from the second task"), "{found}{err}");
    let (ok, _, err) = search(&[&marker, "--worker", "0000000000"]);
    assert!(!ok && err.contains("no worker's id starts with"), "{err}");
    let (ok, found, err) = search(&[&marker, "--since", "10m"]);
    assert!(ok && found.contains(&format!("{marker} here")), "{found}{err}");
    let out = cluster.cli(&["logs", "list"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&worker[..12]), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, text, err) = tail(&worker[..10]);
    assert!(ok && text.contains("from the second task"), "{text}{err}");
    let out = cluster.cli(&["logs", "follow", &worker[..10]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not running"), "{err}");
    assert_nothing_left(&cluster.session);
}

/// `GET url` over plain HTTP/1.1: the body.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    body.to_string()
}

/// Parses Prometheus text exposition strictly: every line a `# HELP`, a `# TYPE` (of a
/// known type, before its samples) or a sample `name{labels} value`. Returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') && !n.starts_with(|c: char| c.is_ascii_digit());
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(name_ok(rest.split(' ').next().unwrap()), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(name_ok(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE given twice for {name}");
        } else {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line}"))),
                None => (series, ""),
            };
            assert!(name_ok(name) && typed.contains(name), "a sample of an untyped or bad name: {line}");
            let mut map = std::collections::BTreeMap::new();
            if !labels.is_empty() {
                for pair in labels.split("\",").map(|p| p.trim_end_matches('"')) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                    assert!(name_ok(k), "{line}");
                    map.insert(k.to_string(), v.to_string());
                }
            }
            samples.push((name.to_string(), map, value));
        }
    }
    samples
}

#[test]
fn copies_of_a_killed_owners_objects_are_dropped_on_every_node() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let mut driver = Command::new(SCENARIOS)
        .arg("copy_then_hold")
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let node = std::io::BufRead::lines(std::io::BufReader::new(driver.stdout.take().unwrap()))
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("COPIED_ON ").map(String::from))
        .expect("COPIED_ON");
    assert_eq!(node, cluster.nodes[0].id, "read on the far node");
    let out = cluster.cli(&["status", "--metrics-urls", "--json"]);
    let urls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let far_url = urls.as_array().unwrap().iter().find(|u| u["node_id"] == node.as_str()).unwrap()["url"].as_str().unwrap().to_string();
    let copies = || -> f64 {
        parse_prometheus(&http_get(&far_url)).iter().filter(|(n, _, _)| n == "rayr_node_object_copies").map(|(_, _, v)| v).sum()
    };
    assert_eq!(copies(), 1.0, "the far node holds a copy");
    unsafe { libc::kill(driver.id() as i32, libc::SIGKILL) };
    let _ = driver.wait();
    // Its owner's node tells the others; the copy goes.
    wait_for("the copy dropped", Duration::from_secs(15), || copies() == 0.0);
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn every_node_serves_prometheus_metrics_that_move_when_tasks_run() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let out = cluster.cli(&["status", "--metrics-urls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let urls: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(urls.len(), 2, "the head's node and the joined one: {urls:?}");
    let scrape = || -> Vec<_> { urls.iter().flat_map(|u| parse_prometheus(&http_get(u))).collect() };
    let value = |samples: &[(String, std::collections::BTreeMap<String, String>, f64)], name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v)))
            .map(|(_, _, v)| v)
            .sum()
    };
    let before = scrape();
    for name in ["rayr_node_workers", "rayr_node_object_store_capacity_bytes", "rayr_node_agent_rss_bytes", "rayr_node_memory_total_bytes", "rayr_tasks", "rayr_nodes"] {
        assert!(before.iter().any(|(n, _, _)| n == name), "{name} is served");
    }
    assert_eq!(value(&before, "rayr_nodes", Some(("state", "alive"))), 2.0);
    assert!(value(&before, "rayr_node_object_store_capacity_bytes", None) > 0.0);
    let finished_before = value(&before, "rayr_tasks", Some(("state", "FINISHED")));
    let started_before = value(&before, "rayr_node_workers_started_total", None);
    let run_out = run(Command::new(SCENARIOS).arg("far_tasks").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    assert!(run_out.status.success(), "{}", String::from_utf8_lossy(&run_out.stderr));
    wait_for("the metrics to count the 20 tasks", Duration::from_secs(20), || {
        let now = scrape();
        value(&now, "rayr_tasks", Some(("state", "FINISHED"))) >= finished_before + 20.0
            && value(&now, "rayr_node_workers_started_total", None) > started_before
    });
    // Nothing is left running or waiting once they are done.
    let now = scrape();
    for state in ["SUBMITTED", "SCHEDULED", "RUNNING"] {
        assert_eq!(value(&now, "rayr_tasks", Some(("state", state))), 0.0, "{state}");
    }
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn rayr_logs_follow_prints_lines_as_a_task_on_another_node_writes_them() {
    use std::io::BufRead;
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let mut driver = Command::new(SCENARIOS)
        .arg("ticker")
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let object = lines.by_ref().map_while(Result::ok).find_map(|l| l.strip_prefix("TICKER ").map(String::from)).expect("TICKER");
    // Its task is running: follow the worker it runs in, by the task's id.
    let mut task = String::new();
    wait_for("the ticker to start", Duration::from_secs(20), || {
        let events = cluster.events();
        let submitted = events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && rayr_logs::hex(&e.object_id) == object);
        let started = submitted.and_then(|s| events.iter().find(|e| kind(e) == EventKind::TaskStarted && e.task_id == s.task_id));
        if let Some(s) = started {
            task = rayr_logs::hex(&s.task_id);
        }
        started.is_some()
    });
    let mut follow = Command::new(rayr_cli())
        .args(["logs", "follow", &task, "-n", "1"])
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // Lines keep coming, in order, as the task writes them.
    let mut ticks = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ticks.len() < 5 && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200))
            // (Lines of several files come prefixed with their file's name.)
            && let Some(n) = l.rsplit_once("tick ").and_then(|(_, n)| n.parse::<u32>().ok())
        {
            ticks.push(n);
        }
    }
    assert!(ticks.len() >= 5, "follow printed {ticks:?}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missed: {ticks:?}");
    assert!(lines.map_while(Result::ok).any(|l| l.starts_with("TICKS 60")), "the task ran to its end");
    assert!(driver.wait().unwrap().success());
    // The job ended, and its worker with it: follow says so and ends by itself.
    let mut ended = None;
    wait_for("follow to end after the worker exited", Duration::from_secs(20), || {
        ended = follow.try_wait().unwrap();
        ended.is_some()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut err).unwrap();
    assert!(ended.unwrap().success() && err.contains("has exited") && err.contains("nothing more will be written"), "{err}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn worker_logs_rotate_by_size_and_search_covers_the_kept_ones() {
    let cluster = TestCluster::start(
        "1",
        &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#, "--log-rotate-bytes", "100000", "--log-rotate-keep", "2"]],
        100,
    );
    let out = run(
        Command::new(SCENARIOS).arg("rotating_logs").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rounds: Vec<String> = stdout.lines().find_map(|l| l.strip_prefix("ROUNDS ")).unwrap().split(' ').map(String::from).collect();
    // Each round filled the file past 100 kB: rotated to .0, .1, .2; two kept.
    let listed = String::from_utf8_lossy(&cluster.cli(&["logs", "list"]).stdout).to_string();
    assert!(listed.contains(".out.1") && listed.contains(".out.2") && !listed.contains(".out.0"), "{listed}");
    let search = |args: &[&str]| String::from_utf8_lossy(&cluster.cli(&[&["logs", "search"], args].concat()).stdout).to_string();
    let found = search(&["ROUND-.-MARK"]);
    assert!(!found.contains("ROUND-1-MARK") && found.contains("ROUND-2-MARK") && found.contains("ROUND-3-MARK"), "{found}");
    assert!(found.contains(".out.1:") && found.contains(".out.2:"), "found in the rotated files: {found}");
    // A task's own lines, in the generation they were written to.
    let events = cluster.events();
    let task_of = |object: &str| {
        rayr_logs::hex(&events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && rayr_logs::hex(&e.object_id) == object).expect("submitted").task_id)
    };
    let found = search(&["MARK", "--task", &task_of(&rounds[1])]);
    assert!(found.contains("ROUND-2-MARK") && !found.contains("ROUND-3-MARK"), "{found}");
    // The first round's generation was deleted: said so, not answered with other lines.
    let out = cluster.cli(&["logs", "search", "MARK", "--task", &task_of(&rounds[0])]);
    let (found, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(found.is_empty() && err.contains("rotated out"), "{found}{err}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_spilled_tasks_worker_killed_on_another_node_is_retried_because_of_that_nodes_record_of_its_exit() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let out = run(
        Command::new(SCENARIOS).arg("retry_sigkill_far").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let object = hexid(stdout.lines().find_map(|l| l.strip_prefix("TASK_RETURN ")).unwrap());
    let far = hexid(&cluster.nodes[0].id);
    let mut events = Vec::new();
    wait_for("the task's events", Duration::from_secs(10), || {
        events = cluster.events();
        events.iter().any(|e| kind(e) == EventKind::TaskFinished && events.iter().any(|s| s.task_id == e.task_id && s.object_id == object))
    });
    let task = events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && e.object_id == object).unwrap().task_id.clone();
    // The owner asked the node that leased the worker how it ended: the retry names its
    // WORKER_EXITED there, with the signal.
    let retry = events.iter().find(|e| e.task_id == task && kind(e) == EventKind::TaskRetried).expect("a retry");
    let exit = events.iter().find(|e| e.id == retry.cause).unwrap_or_else(|| panic!("the retry's cause is recorded: {retry:?}"));
    assert_eq!(kind(exit), EventKind::WorkerExited);
    assert_eq!(exit.node_id, far, "the far node's record of its worker");
    let Some(event::Detail::WorkerExit(x)) = &exit.detail else { panic!("{exit:?}") };
    assert_eq!(x.signal, 9);
    // And why-died of that worker lists the retry among what its death took down.
    let out = cluster.cli(&["why-died", &rayr_logs::hex(&exit.worker_id), "--json"]);
    let why: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let effects = why["effects"].as_array().unwrap();
    assert!(effects.iter().any(|e| e["kind"] == "task_retried" && e["task_id"] == rayr_logs::hex(&task).as_str()), "{why}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn events_a_worker_recorded_after_its_agent_last_drained_survive_the_agent_being_killed() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let hold = cluster.tmp.path().join("let-go");
    let mut driver = Command::new(SCENARIOS)
        .arg("held_far_task")
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env("HOLD", &hold)
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(driver.stdout.take().unwrap()));
    let object = lines.by_ref().map_while(Result::ok).find_map(|l| l.strip_prefix("HELD ").map(String::from)).expect("HELD");
    let started = std::path::PathBuf::from(format!("{}.started", hold.display()));
    wait_for("the task to start", Duration::from_secs(20), || started.exists());
    // The far agent stops draining; the task ends (its result goes straight to the driver,
    // its TASK_FINISHED only into its worker's event area); then the agent is killed.
    cluster.pause(0);
    std::fs::write(&hold, b"").unwrap();
    assert_eq!(lines.map_while(Result::ok).find_map(|l| l.strip_prefix("RESULT ").map(String::from)).as_deref(), Some("7"));
    cluster.kill9(0);
    let object = hexid(&object);
    let task = || cluster.events().into_iter().find(|e| kind(e) == EventKind::TaskSubmitted && e.object_id == object).map(|e| e.task_id);
    wait_for("the task's submission in the record", Duration::from_secs(10), || task().is_some());
    let task = task().unwrap();
    // The worker saved what its dead agent never drained: the task finished, on that node.
    wait_for("the task's end in the record", Duration::from_secs(15), || {
        cluster.events().iter().any(|e| kind(e) == EventKind::TaskFinished && e.task_id == task)
    });
    let saved: Vec<String> = std::fs::read_dir(cluster.session.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("events-{}-orphan-", cluster.nodes[0].id)))
        .collect();
    assert_eq!(saved.len(), 1, "the worker's own log of what it saved");
    // The head indexes it as the far node's.
    let out = cluster.cli(&["events", "--id", &rayr_logs::hex(&task), "--kind", "task_finished", "--json"]);
    let finished: serde_json::Value = serde_json::from_slice(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("null").as_bytes()).unwrap();
    assert_eq!(finished["node_id"], cluster.nodes[0].id.as_str(), "{finished}");
    let _ = driver.wait();
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_task_on_a_frozen_node_is_retried_elsewhere_once_the_node_is_declared_dead() {
    // The node left running must not be declared dead beside the frozen one when the
    // machine is loaded (other tests run beside this one): 30 missed 100 ms beats.
    let far = || NodeSpec {
        ip: String::new(),
        netns: None,
        hide: Vec::new(),
        flags: ["--num-cpus", "1", "--resources", r#"{"far": 1}"#].map(String::from).to_vec(),
        tmpdir: None,
    };
    let nodes = [NodeSpec { ip: "127.0.0.2".into(), ..far() }, NodeSpec { ip: "127.0.0.3".into(), ..far() }];
    let cluster = TestCluster::start_spec(0, "127.0.0.1", "1", &nodes, 100, 30);
    let hold = cluster.tmp.path().join("let-go");
    let mut driver = Command::new(SCENARIOS)
        .arg("held_far_task")
        .env("RAYR_TMPDIR", cluster.tmp.path())
        .env("HOLD", &hold)
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = driver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let object = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok()).find_map(|l| l.strip_prefix("HELD ").map(String::from)).expect("HELD");
    // Which node runs it.
    let mut node = String::new();
    wait_for("the task to run on a node", Duration::from_secs(20), || {
        let events = cluster.events();
        let Some(task) = events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && rayr_logs::hex(&e.object_id) == object).map(|e| e.task_id.clone()) else {
            return false;
        };
        let out = cluster.cli(&["list", "tasks", "--filter", &format!("task_id={}", rayr_logs::hex(&task)), "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        node = rows[0]["node_id"].as_str().unwrap_or_default().to_string();
        rows[0]["state"] == "RUNNING" && cluster.nodes.iter().any(|n| n.id == node)
    });
    // Freeze that node whole: its agent and its workers (their sockets stay open).
    let agent = cluster.nodes.iter().find(|n| n.id == node).unwrap().pid;
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|pp| pp.parse::<i32>().ok()) == Some(agent)
        })
        .collect();
    let frozen: Vec<i32> = std::iter::once(agent).chain(children).collect();
    for &p in &frozen {
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    // Stopped for certain before the task is let go (a signal lands asynchronously).
    wait_for("the node's processes to stop", Duration::from_secs(10), || frozen.iter().all(|p| support::all_threads_stopped(*p)));
    std::fs::write(&hold, b"").unwrap();
    // Declared dead (30 missed 100 ms beats), the task runs again on the other node.
    let result = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok()).find(|l| l.starts_with("RESULT "));
    for &p in &frozen {
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
    let deaths = || -> Vec<String> {
        cluster.events().iter().filter(|e| kind(e) == EventKind::NodeDied).map(|e| format!("{} {:?}", rayr_logs::hex(&e.node_id), e.detail)).collect()
    };
    assert_eq!(result.as_deref(), Some("RESULT 7"), "the driver got its result while node {node} was frozen; nodes died: {:?}", deaths());
    assert!(driver.wait().unwrap().success());
    let events = cluster.events();
    let died = events.iter().find(|e| kind(e) == EventKind::NodeDied && rayr_logs::hex(&e.node_id) == node).expect("NODE_DIED");
    let task = events.iter().find(|e| kind(e) == EventKind::TaskSubmitted && rayr_logs::hex(&e.object_id) == object).unwrap().task_id.clone();
    let retried = events.iter().find(|e| kind(e) == EventKind::TaskRetried && e.task_id == task).expect("TASK_RETRIED");
    assert_eq!(retried.cause, died.id, "retried because its node died");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn actor_names_are_the_clusters_found_and_unique_from_every_node() {
    let cluster = TestCluster::start(
        "0",
        &[&["--num-cpus", "2", "--resources", r#"{"a": 1}"#], &["--num-cpus", "2", "--resources", r#"{"b": 1}"#]],
        100,
    );
    let out = run(
        Command::new(SCENARIOS).arg("actor_named_across_nodes").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    assert_eq!((line("FROM_A"), line("FROM_B")), ("8".to_string(), "9".to_string()), "found by name from both nodes");
    let clash = line("CLASH_B");
    assert!(clash.starts_with("refused") && clash.contains("the name web/hits is taken by actor") && clash.contains(&line("ACTOR")), "{clash}");
    assert_eq!(line("OTHER_B"), "made 0");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn rayr_logs_search_since_and_until_cut_by_when_lines_were_written() {
    let cluster = TestCluster::start("1", &[&["--num-cpus", "1", "--resources", r#"{"far": 1}"#]], 100);
    let say = |marker: &str| {
        let out = run(
            Command::new(SCENARIOS).arg("say_far").env("MARKER", marker).env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    say("EARLY-MARK");
    // A moment between the two lines (the second job's workers start after it).
    let between = jiff::Timestamp::now();
    // Windows are cut to within a second, erring wide: the second job starts clear of it.
    wait_for("1.5 s past the moment", Duration::from_secs(5), || {
        jiff::Timestamp::now().duration_since(between) > jiff::SignedDuration::from_millis(1500)
    });
    let between = between.to_string();
    say("LATE-MARK");
    let search = |args: &[&str]| String::from_utf8_lossy(&cluster.cli(&[&["logs", "search", "MARK said"], args].concat()).stdout).to_string();
    let all = search(&[]);
    assert!(all.contains("EARLY-MARK") && all.contains("LATE-MARK"), "{all}");
    let since = search(&["--since", &between]);
    assert!(!since.contains("EARLY-MARK") && since.contains("LATE-MARK"), "since {between}: {since}");
    let until = search(&["--until", &between]);
    assert!(until.contains("EARLY-MARK") && !until.contains("LATE-MARK"), "until {between}: {until}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_node_killed_mid_run_loses_nothing_its_tasks_rerun_and_its_actor_restarts_elsewhere() {
    let cluster = TestCluster::start(
        "1",
        &[&["--num-cpus", "2", "--resources", r#"{"far": 1}"#], &["--num-cpus", "2", "--resources", r#"{"far": 1}"#]],
        100,
    );
    let pids: Vec<String> = cluster.nodes.iter().map(|n| format!("{}:{}", n.id, n.pid)).collect();
    let out = run(
        Command::new(SCENARIOS).arg("node_dies").env("RAYR_TMPDIR", cluster.tmp.path()).env("NODE_PIDS", pids.join(",")).env_remove("RAYR_ADDRESS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("{k} in {stdout}")).to_string();
    let killed = line("KILLED");
    let survivor = cluster.nodes.iter().find(|n| n.id != killed).unwrap().id.clone();
    assert_eq!(line("ACTOR_BEFORE"), "15");
    assert_eq!(line("STASHED"), "200000", "read from another node's owner");
    let owner_died = line("OWNER_DIED");
    assert!(owner_died.contains("is lost: its owner") && owner_died.contains("rayr why-died"), "{owner_died}");
    assert_eq!(line("TASKS_OK"), "true", "every task's result, those on the killed node run again");
    assert_eq!(line("ACTOR_AFTER"), format!("{survivor} 10"), "restarted on the other node, state rebuilt");
    // The head declared the node dead, and its workers with it.
    wait_for("the killed node declared dead", Duration::from_secs(10), || cluster.node_row(&killed)["state"] == "DEAD");
    let killed_id = hexid(&killed);
    let events = cluster.events();
    let died = events.iter().find(|e| kind(e) == EventKind::NodeDied && e.node_id == killed_id).expect("NODE_DIED");
    let gone: Vec<&rayr_proto::Event> = events.iter().filter(|e| kind(e) == EventKind::WorkerExited && e.cause == died.id).collect();
    assert!(!gone.is_empty(), "WORKER_EXITED caused by the NODE_DIED");
    assert!(gone.iter().all(|e| e.node_id == killed_id));
    // Tasks that were running there ran again, and the actor restarted, because the node
    // died (its agent could not say how its workers ended; the head's NODE_DIED does).
    assert!(events.iter().any(|e| kind(e) == EventKind::TaskRetried && e.cause == died.id), "TASK_RETRIED caused by the NODE_DIED");
    assert!(events.iter().any(|e| kind(e) == EventKind::ActorRestarted && e.cause == died.id), "ACTOR_RESTARTED caused by the NODE_DIED");
    // The head placed the actor each time: first on the killed node, then on the survivor.
    let placed: Vec<&rayr_proto::Event> = events.iter().filter(|e| kind(e) == EventKind::ActorPlaced).collect();
    let placed_on: Vec<String> = placed.iter().map(|e| rayr_logs::hex(&e.node_id)).collect();
    assert!(placed_on.len() >= 2 && placed_on[0] == killed && placed_on.last() == Some(&survivor), "{placed_on:?}");
    for e in &placed {
        let Some(event::Detail::Actor(d)) = &e.detail else { panic!() };
        assert!(d.detail.contains("the head placed it"), "{d:?}");
    }
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}

#[test]
fn a_restarted_head_keeps_the_record_and_its_nodes_register_again() {
    // (A port outside the ephemeral range: see free_low_port.)
    let cluster = TestCluster::start_on(support::free_low_port(), "1", &[&["--num-cpus", "1"], &["--num-cpus", "1"]], 100);
    let port = cluster.head_address.rsplit(':').next().unwrap().to_string();
    let old_head_node = cluster.node_rows().into_iter().find(|r| r["address"] == "127.0.0.1").unwrap()["node_id"].as_str().unwrap().to_string();
    // Detached actors held by the head's node agent (they outlive their driver).
    let out = run(Command::new(SCENARIOS).arg("detached_create").env("RAYR_TMPDIR", cluster.tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let keeper = stdout.lines().find_map(|l| l.strip_prefix("KEEPER ")).unwrap().to_string();
    // SAFETY: the head process this test started (its own node agent goes with it).
    unsafe { libc::kill(cluster.head_pid, libc::SIGKILL) };
    let session = cluster.session.display().to_string();
    // Gone for good once its port is free (its threads close their files after the main
    // one already shows as a zombie).
    let p: u16 = port.parse().unwrap();
    wait_for("the old head's port to be free", Duration::from_secs(10), || std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    let out = cluster.cli(&["start", "--head", "--port", &port, "--num-cpus", "1", "--heartbeat-period-ms", "100", "--session", &session]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Restarting a running head is refused.
    let again = cluster.cli(&["start", "--head", "--port", "0", "--session", &session]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("nothing to restart"));
    // The nodes find the new head at the same address and register again; the old head's
    // node, gone with it, does not, and is declared dead.
    for n in &cluster.nodes {
        wait_for(&format!("node {} to register again", n.id), Duration::from_secs(20), || {
            cluster.events().iter().filter(|e| kind(e) == EventKind::NodeJoined && e.node_id == hexid(&n.id)).count() == 2
        });
    }
    wait_for("the old head's node declared dead", Duration::from_secs(10), || cluster.node_row(&old_head_node)["state"] == "DEAD");
    let reason = cluster.node_row(&old_head_node)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("did not register again"), "{reason}");
    let out = cluster.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alive = status["nodes"].as_array().unwrap().iter().filter(|n| n["state"] == "ALIVE").count();
    assert_eq!(alive, 3, "the two nodes and the new head's: {status}");
    // What was recorded before the restart is still there.
    let out = cluster.cli(&["events", "--kind", "node_joined", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4, "two admissions by each head");
    // why-died answers from the restarted head, about what happened across the restart.
    let out = cluster.cli(&["why-died", &old_head_node, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let why: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(why["summary"].as_str().unwrap().contains("did not register again"), "{why}");
    assert_eq!(why["chain"][0]["kind"], "node_died", "{why}");
    // The detached actors it held died with it: recorded so, by the new head.
    wait_for("the held actor's end recorded", Duration::from_secs(10), || {
        let out = cluster.cli(&["list", "actors", "--filter", &format!("actor_id={keeper}"), "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows[0]["state"] == "DEAD" && rows[0]["death_cause"] == "node_died"
    });
    let out = cluster.cli(&["why-died", &keeper, "--json"]);
    let why: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(why["chain"].as_array().unwrap().iter().any(|e| e["kind"] == "node_died"), "{why}");
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success());
    assert_nothing_left(&cluster.session);
}
