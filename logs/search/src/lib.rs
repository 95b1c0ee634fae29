//! Searching log files with ripgrep's own searcher (`grep-searcher`, `grep-regex`).
//!
//! A node agent answers `rayr logs search` for the log files of its node with this; the
//! CLI uses it directly on the files of nodes that are not running. [`search`] gets a query
//! and a list of files, and reports each match (and its context lines) as it is found, so
//! results stream instead of arriving at the end. Files it cannot search (unreadable,
//! binary) are reported, never silently skipped. [`files`] says which files of a session
//! (and which parts of them) are one node's, for a search by worker, by task or by time.
//!
//! ```no_run
//! let q = rayr_logsearch::Query { pattern: "panicked".into(), context: 1, ..Default::default() };
//! let matcher = q.compile().unwrap();
//! let files = vec![std::path::PathBuf::from("/tmp/rayr/session_latest/logs/worker-ab-1.err")];
//! let skipped = rayr_logsearch::search(&matcher, &q, &files, |hit| {
//!     println!("{}:{}: {}", hit.file.display(), hit.line, hit.text);
//!     true // keep going
//! });
//! assert!(skipped.is_empty());
//! ```

pub mod files;

use std::io;
use std::path::{Path, PathBuf};

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch};

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// A regular expression (Rust `regex` syntax, as ripgrep's).
    pub pattern: String,
    pub ignore_case: bool,
    /// Lines shown before and after each match.
    pub context: usize,
    /// Matches per file at most (0: no limit).
    pub max_count: u64,
    /// Only files whose name matches this wildcard pattern (`*` and `?`), if set.
    pub glob: Option<String>,
}

/// A line found: a match, or a context line around one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    /// The line, without its line ending (invalid UTF-8 replaced).
    pub text: String,
    /// False for a context line.
    pub is_match: bool,
}

impl Query {
    /// The matcher for this query, or what is wrong with the pattern.
    pub fn compile(&self) -> Result<RegexMatcher, String> {
        RegexMatcherBuilder::new()
            .case_insensitive(self.ignore_case)
            .build(&self.pattern)
            .map_err(|e| format!("the pattern {:?} is not a valid regular expression: {e}", self.pattern))
    }

    /// What is wrong with the query's glob, if anything (a length limit: it may come from
    /// the network).
    pub fn check_glob(&self) -> Result<(), String> {
        match &self.glob {
            Some(g) if g.len() > 256 => Err(format!("a glob is at most 256 characters, not {}", g.len())),
            _ => Ok(()),
        }
    }

    /// Whether `file`'s name passes `glob`.
    pub fn wants(&self, file: &Path) -> bool {
        match &self.glob {
            None => true,
            Some(g) => file.file_name().and_then(|n| n.to_str()).is_some_and(|n| wildcard(g.as_bytes(), n.as_bytes())),
        }
    }
}

/// Searches `files` in order, calling `on` for every hit until it returns false. Returns
/// the files that could not be searched, with why.
pub fn search(matcher: &RegexMatcher, query: &Query, files: &[PathBuf], mut on: impl FnMut(Hit) -> bool) -> Vec<(PathBuf, String)> {
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .before_context(query.context)
        .after_context(query.context)
        // A NUL byte means a binary file: stop there and say so.
        .binary_detection(BinaryDetection::quit(b'\x00'))
        .build();
    let mut skipped = Vec::new();
    for file in files.iter().filter(|f| query.wants(f)) {
        let mut sink = Collect { file, on: &mut on, max: query.max_count, matches: 0, stop: false, binary: false };
        if let Err(e) = searcher.search_path(matcher, file, &mut sink) {
            skipped.push((file.clone(), format!("cannot read it: {e}")));
        } else if sink.binary {
            skipped.push((file.clone(), "binary data (a NUL byte): not searched past it".into()));
        }
        if sink.stop {
            break;
        }
    }
    skipped
}

/// Like [`search`], over byte ranges of files (`[start, end)`, e.g. what one task wrote):
/// lines keep their numbers in the whole file. A range past a file's end (it was cut
/// short) reads what is there.
pub fn search_ranges(
    matcher: &RegexMatcher,
    query: &Query,
    ranges: &[(PathBuf, u64, u64)],
    mut on: impl FnMut(Hit) -> bool,
) -> Vec<(PathBuf, String)> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let mut skipped = Vec::new();
    for (file, start, end) in ranges.iter().filter(|(f, ..)| query.wants(f)) {
        let read = (|| -> io::Result<(u64, std::fs::File, u64)> {
            let mut f = std::fs::File::open(file)?;
            // An open end (or one past the file) is the file's end.
            let size = f.metadata()?.len();
            let start = (*start).min(size);
            let end = (*end).min(size).max(start);
            // Line numbers count from the file's start.
            let mut before = 0u64;
            let mut prefix = io::BufReader::with_capacity(1 << 20, (&mut f).take(start));
            loop {
                let buf = prefix.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                before += buf.iter().filter(|b| **b == b'\n').count() as u64;
                let n = buf.len();
                prefix.consume(n);
            }
            f.seek(SeekFrom::Start(start))?;
            Ok((before, f, end - start))
        })();
        let (before, f, len) = match read {
            Ok(r) => r,
            Err(e) => {
                skipped.push((file.clone(), format!("cannot read it: {e}")));
                continue;
            }
        };
        let mut searcher = SearcherBuilder::new()
            .line_number(true)
            .before_context(query.context)
            .after_context(query.context)
            .binary_detection(BinaryDetection::quit(b'\x00'))
            .build();
        let mut shifted = |mut h: Hit| {
            h.line += before;
            on(h)
        };
        let mut sink = Collect { file, on: &mut shifted, max: query.max_count, matches: 0, stop: false, binary: false };
        // Streamed: a range is never held in memory whole.
        if let Err(e) = searcher.search_reader(matcher, f.take(len), &mut sink) {
            skipped.push((file.clone(), format!("cannot search it: {e}")));
        } else if sink.binary {
            skipped.push((file.clone(), "binary data (a NUL byte): not searched past it".into()));
        }
        if sink.stop {
            break;
        }
    }
    skipped
}

struct Collect<'a, F> {
    file: &'a Path,
    on: &'a mut F,
    max: u64,
    matches: u64,
    /// The caller wants no more.
    stop: bool,
    binary: bool,
}

fn text(bytes: &[u8]) -> String {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

impl<F: FnMut(Hit) -> bool> Sink for Collect<'_, F> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, io::Error> {
        // A match may span lines only with multi-line search, which is off: one line each.
        let hit = Hit { file: self.file.to_path_buf(), line: m.line_number().unwrap_or(0), text: text(m.bytes()), is_match: true };
        if !(self.on)(hit) {
            self.stop = true;
            return Ok(false);
        }
        self.matches += 1;
        Ok(self.max == 0 || self.matches < self.max)
    }

    fn context(&mut self, _: &Searcher, c: &SinkContext<'_>) -> Result<bool, io::Error> {
        if matches!(c.kind(), SinkContextKind::Other) {
            return Ok(true);
        }
        let hit = Hit { file: self.file.to_path_buf(), line: c.line_number().unwrap_or(0), text: text(c.bytes()), is_match: false };
        if !(self.on)(hit) {
            self.stop = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// `*` (any run) and `?` (any one byte) against a whole name: the classic greedy matcher
/// with one backtrack point, linear in practice and never recursive (a pattern comes from
/// the network).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn finds_matches_with_context_in_order_and_says_what_it_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "worker-a.err", b"one\ntwo\nthree MARK\nfour\nfive\n");
        let b = file(dir.path(), "worker-b.out", b"mark here\n");
        let bin = file(dir.path(), "blob.err", b"MARK\0binary\n");
        let gone = dir.path().join("missing.err");
        let q = Query { pattern: "mark".into(), ignore_case: true, context: 1, ..Default::default() };
        let m = q.compile().unwrap();
        let mut hits = Vec::new();
        let skipped = search(&m, &q, &[a.clone(), b.clone(), bin.clone(), gone.clone()], |h| {
            hits.push((h.file.file_name().unwrap().to_str().unwrap().to_string(), h.line, h.text, h.is_match));
            true
        });
        assert_eq!(
            hits[..4],
            [
                ("worker-a.err".into(), 2, "two".into(), false),
                ("worker-a.err".into(), 3, "three MARK".into(), true),
                ("worker-a.err".into(), 4, "four".into(), false),
                ("worker-b.out".into(), 1, "mark here".into(), true),
            ]
        );
        let why: Vec<&str> = skipped.iter().map(|(_, w)| w.as_str()).collect();
        assert!(skipped.iter().any(|(f, _)| *f == bin) && why.iter().any(|w| w.contains("binary")), "{skipped:?}");
        assert!(skipped.iter().any(|(f, w)| *f == gone && w.contains("cannot read")), "{skipped:?}");
    }

    #[test]
    fn glob_max_count_and_stopping_early() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "worker-a.err", b"x\nx\nx\n");
        let b = file(dir.path(), "worker-a.out", b"x\n");
        let q = Query { pattern: "x".into(), max_count: 2, glob: Some("*.err".into()), ..Default::default() };
        let m = q.compile().unwrap();
        let mut n = 0;
        search(&m, &q, &[a.clone(), b.clone()], |_| {
            n += 1;
            true
        });
        assert_eq!(n, 2, "two per file, only the .err file");
        let q = Query { pattern: "x".into(), ..Default::default() };
        let mut n = 0;
        search(&q.compile().unwrap(), &q, &[a, b], |_| {
            n += 1;
            n < 1
        });
        assert_eq!(n, 1, "stops when asked");
    }

    #[test]
    fn ranges_keep_the_files_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"a x\nb\nc x\nd x\ne\n";
        let f = file(dir.path(), "worker-a.out", body);
        // The range holds "c x\nd x\n": lines 3 and 4.
        let start = body.iter().position(|b| *b == b'c').unwrap() as u64;
        let end = body.iter().position(|b| *b == b'e').unwrap() as u64;
        let q = Query { pattern: "x".into(), ..Default::default() };
        let mut hits = Vec::new();
        let skipped = search_ranges(&q.compile().unwrap(), &q, &[(f, start, end)], |h| {
            hits.push((h.line, h.text));
            true
        });
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(hits, [(3, "c x".to_string()), (4, "d x".to_string())]);
        // A range past the file's end (it was cut short since) reads what is there.
        let f = file(dir.path(), "worker-b.out", b"z x\n");
        let mut hits = 0;
        let skipped = search_ranges(&q.compile().unwrap(), &q, &[(f.clone(), 100, 200), (f, 2, 100)], |_| {
            hits += 1;
            true
        });
        assert!(skipped.is_empty() && hits == 1, "{skipped:?} {hits}");
    }

    #[test]
    fn a_bad_pattern_says_so() {
        let e = Query { pattern: "(unclosed".into(), ..Default::default() }.compile().unwrap_err();
        assert!(e.contains("not a valid regular expression"), "{e}");
        assert!(wildcard(b"worker-*.err", b"worker-ab-12.err"));
        assert!(!wildcard(b"worker-?.err", b"worker-ab.err"));
        assert!(wildcard(b"*", b"") && wildcard(b"a*b*c", b"aXXbYYc") && !wildcard(b"a*b", b"aXc"));
        // Patterns from the network neither recurse nor blow up.
        let name = b"worker-0123456789abcdef0123456789abcdef-12345.out";
        assert!(!wildcard(("*?".repeat(20) + "Z").as_bytes(), name));
        assert!(wildcard("*".repeat(1_000_000).as_bytes(), name));
        let long = Query { glob: Some("*".repeat(300)), ..Default::default() };
        assert!(long.check_glob().is_err());
    }
}
