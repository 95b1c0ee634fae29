//! Real clusters, real processes: each test runs a driver program from `src/bin` against
//! an embedded cluster (or one started with `rayr start`), kills things, and checks the
//! event record the runtime left behind. Every test works in its own RAYR_TMPDIR and
//! checks that no process, socket or shm file outlives it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rayr_proto::{Event, EventKind, event};

mod support;
use support::{assert_nothing_left, rayr_cli, run, tail};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");
const NOT_RAYR_MAIN: &str = env!("CARGO_BIN_EXE_not_rayr_main");

struct Scenario {
    tmp: tempfile::TempDir,
    lines: HashMap<String, String>,
    session: PathBuf,
    stdout: String,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        rayr_logs::Session::open(&self.session).remove_socket_dir(); // goes with its RAYR_TMPDIR
    }
}

impl Scenario {
    fn events(&self) -> Vec<Event> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.session.join("events")).unwrap() {
            all.extend(rayr_logs::read_events(&entry.unwrap().path()).unwrap());
        }
        all.sort_by_key(|e| e.time_us);
        all
    }
    fn get(&self, key: &str) -> &str {
        self.lines.get(key).unwrap_or_else(|| panic!("no {key} line in:\n{}", self.stdout))
    }
    fn cli(&self, args: &[&str]) -> Output {
        run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", self.tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(30))
    }
    /// `rayr why-died ID --json`, parsed.
    fn why_died(&self, id: &str) -> serde_json::Value {
        let out = self.cli(&["why-died", id, "--json"]);
        assert!(out.status.success(), "why-died {id}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The id that an error message's `rayr why-died <id>` names.
fn why_died_id(message: &str) -> &str {
    let at = message.rfind("why-died ").expect("the error names a why-died command") + "why-died ".len();
    message[at..].trim_end_matches(|c: char| !c.is_ascii_hexdigit())
}

fn scenario_in(tmp: tempfile::TempDir, name: &str) -> Scenario {
    let out = run(
        Command::new(SCENARIOS).arg(name).env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS").env("RAYR_NUM_CPUS", "2"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "scenario {name} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: HashMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let session = PathBuf::from(&lines["SESSION"]);
    let s = Scenario { tmp, lines, session, stdout };
    assert_nothing_left(&s.session);
    s
}

fn scenario(name: &str) -> Scenario {
    scenario_in(tempfile::tempdir().unwrap(), name)
}

/// A cluster started with `rayr start --head` in its own RAYR_TMPDIR; stopped when dropped,
/// whatever the test did before.
struct StartedCluster {
    tmpdir: PathBuf,
    session: PathBuf,
}

impl StartedCluster {
    fn start(tmpdir: &Path) -> StartedCluster {
        let out = run(
            Command::new(rayr_cli()).args(["start", "--head", "--port", "0", "--num-cpus", "2"]).env("RAYR_TMPDIR", tmpdir).env_remove("RAYR_ADDRESS"),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let session = std::fs::canonicalize(tmpdir.join("session_latest")).unwrap();
        StartedCluster { tmpdir: tmpdir.to_path_buf(), session }
    }

    fn cli(&self, args: &[&str]) -> Output {
        run(Command::new(rayr_cli()).args(args).env("RAYR_TMPDIR", &self.tmpdir).env_remove("RAYR_ADDRESS"), Duration::from_secs(60))
    }
}

impl Drop for StartedCluster {
    fn drop(&mut self) {
        let _ = Command::new(rayr_cli()).arg("stop").arg("--session").arg(&self.session).output();
        rayr_logs::Session::open(&self.session).remove_socket_dir(); // goes with its RAYR_TMPDIR
    }
}

fn kind(e: &Event) -> EventKind {
    EventKind::try_from(e.kind).unwrap()
}

fn task_detail(e: &Event) -> &rayr_proto::TaskDetail {
    match &e.detail {
        Some(event::Detail::Task(t)) => t,
        other => panic!("{:?} has no task detail: {other:?}", kind(e)),
    }
}

fn by_id(events: &[Event]) -> HashMap<Vec<u8>, &Event> {
    events.iter().map(|e| (e.id.clone(), e)).collect()
}

fn hexid(s: &str) -> Vec<u8> {
    rayr_logs::parse_hex(s).unwrap()
}

/// The task whose return object is `object`.
fn task_of(events: &[Event], object: &[u8]) -> Vec<u8> {
    events
        .iter()
        .find(|e| kind(e) == EventKind::TaskSubmitted && e.object_id == object)
        .expect("a TASK_SUBMITTED for the object")
        .task_id
        .clone()
}

#[test]
fn ten_thousand_tasks_are_each_recorded() {
    let s = scenario("many_tasks");
    assert_eq!(s.get("TASKS"), "10000");
    let events = s.events();
    let count = |k| events.iter().filter(|e| kind(e) == k).count();
    assert_eq!(count(EventKind::TaskSubmitted), 10_000);
    assert_eq!(count(EventKind::TaskScheduled), 10_000);
    assert_eq!(count(EventKind::TaskStarted), 10_000);
    assert_eq!(count(EventKind::TaskFinished), 10_000);
    assert_eq!(count(EventKind::ObjectCreated), 10_000);
    assert_eq!(count(EventKind::ObjectFreed), 10_000, "every result is freed when its ref drops");
    // Cause links: finished → started → scheduled → submitted.
    let ids = by_id(&events);
    let finished = events.iter().find(|e| kind(e) == EventKind::TaskFinished).unwrap();
    let started = ids[&finished.cause];
    assert_eq!(kind(started), EventKind::TaskStarted);
    let scheduled = ids[&started.cause];
    assert_eq!(kind(scheduled), EventKind::TaskScheduled);
    assert_eq!(scheduled.worker_id, started.source_worker, "scheduled on the worker that ran it");
    assert_eq!(kind(ids[&scheduled.cause]), EventKind::TaskSubmitted);
}

#[test]
fn large_inline_arguments_and_results_in_flight_do_not_deadlock() {
    let s = scenario("big_inline");
    assert_eq!(s.get("BIG_INLINE"), "300");
}

#[test]
fn available_resources_follow_leases() {
    let s = scenario("resources");
    assert_eq!(s.get("TOTAL_CPU"), "2");
    assert_eq!(s.get("IDLE_CPU"), "2");
    assert_eq!(s.get("BUSY_CPU"), "1");
}

#[test]
fn tasks_fail_promptly_when_the_node_agent_dies_under_a_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let out = run(Command::new(SCENARIOS).arg("node_gone").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", tail(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("NODE_GONE")).expect(&stdout);
    assert!(line.starts_with("NODE_GONE true") && line.contains("node agent"), "{line}");
    drop(cluster);
}

#[test]
fn a_node_agent_refuses_an_event_area_that_is_not_one() {
    use rayr_proto::{ClientMessage, NodeMessage, RegisterClient, client_message, node_message};
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let sockets = rayr_logs::Session::open(&cluster.session).sockets_dir();
    let node_socket = std::fs::read_dir(&sockets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("node-") && p.extension().is_some_and(|e| e == "sock"))
        .expect("the node agent's socket");
    let not_ours = tmp.path().join("rayr-ev-fake");
    std::fs::write(&not_ours, b"not an area").unwrap();
    for (area, want) in [
        (not_ours.display().to_string(), "is not an event area (expected /dev/shm/rayr-ev-*)"),
        ("/dev/shm/rayr-ev-0-missing".to_string(), "cannot map the event area /dev/shm/rayr-ev-0-missing"),
    ] {
        let stream = std::os::unix::net::UnixStream::connect(&node_socket).unwrap();
        let register = ClientMessage {
            req_id: 1,
            body: Some(client_message::Body::Register(RegisterClient {
                worker_id: vec![7; 16],
                job_id: vec![8; 16],
                pid: std::process::id(),
                event_area: area,
                ..Default::default()
            })),
        };
        let mut buf = Vec::new();
        rayr_proto::encode_frame(&register, &mut buf);
        std::io::Write::write_all(&mut &stream, &buf).unwrap();
        let reply: NodeMessage = rayr_proto::frames::FrameReader::new(&stream).next().unwrap().unwrap();
        let Some(node_message::Body::Registered(r)) = reply.body else { panic!("{reply:?}") };
        assert!(r.error.contains(want), "{}", r.error);
    }
    drop(cluster);
}

#[test]
fn an_actor_keeps_its_state_runs_calls_in_order_and_ends_with_its_last_handle() {
    let s = scenario("actor_counter");
    assert_eq!(s.get("ORDERED"), "true", "10k calls from one caller, in order");
    assert_eq!(s.get("TOTAL"), "12000", "and 4 tasks × 500 through handles passed to them");
    assert_eq!(s.get("METHOD_ERROR"), "no", "a method's Err is the call's error, not the actor's death");
    assert_eq!(s.get("WORKER_GONE"), "true", "the actor's worker exits with its last handle");
    assert_eq!(s.get("WHOAMI"), s.get("ACTOR"), "runtime_context() in a method names the actor");
    let events = s.events();
    let ids = by_id(&events);
    let actor = hexid(s.get("ACTOR"));
    let created = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorCreated).expect("ACTOR_CREATED");
    let Some(event::Detail::Actor(d)) = &created.detail else { panic!("{created:?}") };
    assert!(d.class.ends_with("::Counter"), "{}", d.class);
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!("{died:?}") };
    assert_eq!(d.cause().word(), "out_of_scope");
    assert_eq!(kind(ids[&died.cause]), EventKind::ObjectFreed, "caused by its last handle's release");
    let exit = events
        .iter()
        .find(|e| kind(e) == EventKind::WorkerExited && e.worker_id == created.worker_id)
        .expect("its worker's exit");
    let Some(event::Detail::WorkerExit(x)) = &exit.detail else { panic!() };
    assert!(x.detail.contains("the actor it hosted ended"), "{}", x.detail);
    assert_ne!(x.exit_type, rayr_proto::WorkerExitType::SystemError as i32);
    // Every call was a task on the actor's worker, naming the actor.
    let calls = events.iter().filter(|e| e.actor_id == actor && kind(e) == EventKind::TaskSubmitted).count();
    assert!(calls >= 12_003, "{calls}");
    // `rayr why-died <actor>` tells its end from the record.
    let why = s.why_died(s.get("ACTOR"));
    let summary = why["summary"].as_str().unwrap();
    assert!(summary.contains("::Counter") && summary.contains("out_of_scope") && summary.contains("every handle to it was dropped"), "{why}");
    assert_eq!(why["chain"][0]["kind"], "actor_died", "{why}");
}

#[test]
fn rayr_kill_stops_an_actor_at_once_and_its_calls_fail_with_actor_died() {
    let s = scenario("actor_kill");
    assert_eq!(s.get("BEFORE"), "6");
    assert_eq!(s.get("BORROWER_KILL"), "ok", "a task given a handle kills that actor through its owner");
    assert_eq!(s.get("VICTIM"), "killed by rayr::kill");
    assert_eq!(s.get("IN_FLIGHT"), "ActorDied killed by rayr::kill", "the call running when it was killed");
    assert_eq!(s.get("AFTER"), "ActorDied killed by rayr::kill", "a call made after");
    assert_eq!(s.get("KILL_AGAIN"), "ok");
    assert_eq!(s.get("WORKER_GONE"), "true");
    let events = s.events();
    let actor = hexid(s.get("ACTOR"));
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!((d.cause().word(), d.detail.as_str()), ("killed", "killed by rayr::kill"));
    let created = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorCreated).unwrap();
    let exit = events.iter().find(|e| kind(e) == EventKind::WorkerExited && e.worker_id == created.worker_id).expect("its worker's exit");
    let Some(event::Detail::WorkerExit(x)) = &exit.detail else { panic!() };
    assert_eq!(x.exit_type, rayr_proto::WorkerExitType::IntendedUserExit as i32, "{x:?}");
    assert!(x.detail.contains("rayr::kill"), "{}", x.detail);
    // `rayr list actors` shows it, dead, and why.
    let out = s.cli(&["list", "actors", "--filter", &format!("actor_id={}", s.get("ACTOR")), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!((row["state"].as_str(), row["death_cause"].as_str()), (Some("DEAD"), Some("killed")), "{rows}");
    assert!(row["class"].as_str().unwrap().ends_with("::Counter"), "{rows}");
    assert!(row["pid"].as_u64().unwrap() > 0, "{rows}");
    // The calls it failed name the kill as their cause.
    let failed = events.iter().filter(|e| kind(e) == EventKind::TaskFailed && e.cause == died.id).count();
    assert!(failed >= 1, "the in-flight call's failure is caused by the kill");
}

#[test]
fn an_actor_whose_worker_is_sigkilled_is_dead_and_says_why() {
    let s = scenario("actor_sigkill");
    for key in ["IN_FLIGHT", "AFTER"] {
        let v = s.get(key);
        assert!(v.starts_with("ActorDied") && v.contains("signal 9") && v.contains("rayr why-died"), "{key}: {v}");
    }
    let events = s.events();
    let ids = by_id(&events);
    let actor = hexid(s.get("ACTOR"));
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!(d.cause().word(), "worker_died");
    assert_eq!(kind(ids[&died.cause]), EventKind::WorkerExited, "caused by its worker's exit");
    let why = s.why_died(s.get("ACTOR"));
    assert!(why["summary"].as_str().unwrap().contains("worker_died"), "{why}");
    assert_eq!(why["chain"][1]["kind"], "worker_exited", "{why}");
}

#[test]
fn an_actor_whose_constructor_panics_is_dead_and_its_calls_say_why() {
    let s = scenario("actor_ctor_panic");
    for i in 0..5 {
        let v = s.get(&format!("CALL{i}"));
        assert!(v.starts_with("ActorDied") && v.contains("constructor failed") && v.contains("no database"), "call {i}: {v}");
    }
    let b = s.get("BORROWER");
    assert!(b.starts_with("ActorDied") && b.contains("no database"), "{b}");
    let unsendable = s.get("UNSENDABLE");
    assert!(unsendable.starts_with("ActorDied") && unsendable.contains("its creation failed") && unsendable.contains("argument 0 cannot be serialized"), "{unsendable}");
    assert_eq!(s.get("UNSENDABLE_NAME"), "free");
    let events = s.events();
    let actor = hexid(s.get("ACTOR"));
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!(d.cause().word(), "creation_failed");
    assert!(!events.iter().any(|e| e.actor_id == actor && kind(e) == EventKind::ActorCreated));
}

#[test]
fn an_actor_call_waiting_for_an_argument_holds_back_the_calls_after_it() {
    let s = scenario("actor_order_with_pending_arg");
    assert_eq!((s.get("FIRST"), s.get("SECOND")), ("5", "5"));
}

#[test]
fn an_actor_ends_with_its_owner() {
    let s = scenario("actor_owner_exit");
    let events = s.events();
    let actor = hexid(s.get("ACTOR"));
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!(d.cause().word(), "owner_died", "{d:?}");
    assert!(!std::path::Path::new(&format!("/proc/{}", s.get("PID"))).exists(), "its worker is gone");
}

#[test]
fn max_concurrency_runs_shared_calls_at_once_and_exclusive_calls_alone() {
    let s = scenario("actor_concurrency");
    assert_eq!(s.get("CONCURRENT_MOST"), "40", "40 calls at once, never more");
    let ms: u64 = s.get("CONCURRENT_MS").parse().unwrap();
    assert!(ms < 4 * 300, "40 calls of 300 ms on 40 threads took {ms} ms");
    assert_eq!(s.get("WRITE_SAW"), "0", "a &mut self call runs alone");
    let waited: u64 = s.get("WRITE_WAITED_MS").parse().unwrap();
    assert!(waited >= 1_000, "the &mut self call waited for the 1.5 s calls running ({waited} ms)");
    assert_eq!(s.get("FROM_TASK_MOST"), "40", "a borrower keeps as many calls in flight");
    assert_eq!(s.get("SERIAL_MOST"), "1", "without max_concurrency, one call at a time");
    let not_sync = s.get("NOT_SYNC");
    assert!(not_sync.starts_with("ActorDied") && not_sync.contains("scenarios::Tally is not Sync"), "{not_sync}");
    assert_eq!(s.get("SYNC_ONE"), "1");
    let option = s.get("TASK_OPTION");
    assert!(option.contains("max_concurrency") && option.contains("apply to actors, not to a task"), "{option}");
}

#[test]
fn an_actor_with_max_restarts_is_created_again_until_none_are_left() {
    let s = scenario("actor_restart");
    assert_eq!(s.get("LIFE0"), "15");
    assert_eq!(s.get("BORROWER_BEFORE"), "16");
    assert_eq!(s.get("BORROWER_AFTER"), "12", "a task holding a handle calls the restarted actor");
    assert_eq!(s.get("LIFE1"), "10 pid_changed=true", "rayr::kill(.., false) restarts it: the constructor rebuilt its state");
    assert_eq!(s.get("LIFE2"), "10 pid_changed=true", "restarted after a SIGKILL");
    assert_eq!(s.get("LIFE3"), "10 pid_changed=true");
    let last = s.get("LIFE4");
    assert!(last.starts_with("error actor") && last.contains("died") && last.contains("signal 9"), "no restarts left: {last}");
    let events = s.events();
    let ids = by_id(&events);
    let actor = hexid(s.get("ACTOR"));
    let restarts: Vec<&Event> = events.iter().filter(|e| e.actor_id == actor && kind(e) == EventKind::ActorRestarted).collect();
    assert_eq!(restarts.len(), 3);
    assert!(restarts.iter().all(|r| kind(ids[&r.cause]) == EventKind::WorkerExited), "each caused by its worker's exit");
    assert_eq!(events.iter().filter(|e| e.actor_id == actor && kind(e) == EventKind::ActorCreated).count(), 4);
    let died = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::ActorDied).expect("ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!(d.cause().word(), "worker_died");
    let out = s.cli(&["list", "actors", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["actor_id"] == s.get("ACTOR")).expect("its row");
    assert_eq!((row["state"].as_str(), row["restarts"].as_u64()), (Some("DEAD"), Some(3)), "{row}");
    // The summary counts it among the dead of its class, with how it died.
    let out = s.cli(&["summary", "actors", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let class = summary["by_class"].as_array().unwrap().iter().find(|c| c["class"] == row["class"]).unwrap_or_else(|| panic!("{summary}"));
    assert!(class["states"]["DEAD (worker_died)"].as_u64() >= Some(1), "{summary}");
    let text = String::from_utf8_lossy(&s.cli(&["summary", "actors"]).stdout).to_string();
    assert!(text.contains("DEAD (worker_died)") && text.contains(row["class"].as_str().unwrap()), "{text}");
    // why-died: the end, with the restarts used and left, down to the worker's SIGKILL.
    let why = s.why_died(s.get("ACTOR"));
    let summary = why["summary"].as_str().unwrap();
    assert!(summary.contains("after 3 restart(s) of max_restarts 3: none left"), "{summary}");
    assert_eq!(why["chain"][0]["kind"], "actor_died");
    assert_eq!(why["chain"][0]["detail"]["max_restarts"], 3);
    assert_eq!(why["chain"][1]["kind"], "worker_exited");
    assert_eq!(why["chain"][1]["detail"]["signal"], 9);
    assert_eq!(why["root_cause"], why["chain"][1]["id"]);
    assert!(why["advice"].as_str().unwrap().contains("dmesg"), "{why}");
}

#[test]
fn an_actor_whose_constructor_took_a_ref_restarts_with_it_and_frees_it_when_it_ends() {
    let s = scenario("actor_restart_ref");
    assert_eq!(s.get("BEFORE"), "300000 900000");
    assert_eq!(s.get("AFTER_RESTART"), "300000 900000", "the constructor re-ran on the kept object");
    assert_eq!(s.get("STORE_AFTER_END"), "0", "the kept argument is freed when the actor ends");
}

#[test]
fn calls_running_when_an_actor_restarts_are_retried_per_max_task_retries() {
    let s = scenario("actor_task_retries");
    assert_eq!(s.get("RUNNING1"), "10", "retried on the restarted actor (fresh state)");
    assert_eq!(s.get("AFTER1"), "10", "the call queued behind it runs after it, on the new life");
    let r0 = s.get("RUNNING0");
    assert!(r0.starts_with("ActorDied") && r0.contains("restarts"), "without retries it fails: {r0}");
    let a0 = s.get("AFTER0");
    assert!(a0.starts_with("ActorDied") && a0.contains("restarts"), "already pushed to the dead worker, it fails too: {a0}");
    let events = s.events();
    let ids = by_id(&events);
    let actor = hexid(s.get("ACTOR"));
    let retried = events.iter().find(|e| e.actor_id == actor && kind(e) == EventKind::TaskRetried).expect("TASK_RETRIED");
    assert_eq!(kind(ids[&retried.cause]), EventKind::ActorRestarted, "caused by the restart");
}

#[test]
fn named_actors_are_found_by_name_and_names_are_unique_while_they_live() {
    let s = scenario("actor_named");
    assert_eq!(s.get("SAME"), "true");
    assert_eq!(s.get("VIA_NAME"), "8");
    assert_eq!(s.get("FROM_TASK"), "9", "found by name from another process");
    let clash = s.get("CLASH");
    assert!(clash.contains("the name web/hits is taken by actor") && clash.contains(s.get("ACTOR")), "{clash}");
    assert_eq!(s.get("OTHER_NAMESPACE"), "3", "the same name in another namespace is another actor");
    assert!(s.get("NOT_FOUND").contains("no actor named web/nope"), "{}", s.get("NOT_FOUND"));
    assert_eq!(s.get("NAME_FREED"), "true", "an ended actor's name is free again");
    let out = s.cli(&["list", "actors", "--filter", "name=web/hits", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "`rayr list actors` names it: {rows}");
    assert_eq!(rows[0]["actor_id"], s.get("ACTOR"));
}

/// Runs a scenario as a driver of the cluster started in `tmp`; its `KEY value` lines.
fn driver_of(tmp: &Path, name: &str) -> HashMap<String, String> {
    let out = run(Command::new(SCENARIOS).arg(name).env("RAYR_TMPDIR", tmp).env_remove("RAYR_ADDRESS"), Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

#[test]
fn a_named_detached_actor_outlives_its_driver_and_is_found_by_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let first = driver_of(tmp.path(), "detached_create");
    assert_eq!(first["FIRST"], "15");
    assert_eq!(first["KEEPER_VALUE"], "1");
    assert!(first["CLASH"].contains("the name svc/counter is taken by actor") && first["CLASH"].contains(&first["ACTOR"]), "{}", first["CLASH"]);
    assert!(first["BY_REF"].contains("is a ref") && first["BY_REF"].contains("pass the value"), "{}", first["BY_REF"]);
    // Its driver has exited; the actor's worker has not.
    let pid: u32 = first["ACTOR_PID"].parse().unwrap();
    assert!(pid_alive(pid), "the detached actor's worker {pid} is still running");

    let second = driver_of(tmp.path(), "detached_find");
    assert_eq!(second["ACTOR"], first["ACTOR"], "found by name");
    assert_eq!(second["SURVIVED"], "16", "its state outlived the first driver");
    assert_eq!(second["RUNNING_RETRIED"], "10", "the call running when its worker died ran again on the restarted actor");
    assert_eq!(second["AFTER_RETRIED"], "10");
    assert_eq!(second["RESTARTED"], "10 pid_changed=true", "restarted after its job ended, state rebuilt by the constructor");
    assert_eq!(second["FROM_TASK"], "11", "a task of the second driver finds it by name");
    assert_eq!(second["ACTOR_TASK"], "49", "it runs tasks of its own after its job ended");
    assert!(second["AFTER_KILL"].starts_with("ActorDied") && second["AFTER_KILL"].contains("killed by rayr::kill"), "{}", second["AFTER_KILL"]);
    assert!(second["NAME_GONE"].contains("no actor named svc/counter"), "{}", second["NAME_GONE"]);

    // The record: restarted by the node agent because its worker died, then killed.
    let session = cluster.session.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let actor_row = |id: &str| -> serde_json::Value {
        let out = cluster.cli(&["list", "actors", "--filter", &format!("actor_id={id}"), "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array().and_then(|r| r.first()).cloned().unwrap_or_default()
    };
    loop {
        let row = actor_row(&first["ACTOR"]);
        if row["state"] == "DEAD" {
            assert_eq!(row["death_cause"], "killed", "{row}");
            assert_eq!(row["lifetime"], "detached", "{row}");
            assert_eq!(row["restarts"], 1, "{row}");
            assert_eq!(row["name"], "svc/counter", "{row}");
            break;
        }
        assert!(Instant::now() < deadline, "the killed actor shows DEAD: {row}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cluster.cli(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&session);
    let mut events = Vec::new();
    for entry in std::fs::read_dir(session.join("events")).unwrap() {
        events.extend(rayr_logs::read_events(&entry.unwrap().path()).unwrap());
    }
    let actor = hexid(&first["ACTOR"]);
    let exits = by_id(&events);
    let restarted = events.iter().find(|e| kind(e) == EventKind::ActorRestarted && e.actor_id == actor).expect("ACTOR_RESTARTED");
    let exit = exits.get(&restarted.cause).expect("caused by a recorded event");
    assert_eq!(kind(exit), EventKind::WorkerExited);
    let Some(event::Detail::WorkerExit(x)) = &exit.detail else { panic!() };
    assert_eq!(x.pid, pid, "the SIGKILLed worker");
    let retried = events.iter().find(|e| kind(e) == EventKind::TaskRetried && e.actor_id == actor).expect("TASK_RETRIED of the running call");
    assert_eq!(retried.cause, exit.id, "retried because the worker exited");
    // The first driver's job ended before the restart.
    assert!(events.iter().any(|e| kind(e) == EventKind::JobFinished && e.time_us < restarted.time_us));
    // The actor left running ended with the cluster, and says so.
    let keeper = hexid(&first["KEEPER"]);
    let died = events.iter().find(|e| kind(e) == EventKind::ActorDied && e.actor_id == keeper).expect("the keeper's ACTOR_DIED");
    let Some(event::Detail::Actor(d)) = &died.detail else { panic!() };
    assert_eq!(d.cause().word(), "node_stopped", "{d:?}");
}

#[test]
fn a_handle_from_another_cluster_says_so() {
    let s = scenario("foreign_handle");
    assert_nothing_left(Path::new(s.get("SESSION2")));
    let first = s.session.display().to_string();
    for key in ["FOREIGN_CALL", "FOREIGN_KILL"] {
        let line = s.get(key);
        assert!(line.contains("belongs to another cluster") && line.contains(&first) && line.contains(s.get("ACTOR")), "{key}: {line}");
    }
}

#[test]
fn a_worker_that_dies_while_idle_is_replaced() {
    let s = scenario("idle_worker_dies");
    assert_eq!(s.get("STILL_RUNS"), "16");
    let pid: u32 = s.get("KILLED_PID").parse().unwrap();
    let events = s.events();
    let exit = events
        .iter()
        .find(|e| kind(e) == EventKind::WorkerExited && matches!(&e.detail, Some(event::Detail::WorkerExit(x)) if x.pid == pid))
        .expect("the killed worker's exit");
    let replacement = events.iter().find(|e| kind(e) == EventKind::WorkerStarted && e.cause == exit.id);
    assert!(replacement.is_some(), "a WORKER_STARTED caused by its exit");
}

#[test]
fn a_put_container_keeps_its_refs_alive_and_frees_them_with_it() {
    let s = scenario("container");
    assert_eq!(s.get("CONTAINER_FREED"), "yes");
}

#[test]
fn a_ref_inside_a_task_argument_survives_until_the_retry_ran() {
    let s = scenario("nested_retry");
    assert_eq!(s.get("NESTED_RETRY"), "200000");
    assert_eq!(s.get("NESTED_FREED"), "yes");
}

#[test]
fn a_borrower_that_dies_stops_pinning_the_object() {
    let s = scenario("borrower_dies");
    assert_eq!(s.get("FREED_AFTER_BORROWER_DIED"), "yes");
    let object = hexid(s.get("OBJECT"));
    let events = s.events();
    let released = events
        .iter()
        .find(|e| kind(e) == EventKind::ObjectReleased && e.object_id == object)
        .expect("the dead borrower's release is recorded");
    let Some(event::Detail::Object(d)) = &released.detail else { panic!() };
    assert!(d.reason.contains("exited"), "{}", d.reason);
    assert!(events.iter().any(|e| kind(e) == EventKind::ObjectFreed && e.object_id == object));
}

#[test]
fn leases_held_by_a_worker_that_dies_come_back() {
    let s = scenario("holder_dies");
    assert_eq!(s.get("CPUS_BACK"), "2");
}

#[test]
fn a_task_waiting_on_a_result_batched_behind_it_does_not_hang() {
    let s = scenario("pipelined_dependency");
    assert_eq!(s.get("PIPELINED"), "40");
}

#[test]
fn a_ref_given_to_a_task_by_value_is_kept_until_the_task_ran() {
    let s = scenario("ref_by_value");
    assert_eq!(s.get("BY_VALUE"), "300000 10");
    let by_value: Vec<&str> = s.get("REF_PARAM_BY_VALUE").split(' ').collect();
    assert_eq!(by_value[0], 37_500u64.wrapping_mul(0x0303_0303_0303_0303).to_string());
    let events = s.events();
    let (arg, task) = (hexid(by_value[1]), task_of(&events, &hexid(by_value[2])));
    let freed = events.iter().find(|e| e.object_id == arg && kind(e) == EventKind::ObjectFreed).expect("the argument is freed");
    let finished = events.iter().find(|e| e.task_id == task && kind(e) == EventKind::TaskFinished).expect("the task finished");
    assert!(freed.time_us >= finished.time_us, "an argument given by value is freed only after its task ran");
    let created = events.iter().filter(|e| kind(e) == EventKind::ObjectCreated).count();
    let freed = events.iter().filter(|e| kind(e) == EventKind::ObjectFreed).count();
    assert_eq!(created, freed, "every object freed once its task and refs are done");
    let pair: Vec<&str> = s.get("PAIR").split(' ').collect();
    assert_eq!(pair[0], "100");
    let task = task_of(&events, &hexid(pair[1]));
    let started = events.iter().filter(|e| e.task_id == task && kind(e) == EventKind::TaskStarted).count();
    assert_eq!(started, 1, "a task taking one pending ref twice runs once");
}

#[test]
fn nested_tasks_three_deep() {
    let s = scenario("nested");
    assert_eq!(s.get("NESTED"), "50");
    let events = s.events();
    let submitted: Vec<&Event> = events.iter().filter(|e| kind(e) == EventKind::TaskSubmitted).collect();
    let by_fn = |f: &str| submitted.iter().filter(|e| task_detail(e).function.ends_with(f)).count();
    assert_eq!((by_fn("::level1"), by_fn("::level2"), by_fn("::level3")), (1, 2, 2));
    // Level 2 and 3 were submitted (and so owned) by workers, not the driver.
    let driver = submitted.iter().find(|e| task_detail(e).function.ends_with("::level1")).unwrap().source_worker.clone();
    assert!(submitted.iter().filter(|e| !task_detail(e).function.ends_with("::level1")).all(|e| e.source_worker != driver));
}

#[test]
fn put_slice_is_read_zero_copy_by_another_worker() {
    let s = scenario("zero_copy");
    let driver: Vec<&str> = s.get("DRIVER_PAGE").split(' ').collect();
    let worker: Vec<&str> = s.get("WORKER_PAGE").split(' ').collect();
    assert!(driver[0].starts_with("/dev/shm/rayr-"), "the driver's view is in the shm store: {driver:?}");
    assert_eq!(driver[..2], worker[..2], "same file, same offset");
    assert_ne!(driver[2], "0", "physical frames are visible to root");
    assert_eq!(driver[2], worker[2], "the same physical page: nothing was copied");
}

#[test]
fn a_panicking_task_is_retried_with_the_failure_as_cause() {
    let s = scenario("retry_panic");
    let events = s.events();
    let task = task_of(&events, &hexid(s.get("TASK_RETURN")));
    let mine: Vec<&Event> = events.iter().filter(|e| e.task_id == task).collect();
    let failed: Vec<&&Event> = mine.iter().filter(|e| kind(e) == EventKind::TaskFailed).collect();
    assert_eq!(failed.len(), 2);
    for f in &failed {
        let d = task_detail(f);
        assert_eq!(d.error_type().word(), "panic");
        assert!(d.error.contains("flaky failure"), "{}", d.error);
        assert!(!d.r#final);
    }
    let retried: Vec<&&Event> = mine.iter().filter(|e| kind(e) == EventKind::TaskRetried).collect();
    assert_eq!(retried.len(), 2);
    let failed_ids: Vec<&Vec<u8>> = failed.iter().map(|e| &e.id).collect();
    assert!(retried.iter().all(|r| failed_ids.contains(&&r.cause)), "each retry names the failure that caused it");
    let done = mine.iter().find(|e| kind(e) == EventKind::TaskFinished).unwrap();
    assert_eq!(task_detail(done).attempt, 2);
}

#[test]
fn why_died_shows_what_a_failed_task_wrote() {
    let s = scenario("panic_for_good");
    let events = s.events();
    let task = rayr_logs::hex(&task_of(&events, &hexid(s.get("TASK_RETURN"))));
    let why = s.why_died(&task);
    let out: Vec<&str> = why["task_stdout"].as_array().expect("task_stdout").iter().map(|l| l.as_str().unwrap()).collect();
    let err: Vec<&str> = why["task_stderr"].as_array().expect("task_stderr").iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(out, ["about to fail: t1"], "{why}");
    assert!(err.first() == Some(&"warning: t1 is not right") && err.iter().any(|l| l.contains("boom-t1")), "{err:?}");
    let text = String::from_utf8_lossy(&s.cli(&["why-died", &task]).stdout).to_string();
    assert!(text.contains("what the failed attempt wrote to stderr") && text.contains("| warning: t1 is not right"), "{text}");
    // The root cause is the panic itself, with where it happened.
    assert_eq!(why["chain"][0]["kind"], "task_failed");
    assert_eq!(why["chain"][0]["detail"]["error_type"], "panic");
    assert_eq!(why["root_cause"], why["chain"][0]["id"]);
    let advice = why["advice"].as_str().unwrap();
    assert!(advice.contains("boom-t1") && advice.contains("scenarios.rs"), "{advice}");
    assert!(why["summary"].as_str().unwrap().contains("max_retries 0"), "{why}");
}

#[test]
fn a_task_whose_worker_is_sigkilled_is_retried_elsewhere() {
    let s = scenario("retry_sigkill");
    let events = s.events();
    let ids = by_id(&events);
    let task = task_of(&events, &hexid(s.get("TASK_RETURN")));
    let retry = events.iter().find(|e| e.task_id == task && kind(e) == EventKind::TaskRetried).expect("a retry");
    let exit = ids.get(&retry.cause).expect("the retry's cause is recorded");
    assert_eq!(kind(exit), EventKind::WorkerExited);
    let Some(event::Detail::WorkerExit(x)) = &exit.detail else { panic!() };
    assert_eq!(x.signal, 9);
    assert_eq!(x.exit_type, rayr_proto::WorkerExitType::SystemError as i32);
    assert!(x.peak_rss_bytes > 0);
    assert!(task_detail(retry).reason.contains("SIGKILL"), "{}", task_detail(retry).reason);
    let done = events.iter().find(|e| e.task_id == task && kind(e) == EventKind::TaskFinished).unwrap();
    assert_ne!(done.source_worker, exit.worker_id, "the retry ran on another worker");
    // What the killed worker recorded an instant before it died outlives it (the node
    // agent drains its event area): the attempt it was running shows as started there.
    let started = events
        .iter()
        .find(|e| e.task_id == task && kind(e) == EventKind::TaskStarted && e.source_worker == exit.worker_id)
        .expect("the killed worker's TASK_STARTED survives it");
    assert_eq!(task_detail(started).attempt, 0);
}

#[test]
fn without_retries_a_sigkilled_worker_fails_the_task_with_its_exit() {
    let s = scenario("no_retry_sigkill");
    let err = s.get("ERROR");
    assert!(err.contains("signal 9") && err.contains("rayr why-died"), "{err}");
    let events = s.events();
    let ids = by_id(&events);
    let failed = events.iter().find(|e| kind(e) == EventKind::TaskFailed).unwrap();
    assert!(task_detail(failed).r#final);
    assert_eq!(task_detail(failed).error_type().word(), "worker_died");
    assert_eq!(kind(ids[&failed.cause]), EventKind::WorkerExited);
    // The command the error names explains it from the record.
    let why = s.why_died(why_died_id(err));
    assert_eq!(why["kind"], "worker");
    assert_eq!(why["chain"][0]["kind"], "worker_exited");
    assert_eq!(why["chain"][0]["detail"]["signal"], 9);
    assert!(why["advice"].as_str().unwrap().contains("dmesg"), "{why}");
    let why_task = s.why_died(&rayr_logs::hex(&failed.task_id));
    assert!(why_task["summary"].as_str().unwrap().contains("SIGKILL"), "{why_task}");
}

#[test]
fn a_borrower_that_outlives_a_killed_owner_gets_owner_died() {
    let s = scenario("owner_died");
    let err = s.get("ERROR");
    assert!(err.contains("SIGKILL") && err.contains(s.get("OWNER")), "{err}");
    let events = s.events();
    let ids = by_id(&events);
    let object = hexid(s.get("OBJECT"));
    let created = events.iter().find(|e| kind(e) == EventKind::ObjectCreated && e.object_id == object).unwrap();
    assert_eq!(created.worker_id, hexid(s.get("OWNER")), "the worker that put it owns it");
    let borrowed = events.iter().any(|e| kind(e) == EventKind::ObjectBorrowed && e.object_id == object);
    assert!(borrowed, "the driver registered as a borrower");
    let lost: Vec<&Event> = events.iter().filter(|e| kind(e) == EventKind::ObjectLost && e.object_id == object).collect();
    assert!(!lost.is_empty());
    for l in lost {
        let exit = ids[&l.cause];
        assert_eq!(kind(exit), EventKind::WorkerExited);
        assert_eq!(exit.worker_id, object_owner(created));
    }
    let why = s.why_died(why_died_id(err));
    assert_eq!(why["kind"], "object");
    let chain: Vec<&str> = why["chain"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(chain[..2], ["object_lost", "worker_exited"], "{why}");
    assert!(why["advice"].as_str().unwrap().contains("owner"), "{why}");
}

fn object_owner(created: &Event) -> Vec<u8> {
    created.worker_id.clone()
}

#[test]
fn refs_owned_by_a_worker_can_be_waited_on_and_carry_typed_errors() {
    let s = scenario("borrowed_refs");
    assert_eq!(s.get("EARLY_READY"), "0 1", "a pending borrowed ref is not ready");
    assert_eq!(s.get("LATE_READY"), "1");
    let failure = s.get("BORROWED_FAILURE");
    assert!(failure.contains("bad input 9"), "{failure}");
    // The error names the real task, so `rayr why-died` can follow it.
    let events = s.events();
    let failed = events.iter().find(|e| kind(e) == EventKind::TaskFailed).unwrap();
    assert!(failure.contains(&rayr_logs::hex(&failed.task_id)), "{failure}");
}

#[test]
fn objects_are_freed_when_refs_drop() {
    let s = scenario("freed");
    assert_eq!(s.get("USED_AFTER"), "0");
    let events = s.events();
    let created: Vec<&Vec<u8>> = events.iter().filter(|e| kind(e) == EventKind::ObjectCreated).map(|e| &e.object_id).collect();
    let freed: Vec<&Vec<u8>> = events.iter().filter(|e| kind(e) == EventKind::ObjectFreed).map(|e| &e.object_id).collect();
    assert!(created.len() >= 9);
    for c in created {
        assert!(freed.contains(&c), "object {} was never freed", rayr_logs::hex(c));
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = scenario("bad_input");
    assert!(s.get("PUT_ERROR").contains("cannot be serialized"));
    let inf = s.get("INFEASIBLE");
    assert!(inf.contains("{CPU: 64}") && inf.contains("{CPU: 2}"), "{inf}");
    assert!(s.get("TASK_FAILED").contains("bad input 7"));

    // The CLI on the recorded session.
    let out = s.cli(&["list", "bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tasks"), "names the valid entities");
    let out = s.cli(&["events", "--id", "ffffffffffff"]);
    assert!(!out.status.success());
    let out = s.cli(&["events", "--kind", "no_such_kind"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("task_failed"));
    let out = s.cli(&["list", "tasks", "--filter", "state=failed", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "the infeasible task and the failing one: {rows}");
    let out = s.cli(&["list", "tasks", "--filter", "state=bogus"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tasks are SUBMITTED, SCHEDULED, RUNNING, FINISHED, FAILED"), "{err}");

    // No cluster at all.
    let empty = tempfile::tempdir().unwrap();
    let out = run(Command::new(rayr_cli()).args(["list", "tasks"]).env("RAYR_TMPDIR", empty.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rayr cluster found"));
    let out = run(
        Command::new(rayr_cli()).args(["start", "--head", "--port", "0", "--resources", "{not json"]).env("RAYR_TMPDIR", empty.path()),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resources"));
}

#[test]
fn a_full_object_store_is_its_own_error_naming_the_node_and_the_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        Command::new(SCENARIOS).arg("store_full").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS").env("RAYR_OBJECT_STORE_MEMORY", (32u64 << 20).to_string()),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let full = stdout.lines().find_map(|l| l.strip_prefix("STORE_FULL ")).expect("STORE_FULL");
    assert!(full.contains("20000000 bytes requested") && full.contains("--object-store-memory") && full.contains("rayr memory"), "{full}");
    assert!(stdout.contains("ROOM_AGAIN 3"), "{stdout}");
}

#[test]
fn a_binary_without_rayr_main_is_reported_not_hung() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(Command::new(NOT_RAYR_MAIN).env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ERROR") && stdout.contains("#[rayr::main]"), "{stdout}");
}

#[test]
fn rayr_start_runs_drivers_and_rayr_stop_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let cli = |args: &[&str]| cluster.cli(args);
    let session = cluster.session.clone();
    // Two drivers, one after the other, join the same cluster.
    for _ in 0..2 {
        let out = run(Command::new(SCENARIOS).arg("nested").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("SESSION {}", session.display())), "joined the running cluster: {stdout}");
    }
    let out = cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true);
    // A driver whose main returns an error, and one killed while its task runs: both jobs
    // fail, and the task that was running ends with its job (it would show RUNNING forever).
    let out = run(Command::new(SCENARIOS).arg("main_err").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("MAIN-ERR"));
    let mut killed = Command::new(SCENARIOS)
        .arg("long_task")
        .env("RAYR_TMPDIR", tmp.path())
        .env_remove("RAYR_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(killed.stdout.take().unwrap()));
    let kept = lines.by_ref().map_while(Result::ok).find_map(|l| l.strip_prefix("KEPT ").map(String::from)).expect("KEPT");
    let long = lines.map_while(Result::ok).find_map(|l| l.strip_prefix("LONG ").map(String::from)).expect("LONG");
    let task = |cli: &dyn Fn(&[&str]) -> Output| -> serde_json::Value {
        let out = cli(&["list", "tasks", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let events = cli(&["events", "--id", &long, "--kind", "task_submitted", "--json"]);
        let submitted: serde_json::Value = serde_json::from_slice(String::from_utf8_lossy(&events.stdout).lines().next().unwrap_or("null").as_bytes()).unwrap();
        rows.as_array().unwrap().iter().find(|r| r["task_id"] == submitted["task_id"]).cloned().unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while task(&cli)["state"] != "RUNNING" {
        assert!(Instant::now() < deadline, "the long task did not start: {}", task(&cli));
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(killed.id() as i32, libc::SIGKILL) };
    let _ = killed.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = task(&cli);
        if row["state"] == "FAILED" {
            assert_eq!(row["error_type"], "job_ended", "{row}");
            break;
        }
        assert!(Instant::now() < deadline, "the killed driver's running task never ended: {row}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cli(&["list", "jobs", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "SUCCEEDED").count(), 2, "{jobs}");
    assert_eq!(states.iter().filter(|s| **s == "FAILED").count(), 2, "the erring and the killed driver's: {jobs}");
    // why-died of the task names the driver's end.
    let why = cluster.cli(&["why-died", task(&cli)["task_id"].as_str().unwrap(), "--json"]);
    let why: serde_json::Value = serde_json::from_slice(&why.stdout).unwrap();
    let kinds: Vec<&str> = why["chain"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[..3], ["task_failed", "job_finished", "worker_exited"], "{why}");
    assert!(why["advice"].as_str().unwrap().contains("crashed or was killed before the task did"), "{why}");
    // What the killed driver owned (a value in its own memory) went with it: lost, because
    // of its exit.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(&["list", "objects", "--filter", &format!("object_id={kept}"), "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if rows[0]["state"] == "LOST" {
            break;
        }
        assert!(Instant::now() < deadline, "the dead driver's object stayed {rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let why = cluster.cli(&["why-died", &kept, "--json"]);
    let why: serde_json::Value = serde_json::from_slice(&why.stdout).unwrap();
    let kinds: Vec<&str> = why["chain"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["object_lost", "worker_exited"], "{why}");
    // The agent drains the workers' last events as they stop after each driver: wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(&["list", "tasks", "--json"]);
        let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let finished = tasks.as_array().unwrap().iter().filter(|t| t["state"] == "FINISHED").count();
        if finished == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "expected 5 finished tasks per driver run: {tasks}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&session);
    let head_pid: String = std::fs::read_to_string(session.join("pids")).unwrap().trim().to_string();
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        assert!(!e.file_name().to_string_lossy().starts_with(&format!("rayr-{head_pid}-")));
    }
    // The record outlives the cluster.
    let out = cli(&["list", "workers", "--json"]);
    assert!(out.status.success());
    let workers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(workers.as_array().unwrap().iter().all(|w| w["state"] == "DEAD"), "{workers}");
}

#[test]
fn killing_the_head_loses_no_recorded_event() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let cli = |args: &[&str]| cluster.cli(args);
    let session = cluster.session.clone();
    let out = run(Command::new(SCENARIOS).arg("many_tasks").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The head has indexed part of the record (or none of it); kill it without warning.
    let head: i32 = std::fs::read_to_string(session.join("pids")).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(head, libc::SIGKILL) };
    // Dead means every thread is gone and its files closed (its leader turns zombie first).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(format!("/proc/{head}/fd")).is_ok_and(|mut d| d.next().is_some()) {
        assert!(Instant::now() < deadline, "head did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The record is whole: every task, each finished once, read from the session itself.
    let out = cli(&["summary", "tasks", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["list", "tasks", "--filter", "state=finished", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let finished: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(finished.as_array().unwrap().len(), 10_000);
    let out = cli(&["events", "--kind", "task_submitted", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10_000, "each event indexed exactly once");
    // `rayr stop` cleans up after the killed head: its shm store and sockets.
    let out = cli(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&session);
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        assert!(!e.file_name().to_string_lossy().starts_with(&format!("rayr-{head}-")), "shm store of the killed head left");
    }
}

#[test]
fn rayr_events_follow_streams_a_running_clusters_decisions() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let cluster = StartedCluster::start(tmp.path());
    let mut follower = Command::new(rayr_cli())
        .args(["events", "--follow", "--kind", "task_finished", "--json"])
        .env("RAYR_TMPDIR", tmp.path())
        .env_remove("RAYR_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let out = run(Command::new(SCENARIOS).arg("nested").env("RAYR_TMPDIR", tmp.path()).env_remove("RAYR_ADDRESS"), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // level1, two level2 and two level3 tasks finish; the follower sees each as it happens.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(ev["kind"], "task_finished", "{line}");
                seen.push(ev["task_id"].as_str().unwrap().to_string());
            }
            Err(_) => panic!("the follower saw {} of 5 finished tasks: {seen:?}", seen.len()),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "each task once");
    drop(cluster);
}
