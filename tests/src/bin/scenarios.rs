//! Driver programs for the integration tests: `scenarios <name>` runs one scenario on
//! whatever cluster `rayr::init()` finds (embedded unless one is running) and prints
//! `KEY value` lines that the tests check against the event record. Each scenario is one
//! function of [`scenario`], found by name in [`SCENARIOS`].

use std::time::{Duration, Instant};

use rayr::prelude::*;
use serde::{Serialize, Serializer};

#[rayr::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[rayr::actor]
pub struct Counter {
    n: u64,
}

#[rayr::actor]
impl Counter {
    pub fn new(start: u64) -> Self {
        Counter { n: start }
    }
    pub fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    pub fn get(&self) -> u64 {
        self.n
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    pub fn whoami(&self) -> String {
        rayr::runtime_context().unwrap().actor_id.map(|a| a.to_string()).unwrap_or_default()
    }
    pub fn fail(&self, why: String) -> Result<u64, String> {
        Err(why)
    }
    pub fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.n
    }
    /// A large value this actor's worker owns (the caller borrows it).
    pub fn stash(&self, n: usize) -> ObjectRef<Vec<u8>> {
        rayr::put(vec![1u8; n]).unwrap()
    }
    /// The node hosting it.
    /// Prints a line to its worker's stdout.
    pub fn say(&self, line: String) -> u64 {
        println!("{line}");
        self.n
    }
    pub fn node(&self) -> String {
        rayr::runtime_context().unwrap().node_id.to_string()
    }
    /// Runs a task of its own (its job's driver may have exited: a detached actor).
    pub fn square_by_task(&self, x: u64) -> u64 {
        rayr::get(&square::remote(x)).unwrap()
    }
}

#[rayr::actor]
pub struct Broken {}

#[rayr::actor]
impl Broken {
    pub fn new(why: String) -> Self {
        panic!("cannot start: {why}")
    }
    pub fn ping(&self) -> u64 {
        1
    }
}

/// Counts the calls inside it at once (runs them concurrently with max_concurrency > 1).
#[rayr::actor]
pub struct Gate {
    inside: std::sync::atomic::AtomicU32,
    most: std::sync::atomic::AtomicU32,
    writes: u64,
}

#[rayr::actor]
#[allow(clippy::new_without_default)]
impl Gate {
    pub fn new() -> Self {
        Gate { inside: Default::default(), most: Default::default(), writes: 0 }
    }
    /// Stays `ms`; how many calls were inside, this one included, when it came in.
    pub fn hold(&self, ms: u64) -> u32 {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inside.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        self.inside.fetch_sub(1, SeqCst);
        now
    }
    pub fn most(&self) -> u32 {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn inside(&self) -> u32 {
        self.inside.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Has the state to itself: how many other calls were inside (none, if exclusive).
    pub fn write(&mut self) -> u32 {
        let seen = self.inside.load(std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        self.writes += 1;
        seen
    }
}

/// Two calls that print while overlapping: `long` begins, `short` runs and ends inside it,
/// then `long` ends (with max_concurrency 2).
#[rayr::actor]
pub struct Overlap {
    stage: std::sync::atomic::AtomicU32,
}

#[rayr::actor]
#[allow(clippy::new_without_default)]
impl Overlap {
    pub fn new() -> Self {
        Overlap { stage: Default::default() }
    }
    pub fn long(&self, marker: String) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        println!("{marker} long-begins");
        self.stage.store(1, SeqCst);
        wait_until("the short call to end", Duration::from_secs(20), || self.stage.load(SeqCst) == 2);
        println!("{marker} long-ends");
        true
    }
    pub fn short(&self, marker: String) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        wait_until("the long call to begin", Duration::from_secs(20), || self.stage.load(SeqCst) == 1);
        std::thread::sleep(Duration::from_millis(20));
        println!("{marker} short-said");
        self.stage.store(2, SeqCst);
        true
    }
}

/// Built from a large value (in the store, passed by reference).
#[rayr::actor]
pub struct Blob {
    len: usize,
    sum: u64,
}

#[rayr::actor]
impl Blob {
    pub fn new(data: Vec<u8>) -> Self {
        Blob { len: data.len(), sum: data.iter().map(|b| *b as u64).sum() }
    }
    pub fn describe(&self) -> String {
        format!("{} {}", self.len, self.sum)
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// A constructor argument that cannot be sent (its serialization fails).
#[derive(serde::Deserialize)]
pub struct Picky;
impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Picky refuses to be serialized"))
    }
}

#[rayr::actor]
pub struct Fussy {}

#[rayr::actor]
impl Fussy {
    pub fn new(_p: Picky) -> Self {
        Fussy {}
    }
    pub fn ping(&self) -> u64 {
        1
    }
}

/// Not `Sync`: it cannot run calls concurrently.
#[rayr::actor]
pub struct Tally {
    n: std::cell::Cell<u64>,
}

#[rayr::actor]
#[allow(clippy::new_without_default)]
impl Tally {
    pub fn new() -> Self {
        Tally { n: std::cell::Cell::new(0) }
    }
    pub fn bump(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get()
    }
}

/// A value that takes a while.
#[rayr::remote]
fn slowly(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

/// Holds a concurrent actor it was given with `n` calls at once; the most it saw inside.
#[rayr::remote]
fn hold_given(g: GateHandle, n: u32) -> u32 {
    let calls: Vec<ObjectRef<u32>> = (0..n).map(|_| g.hold(300)).collect();
    rayr::get_all(&calls).unwrap().into_iter().max().unwrap()
}

/// The node it ran on, after a little work (so that one worker cannot take them all).
#[rayr::remote]
fn node_of(x: u64) -> (String, u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(200) {
        std::hint::spin_loop();
    }
    (rayr::runtime_context().unwrap().node_id.to_string(), x * x)
}

/// The node it ran on, after `ms` of work.
#[rayr::remote]
fn slow_node_of(x: u64, ms: u64) -> (String, u64) {
    std::thread::sleep(Duration::from_millis(ms));
    (rayr::runtime_context().unwrap().node_id.to_string(), x * x)
}

/// Reads a `put_slice` object zero-copy wherever it runs: the node it ran on, and the sum of
/// its bytes read as little-endian u64 words.
#[rayr::remote]
fn sum_slice(r: ObjectRef<Vec<u8>>) -> (String, u64) {
    let v = rayr::get_slice(&r).unwrap();
    let sum = v.chunks_exact(8).fold(0u64, |acc, c| acc.wrapping_add(u64::from_le_bytes(c.try_into().unwrap())));
    (rayr::runtime_context().unwrap().node_id.to_string(), sum)
}

/// A large value made on whatever node runs it.
#[rayr::remote]
fn big_on_node(n: usize) -> (String, Vec<u8>) {
    (rayr::runtime_context().unwrap().node_id.to_string(), vec![7u8; n])
}

/// A large value made on whatever node runs it, which it also writes to `note` (so a
/// driver can learn where the value is without reading it).
#[rayr::remote]
fn big_noting_node(n: usize, note: String) -> (String, Vec<u8>) {
    let node = rayr::runtime_context().unwrap().node_id.to_string();
    std::fs::write(&note, &node).unwrap();
    (node, vec![9u8; n])
}

/// Prints each line to stdout; returns the node it ran on.
#[rayr::remote]
fn say(lines: Vec<String>) -> String {
    for l in &lines {
        println!("{l}");
    }
    // Long enough (over 20 µs) for its output's place in the log to be measured.
    std::thread::sleep(Duration::from_millis(2));
    rayr::runtime_context().unwrap().node_id.to_string()
}

/// Prints `marker` then `n` lines of filler; long enough (over 20 µs) to be measured.
#[rayr::remote]
fn chatter(marker: String, n: usize) -> usize {
    println!("{marker}");
    for i in 0..n {
        println!("filler line {i} of a task that talks a lot, to fill its log file");
    }
    n
}

/// Prints `tick i` every 50 ms, `n` times.
#[rayr::remote]
fn ticker(n: u32) -> u32 {
    for i in 0..n {
        println!("tick {i}");
        std::thread::sleep(Duration::from_millis(50));
    }
    n
}

/// Says it started (a file), then waits for the test's file to appear.
#[rayr::remote]
fn held(path: String) -> u32 {
    std::fs::write(format!("{path}.started"), b"").unwrap();
    wait_until("the test to let go", Duration::from_secs(60), || std::path::Path::new(&path).exists());
    7
}

/// Where it ran, and the length of the value it was given.
#[rayr::remote]
fn node_and_len(v: (String, Vec<u8>)) -> (String, usize) {
    (rayr::runtime_context().unwrap().node_id.to_string(), v.1.len())
}

/// Sums a large value it was given by reference.
#[rayr::remote]
fn sum_bytes(v: Vec<u8>) -> (String, u64) {
    (rayr::runtime_context().unwrap().node_id.to_string(), v.iter().map(|b| *b as u64).sum())
}

/// Calls an actor it was given.
#[rayr::remote]
fn ping_given(b: BrokenHandle) -> String {
    match rayr::get(&b.ping()) {
        Err(e @ Error::ActorDied { .. }) => format!("ActorDied {e}"),
        other => format!("unexpected {other:?}"),
    }
}

/// The pid of the worker running it.
#[rayr::remote]
fn worker_pid() -> u32 {
    std::process::id()
}

/// Finds a named actor from another process and calls it.
#[rayr::remote]
fn find_named(namespace: String, name: String) -> u64 {
    let c = CounterHandle::get_named(&namespace, &name).expect("the named actor");
    rayr::get(&c.incr(1)).unwrap()
}

/// Creates an actor under a name (in namespace "web") and says what came of it.
#[rayr::remote]
fn claim_name(name: String) -> String {
    let c = Counter::options().name(&name).namespace("web").remote(0);
    match rayr::get(&c.get()) {
        Ok(v) => format!("made {v}"),
        Err(e) => format!("refused: {e}"),
    }
}

/// Tries to kill an actor it was given (it did not create it).
#[rayr::remote]
fn kill_given(c: CounterHandle) -> String {
    match rayr::kill(&c, true) {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// Calls the actor `n` times through a handle it was given.
#[rayr::remote]
fn bump(c: CounterHandle, n: u64) -> u64 {
    let refs: Vec<ObjectRef<u64>> = (0..n).map(|_| c.incr(1)).collect();
    rayr::get_all(&refs).unwrap().into_iter().max().unwrap()
}

#[rayr::remote]
fn level3(x: u64) -> u64 {
    x + 1
}

#[rayr::remote]
fn level2(x: u64) -> u64 {
    rayr::get(&level3::remote(x)).unwrap() * 10
}

#[rayr::remote]
fn level1(x: u64) -> u64 {
    let a = level2::remote(x);
    let b = level2::remote(x + 1);
    rayr::get(&a).unwrap() + rayr::get(&b).unwrap()
}

/// Where `ptr` lives: (backing file, offset in that file, physical frame number).
fn page_identity(ptr: usize) -> (String, u64, u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
        if ptr >= lo && ptr < hi {
            let _perms = f.next();
            let off = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
            let _dev = f.next();
            let _inode = f.next();
            let path = f.collect::<Vec<_>>().join(" ");
            let file_offset = off + (ptr - lo) as u64;
            return (path, file_offset, pfn(ptr));
        }
    }
    panic!("{ptr:#x} is in no mapping");
}

/// The physical frame of the page holding `ptr` (needs root; 0 when hidden).
fn pfn(ptr: usize) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
    f.seek(SeekFrom::Start((ptr / 4096 * 8) as u64)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact(&mut b).unwrap();
    u64::from_le_bytes(b) & ((1 << 55) - 1)
}

#[rayr::remote]
fn inspect_slice(refs: Vec<ObjectRef<Vec<f32>>>) -> (String, u64, u64, f64, usize) {
    let view = rayr::get_slice::<f32>(&refs[0]).unwrap();
    let (path, off, frame) = page_identity(view.as_ptr() as usize);
    let sum: f64 = view.iter().step_by(4096).map(|x| *x as f64).sum();
    (path, off, frame, sum, view.len())
}

/// Writes to stdout and stderr, then panics.
#[rayr::remote]
fn noisy_panic(tag: String) -> u64 {
    println!("about to fail: {tag}");
    eprintln!("warning: {tag} is not right");
    panic!("boom-{tag}");
}

#[rayr::remote]
fn flaky_panic(x: u64) -> u64 {
    let attempt = rayr::runtime_context().unwrap().attempt;
    if attempt < 2 {
        panic!("flaky failure in attempt {attempt}");
    }
    x * 2
}

#[rayr::remote]
fn kill_self_once(x: u64) -> u64 {
    if rayr::runtime_context().unwrap().attempt == 0 {
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x + 100
}

#[rayr::remote]
fn make_owned() -> (Vec<ObjectRef<Vec<u8>>>, u32) {
    let inner = rayr::put(vec![42u8; 1 << 20]).unwrap();
    (vec![inner], std::process::id())
}

#[rayr::remote]
fn big_result(n: usize) -> Vec<u8> {
    vec![1u8; n]
}

#[rayr::remote]
fn sum_len(v: Vec<u8>) -> usize {
    v.len()
}

#[rayr::remote]
fn always_fails(x: u64) -> Result<u64, String> {
    Err(format!("bad input {x}"))
}

/// Reads a ref it was handed inside a value: its owner (the driver) answers when the
/// task producing it has reported.
#[rayr::remote]
fn read_inner(refs: Vec<ObjectRef<u64>>) -> u64 {
    rayr::get(&refs[0]).unwrap() + 1
}

/// Reads the ref it was handed inside a value, and fails the first time.
#[rayr::remote]
fn read_then_flake(refs: Vec<ObjectRef<Vec<u8>>>) -> usize {
    let v = rayr::get(&refs[0]).unwrap();
    if rayr::runtime_context().unwrap().attempt == 0 {
        panic!("first attempt fails after reading its argument");
    }
    v.len()
}

static KEPT: std::sync::Mutex<Vec<ObjectRef<Vec<u8>>>> = std::sync::Mutex::new(Vec::new());

/// Keeps the refs it is given (this worker stays their borrower) and says who it is.
#[rayr::remote]
fn keep_refs(refs: Vec<ObjectRef<Vec<u8>>>) -> u32 {
    KEPT.lock().unwrap().extend(refs);
    std::process::id()
}

/// Leases a second worker for a nested task, then dies holding that lease.
#[rayr::remote]
fn hold_and_die() -> u64 {
    let nested = sleepy::remote(1500);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rayr::available_resources().unwrap()["CPU"] > 0.5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::mem::forget(nested);
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

#[rayr::remote]
fn pair_sum(x: u64, y: u64) -> u64 {
    x + y
}

#[rayr::remote]
fn echo_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

#[rayr::remote]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returns refs this worker owns: one slow, one failing (the driver only borrows them).
#[rayr::remote]
fn delegate() -> (Vec<ObjectRef<u64>>, Vec<ObjectRef<u64>>) {
    (vec![sleepy::remote(1500)], vec![always_fails::remote(9)])
}

struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unserializable refuses to be serialized"))
    }
}

fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[rayr::main]
fn main() -> rayr::Result<()> {
    let name = std::env::args().nth(1).expect("usage: scenarios <name>");
    rayr::init()?;
    println!("SESSION {}", rayr::session_dir()?.display());
    match SCENARIOS.iter().find(|(n, _)| *n == name) {
        Some((_, run)) => run(),
        None => panic!("unknown scenario {name}"),
    }
}

/// Every scenario, by the name `scenarios <name>` takes.
const SCENARIOS: &[(&str, fn() -> rayr::Result<()>)] = &[
    ("actor_counter", scenario::actor_counter),
    ("actor_kill", scenario::actor_kill),
    ("actor_sigkill", scenario::actor_sigkill),
    ("actor_order_with_pending_arg", scenario::actor_order_with_pending_arg),
    ("actor_owner_exit", scenario::actor_owner_exit),
    ("actor_restart", scenario::actor_restart),
    ("actor_restart_ref", scenario::actor_restart_ref),
    ("actor_task_retries", scenario::actor_task_retries),
    ("idle_worker_dies", scenario::idle_worker_dies),
    ("spread_tasks", scenario::spread_tasks),
    ("result_node_dies", scenario::result_node_dies),
    ("locality", scenario::locality),
    ("far_tasks", scenario::far_tasks),
    ("other_host", scenario::other_host),
    ("log_marker", scenario::log_marker),
    ("ticker", scenario::ticker),
    ("rotating_logs", scenario::rotating_logs),
    ("say_far", scenario::say_far),
    ("copies_under_pressure", scenario::copies_under_pressure),
    ("node_dies", scenario::node_dies),
    ("infeasible_cluster", scenario::infeasible_cluster),
    ("detached_create", scenario::detached_create),
    ("detached_find", scenario::detached_find),
    ("foreign_handle", scenario::foreign_handle),
    ("actor_named", scenario::actor_named),
    ("actor_named_across_nodes", scenario::actor_named_across_nodes),
    ("actor_concurrency", scenario::actor_concurrency),
    ("actor_ctor_panic", scenario::actor_ctor_panic),
    ("many_tasks", scenario::many_tasks),
    ("big_inline", scenario::big_inline),
    ("resources", scenario::resources),
    ("node_gone", scenario::node_gone),
    ("container", scenario::container),
    ("nested_retry", scenario::nested_retry),
    ("borrower_dies", scenario::borrower_dies),
    ("holder_dies", scenario::holder_dies),
    ("pipelined_dependency", scenario::pipelined_dependency),
    ("ref_by_value", scenario::ref_by_value),
    ("nested", scenario::nested),
    ("zero_copy", scenario::zero_copy),
    ("panic_for_good", scenario::panic_for_good),
    ("retry_panic", scenario::retry_panic),
    ("retry_sigkill", scenario::retry_sigkill),
    ("retry_sigkill_far", scenario::retry_sigkill_far),
    ("held_far_task", scenario::held_far_task),
    ("store_full", scenario::store_full),
    ("copy_then_hold", scenario::copy_then_hold),
    ("main_err", scenario::main_err),
    ("long_task", scenario::long_task),
    ("no_retry_sigkill", scenario::no_retry_sigkill),
    ("owner_died", scenario::owner_died),
    ("freed", scenario::freed),
    ("borrowed_refs", scenario::borrowed_refs),
    ("bad_input", scenario::bad_input),
];

/// The scenarios: each prints `KEY value` lines for its test to check; an error or a
/// panic fails the driver (and its job), as some scenarios mean to.
mod scenario {
    use super::*;

    pub fn actor_counter() -> rayr::Result<()> {
        let c = Counter::remote(0);
        // 10k calls from this driver: each sees the count the ones before it left, so
        // they ran in the order they were made.
        let refs: Vec<ObjectRef<u64>> = (0..10_000).map(|_| c.incr(1)).collect();
        let got = rayr::get_all(&refs)?;
        println!("ORDERED {}", got.iter().enumerate().all(|(i, v)| *v == i as u64 + 1));
        println!("ACTOR {}", c.id());
        println!("WHOAMI {}", rayr::get(&c.whoami())?);
        // The handle given to 4 tasks that call it concurrently: 4 × 500 more.
        let tasks: Vec<ObjectRef<u64>> = (0..4).map(|_| bump::remote(c.clone(), 500)).collect();
        rayr::get_all(&tasks)?;
        println!("TOTAL {}", rayr::get(&c.get())?);
        match rayr::get(&c.fail(String::from("no"))) {
            Err(Error::TaskFailed { message, .. }) => println!("METHOD_ERROR {message}"),
            other => println!("METHOD_ERROR unexpected {other:?}"),
        }
        let pid = rayr::get(&c.pid())?;
        println!("ACTOR_PID {pid}");
        // The last handle goes: the actor ends and its worker exits.
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("WORKER_GONE {}", !std::path::Path::new(&format!("/proc/{pid}")).exists());
        Ok(())
    }

    pub fn actor_kill() -> rayr::Result<()> {
        let c = Counter::remote(5);
        println!("BEFORE {}", rayr::get(&c.incr(1))?);
        println!("ACTOR {}", c.id());
        let victim = Counter::remote(1);
        println!("BORROWER_KILL {}", rayr::get(&kill_given::remote(victim.clone()))?);
        match rayr::get(&victim.get()) {
            Err(Error::ActorDied { cause, .. }) => println!("VICTIM {cause}"),
            other => println!("VICTIM unexpected {other:?}"),
        }
        let pid = rayr::get(&c.pid())?;
        let slow = c.slow(30_000);
        std::thread::sleep(Duration::from_millis(200)); // let it start
        rayr::kill(&c, true)?;
        let show = |r: rayr::Result<u64>| match r {
            Err(Error::ActorDied { cause, .. }) => format!("ActorDied {cause}"),
            other => format!("unexpected {other:?}"),
        };
        println!("IN_FLIGHT {}", show(rayr::get(&slow)));
        println!("AFTER {}", show(rayr::get(&c.incr(1))));
        rayr::kill(&c, true)?;
        println!("KILL_AGAIN ok");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("WORKER_GONE {}", !std::path::Path::new(&format!("/proc/{pid}")).exists());
        Ok(())
    }

    pub fn actor_sigkill() -> rayr::Result<()> {
        let c = Counter::remote(1);
        let pid = rayr::get(&c.pid())?;
        println!("ACTOR {}", c.id());
        let slow = c.slow(30_000);
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let show = |r: rayr::Result<u64>| match r {
            Err(e @ Error::ActorDied { .. }) => format!("ActorDied {e}"),
            other => format!("unexpected {other:?}"),
        };
        println!("IN_FLIGHT {}", show(rayr::get(&slow)));
        println!("AFTER {}", show(rayr::get(&c.incr(1))));
        Ok(())
    }

    pub fn actor_order_with_pending_arg() -> rayr::Result<()> {
        let c = Counter::remote(0);
        let later = slowly::remote(5);
        let first = c.incr(&later); // waits for its argument …
        let second = c.get(); // … and holds this one back: it sees the increment
        println!("SECOND {}", rayr::get(&second)?);
        println!("FIRST {}", rayr::get(&first)?);
        Ok(())
    }

    pub fn actor_owner_exit() -> rayr::Result<()> {
        let c = Counter::remote(0);
        println!("ACTOR {}", c.id());
        println!("PID {}", rayr::get(&c.pid())?);
        // Its handle is never dropped: it ends when this driver shuts down.
        std::mem::forget(c);
        Ok(())
    }

    pub fn actor_restart() -> rayr::Result<()> {
        let c = Counter::options().max_restarts(3).remote(10);
        println!("ACTOR {}", c.id());
        println!("LIFE0 {}", rayr::get(&c.incr(5))?);
        println!("BORROWER_BEFORE {}", rayr::get(&bump::remote(c.clone(), 1))?);
        for life in 1..=4 {
            let pid = rayr::get(&c.pid())?;
            if life == 1 {
                rayr::kill(&c, false)?; // a kill that lets it restart
            } else {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            // Calls that meet the dead worker fail; once it is seen dead, the next life
            // (if any) answers, with the state its constructor rebuilt.
            let deadline = Instant::now() + Duration::from_secs(30);
            let outcome = loop {
                let answer = rayr::get(&c.get()).and_then(|v| Ok((v, rayr::get(&c.pid())?)));
                match answer {
                    Ok((v, now)) if now != pid => break format!("{v} pid_changed=true"),
                    // The old life still answered (a kill lands a moment later), or
                    // the calls met the dying worker: ask again.
                    Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Err(Error::ActorDied { cause, .. }) if cause.contains("restarts") && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok((v, _)) => break format!("{v} pid_changed=false"),
                    Err(e) => break format!("error {e}"),
                }
            };
            println!("LIFE{life} {outcome}");
            if life == 1 {
                // A task given the handle finds the new life through the owner.
                println!("BORROWER_AFTER {}", rayr::get(&bump::remote(c.clone(), 2))?);
            }
        }
        Ok(())
    }

    /// An actor whose constructor took a ref restarts with it: the ref is kept for it.
    pub fn actor_restart_ref() -> rayr::Result<()> {
        let data = rayr::put(vec![3u8; 300_000])?;
        let b = Blob::options().max_restarts(1).remote(&data);
        println!("BEFORE {}", rayr::get(&b.describe())?);
        drop(data); // the actor's creation alone keeps it now
        let pid = rayr::get(&b.pid())?;
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let after = loop {
            match rayr::get(&b.pid()) {
                Ok(now) if now != pid => break rayr::get(&b.describe()).unwrap_or_else(|e| format!("error {e}")),
                Ok(_) | Err(Error::ActorDied { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => break format!("unexpected {other:?}"),
            }
        };
        println!("AFTER_RESTART {after}");
        drop(b);
        // Ended: the kept argument is freed with it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rayr::store_usage()?.0 > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("STORE_AFTER_END {}", rayr::store_usage()?.0);
        Ok(())
    }

    pub fn actor_task_retries() -> rayr::Result<()> {
        for retries in [1, 0] {
            let c = Counter::options().max_restarts(1).max_task_retries(retries).remote(10);
            let pid = rayr::get(&c.incr(1))?; // 11: state to lose
            let pid = { let _ = pid; rayr::get(&c.pid())? };
            let running = c.slow(2_000);
            let after = c.get(); // queued behind it
            std::thread::sleep(Duration::from_millis(300));
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let show = |r: rayr::Result<u64>| match r {
                Ok(v) => v.to_string(),
                Err(e @ Error::ActorDied { .. }) => format!("ActorDied {e}"),
                Err(e) => format!("unexpected {e}"),
            };
            println!("RUNNING{retries} {}", show(rayr::get(&running)));
            println!("AFTER{retries} {}", show(rayr::get(&after)));
            if retries == 1 {
                println!("ACTOR {}", c.id());
            }
        }
        Ok(())
    }

    pub fn idle_worker_dies() -> rayr::Result<()> {
        let pid = rayr::get(&worker_pid::remote())?;
        std::thread::sleep(Duration::from_millis(100)); // its lease goes back: idle
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        println!("KILLED_PID {pid}");
        // The pool replaces it; tasks run as before.
        std::thread::sleep(Duration::from_millis(500));
        println!("STILL_RUNS {}", rayr::get(&square::remote(4))?);
        Ok(())
    }

    /// Run against a cluster of several nodes: tasks that fill the driver's node go to
    /// the others (spillback), large arguments and results cross nodes.
    pub fn spread_tasks() -> rayr::Result<()> {
        let want: f64 = std::env::var("CLUSTER_CPUS").unwrap().parse().unwrap();
        wait_until("the cluster's CPUs", Duration::from_secs(10), || rayr::cluster_resources().unwrap().get("CPU") == Some(&want));
        let refs: Vec<ObjectRef<(String, u64)>> = (0..10_000u64).map(node_of::remote).collect();
        let got = rayr::get_all(&refs)?;
        let ok = got.iter().enumerate().all(|(i, (_, v))| *v == (i as u64) * (i as u64));
        let mut nodes: Vec<String> = got.iter().map(|(n, _)| n.clone()).collect();
        nodes.sort();
        nodes.dedup();
        println!("RESULTS_OK {ok}");
        println!("NODES {}", nodes.join(","));
        // A 1 MB argument (in this node's store) to tasks wherever they run, and 1 MB
        // results made on other nodes.
        let big = rayr::put(vec![1u8; 1_000_000])?;
        // ("far": a resource only another node has, so these run there.)
        let sums: Vec<ObjectRef<(String, u64)>> = (0..40).map(|_| sum_bytes::options().resource("far", 0.01).remote(&big)).collect();
        let sums = rayr::get_all(&sums)?;
        let mut sum_nodes: Vec<String> = sums.iter().map(|(n, _)| n.clone()).collect();
        sum_nodes.sort();
        sum_nodes.dedup();
        println!("BIG_ARG_OK {}", sums.iter().all(|(_, s)| *s == 1_000_000));
        println!("BIG_ARG_NODES {}", sum_nodes.join(","));
        let bigs: Vec<ObjectRef<(String, Vec<u8>)>> = (0..40).map(|_| big_on_node::options().resource("far", 0.01).remote(1_000_000)).collect();
        let bigs = rayr::get_all(&bigs)?;
        let mut big_nodes: Vec<String> = bigs.iter().map(|(n, _)| n.clone()).collect();
        big_nodes.sort();
        big_nodes.dedup();
        println!("BIG_RESULT_OK {}", bigs.iter().all(|(_, v)| v.len() == 1_000_000 && v.iter().all(|b| *b == 7)));
        println!("BIG_RESULT_NODES {}", big_nodes.join(","));
        // 100 MB made here, read on the node that has "far".
        let hundred = rayr::put_slice(&vec![1u8; 100_000_000])?;
        let started = Instant::now();
        let (node, sum) = rayr::get(&sum_slice::options().resource("far", 0.01).remote(hundred.clone()))?;
        println!("HUNDRED_MB {node} {sum} {} ms", started.elapsed().as_millis());
        // Read again there: the copy is still in that node's store.
        let (_, again) = rayr::get(&sum_slice::options().resource("far", 0.01).remote(hundred.clone()))?;
        println!("HUNDRED_MB_AGAIN {}", again == sum);
        println!("PULLED_IDS {} {}", big.id(), hundred.id());
        // Dropped here: the owner frees them, and with them the copies on the far node.
        Ok(())
    }

    /// Against a cluster whose "far" node has a 100 MB store: 40 MB objects made here,
    /// read there one after another, so the third copy needs the first one's room.
    /// Against a cluster of two "far" nodes (NODE_PIDS): results kept in one node's store,
    /// which is then SIGKILLed before anyone read them.
    pub fn result_node_dies() -> rayr::Result<()> {
        wait_until("both far nodes", Duration::from_secs(10), || rayr::cluster_resources().unwrap().get("far") == Some(&2.0));
        let pids: std::collections::HashMap<String, i32> = std::env::var("NODE_PIDS")
            .unwrap()
            .split(',')
            .map(|kv| kv.split_once(':').unwrap())
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        let note = std::env::temp_dir().join(format!("rayr-note-{}", std::process::id()));
        let note_s = note.display().to_string();
        let made_on = |r: &ObjectRef<(String, Vec<u8>)>| {
            let _ = rayr::wait(std::slice::from_ref(r), 1, None);
            std::fs::read_to_string(&note).unwrap()
        };
        // One with retries left (made again elsewhere), one without (lost), both on one
        // node (TARGET_NODE's, when given).
        let target = std::env::var("TARGET_NODE").ok();
        let mut kept = None;
        for _ in 0..40 {
            let r = big_noting_node::options().resource("far", 1.0).max_retries(2).remote(1_000_000, note_s.clone());
            let on = made_on(&r);
            if target.as_ref().is_none_or(|t| *t == on) {
                kept = Some((r, on));
                break;
            }
            // The next try needs a new lease (the idle one goes back after 10 ms), placed
            // afresh: wait until both far nodes are free again.
            wait_until("both far nodes free", Duration::from_secs(10), || {
                rayr::available_resources().unwrap().get("far").is_some_and(|f| *f >= 2.0)
            });
        }
        let (kept, node) = kept.expect("a task placed on the target node within 40 tries");
        let mut lost = None;
        for _ in 0..40 {
            let r = big_noting_node::options().resource("far", 1.0).max_retries(0).remote(1_000_000, note_s.clone());
            if made_on(&r) == node {
                lost = Some(r);
                break;
            }
        }
        let lost = lost.expect("a task placed on the same node within 40 tries");
        let _ = std::fs::remove_file(&note);
        println!("KILLED {node}");
        println!("IDS {} {}", kept.id(), lost.id());
        match std::env::var("CUT_CMD") {
            // Cut off from the cluster (a network partition) instead of killed.
            Ok(cmd) => assert!(std::process::Command::new("sh").args(["-c", &cmd]).status().is_ok_and(|s| s.success()), "{cmd}"),
            Err(_) => unsafe {
                libc::kill(pids[&node], libc::SIGKILL);
            },
        }
        let (again_on, value) = rayr::get(&kept)?;
        println!("KEPT_OK {}", value.len() == 1_000_000 && value.iter().all(|b| *b == 9) && again_on != node);
        match rayr::get(&lost) {
            Err(Error::ObjectLost { .. }) => println!("LOST_OK true"),
            other => println!("LOST_OK false {:?}", other.map(|v| v.0)),
        }
        Ok(())
    }

    /// Against a cluster where only node "x" has the resource x: a 20 MB result made
    /// there is read by a task that needs only a CPU, which every node has free.
    pub fn locality() -> rayr::Result<()> {
        wait_until("the x node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("x"));
        let made = big_on_node::options().num_cpus(0.0).resource("x", 1.0).remote(20_000_000);
        let _ = rayr::wait(std::slice::from_ref(&made), 1, None);
        let read = node_and_len::remote(&made);
        let (node, len) = rayr::get(&read)?;
        println!("LOCALITY {node} {len}");
        println!("LOCALITY_IDS {} {}", made.id(), read.id());
        Ok(())
    }

    /// Tasks that only the node with "far" can run: "FAR_TASKS ok <node>" when each
    /// ran there and answered right.
    pub fn far_tasks() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let refs: Vec<ObjectRef<(String, u64)>> = (0..20u64).map(|i| node_of::options().resource("far", 1.0).remote(i)).collect();
        let got = rayr::get_all(&refs)?;
        let ok = got.iter().enumerate().all(|(i, (_, v))| *v == (i as u64) * (i as u64));
        let mut nodes: Vec<String> = got.into_iter().map(|(n, _)| n).collect();
        nodes.dedup();
        println!("FAR_TASKS {} {}", if ok { "ok" } else { "wrong" }, nodes.join(","));
        Ok(())
    }

    /// Against a cluster whose "far" node is on another host (as far as files go): tasks
    /// there, and values both ways between the hosts.
    pub fn other_host() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let refs: Vec<ObjectRef<(String, u64)>> = (0..20u64).map(|i| node_of::options().resource("far", 1.0).remote(i)).collect();
        let got = rayr::get_all(&refs)?;
        let ok = got.iter().enumerate().all(|(i, (_, v))| *v == (i as u64) * (i as u64));
        let mut nodes: Vec<String> = got.into_iter().map(|(n, _)| n).collect();
        nodes.dedup();
        println!("FAR_TASKS {} {}", if ok { "ok" } else { "wrong" }, nodes.join(","));
        // 10 MB from here read there, and 10 MB made there read here.
        let here = rayr::put_slice(&vec![1u8; 10_000_000])?;
        let (_, sum) = rayr::get(&sum_slice::options().resource("far", 1.0).remote(here.clone()))?;
        let there = big_on_node::options().resource("far", 1.0).remote(10_000_000);
        let (_, value) = rayr::get(&there)?;
        let ok = sum == (10_000_000u64 / 8).wrapping_mul(0x0101_0101_0101_0101) && value.len() == 10_000_000 && value.iter().all(|b| *b == 7);
        println!("OTHER_HOST_OBJECTS {}", if ok { "ok" } else { "wrong" });
        // The job (and its workers) stays until the test has looked (HOLD_UNTIL: a file).
        if let Ok(hold) = std::env::var("HOLD_UNTIL") {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            wait_until("the test to let go", Duration::from_secs(60), || std::path::Path::new(&hold).exists());
        }
        Ok(())
    }

    /// A task on the "far" node prints MARKER between two other lines.
    pub fn log_marker() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let marker = std::env::var("MARKER").unwrap();
        let lines = vec!["line-before".to_string(), format!("{marker} here"), "line-after".to_string()];
        let r = say::options().resource("far", 1.0).remote(lines);
        let node = rayr::get(&r)?;
        println!("SAID_ON {node}");
        // Another task after it on the same worker, with a similar line.
        let other = say::options().resource("far", 1.0).remote(vec![format!("{marker} from the second task")]);
        rayr::get(&other)?;
        println!("SAID_IDS {} {}", r.id(), other.id());
        // An actor there says something too.
        let talker = Counter::options().resource("far", 0.01).remote(0);
        rayr::get(&talker.say(format!("{marker} from the actor")))?;
        println!("ACTOR {}", talker.id());
        // Two calls running side by side on one actor, both printing.
        let both = Overlap::options().resource("far", 0.01).max_concurrency(2).remote();
        let (long, short) = (both.long(marker.clone()), both.short(marker.clone()));
        assert!(rayr::get(&long)? && rayr::get(&short)?);
        println!("OVERLAP {} {}", long.id(), short.id());
        Ok(())
    }

    /// A task on the "far" node that prints for a few seconds.
    pub fn ticker() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let r = ticker::options().resource("far", 1.0).remote(60);
        println!("TICKER {}", r.id());
        println!("TICKS {}", rayr::get(&r)?);
        Ok(())
    }

    /// Three rounds of output past the far node's rotation size: each round's file is
    /// rotated (the round waits for it) before the next.
    pub fn rotating_logs() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let logs = std::path::PathBuf::from(std::env::var("RAYR_TMPDIR").unwrap()).join("session_latest").join("logs");
        let rotated = |g: u32| {
            std::fs::read_dir(&logs).unwrap().filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(&format!(".out.{g}")))
        };
        let mut ids = Vec::new();
        for round in 1..=3u32 {
            let r = chatter::options().resource("far", 1.0).remote(format!("ROUND-{round}-MARK"), 3_000);
            rayr::get(&r)?;
            ids.push(r.id().to_string());
            wait_until("the round's output to rotate", Duration::from_secs(20), || rotated(round - 1));
        }
        println!("ROUNDS {}", ids.join(" "));
        Ok(())
    }

    /// A task on the far node prints MARKER; the job ends at once (its worker exits
    /// within the second, before its log's time index notes the line: the file's own
    /// time of last write places it).
    pub fn say_far() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let marker = std::env::var("MARKER").unwrap();
        rayr::get(&say::options().resource("far", 1.0).remote(vec![format!("{marker} said")]))?;
        Ok(())
    }

    pub fn copies_under_pressure() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        // A 30 MB result made on the far node: its primary copy stays there.
        let primary = big_on_node::options().resource("far", 1.0).remote(30_000_000);
        let _ = rayr::wait(&[primary.clone()], 1, None);
        let objects: Vec<ObjectRef<Vec<u8>>> =
            (1..=3u8).map(|i| rayr::put_slice(&vec![i; 30_000_000])).collect::<rayr::Result<_>>()?;
        let read = |o: &ObjectRef<Vec<u8>>| rayr::get(&sum_slice::options().resource("far", 1.0).remote(o.clone())).map(|r| r.1);
        let word = |i: u64| (30_000_000u64 / 8).wrapping_mul(0x0101_0101_0101_0101u64.wrapping_mul(i));
        // 1 and 2 are copied there (90 MB of 100 in use), 1 is read again from its copy
        // (the most recently used now), so 3 needs 2's room: 2 is evicted, not 1, and
        // never the primary.
        let mut ok = read(&objects[0])? == word(1);
        ok &= read(&objects[1])? == word(2);
        ok &= read(&objects[0])? == word(1);
        ok &= read(&objects[2])? == word(3);
        let (node, value) = rayr::get(&primary)?;
        ok &= value.len() == 30_000_000 && value.iter().all(|b| *b == 7);
        println!("PRESSURE_OK {ok}");
        println!("PRIMARY_NODE {node}");
        let ids: Vec<String> = objects.iter().map(|o| o.id().to_string()).collect();
        println!("PRESSURE_IDS {} {}", ids.join(" "), primary.id());
        Ok(())
    }

    /// Run against a cluster of several nodes: the node hosting an actor and running tasks
    /// is SIGKILLed mid-run (NODE_PIDS: "node:pid,…" of the joined nodes).
    pub fn node_dies() -> rayr::Result<()> {
        wait_until("the cluster's CPUs", Duration::from_secs(10), || rayr::cluster_resources().unwrap().get("CPU") == Some(&5.0));
        let pids: std::collections::HashMap<String, i32> = std::env::var("NODE_PIDS")
            .unwrap()
            .split(',')
            .map(|kv| kv.split_once(':').unwrap())
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        // Only the joined nodes have "far": the actor goes to one of them.
        let c = Counter::options().resource("far", 1.0).max_restarts(1).remote(10);
        let first = rayr::get(&c.node())?;
        println!("ACTOR_NODE {first}");
        println!("ACTOR_BEFORE {}", rayr::get(&c.incr(5))?);
        // An object owned by the actor's worker, on that node.
        let stashed: ObjectRef<Vec<u8>> = rayr::get(&c.stash(200_000))?;
        println!("STASHED {}", rayr::get(&stashed)?.len());
        let refs: Vec<ObjectRef<(String, u64)>> = (0..300u64).map(|i| slow_node_of::remote(i, 20)).collect();
        // Once tasks run everywhere, the actor's node dies.
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pids[&first], libc::SIGKILL) };
        println!("KILLED {first}");
        // Its worker (the owner) goes a moment after its agent: until then it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rayr::get(&stashed) {
                Err(e @ Error::OwnerDied { .. }) => break println!("OWNER_DIED {e}"),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => break println!("OWNER_DIED unexpected {:?}", other.map(|v| v.len())),
            }
        }
        let got = rayr::get_all(&refs)?;
        println!("TASKS_OK {}", got.iter().enumerate().all(|(i, (_, v))| *v == (i as u64) * (i as u64)));
        let mut nodes: Vec<String> = got.iter().map(|(n, _)| n.clone()).collect();
        nodes.sort();
        nodes.dedup();
        println!("TASK_NODES {}", nodes.join(","));
        // The actor restarts on the other node that has "far", its state rebuilt.
        let deadline = Instant::now() + Duration::from_secs(30);
        let after = loop {
            match rayr::get(&c.node()) {
                Ok(n) if n != first => break format!("{n} {}", rayr::get(&c.get())?),
                Ok(_) | Err(Error::ActorDied { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => break format!("unexpected {other:?}"),
            }
        };
        println!("ACTOR_AFTER {after}");
        Ok(())
    }

    /// Run against a cluster of several nodes: demands no node, or only another, can hold.
    pub fn infeasible_cluster() -> rayr::Result<()> {
        // The node learns the cluster from the head's replies: wait until it has.
        wait_until("all 6 CPUs of the cluster", Duration::from_secs(10), || rayr::cluster_resources().unwrap().get("CPU") == Some(&6.0));
        println!("CLUSTER_CPUS 6");
        match rayr::get(&square::options().num_cpus(3.0).remote(2)) {
            Ok(v) => println!("OTHER_NODE {v}"),
            Err(e) => println!("OTHER_NODE {e}"),
        }
        match rayr::get(&square::options().num_cpus(8.0).remote(2)) {
            Err(e @ Error::Infeasible { .. }) => println!("NO_NODE {e}"),
            other => println!("NO_NODE unexpected {other:?}"),
        }
        println!("FITS {}", rayr::get(&square::remote(5))?);
        Ok(())
    }

    /// Run against `rayr start`: creates detached actors and exits, leaving them behind.
    pub fn detached_create() -> rayr::Result<()> {
        let c = Counter::options().name("counter").namespace("svc").lifetime_detached().max_restarts(1).max_task_retries(1).remote(10);
        println!("ACTOR {}", c.id());
        println!("FIRST {}", rayr::get(&c.incr(5))?);
        println!("ACTOR_PID {}", rayr::get(&c.pid())?);
        // Left alive until the cluster stops.
        let keeper = Counter::options().lifetime_detached().remote(1);
        println!("KEEPER {}", keeper.id());
        println!("KEEPER_VALUE {}", rayr::get(&keeper.get())?);
        let clash = Counter::options().name("counter").namespace("svc").lifetime_detached().remote(0);
        match rayr::get(&clash.get()) {
            Err(e @ Error::ActorDied { .. }) => println!("CLASH {e}"),
            other => println!("CLASH unexpected {other:?}"),
        }
        let r = rayr::put(5u64)?;
        let by_ref = Counter::options().lifetime_detached().remote(&r);
        match rayr::get(&by_ref.get()) {
            Err(e @ Error::ActorDied { .. }) => println!("BY_REF {e}"),
            other => println!("BY_REF unexpected {other:?}"),
        }
        Ok(())
    }

    /// The second driver, after the first exited: finds it by name, restarts and kills it.
    pub fn detached_find() -> rayr::Result<()> {
        let c = CounterHandle::get_named("svc", "counter")?;
        println!("ACTOR {}", c.id());
        println!("SURVIVED {}", rayr::get(&c.incr(1))?);
        let pid = rayr::get(&c.pid())?;
        // Calls running when its worker dies run again on the next life (max_task_retries).
        let running = c.slow(2_000);
        let after = c.get();
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let show = |r: rayr::Result<u64>| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("error {e}"),
        };
        println!("RUNNING_RETRIED {}", show(rayr::get(&running)));
        println!("AFTER_RETRIED {}", show(rayr::get(&after)));
        // Its worker died after its job ended: the agent re-ran the constructor.
        let deadline = Instant::now() + Duration::from_secs(30);
        let restarted = loop {
            match rayr::get(&c.get()).and_then(|v| Ok((v, rayr::get(&c.pid())?))) {
                Ok((v, now)) if now != pid => break format!("{v} pid_changed=true"),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(Error::ActorDied { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok((v, _)) => break format!("{v} pid_changed=false"),
                Err(e) => break format!("error {e}"),
            }
        };
        println!("RESTARTED {restarted}");
        println!("FROM_TASK {}", rayr::get(&find_named::remote(String::from("svc"), String::from("counter")))?);
        // Its own tasks run although the job that made it has ended.
        println!("ACTOR_TASK {}", rayr::get(&c.square_by_task(7))?);
        rayr::kill(&c, true)?;
        match rayr::get(&c.get()) {
            Err(e @ Error::ActorDied { .. }) => println!("AFTER_KILL ActorDied {e}"),
            other => println!("AFTER_KILL unexpected {other:?}"),
        }
        match CounterHandle::get_named("svc", "counter") {
            Err(e @ Error::ActorNotFound { .. }) => println!("NAME_GONE {e}"),
            other => println!("NAME_GONE unexpected {:?}", other.map(|h| h.id())),
        }
        Ok(())
    }

    /// A handle saved in one cluster and loaded in another.
    pub fn foreign_handle() -> rayr::Result<()> {
        let c = Counter::remote(1);
        rayr::get(&c.get())?;
        let saved = serde_json::to_string(&c).unwrap();
        println!("ACTOR {}", c.id());
        drop(c);
        rayr::shutdown();
        rayr::init()?; // a new embedded cluster
        println!("SESSION2 {}", rayr::session_dir()?.display());
        let c: CounterHandle = serde_json::from_str(&saved).unwrap();
        match rayr::get(&c.get()) {
            Err(e @ Error::ForeignActor { .. }) => println!("FOREIGN_CALL {e}"),
            other => println!("FOREIGN_CALL unexpected {other:?}"),
        }
        match rayr::kill(&c, true) {
            Err(e @ Error::ForeignActor { .. }) => println!("FOREIGN_KILL {e}"),
            other => println!("FOREIGN_KILL unexpected {other:?}"),
        }
        Ok(())
    }

    pub fn actor_named() -> rayr::Result<()> {
        let c = Counter::options().name("hits").namespace("web").remote(7);
        println!("ACTOR {}", c.id());
        let again = CounterHandle::get_named("web", "hits")?;
        println!("SAME {}", again.id() == c.id());
        println!("VIA_NAME {}", rayr::get(&again.incr(1))?);
        println!("FROM_TASK {}", rayr::get(&find_named::remote(String::from("web"), String::from("hits")))?);
        let clash = Counter::options().name("hits").namespace("web").remote(0);
        match rayr::get(&clash.get()) {
            Err(e @ Error::ActorDied { .. }) => println!("CLASH {e}"),
            other => println!("CLASH unexpected {other:?}"),
        }
        println!("OTHER_NAMESPACE {}", rayr::get(&Counter::options().name("hits").namespace("api").remote(3).get())?);
        match CounterHandle::get_named("web", "nope") {
            Err(e @ Error::ActorNotFound { .. }) => println!("NOT_FOUND {e}"),
            other => println!("NOT_FOUND unexpected {:?}", other.map(|h| h.id())),
        }
        // Its last handles go: its name is free again.
        drop(c);
        drop(again);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut freed = false;
        while Instant::now() < deadline {
            if matches!(CounterHandle::get_named("web", "hits"), Err(Error::ActorNotFound { .. })) {
                freed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("NAME_FREED {freed}");
        Ok(())
    }

    /// A named actor made by this driver (on a node with no CPU for it), found and
    /// contested by tasks pinned to each of two other nodes ("a" and "b").
    pub fn actor_named_across_nodes() -> rayr::Result<()> {
        wait_until("both nodes", Duration::from_secs(10), || {
            let r = rayr::cluster_resources().unwrap();
            r.contains_key("a") && r.contains_key("b")
        });
        let c = Counter::options().name("hits").namespace("web").remote(7);
        println!("ACTOR {}", c.id());
        let from = |res: &str| find_named::options().resource(res, 1.0).remote(String::from("web"), String::from("hits"));
        println!("FROM_A {}", rayr::get(&from("a"))?);
        println!("FROM_B {}", rayr::get(&from("b"))?);
        println!("CLASH_B {}", rayr::get(&claim_name::options().resource("b", 1.0).remote(String::from("hits")))?);
        println!("OTHER_B {}", rayr::get(&claim_name::options().resource("b", 1.0).remote(String::from("misses")))?);
        Ok(())
    }

    pub fn actor_concurrency() -> rayr::Result<()> {
        // More than the 32 calls a caller otherwise keeps in flight to one worker.
        let g = Gate::options().max_concurrency(40).remote();
        rayr::get(&g.most())?; // created: what follows times the calls alone
        let start = Instant::now();
        let holds: Vec<ObjectRef<u32>> = (0..40).map(|_| g.hold(300)).collect();
        rayr::get_all(&holds)?;
        println!("CONCURRENT_MS {}", start.elapsed().as_millis());
        println!("CONCURRENT_MOST {}", rayr::get(&g.most())?);
        // A &mut self call waits for the &self calls running and keeps the others out.
        let _running: Vec<ObjectRef<u32>> = (0..3).map(|_| g.hold(1_500)).collect();
        wait_until("3 holds inside", Duration::from_secs(10), || rayr::get(&g.inside()).unwrap() >= 3);
        let start = Instant::now();
        println!("WRITE_SAW {}", rayr::get(&g.write())?);
        println!("WRITE_WAITED_MS {}", start.elapsed().as_millis());
        // Borrowers get the same concurrency (a task given the handle).
        let h = Gate::options().max_concurrency(40).remote();
        println!("FROM_TASK_MOST {}", rayr::get(&hold_given::remote(h.clone(), 40))?);
        // Without max_concurrency: one call at a time.
        let one = Gate::remote();
        let holds: Vec<ObjectRef<u32>> = (0..3).map(|_| one.hold(100)).collect();
        rayr::get_all(&holds)?;
        println!("SERIAL_MOST {}", rayr::get(&one.most())?);
        let t = Tally::options().max_concurrency(2).remote();
        match rayr::get(&t.bump()) {
            Err(e @ Error::ActorDied { .. }) => println!("NOT_SYNC ActorDied {e}"),
            other => println!("NOT_SYNC unexpected {other:?}"),
        }
        println!("SYNC_ONE {}", rayr::get(&Tally::remote().bump())?);
        match rayr::get(&square::options().max_restarts(2).max_concurrency(3).remote(3)) {
            Err(e) => println!("TASK_OPTION {e}"),
            Ok(v) => println!("TASK_OPTION unexpected {v}"),
        }
        Ok(())
    }

    pub fn actor_ctor_panic() -> rayr::Result<()> {
        let b = Broken::remote(String::from("no database"));
        println!("ACTOR {}", b.id());
        let calls: Vec<ObjectRef<u64>> = (0..5).map(|_| b.ping()).collect();
        for (i, c) in calls.iter().enumerate() {
            match rayr::get(c) {
                Err(e @ Error::ActorDied { .. }) => println!("CALL{i} ActorDied {e}"),
                other => println!("CALL{i} unexpected {other:?}"),
            }
        }
        println!("BORROWER {}", rayr::get(&ping_given::remote(b.clone()))?);
        // Its argument cannot even be sent: dead at once, its name free again.
        let f = Fussy::options().name("fussy").remote(Picky);
        match rayr::get(&f.ping()) {
            Err(e @ Error::ActorDied { .. }) => println!("UNSENDABLE ActorDied {e}"),
            other => println!("UNSENDABLE unexpected {other:?}"),
        }
        match FussyHandle::get_named("", "fussy") {
            Err(Error::ActorNotFound { .. }) => println!("UNSENDABLE_NAME free"),
            other => println!("UNSENDABLE_NAME unexpected {:?}", other.map(|h| h.id())),
        }
        Ok(())
    }

    pub fn many_tasks() -> rayr::Result<()> {
        let refs: Vec<ObjectRef<u64>> = (0..10_000u64).map(square::remote).collect();
        let got = rayr::get_all(&refs)?;
        let want: u64 = (0..10_000u64).map(|x| x * x).sum();
        assert_eq!(got.iter().sum::<u64>(), want);
        println!("TASKS {}", got.len());
        Ok(())
    }

    pub fn big_inline() -> rayr::Result<()> {
        // Arguments and results just under the inline limit, many in flight: pushes and
        // results both fill socket buffers unless pushing is bounded.
        let refs: Vec<ObjectRef<Vec<u8>>> = (0..300u32).map(|i| echo_bytes::remote(vec![(i % 251) as u8; 95_000])).collect();
        let got = rayr::get_all(&refs)?;
        assert!(got.iter().enumerate().all(|(i, v)| v.len() == 95_000 && v[0] == (i % 251) as u8));
        println!("BIG_INLINE {}", got.len());
        Ok(())
    }

    pub fn resources() -> rayr::Result<()> {
        let total = rayr::cluster_resources()?;
        let idle = rayr::available_resources()?;
        println!("TOTAL_CPU {}", total["CPU"]);
        println!("IDLE_CPU {}", idle["CPU"]);
        // While a task holds a CPU, one fewer is available.
        let probe = sleepy::remote(1000);
        wait_until("the task to hold its CPU", Duration::from_secs(20), || {
            rayr::available_resources().unwrap()["CPU"] < total["CPU"]
        });
        println!("BUSY_CPU {}", rayr::available_resources()?["CPU"]);
        rayr::get(&probe)?;
        Ok(())
    }

    pub fn node_gone() -> rayr::Result<()> {
        // Run against a `rayr start` cluster: kill its head and node agent under us.
        assert_eq!(rayr::get(&square::remote(3))?, 9);
        let session = rayr::session_dir()?;
        let head: i32 = std::fs::read_to_string(session.join("pids")).unwrap().trim().parse().unwrap();
        unsafe { libc::kill(head, libc::SIGKILL) };
        wait_until("the node agent to be gone", Duration::from_secs(10), || {
            std::fs::read_dir(format!("/proc/{head}/fd")).map_or(true, |mut d| d.next().is_none())
        });
        let started = Instant::now();
        let mut error = None;
        // A leased worker may outlive its agent for a moment and still run a task; after
        // that, new work must fail, never hang.
        for i in 0..1000u64 {
            match rayr::get_timeout(&square::remote(i), Some(Duration::from_secs(20))) {
                Err(Error::Timeout) => panic!("task {i} hung after the node agent died"),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let error = error.expect("tasks kept running without a node agent");
        println!("NODE_GONE {} {:?}", started.elapsed().as_millis() < 10_000, error);
        Ok(())
    }

    pub fn container() -> rayr::Result<()> {
        let inner = rayr::put(vec![3u8; 500_000])?;
        let outer = rayr::put(vec![inner.clone()])?;
        drop(inner);
        // Only the container holds the inner object now; reading through it works.
        let back: Vec<ObjectRef<Vec<u8>>> = rayr::get(&outer)?;
        assert_eq!(rayr::get(&back[0])?.len(), 500_000);
        drop(back);
        assert!(rayr::store_usage()?.0 >= 500_000, "the container keeps its inner object");
        drop(outer);
        // Freeing the container lets go of what it held; nothing was read twice or
        // left unread to leak.
        wait_until("the store to empty", Duration::from_secs(10), || rayr::store_usage().unwrap().0 == 0);
        println!("CONTAINER_FREED yes");
        Ok(())
    }

    pub fn nested_retry() -> rayr::Result<()> {
        let x = rayr::put(vec![1u8; 200_000])?;
        let r = read_then_flake::options().retry_exceptions(true).max_retries(2).remote(vec![x.clone()]);
        drop(x);
        // The retry reads the same ref: the pending task keeps it alive until it is done.
        println!("NESTED_RETRY {}", rayr::get(&r)?);
        wait_until("the store to empty", Duration::from_secs(10), || rayr::store_usage().unwrap().0 == 0);
        println!("NESTED_FREED yes");
        Ok(())
    }

    pub fn borrower_dies() -> rayr::Result<()> {
        let big = rayr::put(vec![5u8; 1 << 20])?;
        let pid = rayr::get(&keep_refs::remote(vec![big.clone()]))?;
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_until("the borrower to be reaped", Duration::from_secs(10), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        println!("OBJECT {}", big.id());
        drop(big);
        // Only the dead borrower held it: it must not stay pinned.
        wait_until("the store to empty", Duration::from_secs(10), || rayr::store_usage().unwrap().0 == 0);
        println!("FREED_AFTER_BORROWER_DIED yes");
        Ok(())
    }

    pub fn holder_dies() -> rayr::Result<()> {
        let r = hold_and_die::options().max_retries(0).remote();
        match rayr::get(&r) {
            Err(Error::WorkerDied { .. }) => {}
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        // The leases the dead worker held (its own, and the nested task's) come back.
        wait_until("every CPU to be free again", Duration::from_secs(10), || {
            rayr::available_resources().unwrap()["CPU"] >= 2.0
        });
        println!("CPUS_BACK {}", rayr::available_resources()?["CPU"]);
        Ok(())
    }

    pub fn pipelined_dependency() -> rayr::Result<()> {
        // Pairs pushed back to back, often to the same worker in one write: the second
        // waits for the first's result, which the worker must not hold back.
        let mut outs = Vec::new();
        for i in 0..40u64 {
            let a = square::remote(i);
            outs.push(read_inner::remote(vec![a]));
        }
        let got = rayr::get_all(&outs)?;
        assert!(got.iter().enumerate().all(|(i, v)| *v == (i * i) as u64 + 1));
        println!("PIPELINED {}", got.len());
        Ok(())
    }

    pub fn ref_by_value() -> rayr::Result<()> {
        // The only handle of an object, given to a task by value: submitting must not
        // trip over dropping it.
        let big = rayr::put(vec![1u8; 300_000])?;
        let small = rayr::put(vec![2u8; 10])?;
        let a = sum_len::remote(big);
        let b = sum_len::remote(small);
        println!("BY_VALUE {} {}", rayr::get(&a)?, rayr::get(&b)?);
        // ... and as the value of a parameter that is itself a ref: serializing it
        // must keep the object alive until the pending task holds it.
        let arg = rayr::put_slice(&vec![3u8; 300_000])?;
        let arg_id = arg.id();
        let c = sum_slice::remote(arg);
        println!("REF_PARAM_BY_VALUE {} {arg_id} {}", rayr::get(&c)?.1, c.id());
        // The same pending ref twice: resolved once, run once.
        let slow = sleepy::remote(50);
        let pair = pair_sum::remote(&slow, &slow);
        println!("PAIR {} {}", rayr::get(&pair)?, pair.id());
        Ok(())
    }

    pub fn nested() -> rayr::Result<()> {
        // level1(1) = level2(1) + level2(2) = (2*10) + (3*10)
        let r = rayr::get(&level1::remote(1))?;
        assert_eq!(r, 50);
        println!("NESTED {r}");
        Ok(())
    }

    pub fn zero_copy() -> rayr::Result<()> {
        let data: Vec<f32> = (0..25_000_000).map(|i| (i % 7) as f32).collect();
        let arr = rayr::put_slice(&data)?;
        let mine = rayr::get_slice::<f32>(&arr)?;
        let (path, off, frame) = page_identity(mine.as_ptr() as usize);
        let (wpath, woff, wframe, wsum, wlen) = rayr::get(&inspect_slice::remote(vec![arr.clone()]))?;
        let sum: f64 = mine.iter().step_by(4096).map(|x| *x as f64).sum();
        assert_eq!(wlen, 25_000_000);
        assert_eq!(wsum, sum);
        println!("DRIVER_PAGE {path} {off} {frame}");
        println!("WORKER_PAGE {wpath} {woff} {wframe}");
        Ok(())
    }

    pub fn panic_for_good() -> rayr::Result<()> {
        // A quick task first on the same worker: its lines are not the failed one's.
        rayr::get(&square::remote(3))?;
        let r = noisy_panic::options().max_retries(0).remote("t1".to_string());
        match rayr::get(&r) {
            Err(e) => println!("ERROR {e}"),
            Ok(v) => panic!("expected a failure, got {v}"),
        }
        println!("TASK_RETURN {}", r.id());
        Ok(())
    }

    pub fn retry_panic() -> rayr::Result<()> {
        let r = flaky_panic::options().max_retries(3).retry_exceptions(true).remote(21);
        assert_eq!(rayr::get(&r)?, 42);
        println!("TASK_RETURN {}", r.id());
        Ok(())
    }

    pub fn retry_sigkill() -> rayr::Result<()> {
        let r = kill_self_once::remote(1);
        assert_eq!(rayr::get(&r)?, 101);
        println!("TASK_RETURN {}", r.id());
        Ok(())
    }

    /// Spilled to the "far" node, whose worker dies there on the first attempt.
    pub fn retry_sigkill_far() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let r = kill_self_once::options().resource("far", 1.0).remote(1);
        assert_eq!(rayr::get(&r)?, 101);
        println!("TASK_RETURN {}", r.id());
        Ok(())
    }

    /// A task on the far node that ends while the test holds that node's agent paused
    /// (HOLD: the file the task waits for; the test makes it).
    pub fn held_far_task() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let hold = std::env::var("HOLD").unwrap();
        let r = held::options().resource("far", 1.0).remote(hold);
        println!("HELD {}", r.id());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        println!("RESULT {}", rayr::get(&r)?);
        Ok(())
    }

    /// Two 20 MB values held at once in a 32 MiB store (RAYR_OBJECT_STORE_MEMORY).
    pub fn store_full() -> rayr::Result<()> {
        let first = rayr::put_slice(&vec![1u8; 20_000_000])?;
        match rayr::put_slice(&vec![2u8; 20_000_000]) {
            Err(e @ Error::ObjectStoreFull { .. }) => println!("STORE_FULL {e}"),
            other => panic!("expected ObjectStoreFull, got {:?}", other.map(|r| r.id())),
        }
        drop(first);
        // With the first freed, there is room again.
        let again = rayr::put_slice(&vec![3u8; 20_000_000])?;
        println!("ROOM_AGAIN {}", rayr::get_slice(&again)?[0]);
        Ok(())
    }

    /// A 30 MB value of this driver read on the far node (a copy there); then the driver
    /// waits to be killed.
    pub fn copy_then_hold() -> rayr::Result<()> {
        wait_until("the far node", Duration::from_secs(10), || rayr::cluster_resources().unwrap().contains_key("far"));
        let v = rayr::put_slice(&vec![1u8; 30_000_000])?;
        let (node, _) = rayr::get(&sum_slice::options().resource("far", 1.0).remote(v.clone()))?;
        println!("COPIED_ON {node}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(120));
        drop(v);
        Ok(())
    }

    /// main returns an error: the job fails.
    pub fn main_err() -> rayr::Result<()> {
        Err(rayr::Error::Connection("MAIN-ERR on purpose".into()))
    }

    /// A long task the test kills this driver during.
    pub fn long_task() -> rayr::Result<()> {
        let kept = rayr::put(vec![1u8; 100])?;
        println!("KEPT {}", kept.id());
        let r = ticker::remote(1200);
        println!("LONG {}", r.id());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        rayr::get(&r)?;
        Ok(())
    }

    pub fn no_retry_sigkill() -> rayr::Result<()> {
        let r = kill_self_once::options().max_retries(0).remote(1);
        match rayr::get(&r) {
            Err(e @ Error::WorkerDied { .. }) => println!("ERROR {e}"),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        Ok(())
    }

    pub fn owner_died() -> rayr::Result<()> {
        let (inner, pid) = rayr::get(&make_owned::remote())?;
        assert_eq!(rayr::get(&inner[0])?.len(), 1 << 20);
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // kill() only sends the signal: read after the owner is really gone. (Not just a
        // zombie: a multi-threaded process's leader is a zombie before its last thread
        // has exited and closed its sockets; its node agent reaps it after that.)
        wait_until("the owner to be reaped", Duration::from_secs(10), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        match rayr::get(&inner[0]) {
            Err(e @ Error::OwnerDied { .. }) => {
                println!("OBJECT {}", inner[0].id());
                println!("OWNER {}", inner[0].owner());
                println!("ERROR {e}");
            }
            other => panic!("expected OwnerDied, got {:?}", other.map(|v| v.len())),
        }
        Ok(())
    }

    pub fn freed() -> rayr::Result<()> {
        let mut refs = Vec::new();
        for _ in 0..3 {
            refs.push(rayr::put_slice(&vec![3u8; 10 << 20])?);
        }
        let big = rayr::put(vec![9u8; 300_000])?;
        let results: Vec<_> = (0..4).map(|_| big_result::remote(200_000)).collect();
        let lens: Vec<usize> = rayr::get_all(&results)?.iter().map(|v| v.len()).collect();
        assert_eq!(lens, vec![200_000; 4]);
        assert_eq!(rayr::get(&sum_len::remote(&big))?, 300_000);
        let (used, _) = rayr::store_usage()?;
        assert!(used >= 30 << 20, "objects are in the store: {used}");
        println!("USED_BEFORE {used}");
        drop(refs);
        drop(big);
        drop(results);
        wait_until("the store to empty", Duration::from_secs(10), || rayr::store_usage().unwrap().0 == 0);
        println!("USED_AFTER 0");
        Ok(())
    }

    pub fn borrowed_refs() -> rayr::Result<()> {
        let (slow, failing) = rayr::get(&delegate::remote())?;
        let (ready, pending) = rayr::wait(&slow, 1, Some(Duration::from_millis(100)));
        println!("EARLY_READY {} {}", ready.len(), pending.len());
        let (ready, _) = rayr::wait(&slow, 1, Some(Duration::from_secs(30)));
        println!("LATE_READY {}", ready.len());
        assert_eq!(rayr::get(&slow[0])?, 1500);
        match rayr::get(&failing[0]) {
            Err(e @ Error::TaskFailed { .. }) => println!("BORROWED_FAILURE {e}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        Ok(())
    }

    pub fn bad_input() -> rayr::Result<()> {
        match rayr::put(Unserializable) {
            Err(Error::Serialization(m)) => println!("PUT_ERROR {m}"),
            other => panic!("expected Serialization, got {:?}", other.map(|_| ())),
        }
        let r = square::options().num_cpus(64.0).remote(3);
        match rayr::get(&r) {
            Err(e @ Error::Infeasible { .. }) => println!("INFEASIBLE {e}"),
            other => panic!("expected Infeasible, got {other:?}"),
        }
        match rayr::get(&always_fails::remote(7)) {
            Err(e @ Error::TaskFailed { .. }) => println!("TASK_FAILED {e}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        let bad = rayr::get_timeout(&square::remote(2), Some(Duration::from_secs(20)))?;
        assert_eq!(bad, 4, "the cluster still works after bad input");
        Ok(())
    }
}
