//! Finding the cluster a command asks about, and asking it.
//!
//! Where the answer comes from, in order: `--address`, else `RAYR_ADDRESS`, else this
//! host's latest session (`$RAYR_TMPDIR/session_latest`) and the head address it records.
//! When that session's head is not running (the cluster stopped, or the driver that
//! embedded it exited), the command reads the session's event logs itself through the
//! same `EventIndex` the head uses, so every query answers the same after the fact.
//!
//! The query commands (`query.rs`) go through [`Cluster`]'s methods and never care which
//! of the two they got.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rayr_head::{EventIndex, EventQuery, HeadError, ID_PATTERN_METADATA, IdPattern};
use rayr_logs::Session;
use rayr_proto::head_client::HeadClient;
use rayr_proto::{Event, EventsRequest, ListReply, ListRequest};
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a head to answer before deciding it is not there.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for another `rayr` command to let go of a session's index.
const LOCK_WAIT: Duration = Duration::from_millis(300);
/// Rows asked for per `List` call while paging through a view.
const PAGE: u32 = 1000;
/// How often `--follow` looks for new events when reading a session's logs directly.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);

/// A cluster to query: its running head, or the record of a session whose head is gone.
pub enum Cluster {
    Live(HeadClient<Channel>),
    /// Opened from a session; `EventIndex::session()` says which.
    Offline(EventIndex),
}

/// Finds the cluster (see the module doc for the order) and connects to it.
pub async fn connect(address: Option<String>) -> anyhow::Result<Cluster> {
    let given = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty() && s != "auto");
    if let Some(addr) = given(address.clone()) {
        return dial(&addr).await.map(Cluster::Live).map_err(|e| {
            anyhow!("cannot reach a rayr head at {addr} (from --address): {e}; check the address, or leave --address out to use this host's latest session")
        });
    }
    if let Some(addr) = given(std::env::var("RAYR_ADDRESS").ok()) {
        return dial(&addr).await.map(Cluster::Live).map_err(|e| {
            anyhow!("cannot reach a rayr head at {addr} (from RAYR_ADDRESS): {e}; check the address, or unset RAYR_ADDRESS to use this host's latest session")
        });
    }

    let tmpdir = rayr_logs::tmpdir();
    let Some(session) = Session::latest(&tmpdir) else {
        bail!(
            "no rayr cluster found: RAYR_ADDRESS is not set and {} does not exist; start one with `rayr start --head` or run a program that calls rayr::init()",
            tmpdir.join("session_latest").display()
        );
    };
    let recorded = session.head_address();
    if let Some(addr) = &recorded
        && let Ok(client) = dial(addr).await
    {
        return Ok(Cluster::Live(client));
    }
    // No head answers (the address file is missing, or stale after a crash): read the record.
    let index = open_offline(&session, recorded.is_none()).await.map_err(|e| match (&e, &recorded) {
        (HeadError::Locked { .. }, Some(addr)) => anyhow!(
            "the head of session {} (at {addr}) holds the session's event index but did not answer within {:?}; \
             it may be overloaded or stuck: try again, or check its log in {}",
            session.dir.display(),
            DIAL_TIMEOUT,
            session.logs_dir().display()
        ),
        _ => anyhow::Error::new(e),
    })?;
    index.catch_up(&session).with_context(|| format!("reading the event logs of session {}", session.dir.display()))?;
    eprintln!("cluster not running; showing the record of session {}", session.dir.display());
    Ok(Cluster::Offline(index))
}

/// Connects and checks that a head answers there (a stale address may now be someone else's port).
pub(crate) async fn dial(addr: &str) -> anyhow::Result<HeadClient<Channel>> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint =
        Endpoint::from_shared(uri).map_err(|e| anyhow!("`{addr}` is not an address of the form HOST:PORT ({e})"))?;
    let channel = tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect_timeout(DIAL_TIMEOUT).connect())
        .await
        .map_err(|_| anyhow!("no answer within {DIAL_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("{}", error_chain(&e)))?;
    // Rows can be long (errors, backtraces); 1000 of them may pass tonic's 4 MiB default.
    let mut client = HeadClient::new(channel).max_decoding_message_size(256 << 20);
    tokio::time::timeout(DIAL_TIMEOUT * 2, client.cluster_info(rayr_proto::ClusterInfoRequest { quick: true }))
        .await
        .map_err(|_| {
            anyhow!("something listens there but did not answer as a rayr head within {:?}", DIAL_TIMEOUT * 2)
        })?
        .map_err(|s| anyhow!("something listens there but is not a rayr head ({})", s.message()))?;
    Ok(client)
}

/// Opens the session's index; while another command holds it, waits a little (two
/// `rayr list` at once are common). Falls back to indexing the logs in memory (they are the
/// record) where the file cannot be opened at all (another user's session, a damaged file),
/// or stays locked with `no_head`: then the holder is another `rayr` command, not a head.
async fn open_offline(session: &Session, no_head: bool) -> Result<EventIndex, HeadError> {
    let mut waited = Duration::ZERO;
    loop {
        match EventIndex::open(session) {
            Err(HeadError::Locked { .. }) if waited < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            }
            Err(HeadError::Locked { .. }) if no_head => return EventIndex::open_in_memory_for(session),
            Err(e @ HeadError::Open { .. }) => {
                eprintln!("{e}; indexing the event logs in memory instead");
                return EventIndex::open_in_memory_for(session);
            }
            other => return other,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// A failed head call, in the words the head chose (its messages already say what to do).
fn status_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => anyhow!("{}", s.message()),
        tonic::Code::Unavailable => anyhow!("lost the connection to the rayr head: {}", s.message()),
        _ => anyhow!("the rayr head failed to answer: {}", s.message()),
    }
}

/// Which events to print (`rayr events`).
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// An id pattern: a full id, a prefix, or the `HEAD…TAIL` short form.
    pub id: Option<String>,
    /// `EventKind as i32`; 0 for any.
    pub kind: i32,
    pub since_us: i64,
    pub follow: bool,
}

impl Cluster {
    /// Rows of a view counted by group and state (the head keeps the counts).
    pub async fn summary(&mut self, entity: &str) -> anyhow::Result<rayr_proto::SummaryReply> {
        match self {
            Cluster::Live(client) => {
                let req = rayr_proto::SummaryRequest { entity: entity.to_string(), live: false };
                Ok(client.summary(req).await.map_err(status_error)?.into_inner())
            }
            Cluster::Offline(index) => Ok(index.summary(entity)?.to_proto()),
        }
    }

    /// One page of a view.
    pub async fn list_page(&mut self, req: ListRequest) -> anyhow::Result<ListReply> {
        match self {
            Cluster::Live(client) => Ok(client.list(req).await.map_err(status_error)?.into_inner()),
            Cluster::Offline(index) => Ok(index.list(&req)?),
        }
    }

    /// Every row of a view that matches `filters`, however many pages that takes.
    pub async fn list_all(&mut self, entity: &str, filters: Vec<rayr_proto::Filter>) -> anyhow::Result<ListReply> {
        let mut all = ListReply::default();
        let mut offset = 0u64;
        loop {
            let req = ListRequest { entity: entity.to_string(), filters: filters.clone(), offset, limit: PAGE };
            let page = self.list_page(req).await?;
            let n = (page.tasks.len()
                + page.objects.len()
                + page.workers.len()
                + page.nodes.len()
                + page.jobs.len()
                + page.actors.len()) as u64;
            all.total = page.total;
            all.tasks.extend(page.tasks);
            all.objects.extend(page.objects);
            all.workers.extend(page.workers);
            all.nodes.extend(page.nodes);
            all.jobs.extend(page.jobs);
            all.actors.extend(page.actors);
            offset += n;
            // A live cluster may gain rows between pages: go on until a page reaches the
            // latest total. (A row inserted before `offset` shifts one already seen into the
            // next page; the caller drops such repeats.)
            if n == 0 || offset >= page.total {
                return Ok(all);
            }
        }
    }

    /// Calls `sink` with each matching event in index order; with `follow`, keeps waiting
    /// for new ones until `sink` fails or the cluster goes away.
    pub async fn events(
        &mut self,
        filter: &EventFilter,
        mut sink: impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some(pattern) = &filter.id {
            // Checked here so that a typo is reported before any round trip.
            IdPattern::parse(pattern).map_err(|e| anyhow!("--id: {e}"))?;
        }
        match self {
            Cluster::Live(client) => {
                let mut req = tonic::Request::new(EventsRequest {
                    id: Vec::new(),
                    kind: filter.kind,
                    since_us: filter.since_us,
                    follow: filter.follow,
                });
                if let Some(pattern) = &filter.id {
                    // The head resolves the pattern to one id (or says which it could mean).
                    let value =
                        pattern.replace('…', "..").parse().map_err(|_| anyhow!("--id `{pattern}` is not an id"))?;
                    req.metadata_mut().insert(ID_PATTERN_METADATA, value);
                }
                let mut stream = client.events(req).await.map_err(status_error)?.into_inner();
                while let Some(ev) = stream.message().await.map_err(status_error)? {
                    sink(&ev)?;
                }
                Ok(())
            }
            Cluster::Offline(index) => {
                let id = match &filter.id {
                    Some(pattern) => Some(index.resolve_unique(pattern)?),
                    None => None,
                };
                let query = EventQuery { id, kind: filter.kind, since_us: filter.since_us };
                let mut after = 0u64;
                loop {
                    let page = index.events_page(&query, after, 10_000)?;
                    after = page.next_after;
                    for (_, ev) in &page.events {
                        sink(ev)?;
                    }
                    if page.more {
                        continue;
                    }
                    if !filter.follow {
                        return Ok(());
                    }
                    // Nobody else indexes this session: tail its logs ourselves.
                    tokio::time::sleep(FOLLOW_EVERY).await;
                    if let Some(session) = index.session().cloned() {
                        index.catch_up(&session)?;
                    }
                }
            }
        }
    }
}
