//! A synthetic event record: what a job of many trivial tasks writes, made without running
//! them, so the index can be measured on records of ten million tasks in seconds.
//!
//! Each task's six events are the runtime's own (see runtime/rayr/src/core and exec.rs):
//! the driver records TASK_SUBMITTED (task, return object, function, max_retries) and
//! TASK_SCHEDULED (worker, caused by the submission); the worker that runs it records
//! TASK_STARTED (caused by the scheduling, pid) and TASK_FINISHED; the driver records the
//! result's OBJECT_CREATED (caused by the finish) and, when the ref is dropped,
//! OBJECT_FREED. Events are packed as the runtime packs them (`rayr_logs::event_run`), in
//! runs of `BATCH` tasks per process (what one drain of a busy ring holds), interleaved
//! in the node's log as the agent drains them; processes and the job are announced by
//! whole events first, as the node agent records them.

use std::io::Write;
use std::path::Path;

use rayr_logs::event_run::{PeerSalts, pack_event, run_header};
use rayr_logs::{Id, RunSource, event_id_from, id_of_counter};
use rayr_proto::event::Detail;
use rayr_proto::{Event, EventKind, JobDetail, WorkerStart};

/// Tasks per run of the driver (two runs per batch) and of each worker.
const BATCH: u64 = 1024;
/// Time between tasks' submissions (a rate of 250k tasks/s).
const STEP_US: i64 = 4;

struct Process {
    src: RunSource,
    peers: PeerSalts,
    seq: u64,
    events: Vec<u8>,
    count: u32,
    first_seq: u64,
    base_time: i64,
    last_time: i64,
}

impl Process {
    fn new(src: RunSource) -> Process {
        Process { src, peers: PeerSalts::default(), seq: 1, events: Vec::new(), count: 0, first_seq: 1, base_time: 0, last_time: 0 }
    }

    /// Records one event at `time`; returns its id.
    fn record(&mut self, kind: EventKind, time: i64, fill: impl FnOnce(&mut rayr_logs::event_run::EventWriter<'_>)) -> Id {
        if self.count == 0 {
            self.first_seq = self.seq;
            self.base_time = time;
            self.last_time = time;
        }
        let seq = self.seq;
        pack_event(&mut self.events, &self.src, &mut self.peers, seq, kind as i32, time - self.last_time, fill);
        self.last_time = time;
        self.seq += 1;
        self.count += 1;
        event_id_from(seq, self.src.salt)
    }

    /// Appends the run recorded so far as one frame.
    fn drain(&mut self, out: &mut Vec<u8>) {
        if self.count == 0 {
            return;
        }
        run_header(&self.src, self.peers.as_slice(), self.first_seq, self.base_time, self.count, self.events.len(), out);
        out.extend_from_slice(&self.events);
        self.events.clear();
        self.count = 0;
    }
}

/// Writes the record of a job of `tasks` trivial tasks run by `workers` workers on one
/// node into `session`'s event log; returns the log's size in bytes.
pub(crate) fn write_job(session: &rayr_logs::Session, tasks: u64, workers: usize) -> std::io::Result<u64> {
    let node = rayr_logs::new_id();
    let path = session.event_log(&rayr_logs::hex(&node));
    let mut file = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&path)?);
    let salt = |n: u64| 0x5eed_0000_0000_0000 ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let agent_salt = salt(1);
    let job = id_of_counter(2, agent_salt);
    let t0 = rayr_logs::now_us();
    let mut out = Vec::with_capacity(16 << 20);

    // The node agent names every process (its ids are the agent's) and the job.
    let mut procs: Vec<Process> = (0..=workers as u64)
        .map(|i| {
            let id = id_of_counter(10 + i, agent_salt);
            Process::new(RunSource { node_id: node, source_worker: id, source_pid: 1000 + i as u32, job_id: job, salt: salt(100 + i) })
        })
        .collect();
    let mut agent_seq = 1u64;
    let mut whole = |e: Event, out: &mut Vec<u8>| {
        let e = Event { id: event_id_from(agent_seq, agent_salt).to_vec(), node_id: node.to_vec(), source_worker: node.to_vec(), ..e };
        agent_seq += 1;
        rayr_logs::encode_single_run_frame(&e, out);
    };
    whole(Event { kind: EventKind::JobStarted as i32, time_us: t0, job_id: job.to_vec(), worker_id: procs[0].src.source_worker.to_vec(), detail: Some(Detail::Job(JobDetail { binary: "bench".into(), pid: 1000, exit_code: 0 })), ..Default::default() }, &mut out);
    for (i, p) in procs.iter().enumerate() {
        let start = WorkerStart { pid: p.src.source_pid, binary: "bench".into(), is_driver: i == 0, ..Default::default() };
        whole(Event { kind: EventKind::WorkerStarted as i32, time_us: t0, job_id: job.to_vec(), worker_id: p.src.source_worker.to_vec(), detail: Some(Detail::WorkerStart(start)), ..Default::default() }, &mut out);
    }

    let driver_salt = procs[0].src.salt;
    let driver_id = procs[0].src.source_worker;
    let mut counter = 1u64;
    let mut done = 0u64;
    while done < tasks {
        let n = BATCH.min(tasks - done);
        let first = counter;
        counter += 2 * n;
        let time = |i: u64| t0 + 1000 + (done + i) as i64 * STEP_US;
        let task = |i: u64| id_of_counter(first + 2 * i, driver_salt);
        let ret = |i: u64| id_of_counter(first + 2 * i + 1, driver_salt);
        let worker_of = |i: u64| 1 + ((done + i) % workers as u64) as usize;
        // The driver submits and schedules the batch.
        let mut scheduled = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (t, r, w) = (task(i), ret(i), procs[worker_of(i)].src.source_worker);
            let sub = procs[0].record(EventKind::TaskSubmitted, time(i), |e| {
                e.task(&t).object(&r);
                e.task_detail(|d| {
                    d.function("rayr_bench::noop").max_retries(3);
                });
            });
            scheduled.push(procs[0].record(EventKind::TaskScheduled, time(i), |e| {
                e.task(&t).worker(&w).cause(&sub);
            }));
        }
        procs[0].drain(&mut out);
        // Each worker runs its share.
        let mut finished = vec![[0u8; 16]; n as usize];
        for w in 1..=workers {
            for i in (0..n).filter(|i| worker_of(*i) == w) {
                let (t, cause, me) = (task(i), scheduled[i as usize], procs[w].src.source_worker);
                let pid = procs[w].src.source_pid;
                let started = procs[w].record(EventKind::TaskStarted, time(i) + 20, |e| {
                    e.task(&t).worker(&me).cause(&cause);
                    e.task_detail(|d| {
                        d.pid(pid);
                    });
                });
                finished[i as usize] = procs[w].record(EventKind::TaskFinished, time(i) + 21, |e| {
                    e.task(&t).worker(&me).cause(&started);
                });
            }
            procs[w].drain(&mut out);
        }
        // The driver gets the results, then drops the refs.
        for i in 0..n {
            let (t, r, cause) = (task(i), ret(i), finished[i as usize]);
            let created = procs[0].record(EventKind::ObjectCreated, time(i) + 40, |e| {
                e.object(&r).worker(&driver_id).task(&t).cause(&cause);
                e.object_detail(|d| {
                    d.size(8).location("inline");
                });
            });
            procs[0].record(EventKind::ObjectFreed, time(i) + 60, |e| {
                e.object(&r).worker(&driver_id).cause(&created);
            });
        }
        procs[0].drain(&mut out);
        done += n;
        if out.len() >= 8 << 20 {
            file.write_all(&out)?;
            out.clear();
        }
    }
    let end = t0 + 2000 + tasks as i64 * STEP_US;
    whole(Event { kind: EventKind::JobFinished as i32, time_us: end, job_id: job.to_vec(), detail: Some(Detail::Job(JobDetail { binary: "bench".into(), pid: 1000, exit_code: 0 })), ..Default::default() }, &mut out);
    file.write_all(&out)?;
    file.flush()?;
    drop(file);
    Ok(std::fs::metadata(Path::new(&path))?.len())
}
