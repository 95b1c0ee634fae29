//! The store objects service: the node's shm arena's ranges and who holds each — objects
//! stored here by their owners, copies of other nodes' objects (`transfer`), pulls in
//! flight, and ranges being streamed to other nodes. Its own lock (`Agent::store`), taken
//! after the state lock when both are needed (see the lock order in `agent.rs`): nothing
//! here waits on the worker pool or the leases.

use std::collections::HashMap;

use rayr_logs::Id;
use rayr_store::Allocator;

use super::transfer;

/// An object stored here by its owner (a primary).
pub(super) struct StoreObject {
    pub offset: u64,
    pub size: u64,
    pub owner: Id,
    /// The owner's node when it is another one: the object goes if that node does.
    pub owner_node: Option<Id>,
}

pub(super) struct Store {
    pub objects: HashMap<Id, StoreObject>,
    pub alloc: Allocator,
    /// Copies of other nodes' objects (see `transfer`).
    pub copies: HashMap<Id, transfer::Copy>,
    /// Pulls in flight, by object and source node.
    pub pulls: HashMap<(Id, Id), transfer::Pull>,
    /// Ranges being streamed to other nodes (offset → streams), and those freed meanwhile
    /// (offset → size), returned to the allocator when their last stream ends.
    pub serving: HashMap<u64, u32>,
    pub deferred_frees: HashMap<u64, u64>,
}

impl Store {
    pub fn new(alloc: Allocator) -> Store {
        Store {
            objects: HashMap::new(),
            alloc,
            copies: HashMap::new(),
            pulls: HashMap::new(),
            serving: HashMap::new(),
            deferred_frees: HashMap::new(),
        }
    }

    /// Returns a range to the allocator, unless a transfer is reading it: then when that ends.
    pub fn free_range(&mut self, offset: u64, size: u64) {
        if self.serving.contains_key(&offset) {
            self.deferred_frees.insert(offset, size);
        } else {
            self.alloc.free(offset, size);
        }
    }

    /// A stream reading the range at `offset` ended.
    pub fn end_serving(&mut self, offset: u64) {
        if let Some(n) = self.serving.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                self.serving.remove(&offset);
                if let Some(size) = self.deferred_frees.remove(&offset) {
                    self.alloc.free(offset, size);
                }
            }
        }
    }

    /// Frees every object `owner` stored here; returns them (id, size), for the record.
    pub fn free_owned_by(&mut self, owner: Id) -> Vec<(Id, u64)> {
        let ids: Vec<Id> = self.objects.iter().filter(|(_, o)| o.owner == owner).map(|(id, _)| *id).collect();
        let mut freed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(obj) = self.objects.remove(&id) {
                self.free_range(obj.offset, obj.size);
                freed.push((id, obj.size));
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(offset: u64, size: u64, owner: u8) -> StoreObject {
        StoreObject { offset, size, owner: [owner; 16], owner_node: None }
    }

    #[test]
    fn a_range_being_streamed_is_freed_when_its_last_stream_ends() {
        let mut store = Store::new(Allocator::new(1 << 20));
        let at = store.alloc.allocate(4096).unwrap();
        let used = store.alloc.used();
        *store.serving.entry(at).or_insert(0) += 2;
        store.free_range(at, 4096);
        assert_eq!(store.alloc.used(), used, "freed while two streams read it");
        store.end_serving(at);
        assert_eq!(store.alloc.used(), used, "one stream still reads it");
        store.end_serving(at);
        assert_eq!(store.alloc.used(), 0);
        assert!(store.serving.is_empty() && store.deferred_frees.is_empty());
    }

    #[test]
    fn an_owners_objects_go_with_it_and_no_others() {
        let mut store = Store::new(Allocator::new(1 << 20));
        for (id, owner) in [(1u8, 7u8), (2, 8), (3, 7)] {
            let at = store.alloc.allocate(100).unwrap();
            store.objects.insert([id; 16], object(at, 100, owner));
        }
        let mut freed = store.free_owned_by([7; 16]);
        freed.sort();
        assert_eq!(freed, vec![([1; 16], 100), ([3; 16], 100)]);
        assert_eq!(store.objects.keys().collect::<Vec<_>>(), vec![&[2u8; 16]]);
        assert!(store.free_owned_by([7; 16]).is_empty());
    }
}
