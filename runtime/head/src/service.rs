//! The head's gRPC service (`rayr_proto::head_server::Head`) and the threads behind it.
//!
//! `start_head` runs two threads: the indexer, which tails the session's event logs into the
//! `EventIndex` as they grow (at a lower CPU priority than the tasks it records, so that it
//! yields to them, but never starved: the live views trail the cluster by milliseconds),
//! and the gRPC server on its own small tokio runtime. Queries run on tokio's blocking
//! pool because index reads are synchronous. The clean-up sweeps (dead nodes, ended jobs,
//! dead owners: `sweeps.rs`) run on the same runtime, beside the service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rayr_logs::Session;
use rayr_proto::head_server::{Head, HeadServer};
use rayr_proto::{
    ClusterInfoReply, ClusterInfoRequest, Event, EventsRequest, HeartbeatReply, HeartbeatRequest, ListReply, ListRequest,
    RegisterNodeReply, RegisterNodeRequest, UnregisterNodeReply, UnregisterNodeRequest, heartbeat_reply,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::HeadError;
use crate::index::{EventIndex, EventQuery};
use crate::membership::{Membership, MembershipConfig, Standing};

/// How often the indexer looks for new events.
const INDEX_EVERY: Duration = Duration::from_millis(20);
/// How often a following `Events` stream looks for new matches.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// Events sent per index read while streaming.
const STREAM_PAGE: usize = 5_000;
/// How long in-flight calls get to finish once the head is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Request metadata key carrying an id *pattern* (prefix or `HEAD…TAIL`) for `Events`,
/// resolved by the head to the one id it names. `EventsRequest.id` takes whole ids only.
pub const ID_PATTERN_METADATA: &str = "rayr-id-pattern";

/// A running head. Stops (server, indexer; final catch-up; address file removed) on
/// `shutdown` or when dropped.
pub struct HeadHandle {
    address: SocketAddr,
    session: Session,
    index: Arc<EventIndex>,
    membership: Arc<Membership>,
    stop_server: Option<watch::Sender<bool>>,
    server: Option<JoinHandle<()>>,
    stop_indexer: Arc<AtomicBool>,
    indexer: Option<JoinHandle<()>>,
}

impl HeadHandle {
    /// Where clients reach the head (`HOST:PORT`, the real port; loopback when it listens
    /// on every interface). The same text is in `session.head_address_file()`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The index the head serves, for in-process queries (an embedded head's driver).
    pub fn index(&self) -> &Arc<EventIndex> {
        &self.index
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A handle to `metrics` another thread can keep.
    pub fn metrics_source(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let (index, membership) = (self.index.clone(), self.membership.clone());
        move || head_metrics(&index, &membership)
    }

    /// The head's metrics, as Prometheus text: what the record says of tasks (counted as
    /// the head indexes their events, since it started), events by kind, nodes.
    pub fn metrics(&self) -> String {
        head_metrics(&self.index, &self.membership)
    }

    /// The cluster's nodes as the head sees them (the head's own node is added here).
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// Stops serving, makes what is indexed durable and removes the address file. A backlog
    /// not yet indexed stays in the logs for the next reader to index: an embedded driver's
    /// exit must not wait seconds for bookkeeping nobody may ask for.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        self.stop_indexer.store(true, Ordering::Release);
        if let Some(t) = self.indexer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Err(e) = self.index.flush() {
            tracing::warn!(error = %e, "final indexing of the event logs failed");
        }
        // Remove the address only if it is still ours (a restarted head may have replaced it).
        if self.session.head_address().as_deref() == Some(self.address.to_string().as_str()) {
            let _ = std::fs::remove_file(self.session.head_address_file());
        }
    }
}

impl Drop for HeadHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens the session's index, starts the indexer and the gRPC server on `bind` (port 0:
/// any free port), and writes the address to `session.head_address_file()`.
pub fn start_head(session: Session, bind: SocketAddr) -> Result<HeadHandle, HeadError> {
    start_head_with(session, bind, MembershipConfig::default())
}

/// `start_head` with how node liveness is watched.
pub fn start_head_with(session: Session, bind: SocketAddr, membership: MembershipConfig) -> Result<HeadHandle, HeadError> {
    let membership = Membership::open(&session, membership).map_err(|e| HeadError::Io { path: session.events_dir(), source: e })?;
    let index = Arc::new(EventIndex::open(&session)?);
    // Index what is already there before answering anyone, so the first query is complete.
    index.catch_up(&session)?;

    let listener = std::net::TcpListener::bind(bind).map_err(|e| HeadError::Bind { addr: bind, source: e })?;
    listener.set_nonblocking(true).map_err(|e| HeadError::Bind { addr: bind, source: e })?;
    let local = listener.local_addr().map_err(|e| HeadError::Bind { addr: bind, source: e })?;
    let address = if local.ip().is_unspecified() {
        let loopback =
            if local.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(std::net::Ipv6Addr::LOCALHOST) };
        SocketAddr::new(loopback, local.port())
    } else {
        local
    };

    let stop_indexer = Arc::new(AtomicBool::new(false));
    let indexer = {
        let (index, session, stop) = (index.clone(), session.clone(), stop_indexer.clone());
        std::thread::Builder::new()
            .name("rayr-head-indexer".into())
            .spawn(move || run_indexer(&index, &session, &stop))
            .map_err(|e| HeadError::Server(format!("cannot start the indexer thread: {e}")))?
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let service = HeadService {
        index: index.clone(),
        session: session.clone(),
        stop: stop_rx.clone(),
        membership: membership.clone(),
        appending: Default::default(),
    };
    let server = std::thread::Builder::new()
        .name("rayr-head-grpc".into())
        .spawn(move || run_server(listener, service, stop_rx))
        .map_err(|e| HeadError::Server(format!("cannot start the gRPC thread: {e}")))?;

    let handle = HeadHandle {
        address,
        session: session.clone(),
        index,
        membership,
        stop_server: Some(stop_tx),
        server: Some(server),
        stop_indexer,
        indexer: Some(indexer),
    };
    // Written last, atomically: a client that finds the file finds a head that answers.
    let tmp = session.dir.join(format!(".head_address.{}", std::process::id()));
    std::fs::write(&tmp, format!("{address}\n"))
        .and_then(|_| std::fs::rename(&tmp, session.head_address_file()))
        .map_err(|e| HeadError::Io { path: session.head_address_file(), source: e })?;
    Ok(handle)
}

/// The indexer thread's nice value.
const INDEXER_NICE: libc::c_int = 10;
/// Events the background indexer takes per step (it checks `stop` between steps).
const INDEX_CHUNK: u64 = 256 * 1024;

fn run_indexer(index: &EventIndex, session: &Session, stop: &AtomicBool) {
    // Below the tasks it records when the CPU is contended, but never starved: the live
    // views must trail the cluster by well under a second even under full load.
    // SAFETY: a plain syscall on the calling thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, INDEXER_NICE);
    }
    let mut last_error = String::new();
    while !stop.load(Ordering::Acquire) {
        match index.catch_up_at_most(session, INDEX_CHUNK) {
            Ok(n) if n >= INDEX_CHUNK => {
                // More is waiting: continue at once, checking `stop` between chunks.
                last_error.clear();
                continue;
            }
            Ok(_) => last_error.clear(),
            Err(e) => {
                // Report each new problem once, not 50 times a second.
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(error = %msg, "indexing the event logs failed; retrying");
                    last_error = msg;
                }
            }
        }
        std::thread::park_timeout(INDEX_EVERY);
    }
}

fn run_server(listener: std::net::TcpListener, service: HeadService, stop: watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the head's tokio runtime");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve on the head's socket");
                return;
            }
        };
        // The clean-up sweeps (dead nodes, ended jobs, dead owners) run beside the service.
        tokio::spawn(crate::sweeps::watch(service.membership.clone(), service.index.clone(), service.session.clone(), stop.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = tonic::transport::Server::builder()
            .add_service(HeadServer::new(service).max_decoding_message_size(64 << 20))
            .serve_with_incoming_shutdown(incoming, stopped(stop.clone()));
        tokio::select! {
            r = serve => if let Err(e) = r {
                tracing::error!(error = %e, "the head's gRPC server stopped");
            },
            // A client holding a call open must not keep the head from stopping.
            _ = async { stopped(stop).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {}
        }
    });
    rt.shutdown_background();
}

/// Final failures a summary of tasks lists.
const RECENT_FAILURES_SHOWN: usize = 20;

/// How long `ClusterInfo` indexes before it answers.
const CLUSTER_INFO_CATCH_UP: Duration = Duration::from_millis(300);

/// Resolves once `stop` says true (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

struct HeadService {
    index: Arc<EventIndex>,
    session: Session,
    stop: watch::Receiver<bool>,
    membership: Arc<Membership>,
    /// Shipped event logs are appended one call at a time: a check of a copy's size and
    /// the write after it must not interleave with another call's.
    appending: Arc<parking_lot::Mutex<()>>,
}

/// Runs a blocking index read on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, HeadError> + Send + 'static) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("head query panicked: {e}"))),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl Head for HeadService {
    async fn cluster_info(&self, req: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoReply>, Status> {
        if req.into_inner().quick {
            let session_dir = self.session.dir.display().to_string();
            return Ok(Response::new(ClusterInfoReply { session_dir, head_pid: std::process::id(), ..Default::default() }));
        }
        let index = self.index.clone();
        let session = self.session.clone();
        let session_dir = self.session.dir.display().to_string();
        let membership = self.membership.clone();
        let reply = blocking(move || {
            // Nodes' liveness comes from membership; the record is caught up for a
            // moment at most, so that `rayr status` answers at once while the indexer has
            // a backlog (a busy cluster), with what is indexed by then.
            let began = std::time::Instant::now();
            while index.catch_up_at_most(&session, 5_000)? >= 5_000 && began.elapsed() < CLUSTER_INFO_CATCH_UP {}
            let mut nodes = index.nodes()?;
            membership.annotate(&mut nodes);
            Ok(ClusterInfoReply { session_dir, nodes, events_indexed: index.events_indexed()?, head_pid: std::process::id() })
        })
        .await?;
        Ok(Response::new(reply))
    }

    async fn register_node(&self, req: Request<RegisterNodeRequest>) -> Result<Response<RegisterNodeReply>, Status> {
        let cfg = self.membership.config();
        let mut reply = RegisterNodeReply {
            error: String::new(),
            heartbeat_period_ms: cfg.heartbeat_period.as_millis() as u32,
            missed_heartbeats: cfg.missed_heartbeats,
            session_dir: self.session.dir.display().to_string(),
            cluster: Vec::new(),
        };
        match self.membership.register(&req.into_inner()) {
            Ok(()) => reply.cluster = self.membership.view(),
            Err(e) => reply.error = e,
        }
        Ok(Response::new(reply))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        let (standing, detail) = match self.membership.heartbeat(&req.into_inner()) {
            Standing::Ok => (heartbeat_reply::Standing::Ok, String::new()),
            Standing::Unknown => (heartbeat_reply::Standing::Unknown, "this head does not know the node: register again".into()),
            Standing::Dead(why) => (heartbeat_reply::Standing::Dead, why),
        };
        let ok = standing == heartbeat_reply::Standing::Ok;
        let cluster = if ok { self.membership.view() } else { Vec::new() };
        let gone = if ok { self.membership.gone() } else { Vec::new() };
        Ok(Response::new(HeartbeatReply { standing: standing as i32, detail, cluster, gone }))
    }

    async fn append_events(&self, req: Request<rayr_proto::AppendEventsRequest>) -> Result<Response<rayr_proto::AppendEventsReply>, Status> {
        let r = req.into_inner();
        let node: rayr_logs::Id = r.node_id.as_slice().try_into().map_err(|_| Status::invalid_argument("append: a node id is 16 bytes"))?;
        if !self.membership.registered(&node) {
            return Err(Status::permission_denied(format!("append: node {} never registered with this head", rayr_logs::hex(&node))));
        }
        // Whole frames only: a torn or foreign write must not corrupt the head's copy.
        let mut rest = r.data.as_slice();
        while !rest.is_empty() {
            match rayr_proto::split_frame(rest) {
                Ok(Some((_, used))) => rest = &rest[used..],
                _ => return Err(Status::invalid_argument("append: the data is not a sequence of whole event frames")),
            }
        }
        let path = self.session.event_log(&rayr_logs::hex(&node));
        let appending = self.appending.clone();
        let size = blocking(move || {
            use std::io::Write;
            let _one = appending.lock();
            let io = |source| HeadError::Io { path: path.clone(), source };
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
            let size = f.metadata().map_err(io)?.len();
            if size != r.offset || r.data.is_empty() {
                return Ok(size);
            }
            f.write_all(&r.data).map_err(io)?;
            Ok(size + r.data.len() as u64)
        })
        .await?;
        Ok(Response::new(rayr_proto::AppendEventsReply { size }))
    }

    async fn place_actor(&self, req: Request<rayr_proto::PlaceActorRequest>) -> Result<Response<rayr_proto::PlaceActorReply>, Status> {
        Ok(Response::new(self.membership.place_actor(&req.into_inner())))
    }

    async fn actor_names(&self, req: Request<rayr_proto::ActorNamesRequest>) -> Result<Response<rayr_proto::ActorNameReply>, Status> {
        Ok(Response::new(self.membership.actor_names(&req.into_inner())))
    }

    async fn unregister_node(&self, req: Request<UnregisterNodeRequest>) -> Result<Response<UnregisterNodeReply>, Status> {
        self.membership.unregister(&req.into_inner());
        Ok(Response::new(UnregisterNodeReply {}))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let index = self.index.clone();
        let session = self.session.clone();
        let req = req.into_inner();
        Ok(Response::new(
            blocking(move || {
                if req.offset == 0 {
                    index.catch_up(&session)?;
                }
                index.list(&req)
            })
            .await?,
        ))
    }

    async fn summary(&self, req: Request<rayr_proto::SummaryRequest>) -> Result<Response<rayr_proto::SummaryReply>, Status> {
        let (index, session) = (self.index.clone(), self.session.clone());
        let req = req.into_inner();
        Ok(Response::new(
            blocking(move || {
                if !req.live {
                    index.catch_up(&session)?;
                }
                let mut reply = index.summary(&req.entity)?.to_proto();
                let is_tasks = matches!(req.entity.trim().to_ascii_lowercase().as_str(), "tasks" | "task");
                let recent = if is_tasks { index.recent_failures(RECENT_FAILURES_SHOWN) } else { Vec::new() };
                reply.events_indexed = index.events_indexed()?;
                reply.recent_failures = recent
                        .into_iter()
                        .map(|f| rayr_proto::RecentFailure {
                            time_us: f.time_us,
                            task_id: f.task_id,
                            function: f.function,
                            error_type: f.error_type,
                            error: f.error,
                        })
                        .collect();
                Ok(reply)
            })
            .await?,
        ))
    }

    type EventsStream = EventStream;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<EventStream>, Status> {
        let pattern = req.metadata().get(ID_PATTERN_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string);
        let req = req.into_inner();
        let (index, session) = (self.index.clone(), self.session.clone());
        blocking(move || index.catch_up(&session)).await?;
        let mut id = (!req.id.is_empty()).then_some(req.id);
        if let (None, Some(pattern)) = (&id, pattern) {
            let index = self.index.clone();
            id = Some(blocking(move || index.resolve_unique(&pattern)).await?);
        }
        let resolved = id.as_ref().map(|id| rayr_logs::hex(id));
        let query = EventQuery { id, kind: req.kind, since_us: req.since_us };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(stream_events(self.index.clone(), self.session.clone(), query, req.follow, self.stop.clone(), tx));
        let stream: EventStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut response = Response::new(stream);
        // Tells a client that sent a pattern which id it named.
        if let Some(hex) = resolved
            && let Ok(v) = hex.parse()
        {
            response.metadata_mut().insert(ID_PATTERN_METADATA, v);
        }
        Ok(response)
    }
}

async fn stream_events(
    index: Arc<EventIndex>,
    session: Session,
    query: EventQuery,
    follow: bool,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<Event, Status>>,
) {
    let mut after = 0u64;
    loop {
        let (idx, q) = (index.clone(), query.clone());
        let page = match blocking(move || idx.events_page(&q, after, STREAM_PAGE)).await {
            Ok(page) => page,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        after = page.next_after;
        for (_, ev) in page.events {
            if tx.send(Ok(ev)).await.is_err() {
                return; // the client went away
            }
        }
        if page.more {
            continue;
        }
        if !follow || *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = tx.closed() => return,
            _ = stop.changed() => return,
        }
        // A follower wants news now, not when the idle-time indexer gets to it.
        let (idx, session) = (index.clone(), session.clone());
        if let Err(status) = blocking(move || idx.catch_up_at_most(&session, STREAM_PAGE as u64 * 4)).await {
            let _ = tx.send(Err(status)).await;
            return;
        }
    }
}

impl From<HeadError> for Status {
    fn from(e: HeadError) -> Status {
        match &e {
            HeadError::BadRequest(_) => Status::invalid_argument(e.to_string()),
            HeadError::UnknownId { .. } => Status::not_found(e.to_string()),
            HeadError::AmbiguousId { .. } => Status::invalid_argument(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }
}

fn head_metrics(index: &EventIndex, membership: &Membership) -> String {
    {
        use rayr_proto::EventKind as K;
        use std::fmt::Write;
        let (kinds, final_failures) = index.counts();
        let count = |k: K| kinds.iter().find(|(x, _)| *x == k).map_or(0, |(_, n)| *n);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = if labels.is_empty() { writeln!(out, "{name} {v}") } else { writeln!(out, "{name}{{{labels}}} {v}") };
            }
        };
        let _ = (count(K::TaskSubmitted), final_failures);
        metric(
            "rayr_tasks",
            "gauge",
            "Tasks by the state the record shows (SUBMITTED, SCHEDULED, RUNNING, FINISHED, FAILED), among the tasks whose events this head indexed since it started.",
            index.task_states().into_iter().map(|(state, n)| (format!("state=\"{state}\""), n)).collect(),
        );
        metric(
            "rayr_events_indexed_total",
            "counter",
            "Events the head indexed since it started, by kind.",
            kinds.iter().map(|(k, n)| (format!("kind=\"{}\"", k.cli_name()), *n)).collect(),
        );
        let views = membership.view();
        let gone = membership.gone();
        metric(
            "rayr_nodes",
            "gauge",
            "Nodes of the cluster: alive, and gone (declared dead or left).",
            vec![("state=\"alive\"".into(), views.len() as u64), ("state=\"gone\"".into(), gone.len() as u64)],
        );
        out
    }
}
