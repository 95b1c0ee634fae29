//! Jobs' binaries across nodes: a job's workers run its driver's binary, which a node on
//! another host does not have. When a submitter of another node registers here, the agent
//! asks that node's agent for the binary's content hash (SHA-256) and uses, in order: its
//! cached copy (`<session>/binaries/<hash>`), the same path here if it holds the same
//! bytes, or a copy fetched from that agent by hash (JOB_BINARY_FETCHED). So a job started
//! on one host runs on all of them, and each node fetches a binary once.
//!
//! The serving side hashes what the job's driver really runs (`/proc/<pid>/exe`, which
//! stays readable even if the file on disk was rebuilt meanwhile).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayr_logs::{Id, hex};
use rayr_proto::object_transfer_client::ObjectTransferClient;
use rayr_proto::{EventKind, JobDetail, ObjectChunk, event};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::{Agent, id_of};

const CHUNK: usize = 1 << 20;

/// Hashes computed (by path, while the file is unchanged) and the files that have them.
#[derive(Default)]
pub(super) struct Binaries {
    hashed: parking_lot::Mutex<HashMap<PathBuf, (std::time::SystemTime, u64, String)>>,
    by_hash: parking_lot::Mutex<HashMap<String, PathBuf>>,
    fetching: parking_lot::Mutex<()>,
}

fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&h.finalize()[..]), size))
}

impl Agent {
    /// The hash of `path`'s bytes (cached while its size and mtime stay), remembered as a
    /// file this agent can serve.
    fn hash_file(&self, path: &Path) -> std::io::Result<(String, u64)> {
        let meta = std::fs::metadata(path)?;
        let mtime = meta.modified()?;
        if let Some((t, size, hash)) = self.binaries.hashed.lock().get(path)
            && *t == mtime
            && *size == meta.len()
        {
            return Ok((hash.clone(), *size));
        }
        let (hash, size) = sha256_of(path)?;
        self.binaries.hashed.lock().insert(path.to_path_buf(), (mtime, size, hash.clone()));
        self.binaries.by_hash.lock().insert(hash.clone(), path.to_path_buf());
        Ok((hash, size))
    }

    /// What job `job`'s workers run here, hashed (served to other nodes).
    pub(super) fn binary_of(&self, job: &[u8]) -> Result<(String, u64), Status> {
        let job = id_of(job).ok_or_else(|| Status::invalid_argument("a job id is 16 bytes"))?;
        let path = {
            let st = self.state.lock();
            // The running driver's own image, when it is here.
            let driver = st.pool.clients.values().find(|c| c.is_driver && c.job == job).map(|c| PathBuf::from(format!("/proc/{}/exe", c.pid)));
            driver
                .filter(|p| p.exists())
                .or_else(|| st.pool.jobs.get(&job).cloned())
                .or_else(|| st.detached.values().find(|d| d.job == job).map(|d| d.binary.clone()))
        };
        let path = path.ok_or_else(|| Status::not_found(format!("job {} has no binary on node {}", hex(&job), hex(&self.cfg.node_id))))?;
        self.hash_file(&path).map_err(|e| Status::unavailable(format!("cannot read {}: {e}", path.display())))
    }

    pub(super) fn binary_by_hash(&self, hash: &str) -> Option<PathBuf> {
        self.binaries.by_hash.lock().get(hash).cloned()
    }

    /// The binary a job of another node's submitter runs here: see the module doc.
    /// `binary` is its path on the submitter's host, `from` the submitter's node.
    pub(super) fn resolve_binary(&self, job: Id, binary: &str, from: &[u8]) -> Result<PathBuf, String> {
        let from_node = id_of(from).filter(|n| *n != self.cfg.node_id);
        let Some(from_node) = from_node else {
            // The same node (or a submitter that names none): the path itself.
            return if !binary.is_empty() && Path::new(binary).is_file() {
                Ok(PathBuf::from(binary))
            } else {
                Err(format!("the job's binary {binary:?} is not on this node's host"))
            };
        };
        let source = self.cluster.lock().iter().find(|n| n.node_id == from).map(|n| n.transfer_address.clone()).filter(|a| !a.is_empty());
        let Some(source) = source else {
            return Err(format!("node {} (where the job's binary is) is not in this node's view of the cluster", hex(&from_node)));
        };
        let transfer = self.transfer.get().ok_or("this node serves no transfers")?;
        let (hash, size) = transfer.rt.block_on(async {
            let channel = self.channel(&source).await?;
            let mut client = ObjectTransferClient::new(channel);
            let ask = client.binary_of(rayr_proto::BinaryOfRequest { job_id: job.to_vec() });
            let reply = tokio::time::timeout(Duration::from_secs(30), ask)
                .await
                .map_err(|_| format!("node {} did not say which binary the job runs within 30 s", hex(&from_node)))?
                .map_err(|s| s.message().to_string())?
                .into_inner();
            Ok::<_, String>((reply.sha256, reply.size))
        })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("node {} named the binary by {hash:?}, not a SHA-256", hex(&from_node)));
        }
        let cached = self.cfg.session.dir.join("binaries").join(&hash);
        if std::fs::metadata(&cached).is_ok_and(|m| m.len() == size) {
            self.binaries.by_hash.lock().insert(hash, cached.clone());
            return Ok(cached);
        }
        let here = Path::new(binary);
        if here.is_file() && self.hash_file(here).is_ok_and(|(h, _)| h == hash) {
            return Ok(here.to_path_buf());
        }
        // One fetch at a time: a second registration of the job waits, then finds the copy.
        let _one = self.binaries.fetching.lock();
        if std::fs::metadata(&cached).is_ok_and(|m| m.len() == size) {
            self.binaries.by_hash.lock().insert(hash, cached.clone());
            return Ok(cached);
        }
        let started = std::time::Instant::now();
        transfer.rt.block_on(self.fetch_binary(&source, &hash, size, &cached))?;
        self.binaries.by_hash.lock().insert(hash.clone(), cached.clone());
        let mut e = self.event(EventKind::JobBinaryFetched);
        e.job_id = job.to_vec();
        e.detail = Some(event::Detail::Job(JobDetail { binary: cached.display().to_string(), ..Default::default() }));
        self.record(&e);
        tracing::info!(
            "fetched the binary of job {} ({size} bytes, sha256 {hash}) from node {} in {} ms",
            hex(&job),
            hex(&from_node),
            started.elapsed().as_millis()
        );
        Ok(cached)
    }

    /// Streams the binary `hash` from `source` into `to` (through a temporary file, renamed
    /// once complete and checked, so a reader never sees part of one).
    async fn fetch_binary(&self, source: &str, hash: &str, size: u64, to: &Path) -> Result<(), String> {
        let dir = to.parent().ok_or("no cache directory")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let part = dir.join(format!("{hash}.part-{}-{}", std::process::id(), hex(&rayr_logs::new_id())));
        let result = async {
            let channel = self.channel(source).await?;
            let mut stream = ObjectTransferClient::new(channel)
                .max_decoding_message_size(2 * CHUNK)
                .fetch_binary(rayr_proto::FetchBinaryRequest { sha256: hash.to_string() })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            let mut file = std::fs::File::create(&part).map_err(|e| e.to_string())?;
            let mut h = Sha256::new();
            let mut got = 0u64;
            loop {
                let chunk = match tokio::time::timeout(Duration::from_secs(15), stream.message()).await {
                    Err(_) => return Err(format!("node at {source} sent nothing for 15 s")),
                    Ok(Err(s)) => return Err(s.message().to_string()),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(c))) => c,
                };
                got += chunk.data.len() as u64;
                if got > size {
                    return Err(format!("the source sent more than the {size} bytes it announced"));
                }
                h.update(&chunk.data);
                file.write_all(&chunk.data).map_err(|e| e.to_string())?;
            }
            if got != size || hex(&h.finalize()[..]) != hash {
                return Err(format!("the copy received ({got} of {size} bytes) does not have the hash asked for"));
            }
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
            std::fs::rename(&part, to).map_err(|e| e.to_string())
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result.map_err(|e| format!("fetching the job's binary (sha256 {hash}) from {source}: {e}"))
    }
}

/// The chunks of the file at `path` (its size in each), read off the runtime's threads.
pub(super) fn file_chunks(path: PathBuf) -> tokio::sync::mpsc::Receiver<Result<ObjectChunk, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let send = |r| tx.blocking_send(r).is_ok();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                send(Err(Status::unavailable(format!("cannot read {}: {e}", path.display()))));
                return;
            }
        };
        let total = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut offset = 0u64;
        loop {
            let mut data = vec![0u8; CHUNK];
            let n = match f.read(&mut data) {
                Ok(n) => n,
                Err(e) => {
                    send(Err(Status::unavailable(format!("cannot read {}: {e}", path.display()))));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            data.truncate(n);
            if !send(Ok(ObjectChunk { offset, data: data.into(), total_size: total })) {
                return;
            }
            offset += n as u64;
        }
    });
    rx
}
