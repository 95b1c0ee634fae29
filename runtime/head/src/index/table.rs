//! Segments: immutable files of sorted `(key, value)` tables, the index's on-disk form.
//!
//! A flush writes the memtable as one segment; compaction merges adjacent segments into
//! one. A segment holds three tables (see [`Table`]), each a sequence of blocks of about
//! [`BLOCK_BYTES`], and an index of each block's first key at the end:
//!
//! ```text
//! "RAYRSEG1"
//! blocks of table 0, then of table 1, …        entries: key, varint length, value
//! index: per table: entries (u64), blocks (u32), per block: first key (salt u64,
//!        counter u64), offset (u64), length (u32)
//! footer: index offset (u64), index length (u64), index checksum (u64), "RAYRSEG1"
//! ```
//!
//! Keys are ids split as (salt, counter) (`rayr_logs::split_id`): all ids a process makes
//! share its salt and count up, so a sorted table stores most keys as a one-byte counter
//! delta. An entry's key is `varint(delta << 1)` when it has the salt of the entry before
//! it in the block, else `1`, the salt (u64) and `varint(counter)`.
//!
//! Every read checks lengths and offsets against the file: a damaged segment is an error
//! (the index is rebuilt from the logs), never a panic.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::keys::Key;

/// Target size of a block.
pub(crate) const BLOCK_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"RAYRSEG1";
const FOOTER: usize = 32;

/// The tables of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// Task rows (`rows::TaskRec`), newest wins.
    Tasks = 0,
    /// Object rows (`rows::ObjectRec`), newest wins.
    Objects = 1,
    /// Id → the runs whose events name it, for ids a run could not keep as a range (see
    /// `ranges`); a key's runs are the union over segments.
    Postings = 2,
}

pub(crate) const TABLES: [Table; 3] = [Table::Tasks, Table::Objects, Table::Postings];

impl Table {
    /// Whether a key's value in a newer segment replaces an older one's (rows), rather
    /// than adding to it (postings).
    pub(crate) fn newest_wins(self) -> bool {
        matches!(self, Table::Tasks | Table::Objects)
    }
}

/// A segment's bytes: mapped from its file, or held in memory.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct BlockRef {
    first: Key,
    offset: usize,
    len: usize,
}

#[derive(Default)]
struct TableIndex {
    entries: u64,
    blocks: Vec<BlockRef>,
}

/// One immutable segment.
pub(crate) struct Segment {
    /// Its file's name in the index directory ("" for one held in memory).
    pub name: String,
    bytes: Bytes,
    tables: [TableIndex; 3],
}

pub(crate) type SegmentRef = Arc<Segment>;

impl Segment {
    /// Maps the segment file `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Segment> {
        let file = std::fs::File::open(path)?;
        // SAFETY: segment files are never written after they are renamed into place, and
        // only this process's index (which holds the directory's lock) deletes them.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        Segment::parse(name, Bytes::Mapped(map))
    }

    /// A segment held in memory (an index that writes no files).
    pub(crate) fn from_vec(bytes: Vec<u8>) -> io::Result<Segment> {
        Segment::parse(String::new(), Bytes::Owned(bytes))
    }

    fn parse(name: String, bytes: Bytes) -> io::Result<Segment> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("segment {name}: {why}"));
        let b: &[u8] = &bytes;
        if b.len() < MAGIC.len() + FOOTER || &b[..8] != MAGIC || &b[b.len() - 8..] != MAGIC {
            return Err(bad("not a segment (no magic at both ends)"));
        }
        let foot = &b[b.len() - FOOTER..];
        let index_at = u64::from_le_bytes(foot[..8].try_into().unwrap()) as usize;
        let index_len = u64::from_le_bytes(foot[8..16].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(foot[16..24].try_into().unwrap());
        let index = index_at
            .checked_add(index_len)
            .filter(|end| *end <= b.len() - FOOTER && index_at >= MAGIC.len())
            .map(|end| &b[index_at..end])
            .ok_or_else(|| bad("index out of bounds"))?;
        if checksum(index) != sum {
            return Err(bad("index checksum mismatch"));
        }
        let mut r = Reader(index);
        let mut tables: [TableIndex; 3] = Default::default();
        for t in &mut tables {
            t.entries = r.u64().ok_or_else(|| bad("index truncated"))?;
            let n = r.u32().ok_or_else(|| bad("index truncated"))? as usize;
            if n > index.len() / 28 + 1 {
                return Err(bad("impossible block count"));
            }
            t.blocks.reserve(n);
            for _ in 0..n {
                let (salt, counter) = (r.u64(), r.u64());
                let (offset, len) = (r.u64(), r.u32());
                let (Some(salt), Some(counter), Some(offset), Some(len)) = (salt, counter, offset, len) else {
                    return Err(bad("index truncated"));
                };
                let (offset, len) = (offset as usize, len as usize);
                if offset < MAGIC.len() || offset.checked_add(len).is_none_or(|end| end > index_at) {
                    return Err(bad("block out of bounds"));
                }
                t.blocks.push(BlockRef { first: Key { salt, counter }, offset, len });
            }
        }
        Ok(Segment { name, bytes, tables })
    }

    /// Entries in `table`.
    #[cfg(test)]
    pub(crate) fn entries(&self, table: Table) -> u64 {
        self.tables[table as usize].entries
    }

    /// The segment's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The value of `key` in `table`.
    pub(crate) fn get(&self, table: Table, key: Key) -> io::Result<Option<&[u8]>> {
        let blocks = &self.tables[table as usize].blocks;
        // The last block whose first key is at most `key`.
        let i = blocks.partition_point(|b| b.first <= key);
        if i == 0 {
            return Ok(None);
        }
        for entry in self.block(blocks[i - 1]) {
            let (k, v) = entry?;
            if k == key {
                return Ok(Some(v));
            }
            if k > key {
                break;
            }
        }
        Ok(None)
    }

    /// Every entry of `table` in key order.
    pub(crate) fn iter(&self, table: Table) -> impl Iterator<Item = io::Result<(Key, &[u8])>> + '_ {
        self.tables[table as usize].blocks.iter().flat_map(move |b| self.block(*b))
    }

    fn block(&self, b: BlockRef) -> BlockIter<'_> {
        BlockIter { r: Reader(&self.bytes[b.offset..b.offset + b.len]), salt: b.first.salt, counter: 0, first: true, failed: false }
    }
}

/// The entries of one block.
struct BlockIter<'a> {
    r: Reader<'a>,
    salt: u64,
    counter: u64,
    first: bool,
    failed: bool,
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = io::Result<(Key, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.0.is_empty() || self.failed {
            return None;
        }
        let r = self.read();
        self.failed = r.is_none();
        Some(r.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a segment block does not decode")))
    }
}

impl<'a> BlockIter<'a> {
    fn read(&mut self) -> Option<(Key, &'a [u8])> {
        let h = self.r.varint()?;
        if h & 1 == 1 {
            self.salt = self.r.u64()?;
            self.counter = self.r.varint()?;
        } else if self.first {
            return None; // a block starts with a whole key
        } else {
            self.counter = self.counter.checked_add(h >> 1)?;
        }
        self.first = false;
        let len = usize::try_from(self.r.varint()?).ok()?;
        let value = self.r.take(len)?;
        Some((Key { salt: self.salt, counter: self.counter }, value))
    }
}

/// Writes a segment: tables in order, each table's keys ascending.
pub(crate) struct SegmentWriter<W: Write> {
    out: W,
    at: u64,
    table: usize,
    tables: [TableIndex; 3],
    block: Vec<u8>,
    block_first: Option<Key>,
    last: Option<Key>,
}

impl<W: Write> SegmentWriter<W> {
    pub(crate) fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(SegmentWriter {
            out,
            at: MAGIC.len() as u64,
            table: 0,
            tables: Default::default(),
            block: Vec::with_capacity(BLOCK_BYTES * 2),
            block_first: None,
            last: None,
        })
    }

    /// Adds an entry; `table` must not be before the last entry's, nor `key` at or below
    /// the last key of the same table.
    pub(crate) fn add(&mut self, table: Table, key: Key, value: &[u8]) -> io::Result<()> {
        let t = table as usize;
        if t != self.table {
            debug_assert!(t > self.table, "tables are written in order");
            self.end_block()?;
            self.table = t;
            self.last = None;
        }
        if let Some(last) = self.last {
            if key <= last {
                return Err(io::Error::other(format!("segment keys out of order: {key:?} after {last:?}")));
            }
        }
        match (self.block_first, self.last) {
            (Some(_), Some(last)) if last.salt == key.salt => varint((key.counter - last.counter) << 1, &mut self.block),
            _ => {
                self.block_first.get_or_insert(key);
                varint(1, &mut self.block);
                self.block.extend_from_slice(&key.salt.to_le_bytes());
                varint(key.counter, &mut self.block);
            }
        }
        varint(value.len() as u64, &mut self.block);
        self.block.extend_from_slice(value);
        self.last = Some(key);
        self.tables[t].entries += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> io::Result<()> {
        let Some(first) = self.block_first.take() else { return Ok(()) };
        self.out.write_all(&self.block)?;
        self.tables[self.table].blocks.push(BlockRef { first, offset: self.at as usize, len: self.block.len() });
        self.at += self.block.len() as u64;
        // The next block starts with a whole key (`block_first` is empty again).
        self.block.clear();
        Ok(())
    }

    /// Writes the index and footer; returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.end_block()?;
        let mut index = Vec::new();
        for t in &self.tables {
            index.extend_from_slice(&t.entries.to_le_bytes());
            index.extend_from_slice(&(t.blocks.len() as u32).to_le_bytes());
            for b in &t.blocks {
                index.extend_from_slice(&b.first.salt.to_le_bytes());
                index.extend_from_slice(&b.first.counter.to_le_bytes());
                index.extend_from_slice(&(b.offset as u64).to_le_bytes());
                index.extend_from_slice(&(b.len as u32).to_le_bytes());
            }
        }
        self.out.write_all(&index)?;
        let mut foot = Vec::with_capacity(FOOTER);
        foot.extend_from_slice(&self.at.to_le_bytes());
        foot.extend_from_slice(&(index.len() as u64).to_le_bytes());
        foot.extend_from_slice(&checksum(&index).to_le_bytes());
        foot.extend_from_slice(MAGIC);
        self.out.write_all(&foot)?;
        Ok(self.out)
    }
}

/// A 64-bit checksum (FNV-1a over 8-byte words): catches a torn or foreign file.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    for b in chunks.remainder() {
        h = (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

#[inline]
pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads little-endian numbers and varints from a slice; `None` when it runs out.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    #[inline]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    #[inline]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(salt: u64, counter: u64) -> Key {
        Key { salt, counter }
    }

    #[test]
    fn a_segment_gives_back_what_was_written_in_order() {
        let mut w = SegmentWriter::new(Vec::new()).unwrap();
        let mut expected = Vec::new();
        for salt in [3u64, 9, u64::MAX] {
            for c in (0..3000u64).map(|i| i * 7 + (i % 5)) {
                let v = format!("v{salt}-{c}").into_bytes();
                w.add(Table::Tasks, key(salt, c), &v).unwrap();
                expected.push((key(salt, c), v));
            }
        }
        w.add(Table::Postings, key(1, 1), b"p").unwrap();
        let seg = Segment::from_vec(w.finish().unwrap()).unwrap();
        assert_eq!(seg.entries(Table::Tasks), 9000);
        assert!(seg.tables[0].blocks.len() > 10, "many blocks");
        let got: Vec<(Key, Vec<u8>)> = seg.iter(Table::Tasks).map(|e| e.map(|(k, v)| (k, v.to_vec())).unwrap()).collect();
        assert_eq!(got, expected);
        for (k, v) in expected.iter().step_by(97) {
            assert_eq!(seg.get(Table::Tasks, *k).unwrap(), Some(v.as_slice()));
            assert_eq!(seg.get(Table::Tasks, Key { counter: k.counter + 1, ..*k }).unwrap().is_some(), expected.iter().any(|(x, _)| x.salt == k.salt && x.counter == k.counter + 1));
        }
        assert_eq!(seg.get(Table::Objects, key(3, 0)).unwrap(), None);
        assert_eq!(seg.get(Table::Postings, key(1, 1)).unwrap(), Some(&b"p"[..]));
    }

    #[test]
    fn keys_out_of_order_are_refused() {
        let mut w = SegmentWriter::new(Vec::new()).unwrap();
        w.add(Table::Tasks, key(1, 5), b"").unwrap();
        assert!(w.add(Table::Tasks, key(1, 5), b"").is_err());
        assert!(w.add(Table::Tasks, key(0, 9), b"").is_err());
    }

    #[test]
    fn damaged_segments_are_errors_not_panics() {
        let mut w = SegmentWriter::new(Vec::new()).unwrap();
        for c in 0..2000 {
            w.add(Table::Objects, key(4, c), &[7; 20]).unwrap();
        }
        let good = w.finish().unwrap();
        assert!(Segment::from_vec(good[..good.len() - 1].to_vec()).is_err());
        assert!(Segment::from_vec(b"RAYRSEG1RAYRSEG1".to_vec()).is_err());
        // Garbage inside blocks: reading says so.
        let mut bad = good.clone();
        for b in &mut bad[8..4000] {
            *b = 0xff;
        }
        let seg = Segment::from_vec(bad).unwrap();
        assert!(seg.iter(Table::Objects).any(|e| e.is_err()));
        // Random bytes anywhere never panic.
        let mut x = 0x1234_5678u64;
        for _ in 0..200 {
            let mut bytes = good.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % bytes.len();
                bytes[i] = (x >> 32) as u8;
            }
            if let Ok(seg) = Segment::from_vec(bytes) {
                let _ = seg.iter(Table::Objects).count();
                let _ = seg.get(Table::Objects, key(4, 1000));
            }
        }
    }
}
