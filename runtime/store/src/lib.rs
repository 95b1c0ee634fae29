//! The node's shared-memory object store.
//!
//! One file under `/dev/shm` is mapped once by the node agent at start and by every driver
//! and worker when it connects; objects are ranges inside it. Measured here (see
//! ARCHITECTURE.md, "Costs"): fresh shm pages cost 6× a warm memcpy to write and 5 ms per
//! 100 MB to free, so the arena is faulted in once and never handed back, and freed ranges
//! are reused lowest-address first so hot pages stay hot.
//!
//! This crate owns the mapping ([`Arena`]) and the bookkeeping of free ranges
//! ([`Allocator`]). It knows nothing about object ids, owners or sockets: the node agent
//! decides who may allocate and when a range is freed.
//!
//! ```no_run
//! use rayr_store::{Arena, Allocator};
//! let arena = Arena::create("/dev/shm/rayr-doc", 1 << 20).unwrap();
//! let mut alloc = Allocator::new(arena.capacity());
//! let off = alloc.allocate(1000).unwrap();
//! unsafe { arena.bytes_mut(off, 1000) }.fill(7);
//! alloc.free(off, 1000);
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

/// Objects start on 64-byte boundaries: any Pod slice can be viewed in place, and two
/// objects never share a cache line.
pub const ALIGN: u64 = 64;

/// A shared-memory file mapped read-write into this process.
pub struct Arena {
    map: MmapRaw,
    path: PathBuf,
    capacity: u64,
    owner: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the object store {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot map the object store {path}: {source}; is the node agent still running?")]
    Open { path: PathBuf, source: io::Error },
}

impl Arena {
    /// Creates the store file (`capacity` bytes, sparse until touched) and maps it. The file
    /// is removed when this `Arena` is dropped.
    pub fn create(path: impl AsRef<Path>, capacity: u64) -> Result<Arena, StoreError> {
        let path = path.as_ref().to_path_buf();
        let err = |source| StoreError::Create { path: path.clone(), source };
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(err)?;
        file.set_len(capacity).map_err(err)?;
        let map = MmapOptions::new().len(capacity as usize).map_raw(&file).map_err(err)?;
        Ok(Arena { map, path, capacity, owner: true })
    }

    /// Maps an existing store file (another process created it).
    pub fn open(path: impl AsRef<Path>) -> Result<Arena, StoreError> {
        let path = path.as_ref().to_path_buf();
        let err = |source| StoreError::Open { path: path.clone(), source };
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(err)?;
        let capacity = file.metadata().map_err(err)?.len();
        let map = MmapOptions::new().len(capacity as usize).map_raw(&file).map_err(err)?;
        Ok(Arena { map, path, capacity, owner: false })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Faults in `[0, len)` for writing in this process, so that the first object written
    /// there runs at memcpy speed. Call it off the hot path (a background thread).
    pub fn prefault(&self, len: u64) {
        let len = len.min(self.capacity) as usize;
        const CHUNK: usize = 16 << 20;
        let mut at = 0;
        while at < len {
            let n = CHUNK.min(len - at);
            // SAFETY: the range lies inside our mapping; MADV_POPULATE_WRITE only faults
            // pages in (it does not change contents).
            let rc = unsafe { libc::madvise(self.map.as_mut_ptr().add(at).cast(), n, libc::MADV_POPULATE_WRITE) };
            if rc != 0 {
                // Older kernels: touch one byte per page without changing it.
                for page in (at..at + n).step_by(4096) {
                    // SAFETY: inside the mapping; a volatile read-then-write of the same byte.
                    unsafe {
                        let p = self.map.as_mut_ptr().add(page);
                        std::ptr::write_volatile(p, std::ptr::read_volatile(p));
                    }
                }
            }
            at += n;
        }
    }

    /// The bytes of one object.
    ///
    /// # Safety
    /// `offset..offset+len` must be a sealed object that nobody writes while the slice lives.
    pub unsafe fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        assert!(offset + len <= self.capacity, "object range outside the store");
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize) }
    }

    /// Writable bytes of an object being created.
    ///
    /// # Safety
    /// The range must be allocated to the caller and not yet sealed; no one else may hold
    /// a slice of it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        assert!(offset + len <= self.capacity, "object range outside the store");
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len as usize) }
    }

    /// The address range of the mapping (tests use it to prove reads are zero-copy).
    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.map.as_ptr() as usize;
        start..start + self.capacity as usize
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Free-range bookkeeping for an arena: first fit by address, neighbours merged on free.
pub struct Allocator {
    /// offset → length of every free range; ranges never touch (they would have merged).
    free: BTreeMap<u64, u64>,
    capacity: u64,
    used: u64,
}

impl Allocator {
    pub fn new(capacity: u64) -> Allocator {
        let capacity = capacity / ALIGN * ALIGN;
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Allocator { free, capacity, used: 0 }
    }

    /// The size actually reserved for a request of `size` bytes.
    pub fn rounded(size: u64) -> u64 {
        size.max(1).div_ceil(ALIGN) * ALIGN
    }

    /// Reserves `size` bytes at the lowest address that fits; `None` when no free range is
    /// large enough.
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        let size = Self::rounded(size);
        let (&offset, &len) = self.free.iter().find(|&(_, &len)| len >= size)?;
        self.free.remove(&offset);
        if len > size {
            self.free.insert(offset + size, len - size);
        }
        self.used += size;
        Some(offset)
    }

    /// Returns a range given out by [`allocate`](Self::allocate) with the same `size`.
    pub fn free(&mut self, offset: u64, size: u64) {
        let mut start = offset;
        let mut len = Self::rounded(size);
        self.used -= len;
        if let Some((&prev, &plen)) = self.free.range(..offset).next_back()
            && prev + plen == offset {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        if let Some(&nlen) = self.free.get(&(offset + Self::rounded(size))) {
            self.free.remove(&(offset + Self::rounded(size)));
            len += nlen;
        }
        self.free.insert(start, len);
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_reused_and_merged() {
        let mut a = Allocator::new(1 << 20);
        let x = a.allocate(100).unwrap();
        let y = a.allocate(1000).unwrap();
        let z = a.allocate(64).unwrap();
        assert_eq!(x % ALIGN, 0);
        assert_eq!(y % ALIGN, 0);
        assert_eq!(a.used(), 128 + 1024 + 64);
        a.free(y, 1000);
        // The lowest fitting range is reused first.
        assert_eq!(a.allocate(500).unwrap(), y);
        a.free(y, 500);
        a.free(x, 100);
        a.free(z, 64);
        assert_eq!(a.used(), 0);
        // Everything merged back into one range: a full-size allocation fits again.
        assert_eq!(a.allocate(1 << 20), Some(0));
        assert_eq!(a.allocate(1), None);
    }

    #[test]
    fn second_mapping_sees_writes_of_the_first() {
        let path = format!("/dev/shm/rayr-store-test-{}", std::process::id());
        let arena = Arena::create(&path, 1 << 20).unwrap();
        arena.prefault(1 << 20);
        unsafe { arena.bytes_mut(4096, 5) }.copy_from_slice(b"hello");
        let other = Arena::open(&path).unwrap();
        assert_eq!(unsafe { other.bytes(4096, 5) }, b"hello");
        drop(other);
        drop(arena);
        assert!(!Path::new(&path).exists(), "creator removes the file");
    }
}
