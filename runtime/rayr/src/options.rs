//! Task options and the runtime `Config`.

use std::collections::HashMap;
use std::path::PathBuf;

/// Options of one task submission; see `f::options()`.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    pub(crate) resources: HashMap<String, f64>,
    pub(crate) max_retries: u32,
    pub(crate) retry_exceptions: bool,
    pub(crate) name: Option<String>,
    /// A named actor's namespace ("" when not given).
    pub(crate) namespace: Option<String>,
    pub(crate) scheduling_strategy: Option<String>,
    /// Calls an actor runs at once (1: one at a time, in order).
    pub(crate) max_concurrency: u32,
    /// An actor's restarts after its worker dies, and retries of its calls that were
    /// running then (−1: without end).
    pub(crate) max_restarts: i32,
    pub(crate) max_task_retries: i32,
    /// The actor outlives its creator: the node agent holds it until it is killed.
    pub(crate) detached: bool,
}

impl Default for TaskOptions {
    /// One CPU, 3 retries after a worker dies, no retry after an error in user code: Ray's
    /// defaults.
    fn default() -> Self {
        TaskOptions {
            resources: HashMap::from([("CPU".to_string(), 1.0)]),
            max_retries: 3,
            retry_exceptions: false,
            name: None,
            namespace: None,
            max_concurrency: 1,
            max_restarts: 0,
            max_task_retries: 0,
            detached: false,
            scheduling_strategy: None,
        }
    }
}

impl TaskOptions {
    pub fn num_cpus(self, n: f64) -> Self {
        self.resource("CPU", n)
    }
    pub fn num_gpus(self, n: f64) -> Self {
        self.resource("GPU", n)
    }
    pub fn memory(self, bytes: f64) -> Self {
        self.resource("memory", bytes)
    }
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        if amount <= 0.0 {
            self.resources.remove(name);
        } else {
            self.resources.insert(name.to_string(), amount);
        }
        self
    }
    /// Retries after the worker dies (and after errors when `retry_exceptions`); -1 means
    /// "as often as needed".
    pub fn max_retries(mut self, n: i32) -> Self {
        self.max_retries = if n < 0 { u32::MAX } else { n as u32 };
        self
    }
    pub fn retry_exceptions(mut self, yes: bool) -> Self {
        self.retry_exceptions = yes;
        self
    }
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// A named actor's namespace: names are unique within one (default: "").
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }
    /// How often an actor whose worker dies is created again (its constructor re-run;
    /// calls in flight then fail, later ones go to the new worker); −1 without end.
    pub fn max_restarts(mut self, n: i32) -> Self {
        self.max_restarts = n.max(-1);
        self
    }
    /// Retries of an actor's call that was running when its worker died (run again on
    /// the restarted actor, in their order); −1 without end. 0: such calls fail.
    pub fn max_task_retries(mut self, n: i32) -> Self {
        self.max_task_retries = n.max(-1);
        self
    }
    /// Calls an actor runs at once. 1 (the default): one at a time, each caller's in the
    /// order made. More: on a pool of that many threads in the actor's worker, in no set
    /// order; `&self` methods share the state (its type must be `Sync`), `&mut self`
    /// methods have it to themselves.
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n.max(1);
        self
    }
    /// An actor that outlives its creator and its job: the node agent holds it (restarts
    /// included) until `rayr::kill` or the cluster stops; find it again with
    /// `<Name>Handle::get_named`. Its constructor's arguments must be values, not refs.
    pub fn lifetime_detached(mut self) -> Self {
        self.detached = true;
        self
    }
    pub fn scheduling_strategy(mut self, s: &str) -> Self {
        self.scheduling_strategy = Some(s.to_string());
        self
    }
}

/// Everything a user may tune. [`Config::from_env`] reads the `RAYR_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// `HOST:PORT` of a running head (`RAYR_ADDRESS`). None: a running local cluster, or
    /// an embedded one.
    pub address: Option<String>,
    /// CPUs of an embedded node (`RAYR_NUM_CPUS`; default: the machine's).
    pub num_cpus: Option<f64>,
    /// GPUs of an embedded node (`RAYR_NUM_GPUS`).
    pub num_gpus: Option<f64>,
    /// Bytes of the embedded node's shm store (`RAYR_OBJECT_STORE_MEMORY`, default 2 GiB).
    pub object_store_memory: Option<u64>,
    /// Where sessions live (`RAYR_TMPDIR`, default /tmp/rayr).
    pub tmpdir: Option<PathBuf>,
    /// Record events (`RAYR_RECORD_EVENTS`, default true). Off only to measure its cost.
    pub record_events: bool,
    /// Objects up to this size travel inline and live in the owner's memory
    /// (`RAYR_MAX_INLINE_BYTES`, default 100 KiB, like Ray).
    pub max_inline_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: None,
            num_cpus: None,
            num_gpus: None,
            object_store_memory: None,
            tmpdir: None,
            record_events: true,
            max_inline_bytes: 100 * 1024,
        }
    }
}

impl Config {
    /// Defaults overridden by `RAYR_*` environment variables. A variable that does not
    /// parse is an error naming it.
    pub fn from_env() -> crate::Result<Config> {
        fn var<T: std::str::FromStr>(name: &str) -> crate::Result<Option<T>> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
                    crate::Error::Connection(format!("environment variable {name}={v:?} is not a valid value"))
                }),
                _ => Ok(None),
            }
        }
        let mut c = Config::default();
        c.address = var("RAYR_ADDRESS")?;
        c.num_cpus = var("RAYR_NUM_CPUS")?;
        c.num_gpus = var("RAYR_NUM_GPUS")?;
        c.object_store_memory = var("RAYR_OBJECT_STORE_MEMORY")?;
        c.tmpdir = var::<String>("RAYR_TMPDIR")?.map(PathBuf::from);
        if let Some(v) = var::<String>("RAYR_RECORD_EVENTS")? {
            c.record_events = !matches!(v.as_str(), "0" | "false" | "no" | "off");
        }
        if let Some(v) = var("RAYR_MAX_INLINE_BYTES")? {
            c.max_inline_bytes = v;
        }
        Ok(c)
    }
}
