//! The lease ledger: the node's free resources and its queue of lease requests, and the
//! decisions made from them — which queued lease is granted when resources or workers free
//! up, which fails because its job's workers cannot start, how many workers to start for
//! the rest, which other node a lease spills to, and why a demand no node can hold fails.
//!
//! Pure decisions: no I/O, no locks, no clock, no randomness. The agent (`agent.rs`) holds
//! a [`Ledger`] under its state lock and carries the decisions out (replies, worker starts,
//! events). Which idle worker serves a lease is the worker pool's business: a grant pass
//! asks through a closure.
//!
//! Queued requests cost little and are never rescanned. They are grouped by *class*: the
//! job, whether the lease hosts an actor, and the demand. Requests of one class are
//! interchangeable for a grant (same job's workers, same resources), so only the oldest of
//! each class is ever looked at: when it cannot be granted, nor can any behind it. A grant
//! pass visits the classes' oldest requests in arrival order (a `BTreeMap` by sequence
//! number), so it costs O(classes · log classes) whatever the queue's length, and a grant
//! or an enqueue is O(log classes). A queued request holds only its reply address, its
//! requester and its actor (the demand is held once per class): tens of bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rayr_logs::Id;

use crate::resources::{self, Resources};

const EPS: f64 = 1e-9;

/// A lease request, as it comes in. `T` says where the answer goes.
#[derive(Debug)]
pub struct Request<T> {
    pub reply_to: T,
    pub demand: Resources,
    pub job: Id,
    /// The client asking: its queued requests go when it dies.
    pub requester: Option<Id>,
    /// The lease hosts an actor (`actor`): its worker is stopped when it ends.
    pub dedicated: bool,
    pub actor: Option<Id>,
}

/// What a grant pass decided, in arrival order of the requests.
#[derive(Debug)]
pub enum Decision<T, W> {
    /// `request` is granted on `worker`; its demand is already taken from the free resources.
    Granted { request: Request<T>, worker: W },
    /// `request` fails: its job's workers cannot be started (`error` says why).
    Failed { request: Request<T>, error: String },
}

/// The outcome of [`Ledger::grant`].
#[derive(Debug)]
pub struct Pass<T, W> {
    pub decisions: Vec<Decision<T, W>>,
    /// (job, for an actor) → how many queued leases that fit the free resources lack only
    /// a worker process.
    pub lacking_workers: HashMap<(Id, bool), usize>,
    /// Requests looked at (the oldest of each class at most once, plus those decided):
    /// what the pass cost, independent of the queue's length.
    pub examined: usize,
}

/// A request in its class's queue: what is not shared with the class.
struct Queued<T> {
    seq: u64,
    reply_to: T,
    requester: Option<Id>,
    actor: Option<Id>,
}

/// Requests that one grant decision serves alike.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    job: Id,
    dedicated: bool,
    /// The demand, sorted by name, amounts as bits (zero amounts left out).
    demand: Vec<(String, u64)>,
}

struct Class<T> {
    key: ClassKey,
    demand: Resources,
    queue: VecDeque<Queued<T>>,
}

/// The node's free resources and queued lease requests (see the module docs).
pub struct Ledger<T> {
    total: Resources,
    available: Resources,
    /// Classes with requests queued, in slots reused as classes empty.
    slots: Vec<Option<Class<T>>>,
    free_slots: Vec<usize>,
    by_key: HashMap<ClassKey, usize>,
    /// Sequence number of each class's oldest request → its slot: the grant order.
    heads: BTreeMap<u64, usize>,
    next_seq: u64,
    queued: usize,
    /// Requests queued per requester: a client's death (every worker's exit) skips the
    /// queue when it asked for none.
    by_requester: HashMap<Id, usize>,
}

impl<T> Ledger<T> {
    /// A ledger for a node with `total` resources, all free.
    pub fn new(total: Resources) -> Ledger<T> {
        Ledger {
            available: total.clone(),
            total,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashMap::new(),
            heads: BTreeMap::new(),
            next_seq: 0,
            queued: 0,
            by_requester: HashMap::new(),
        }
    }

    /// The node's resources, free or not.
    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// Resources not held by any lease (an amount is negative while a worker that resumed
    /// from `get` oversubscribes its CPU).
    pub fn available(&self) -> &Resources {
        &self.available
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether this node could ever hold `demand` (when not, the lease is infeasible here).
    pub fn feasible(&self, demand: &Resources) -> bool {
        feasible(demand, &self.total)
    }

    /// Whether a lease for `demand` would wait here: its resources are taken, or others
    /// wait before it. (Such a lease goes to another node with them free, when one has.)
    pub fn would_wait(&self, demand: &Resources) -> bool {
        self.queued > 0 || !resources::fits(demand, &self.available)
    }

    /// Queues a request, behind every request queued before it.
    pub fn enqueue(&mut self, r: Request<T>) {
        let key = class_key(&r);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.by_key.get(&key) {
            Some(&slot) => slot,
            None => {
                let class = Class { key: key.clone(), demand: r.demand, queue: VecDeque::new() };
                let slot = match self.free_slots.pop() {
                    Some(s) => {
                        self.slots[s] = Some(class);
                        s
                    }
                    None => {
                        self.slots.push(Some(class));
                        self.slots.len() - 1
                    }
                };
                self.by_key.insert(key, slot);
                slot
            }
        };
        let class = self.slots[slot].as_mut().expect("a class indexed by key is in its slot");
        if class.queue.is_empty() {
            self.heads.insert(seq, slot);
        }
        class.queue.push_back(Queued { seq, reply_to: r.reply_to, requester: r.requester, actor: r.actor });
        self.queued += 1;
        if let Some(who) = r.requester {
            *self.by_requester.entry(who).or_default() += 1;
        }
    }

    /// Keeps only the queued requests for which `keep(job, reply_to, requester)` holds
    /// (a client died, a job ended, a detached actor went). Walks the whole queue: for
    /// events that end many requests at once, not per request.
    pub fn retain(&mut self, mut keep: impl FnMut(&Id, &T, Option<Id>) -> bool) {
        for slot in 0..self.slots.len() {
            let Some(class) = self.slots[slot].as_mut() else { continue };
            let Some(old_head) = class.queue.front().map(|q| q.seq) else { continue };
            let job = class.key.job;
            let before = class.queue.len();
            let by_requester = &mut self.by_requester;
            class.queue.retain(|q| {
                let kept = keep(&job, &q.reply_to, q.requester);
                if !kept {
                    uncount(by_requester, q.requester);
                }
                kept
            });
            self.queued -= before - class.queue.len();
            let new_head = class.queue.front().map(|q| q.seq);
            if new_head != Some(old_head) {
                self.heads.remove(&old_head);
                match new_head {
                    Some(seq) => {
                        self.heads.insert(seq, slot);
                    }
                    None => self.drop_class(slot),
                }
            }
        }
    }

    /// Drops the queued requests of `requester` (it died): a look-up when it has none, a
    /// walk of the queue when it has some.
    pub fn drop_requester(&mut self, requester: Id) {
        if self.by_requester.contains_key(&requester) {
            self.retain(|_, _, r| r != Some(requester));
        }
    }

    /// Grants queued leases in arrival order while resources and workers allow.
    /// `start_failure(job)`: why the job's workers cannot start, if they cannot (its
    /// requests fail). `worker_for(job, dedicated)`: an idle worker for such a lease, taken
    /// from the pool, or None. A request that fits but finds no worker is counted in
    /// `lacking_workers`; one whose resources are taken waits, without holding back later
    /// requests of other classes that fit.
    pub fn grant<W>(
        &mut self,
        mut start_failure: impl FnMut(&Id) -> Option<String>,
        mut worker_for: impl FnMut(&Id, bool) -> Option<W>,
    ) -> Pass<T, W> {
        let mut pass = Pass { decisions: Vec::new(), lacking_workers: HashMap::new(), examined: 0 };
        let mut cursor: Option<u64> = None;
        loop {
            let next = match cursor {
                None => self.heads.iter().next(),
                Some(c) => self.heads.range(c + 1..).next(),
            };
            let Some((&seq, &slot)) = next else { break };
            cursor = Some(seq);
            pass.examined += 1;
            let class = self.slots[slot].as_mut().expect("a head's class is in its slot");
            let (job, dedicated) = (class.key.job, class.key.dedicated);
            if let Some(error) = start_failure(&job) {
                // Every request of the class is of that job: all fail.
                self.heads.remove(&seq);
                let class = self.slots[slot].take().expect("checked above");
                self.by_key.remove(&class.key);
                self.free_slots.push(slot);
                self.queued -= class.queue.len();
                pass.examined += class.queue.len() - 1;
                for q in class.queue {
                    uncount(&mut self.by_requester, q.requester);
                    let request = request_of(q, &class.demand, job, dedicated);
                    pass.decisions.push(Decision::Failed { request, error: error.clone() });
                }
                continue;
            }
            if !resources::fits(&class.demand, &self.available) {
                continue;
            }
            let Some(worker) = worker_for(&job, dedicated) else {
                let fitting = class.queue.len().min(times_fits(&class.demand, &self.available));
                *pass.lacking_workers.entry((job, dedicated)).or_default() += fitting;
                continue;
            };
            let q = class.queue.pop_front().expect("a head's class has requests");
            uncount(&mut self.by_requester, q.requester);
            let request = request_of(q, &class.demand, job, dedicated);
            resources::subtract(&mut self.available, &class.demand);
            self.queued -= 1;
            self.heads.remove(&seq);
            // The next of the class is younger than this one: the pass reaches it later.
            match class.queue.front() {
                Some(n) => {
                    self.heads.insert(n.seq, slot);
                }
                None => self.drop_class(slot),
            }
            pass.decisions.push(Decision::Granted { request, worker });
        }
        pass
    }

    /// A lease ends and gives `held` back; `blocked`: its worker was blocked in `get`, so
    /// its CPU was given back already.
    pub fn release(&mut self, held: &Resources, blocked: bool) {
        if blocked {
            let mut rest = held.clone();
            rest.remove("CPU");
            resources::add(&mut self.available, &rest);
        } else {
            resources::add(&mut self.available, held);
        }
    }

    /// A leased worker blocks in `get` (`blocked`) and lends the `cpu` its lease holds to
    /// the tasks it waits for, or resumes and takes it back (even if that oversubscribes,
    /// as Ray does).
    pub fn set_blocked(&mut self, cpu: f64, blocked: bool) {
        if cpu <= 0.0 {
            return;
        }
        let delta: Resources = [("CPU".to_string(), cpu)].into();
        if blocked {
            resources::add(&mut self.available, &delta);
        } else {
            resources::subtract(&mut self.available, &delta);
        }
    }

    fn drop_class(&mut self, slot: usize) {
        if let Some(class) = self.slots[slot].take() {
            self.by_key.remove(&class.key);
            self.free_slots.push(slot);
        }
    }
}

fn uncount(by_requester: &mut HashMap<Id, usize>, requester: Option<Id>) {
    let Some(who) = requester else { return };
    if let Some(n) = by_requester.get_mut(&who) {
        *n -= 1;
        if *n == 0 {
            by_requester.remove(&who);
        }
    }
}

fn class_key<T>(r: &Request<T>) -> ClassKey {
    let mut demand: Vec<(String, u64)> = r.demand.iter().filter(|(_, v)| **v > EPS).map(|(k, v)| (k.clone(), v.to_bits())).collect();
    demand.sort();
    ClassKey { job: r.job, dedicated: r.dedicated, demand }
}

fn request_of<T>(q: Queued<T>, demand: &Resources, job: Id, dedicated: bool) -> Request<T> {
    Request { reply_to: q.reply_to, demand: demand.clone(), job, requester: q.requester, dedicated, actor: q.actor }
}

/// How many leases of `demand` fit in `available` at once (unbounded for an empty demand).
fn times_fits(demand: &Resources, available: &Resources) -> usize {
    demand
        .iter()
        .filter(|(_, v)| **v > EPS)
        .map(|(k, v)| {
            let free = available.get(k).copied().unwrap_or(0.0).max(0.0);
            ((free + EPS) / v).floor() as usize
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// Whether a node with `total` resources could ever hold `demand` ([`Ledger::feasible`],
/// for a caller that knows the total without the ledger's lock).
pub fn feasible(demand: &Resources, total: &Resources) -> bool {
    resources::fits(demand, total)
}

/// Where a lease that would wait here goes: among the other nodes (not `me`, with an
/// agent to ask) with `demand` free, one of those with the most CPU free — or, unless
/// `free_now`, among those that can hold it at all (it queues there). `pick` chooses among
/// ties, so that spills from many nodes at once spread. An index into `cluster`.
pub fn spill_target(cluster: &[rayr_proto::NodeView], me: &[u8], demand: &Resources, free_now: bool, pick: usize) -> Option<usize> {
    let cpu = |n: &rayr_proto::NodeView| n.available.get("CPU").copied().unwrap_or(0.0);
    let other = |n: &rayr_proto::NodeView| n.node_id != me && !n.agent_socket.is_empty();
    let has_free = cluster.iter().any(|n| other(n) && resources::fits(demand, &n.available));
    if !has_free && free_now {
        return None;
    }
    let eligible = |n: &rayr_proto::NodeView| {
        other(n) && if has_free { resources::fits(demand, &n.available) } else { resources::fits(demand, &n.total) }
    };
    let most = cluster.iter().filter(|n| eligible(n)).map(cpu).max_by(f64::total_cmp)?;
    let ties: Vec<usize> = (0..cluster.len()).filter(|&i| eligible(&cluster[i]) && cpu(&cluster[i]) >= most - EPS).collect();
    Some(ties[pick % ties.len()])
}

/// The node `node` of `cluster`, if it has an agent to ask and `demand` free.
pub fn node_with_free(cluster: &[rayr_proto::NodeView], node: &[u8], demand: &Resources) -> Option<usize> {
    cluster.iter().position(|n| n.node_id == node && !n.agent_socket.is_empty() && resources::fits(demand, &n.available))
}

/// Why `what`, needing `demand`, fails on this node (at `address`, with `total`), which can
/// never hold it: a node of `others` could (the request came from an out-of-date view), or
/// none can (naming the one that comes closest: most demanded resources met, then most of
/// them).
pub fn infeasible_reason(what: &str, demand: &Resources, address: &str, total: &Resources, others: &[&rayr_proto::NodeView]) -> String {
    if let Some(n) = others.iter().find(|n| resources::fits(demand, &n.total)) {
        return format!(
            "{what} needs {} but this node ({address}) has {}; node {} at {} has it (this request was sent here from another node's out-of-date view: submit it again)",
            resources::describe(demand),
            resources::describe(total),
            rayr_logs::hex(&n.node_id),
            n.address
        );
    }
    let closeness = |total: &Resources| {
        let met = demand.iter().filter(|(k, v)| total.get(*k).copied().unwrap_or(0.0) >= **v).count();
        let share: f64 = demand.iter().map(|(k, v)| (total.get(k).copied().unwrap_or(0.0) / v.max(EPS)).min(1.0)).sum();
        (met, share)
    };
    let mut largest = (address.to_string(), total.clone());
    for n in others {
        let (a, b) = (closeness(&n.total), closeness(&largest.1));
        if a.0 > b.0 || (a.0 == b.0 && a.1 > b.1) {
            largest = (n.address.clone(), n.total.clone());
        }
    }
    format!(
        "{what} needs {} but the largest node ({} of {}) has {}; no node can ever run it",
        resources::describe(demand),
        largest.0,
        others.len() + 1,
        resources::describe(&largest.1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn job(n: u8) -> Id {
        [n; 16]
    }

    fn req(tag: u32, j: u8, demand: &[(&str, f64)]) -> Request<u32> {
        Request { reply_to: tag, demand: r(demand), job: job(j), requester: Some([tag as u8; 16]), dedicated: false, actor: None }
    }

    /// Workers of the pool, handed out per job until none are left.
    fn pool(workers: &mut HashMap<Id, Vec<u32>>) -> impl FnMut(&Id, bool) -> Option<u32> + '_ {
        move |j, _| workers.get_mut(j).and_then(|v| v.pop())
    }

    fn granted(pass: &Pass<u32, u32>) -> Vec<(u32, u32)> {
        pass.decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Granted { request, worker } => Some((request.reply_to, *worker)),
                Decision::Failed { .. } => None,
            })
            .collect()
    }

    #[test]
    fn grants_in_arrival_order_while_resources_last() {
        let mut l = Ledger::new(r(&[("CPU", 2.0)]));
        for t in 0..4 {
            l.enqueue(req(t, 1, &[("CPU", 1.0)]));
        }
        let mut workers = HashMap::from([(job(1), vec![12, 11, 10])]);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(0, 10), (1, 11)]);
        assert_eq!(l.available()["CPU"], 0.0);
        assert_eq!(l.queued(), 2);
        // Nothing frees: nothing more is granted, and the pass looks at one request.
        let pass = l.grant(|_| None, pool(&mut workers));
        assert!(pass.decisions.is_empty());
        assert_eq!(pass.examined, 1);
    }

    #[test]
    fn released_resources_grant_the_next_in_line() {
        let mut l = Ledger::new(r(&[("CPU", 1.0), ("GPU", 1.0)]));
        l.enqueue(req(0, 1, &[("CPU", 1.0), ("GPU", 1.0)]));
        l.enqueue(req(1, 1, &[("CPU", 1.0)]));
        let mut workers = HashMap::from([(job(1), vec![21, 20])]);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(0, 20)]);
        assert_eq!((l.available()["CPU"], l.available()["GPU"]), (0.0, 0.0));
        let Decision::Granted { request, .. } = &pass.decisions[0] else { panic!("granted") };
        l.release(&request.demand, false);
        assert_eq!((l.available()["CPU"], l.available()["GPU"]), (1.0, 1.0));
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(1, 21)]);
        assert_eq!((l.available()["CPU"], l.available()["GPU"]), (0.0, 1.0));
    }

    #[test]
    fn a_blocked_lease_lends_its_cpu_and_does_not_return_it_twice() {
        let mut l = Ledger::new(r(&[("CPU", 1.0)]));
        l.enqueue(req(0, 1, &[("CPU", 1.0)]));
        l.enqueue(req(1, 1, &[("CPU", 1.0)]));
        let mut workers = HashMap::from([(job(1), vec![31, 30])]);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(0, 30)]);
        // Worker 30 blocks in `get`: its CPU serves the next lease.
        l.set_blocked(1.0, true);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(1, 31)]);
        // Its lease ends while blocked: the CPU it lent is not given back again.
        l.release(&r(&[("CPU", 1.0)]), true);
        assert_eq!(l.available()["CPU"], 0.0);
        l.release(&r(&[("CPU", 1.0)]), false);
        assert_eq!(l.available()["CPU"], 1.0);
    }

    #[test]
    fn a_large_request_does_not_hold_back_smaller_ones_behind_it() {
        let mut l = Ledger::new(r(&[("CPU", 2.0)]));
        l.enqueue(req(0, 1, &[("CPU", 1.0)]));
        l.enqueue(req(1, 1, &[("CPU", 2.0)]));
        l.enqueue(req(2, 1, &[("CPU", 1.0)]));
        let mut workers = HashMap::from([(job(1), vec![42, 41, 40])]);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(0, 40), (2, 41)]);
        assert_eq!(l.queued(), 1);
    }

    #[test]
    fn leases_lacking_only_a_worker_are_counted_up_to_what_fits() {
        let mut l = Ledger::new(r(&[("CPU", 3.0)]));
        for t in 0..10 {
            l.enqueue(req(t, 1, &[("CPU", 1.0)]));
        }
        let mut actor = req(10, 1, &[]);
        actor.dedicated = true;
        l.enqueue(actor);
        let pass = l.grant(|_| None, |_, _| None::<u32>);
        assert!(pass.decisions.is_empty());
        assert_eq!(pass.lacking_workers[&(job(1), false)], 3);
        assert_eq!(pass.lacking_workers[&(job(1), true)], 1);
    }

    #[test]
    fn a_job_whose_workers_cannot_start_fails_its_requests_only() {
        let mut l = Ledger::new(r(&[("CPU", 1.0)]));
        l.enqueue(req(0, 1, &[("CPU", 1.0)]));
        l.enqueue(req(1, 2, &[("CPU", 1.0)]));
        l.enqueue(req(2, 1, &[("CPU", 5.0)]));
        let mut workers = HashMap::from([(job(2), vec![50])]);
        let pass = l.grant(|j| (*j == job(1)).then(|| "not a rayr program".to_string()), pool(&mut workers));
        let failed: Vec<u32> = pass
            .decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Failed { request, error } => {
                    assert_eq!(error, "not a rayr program");
                    Some(request.reply_to)
                }
                Decision::Granted { .. } => None,
            })
            .collect();
        assert_eq!(failed, vec![0, 2]);
        assert_eq!(granted(&pass), vec![(1, 50)]);
        assert_eq!(l.queued(), 0);
    }

    #[test]
    fn requests_of_a_dead_requester_go() {
        let mut l = Ledger::new(r(&[("CPU", 1.0)]));
        for t in 0..5 {
            l.enqueue(req(t, 1, &[("CPU", 1.0)]));
        }
        l.drop_requester([0; 16]);
        l.drop_requester([3; 16]);
        l.drop_requester([9; 16]); // asked for nothing
        assert_eq!(l.queued(), 3);
        let mut workers = HashMap::from([(job(1), vec![60])]);
        let pass = l.grant(|_| None, pool(&mut workers));
        assert_eq!(granted(&pass), vec![(1, 60)]);
        // A job ends: all its requests go, and the ledger is empty again.
        l.retain(|j, _, _| *j != job(1));
        assert_eq!(l.queued(), 0);
        assert!(l.heads.is_empty() && l.by_key.is_empty() && l.by_requester.is_empty());
    }

    #[test]
    fn infeasible_and_waiting_are_told_apart() {
        let mut l: Ledger<u32> = Ledger::new(r(&[("CPU", 2.0)]));
        assert!(!l.feasible(&r(&[("GPU", 1.0)])));
        assert!(!l.feasible(&r(&[("CPU", 3.0)])));
        assert!(l.feasible(&r(&[("CPU", 2.0), ("GPU", 0.0)])));
        assert!(!l.would_wait(&r(&[("CPU", 2.0)])));
        l.enqueue(req(0, 1, &[("CPU", 9.0)]));
        // Another request waits before it.
        assert!(l.would_wait(&r(&[("CPU", 1.0)])));
    }

    fn node(id: u8, total: f64, free: f64) -> rayr_proto::NodeView {
        rayr_proto::NodeView {
            node_id: vec![id; 16],
            address: format!("10.0.0.{id}"),
            agent_socket: format!("/tmp/agent-{id}"),
            total: r(&[("CPU", total)]),
            available: r(&[("CPU", free)]),
            ..Default::default()
        }
    }

    #[test]
    fn spills_to_a_node_with_the_most_free() {
        let me = vec![1u8; 16];
        let cluster = vec![node(1, 8.0, 8.0), node(2, 8.0, 2.0), node(3, 8.0, 6.0), node(4, 8.0, 6.0)];
        let two = r(&[("CPU", 2.0)]);
        // Never this node, even with the most free; ties are broken by `pick`.
        assert_eq!(spill_target(&cluster, &me, &two, true, 0), Some(2));
        assert_eq!(spill_target(&cluster, &me, &two, true, 1), Some(3));
        // Nothing free elsewhere: only a lease that may queue there goes.
        let seven = r(&[("CPU", 7.0)]);
        assert_eq!(spill_target(&cluster, &me, &seven, true, 0), None);
        assert!(spill_target(&cluster, &me, &seven, false, 0).is_some());
        assert_eq!(spill_target(&cluster, &me, &r(&[("CPU", 9.0)]), false, 0), None);
        // A node without an agent to ask is never picked.
        let mut lone = vec![node(1, 8.0, 0.0), node(2, 8.0, 8.0)];
        lone[1].agent_socket.clear();
        assert_eq!(spill_target(&lone, &me, &two, false, 0), None);
        assert_eq!(node_with_free(&cluster, &[3; 16], &two), Some(2));
        assert_eq!(node_with_free(&cluster, &[2; 16], &r(&[("CPU", 3.0)])), None);
    }

    #[test]
    fn infeasible_names_the_closest_node() {
        let big = node(2, 16.0, 0.0);
        let small = node(3, 2.0, 2.0);
        let msg = infeasible_reason("the task", &r(&[("CPU", 8.0)]), "10.0.0.1", &r(&[("CPU", 4.0)]), &[&small, &big]);
        assert!(msg.contains("node 0202") && msg.contains("out-of-date view"), "{msg}");
        let msg = infeasible_reason("the task", &r(&[("CPU", 64.0)]), "10.0.0.1", &r(&[("CPU", 4.0)]), &[&small, &big]);
        assert!(msg.contains("largest node (10.0.0.2 of 3) has {CPU: 16}") && msg.contains("no node can ever run it"), "{msg}");
    }

    /// A million queued requests: each costs tens of bytes, and granting them one worker
    /// at a time looks at a constant number of requests per grant, not at the queue.
    #[test]
    fn a_long_queue_costs_little_and_is_not_rescanned() {
        const N: u32 = 1_000_000;
        let mut l = Ledger::new(r(&[("CPU", 4.0)]));
        for t in 0..N {
            // Two interleaved jobs: two classes.
            l.enqueue(req(t, (t % 2) as u8 + 1, &[("CPU", 1.0)]));
        }
        assert_eq!(l.queued(), N as usize);
        assert!(std::mem::size_of::<Queued<u32>>() <= 64, "{}", std::mem::size_of::<Queued<u32>>());
        assert_eq!(l.slots.iter().flatten().count(), 2);
        let mut most_examined = 0;
        let mut done = 0u32;
        while l.queued() > 0 {
            // A worker of each job registers; a lease ends.
            let mut workers = HashMap::from([(job(1), vec![1]), (job(2), vec![2])]);
            let pass = l.grant(|_| None, pool(&mut workers));
            most_examined = most_examined.max(pass.examined);
            for d in pass.decisions {
                let Decision::Granted { request, .. } = d else { panic!("nothing fails") };
                assert_eq!(request.reply_to, done, "granted out of order");
                done += 1;
                l.release(&request.demand, false);
            }
        }
        assert_eq!(done, N);
        assert!(most_examined <= 4, "a pass looked at {most_examined} requests");
        assert_eq!(l.available()["CPU"], 4.0);
        assert!(l.by_requester.is_empty(), "requesters counted for requests no longer queued");
    }
}
