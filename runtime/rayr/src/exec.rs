//! Worker mode: the same binary, started by a node agent, runs tasks pushed to it.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use rayr_logs::{Id, hex};
use rayr_node::pool::env;
use rayr_proto::{EventKind, ObjectLocation, PeerMessage, TaskError, TaskErrorKind, TaskResult, peer_message, task_arg, task_result};

use crate::api::store_bytes_for;
use crate::core::fetch::Fetched;
use crate::codec;
use crate::core::{self, Batch, ConnectParams, Core, Slot};
use crate::registry::{self, ArgBytes, ArgReader, Returned};

thread_local! {
    static CURRENT_TASK: Cell<(Option<Id>, u32)> = const { Cell::new((None, 0)) };
    static LAST_PANIC: RefCell<Option<(String, String, String)>> = const { RefCell::new(None) };
}

/// The task running on this thread, and its attempt number.
pub(crate) fn current_task() -> (Option<Id>, u32) {
    CURRENT_TASK.with(|c| c.get())
}

/// Called first thing by `#[rayr::main]`: in a worker process this serves tasks until the
/// node agent goes away, then exits; in a driver it returns at once.
pub fn run_worker_if_requested() {
    if std::env::var(env::WORKER_MODE).as_deref() != Ok("1") {
        return;
    }
    let code = match worker_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rayr worker: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn env_id(name: &str) -> Result<Id, String> {
    let v = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    rayr_logs::parse_hex(&v)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{name}={v:?} is not a 32-digit hex id"))
}

fn worker_main() -> Result<(), String> {
    // rayr's own log lines in a worker go to its stderr log (warnings and up; RAYR_LOG
    // filters). A driver's are its program's to route.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAYR_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into()),
        };
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location, backtrace)));
        prev(info);
    }));
    stop_cleanly_on_sigterm();
    if let (Ok(dir), Ok(w)) = (std::env::var(env::SESSION_DIR), std::env::var(env::WORKER_ID)) {
        let max = std::env::var(env::LOG_ROTATE_BYTES).ok().and_then(|v| v.parse().ok()).unwrap_or(512 << 20);
        let keep = std::env::var(env::LOG_ROTATE_KEEP).ok().and_then(|v| v.parse().ok()).unwrap_or(5u32).max(1);
        let session = rayr_logs::Session::open(dir);
        let pid = std::process::id();
        rotate_logs(session.worker_log(&w, pid, "out"), session.worker_log(&w, pid, "err"), max, keep);
    }
    let cfg = crate::Config::from_env().map_err(|e| e.to_string())?;
    let params = ConnectParams {
        node_socket: std::env::var_os(env::NODE_SOCKET).ok_or("RAYR_NODE_SOCKET is not set")?.into(),
        worker_id: env_id(env::WORKER_ID)?,
        job_id: env_id(env::JOB_ID)?,
        is_driver: false,
        record_events: cfg.record_events,
        max_inline: cfg.max_inline_bytes,
        executor: Some(core::Executor { run: run_task, call_pool }),
    };
    // Before registering: a task may arrive the moment it has.
    crate::trace::init("rayr-worker", vec![("rayr.worker_id", std::env::var(env::WORKER_ID).unwrap_or_default())]);
    let core = Core::connect(params).map_err(|e| e.to_string())?;
    core::install(core);
    // Tasks run on the threads that read them (Core::serve_peer). This thread only waits:
    // the process exits when its node agent goes away or stops it.
    loop {
        std::thread::park();
    }
}

/// The node agent stops workers with SIGTERM; the process then exits at once (what it
/// recorded is in its event area, which the agent drains as the connection closes; asking
/// for the drain only makes it sooner).
fn stop_cleanly_on_sigterm() {
    // SAFETY: plain signal-mask calls; the mask is inherited by every thread started after.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let _ = std::thread::Builder::new().name("rayr-sigterm".into()).spawn(move || {
        let mut sig = 0;
        unsafe { libc::sigwait(&set, &mut sig) };
        if let Some(core) = core::current() {
            core.drain_events_now();
        }
        crate::trace::flush(std::time::Duration::from_secs(1));
        std::process::exit(0);
    });
}

/// Runs one pushed task on the calling thread and returns the message that answers it.
/// `events` is the batch the previous task's TASK_FINISHED was recorded in, when this task
/// follows it at once: TASK_STARTED joins it. This task's TASK_FINISHED is left in a new
/// batch there, for the caller to close (or for the next task to join).
pub(crate) fn run_task<'c>(core: &'c Arc<Core>, spec: rayr_proto::TaskSpec, events: &mut Option<Batch<'c>>) -> PeerMessage {
    let task: Id = spec.task_id.as_slice().try_into().unwrap_or([0; 16]);
    CURRENT_TASK.with(|c| c.set((Some(task), spec.attempt)));
    let began = rayr_logs::now_us();
    let output_from = output_mark();
    // Tracing: this run is a child of its submitter's span, and the parent of what it submits.
    let traced = (crate::trace::enabled() && spec.trace_id.len() == 16 && spec.parent_span_id.len() == 8).then(|| {
        let trace: [u8; 16] = spec.trace_id.as_slice().try_into().unwrap();
        let parent: [u8; 8] = spec.parent_span_id.as_slice().try_into().unwrap();
        let span = crate::trace::random_span_id();
        crate::trace::set_current(Some((trace, span)));
        (trace, span, parent, crate::trace::now_ns())
    });
    let started = core.emit(EventKind::TaskStarted, |e| {
        e.task(&spec.task_id).worker(&core.me).cause(&spec.scheduled_event);
        e.task_detail(|d| {
            d.attempt(spec.attempt).pid(core.pid);
        });
    });

    // Published before the user's code runs: a long task shows as started.
    *events = None;
    let outcome = execute(core, &spec);
    let (kind, detail_error) = match &outcome {
        task_result::Outcome::Error(e) => (EventKind::TaskFailed, Some(e.clone())),
        _ => (EventKind::TaskFinished, None),
    };
    let output = (detail_error.is_some() || rayr_logs::now_us() - began >= MEASURE_OUTPUT_AFTER_US).then(|| output_range(output_from)).flatten();
    if let Some((trace, span, parent, start_ns)) = traced {
        crate::trace::set_current(None);
        crate::trace::record(crate::trace::Finished {
            name: "rayr.task.execute",
            ids: (trace, span),
            parent: Some(parent),
            start_ns,
            end_ns: crate::trace::now_ns(),
            kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Consumer,
            attrs: vec![
                ("rayr.task_id", hex(&task)),
                ("rayr.function", spec.function.clone()),
                ("rayr.attempt", spec.attempt.to_string()),
                ("rayr.worker_id", hex(&core.me)),
            ],
            error: detail_error.as_ref().map(|e| e.message.as_str()),
        });
    }
    *events = Some(core.event_batch());
    let finished_event = core.emit(kind, |ev| {
        ev.task(&spec.task_id).worker(&core.me).cause(&started);
        ev.task_detail(|d| {
            d.attempt(spec.attempt);
            if let Some(o) = &output {
                d.output(o.out, o.err, o.gens, o.spans);
            }
            if let Some(e) = &detail_error {
                d.max_retries(spec.max_retries);
                let retried = spec.retry_exceptions && e.kind() != TaskErrorKind::BadArgument && spec.attempt < spec.max_retries;
                let error = if e.location.is_empty() { e.message.clone() } else { format!("{} (at {})", e.message, e.location) };
                d.function(&spec.function).is_final(!retried).error(&error).backtrace(&e.backtrace).error_type(e.kind()).failed_argument(&e.failed_argument);
            }
        });
    });
    if detail_error.is_some() {
        // A failure is worth having in the log at once: published now, drained now.
        *events = None;
        core.drain_events_now();
    }
    CURRENT_TASK.with(|c| c.set((None, 0)));
    PeerMessage {
        req_id: 0,
        body: Some(peer_message::Body::Result(TaskResult {
            task_id: spec.task_id,
            attempt: spec.attempt,
            outcome: Some(outcome),
            finished_event: finished_event.to_vec(),
        })),
    }
}

/// Tasks that ran this long (or failed) get their output's place in the worker's logs
/// measured (two `lseek`s, ~0.25 µs here: too much for every trivial task).
const MEASURE_OUTPUT_AFTER_US: i64 = 20;

/// Where this worker's stdout and stderr stood at the last measurement (u64::MAX: never).
static OUTPUT_AT: [std::sync::atomic::AtomicU64; 2] = [std::sync::atomic::AtomicU64::new(u64::MAX), std::sync::atomic::AtomicU64::new(u64::MAX)];

/// The offsets of fds 1 and 2 now, after flushing what Rust holds back.
fn output_offsets() -> Option<(u64, u64)> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: lseek on the process's own standard descriptors; a pipe or terminal answers
    // an error, and then nothing is measured.
    let (out, err) = unsafe { (libc::lseek(1, 0, libc::SEEK_CUR), libc::lseek(2, 0, libc::SEEK_CUR)) };
    (out >= 0 && err >= 0).then_some((out as u64, err as u64))
}

/// Where a task's output starts, no later than it does: the last measurement before the
/// task began (four loads: every task takes one, measured or not), with its generations.
/// Taken per task rather than read back at the end, so that calls running side by side on
/// an actor's pool each get everything written while they ran, their own lines included.
fn output_mark() -> ([u64; 2], [u32; 2]) {
    use std::sync::atomic::Ordering::Relaxed;
    ([OUTPUT_AT[0].load(Relaxed), OUTPUT_AT[1].load(Relaxed)], [LOG_GEN[0].load(Relaxed), LOG_GEN[1].load(Relaxed)])
}

/// Where a task's output is in its worker's stdout and stderr files: (start, end) offsets,
/// the generation each ends in, and how many rotations it spans (it starts in generation
/// `gens - spans`).
struct OutputRange {
    out: (u64, u64),
    err: (u64, u64),
    gens: (u32, u32),
    spans: (u32, u32),
}

/// The output from `from` (see `output_mark`) to now.
fn output_range(from: ([u64; 2], [u32; 2])) -> Option<OutputRange> {
    use std::sync::atomic::Ordering::Relaxed;
    // Not while the files rotate: offsets and generations go together.
    let _still = ROTATION.lock();
    let (out, err) = output_offsets()?;
    OUTPUT_AT[0].store(out, Relaxed);
    OUTPUT_AT[1].store(err, Relaxed);
    let gens = [LOG_GEN[0].load(Relaxed), LOG_GEN[1].load(Relaxed)];
    // The mark's offset, in the mark's generation (nothing measured yet in this process:
    // from that file's start).
    let start = |i: usize, end: u64| {
        let s = if from.0[i] == u64::MAX { 0 } else { from.0[i] };
        let span = gens[i].saturating_sub(from.1[i]);
        if span == 0 && s > end { (0, 0) } else { (s, span) }
    };
    let ((so, po), (se, pe)) = (start(0, out), start(1, err));
    Some(OutputRange { out: (so, out), err: (se, err), gens: (gens[0], gens[1]), spans: (po, pe) })
}

/// The generation of this worker's stdout and stderr files (see `rotate_logs`).
static LOG_GEN: [std::sync::atomic::AtomicU32; 2] = [std::sync::atomic::AtomicU32::new(0), std::sync::atomic::AtomicU32::new(0)];
/// Held while the files rotate.
static ROTATION: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Rotates this worker's stdout and stderr files by size, for as long as it runs: past
/// `max` bytes the file becomes `<file>.<generation>` and a new one takes its place on the
/// same descriptor (nothing is lost: writes before go to the old file, after to the new);
/// only the `keep` newest old ones stay.
///
/// Every second it also appends where both files stand to `<worker log>.idx` (when that
/// changed): a time → offset index `rayr logs search --since/--until` cuts files with.
fn rotate_logs(out: std::path::PathBuf, err: std::path::PathBuf, max: u64, keep: u32) {
    let _ = std::thread::Builder::new().name("rayr-log-rotate".into()).spawn(move || {
        let index_path = out.with_extension("idx");
        let mut index = std::fs::OpenOptions::new().create(true).append(true).open(&index_path).ok();
        let mut last = (u32::MAX, u64::MAX, u32::MAX, u64::MAX);
        let mut first = true;
        loop {
            // The first record, at once: where the files stood when the worker started.
            if !std::mem::take(&mut first) {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            {
                let _still = ROTATION.lock();
                // SAFETY: lseek on the process's own standard descriptors.
                let (o, e) = unsafe { (libc::lseek(1, 0, libc::SEEK_END), libc::lseek(2, 0, libc::SEEK_END)) };
                let now = (LOG_GEN[0].load(std::sync::atomic::Ordering::Relaxed), o as u64, LOG_GEN[1].load(std::sync::atomic::Ordering::Relaxed), e as u64);
                if o >= 0 && e >= 0 && now != last
                    && let Some(f) = index.as_mut()
                {
                    use std::io::Write;
                    let mut rec = Vec::with_capacity(32);
                    rec.extend_from_slice(&rayr_logs::now_us().to_le_bytes());
                    rec.extend_from_slice(&now.0.to_le_bytes());
                    rec.extend_from_slice(&now.1.to_le_bytes());
                    rec.extend_from_slice(&now.2.to_le_bytes());
                    rec.extend_from_slice(&now.3.to_le_bytes());
                    let _ = f.write_all(&rec);
                    last = now;
                }
            }
            for (i, (fd, path)) in [(1, &out), (2, &err)].into_iter().enumerate() {
                // SAFETY: lseek on the process's own standard descriptor.
                let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
                if size < 0 || (size as u64) < max {
                    continue;
                }
                let _rotating = ROTATION.lock();
                use std::io::Write;
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().flush();
                let generation = LOG_GEN[i].load(std::sync::atomic::Ordering::Relaxed);
                let old = std::path::PathBuf::from(format!("{}.{generation}", path.display()));
                let fresh = std::path::PathBuf::from(format!("{}.new", path.display()));
                let Ok(new) = std::fs::OpenOptions::new().create(true).append(true).open(&fresh) else { continue };
                if std::fs::rename(path, &old).is_err() {
                    let _ = std::fs::remove_file(&fresh);
                    continue;
                }
                let _ = std::fs::rename(&fresh, path);
                // SAFETY: replacing our own stdout/stderr with the new file; `new` closes
                // its own descriptor after.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&new), fd) };
                LOG_GEN[i].store(generation + 1, std::sync::atomic::Ordering::Relaxed);
                // What is written next starts the new file.
                OUTPUT_AT[i].store(0, std::sync::atomic::Ordering::Relaxed);
                if generation >= keep {
                    let _ = std::fs::remove_file(format!("{}.{}", path.display(), generation - keep));
                }
            }
        }
    });
}

fn error(kind: TaskErrorKind, message: String) -> task_result::Outcome {
    task_result::Outcome::Error(TaskError { message, kind: kind as i32, ..Default::default() })
}

/// What a pushed task runs.
enum Target {
    Function(&'static registry::RemoteFunction),
    /// An actor's constructor: this worker hosts the actor from now on.
    Create(&'static registry::ActorClass, Id),
    Method(&'static registry::ActorMethod, Id),
}

/// The actor this worker hosts: its id, its state, and how many calls run at once.
struct Hosted {
    id: Id,
    state: Box<dyn std::any::Any + Send>,
    concurrency: u32,
}

/// The hosted actor behind a read-write lock: `&mut self` methods take it exclusively,
/// and so does every call of an actor that runs one call at a time; `&self` methods of a
/// concurrent actor share it.
struct HostedCell(parking_lot::RwLock<Option<Hosted>>);

// SAFETY: the state is only reached through the lock. Shared access from several threads
// at once happens only for a concurrent actor, and its creation checked that the state's
// type is `Sync` (`ActorClass::sync`); every other access is exclusive, which needs only
// `Send`.
unsafe impl Sync for HostedCell {}

static ACTOR: HostedCell = HostedCell(parking_lot::RwLock::new(None));

/// A concurrent actor's calls: handed from the connection that read them to its pool.
use crate::core::Call;
static POOL: std::sync::OnceLock<std::sync::mpsc::SyncSender<Call>> = std::sync::OnceLock::new();

/// Where a concurrent actor's calls go (`None`: run them on the reading thread, in order).
pub(crate) fn call_pool() -> Option<&'static std::sync::mpsc::SyncSender<Call>> {
    POOL.get()
}

/// Starts the pool of `n` threads that runs a concurrent actor's calls; each answers on
/// the connection its call came from.
fn start_pool(core: &Arc<Core>, n: u32) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Call>(1024);
    if POOL.set(tx).is_err() {
        return;
    }
    let rx = Arc::new(parking_lot::Mutex::new(rx));
    for i in 0..n {
        let (core, rx) = (core.clone(), rx.clone());
        let _ = std::thread::Builder::new().name(format!("rayr-actor-{i}")).spawn(move || {
            loop {
                let Ok((spec, conn)) = rx.lock().recv() else { return };
                let mut events = None;
                let result = run_task(&core, spec, &mut events);
                drop(events);
                conn.send(&result);
            }
        });
    }
}
/// Its id alone, for `runtime_context()` (read while a method holds `ACTOR`).
static ACTOR_ID: parking_lot::Mutex<Option<Id>> = parking_lot::Mutex::new(None);

/// The actor this process hosts, if any.
pub(crate) fn current_actor() -> Option<Id> {
    *ACTOR_ID.lock()
}

fn execute(core: &Arc<Core>, spec: &rayr_proto::TaskSpec) -> task_result::Outcome {
    let not_here = |what: &str| {
        let binary = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
        error(
            TaskErrorKind::BadArgument,
            format!("{what} {} is not registered in {binary}: is the worker built from the same source as the driver?", spec.function),
        )
    };
    let actor: Option<Id> = spec.actor_id.as_slice().try_into().ok();
    let target = match actor {
        Some(id) if spec.actor_creation => match registry::actor_class(&spec.function) {
            Some(c) => Target::Create(c, id),
            None => return not_here("actor type"),
        },
        Some(id) => match registry::actor_method(&spec.function) {
            Some(m) => Target::Method(m, id),
            None => return not_here("actor method"),
        },
        None => match registry::lookup(&spec.function) {
            Some(f) => Target::Function(f),
            None => return not_here("function"),
        },
    };
    // Values fetched from other owners must outlive the reader that borrows them; copies
    // pulled for them are released when the task is done, however it ends.
    let mut fetched: Vec<Fetched> = Vec::new();
    let mut done = ArgumentsDone { core, ids: Vec::new() };
    for a in &spec.args {
        if let Some(task_arg::Arg::ByRef(r)) = &a.arg {
            let id: Id = r.object_id.as_slice().try_into().unwrap_or([0; 16]);
            let owner: Id = r.owner.as_slice().try_into().unwrap_or([0; 16]);
            match crate::core::fetch::fetch_argument(core, id, owner, &r.owner_address) {
                Ok(f) => {
                    fetched.push(f);
                    done.ids.push(id);
                }
                Err(e) => {
                    let message = format!("argument {} could not be read: {e}", hex(&id));
                    let kind = TaskErrorKind::DependencyFailed as i32;
                    return task_result::Outcome::Error(TaskError { message, kind, failed_argument: id.to_vec(), ..Default::default() });
                }
            }
        }
    }
    let mut by_ref = fetched.iter();
    let mut args = Vec::with_capacity(spec.args.len());
    for a in &spec.args {
        let arg = match &a.arg {
            Some(task_arg::Arg::InlineValue(b)) => ArgBytes { bytes: Cow::Borrowed(b.as_slice()), format: codec::POSTCARD },
            // SAFETY: the owner keeps the object alive until this task ends.
            Some(task_arg::Arg::Shm(loc)) => ArgBytes { bytes: Cow::Borrowed(unsafe { core.arena.bytes(loc.offset, loc.size) }), format: loc.format },
            Some(task_arg::Arg::ByRef(_)) => match by_ref.next() {
                Some(Fetched::Inline(b, f)) => ArgBytes { bytes: Cow::Borrowed(&b[..]), format: *f },
                Some(Fetched::Shm { offset, size, format }) => {
                    ArgBytes { bytes: Cow::Borrowed(unsafe { core.arena.bytes(*offset, *size) }), format: *format }
                }
                _ => return error(TaskErrorKind::BadArgument, "internal: missing fetched argument".into()),
            },
            None => return error(TaskErrorKind::BadArgument, "a task argument is empty".into()),
        };
        args.push(arg);
    }
    let mut reader = ArgReader { args };
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| match &target {
        Target::Function(f) => (f.invoke)(&mut reader),
        Target::Create(class, id) => {
            let concurrency = spec.actor_max_concurrency.clamp(1, crate::actor::MAX_CONCURRENCY);
            if concurrency > 1 && !(class.sync)() {
                return Returned::BadArgument(crate::actor::not_sync(class.name, concurrency));
            }
            // The constructor already runs as the actor (runtime_context says so).
            *ACTOR_ID.lock() = Some(*id);
            let state = match (class.construct)(&mut reader) {
                Ok(state) => state,
                Err(returned) => return returned,
            };
            *ACTOR.0.write() = Some(Hosted { id: *id, state, concurrency });
            if concurrency > 1 {
                start_pool(core, concurrency);
            }
            let mut e = core.event(EventKind::ActorCreated);
            e.actor_id = id.to_vec();
            e.worker_id = core.me.to_vec();
            e.task_id = spec.task_id.clone();
            e.detail = Some(rayr_proto::event::Detail::Actor(rayr_proto::ActorDetail { class: spec.function.clone(), pid: core.pid, restart: spec.attempt, name: spec.actor_name.clone(), detached: spec.actor_detached, ..Default::default() }));
            core.record(e);
            Returned::value(&crate::actor::ActorInfo { worker: core.me, address: core.address.clone() })
        }
        Target::Method(method, id) => {
            let not_alive = || {
                Returned::ApplicationError(format!("actor {} is not alive in worker {} (its constructor failed)", hex(id), hex(&core.me)))
            };
            // Shared access only for a `&self` method of a concurrent actor.
            let concurrent = ACTOR.0.read().as_ref().is_some_and(|h| h.concurrency > 1);
            match method.shared {
                Some(shared) if concurrent => match &*ACTOR.0.read() {
                    Some(h) if h.id == *id => shared(h.state.as_ref(), &mut reader),
                    _ => not_alive(),
                },
                _ => match &mut *ACTOR.0.write() {
                    Some(h) if h.id == *id => (method.invoke)(h.state.as_mut(), &mut reader),
                    _ => not_alive(),
                },
            }
        }
    }));
    drop(reader);
    drop(done);
    match result {
        Ok(Returned::Value(bytes)) => {
            if bytes.len() <= core.max_inline {
                return task_result::Outcome::InlineValue(bytes);
            }
            // Large values stay in this node's store, whichever node their owner is on (it
            // pulls them if it reads them; tasks placed here read them in place).
            let owner: Id = spec.owner.as_slice().try_into().unwrap_or([0; 16]);
            let ret: Id = spec.return_id.as_slice().try_into().unwrap_or([0; 16]);
            match store_bytes_for(core, &bytes, codec::POSTCARD, owner, &spec.owner_node, ret) {
                Ok((Slot::Shm { offset, size, format }, _)) => task_result::Outcome::Shm(ObjectLocation {
                    object_id: ret.to_vec(),
                    offset,
                    size,
                    format,
                    node: core.node.to_vec(),
                }),
                Ok(_) => unreachable!("store_bytes_for returns a shm slot"),
                Err(e) => error(TaskErrorKind::Store, format!("the return value could not be stored: {e}")),
            }
        }
        Ok(Returned::ApplicationError(message)) => error(TaskErrorKind::Application, message),
        Ok(Returned::BadArgument(message)) => error(TaskErrorKind::BadArgument, message),
        Err(payload) => {
            let (message, location, backtrace) = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
                let m = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
                (m.unwrap_or_else(|| "panic".into()), String::new(), String::new())
            });
            task_result::Outcome::Error(TaskError {
                message: format!("panicked: {message}"),
                backtrace,
                kind: TaskErrorKind::Panic as i32,
                location,
                failed_argument: Vec::new(),
            })
        }
    }
}

/// Releases the copies a task's arguments were read from (see `core::fetch::argument_done`).
struct ArgumentsDone<'a> {
    core: &'a Arc<Core>,
    ids: Vec<Id>,
}

impl Drop for ArgumentsDone<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            crate::core::fetch::argument_done(self.core, &self.ids);
        }
    }
}
