//! Signals that end a process: their names, what each means, and what to do about it.
//!
//! One classification serves both sides of a death: the node agent records a worker's end
//! by a signal with [`Signal::exit_detail`] (the `WorkerExit.detail` of WORKER_EXITED), and
//! the explainer advises on it with [`Signal::advice`]. A signal given its own meaning here
//! gets both at once.
//!
//! rayr never ends a worker with a signal it does not also record as intended (the pool
//! knows which workers it stopped), so every signal classified here came from elsewhere:
//! the kernel or another process.

use crate::words::human_bytes;

/// How a signal that ended a process is understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: cannot be caught; most often the kernel's OOM killer.
    Kill,
    /// SIGSEGV or SIGBUS (the number says which): an invalid memory access.
    InvalidMemory(i32),
    /// SIGABRT: `abort()`, which a panic under `panic = "abort"` calls too.
    Abort,
    /// Any other signal, by number.
    Other(i32),
}

impl Signal {
    /// The signal numbered `sig`; `None` for 0 (the process exited by itself).
    pub fn of(sig: i32) -> Option<Signal> {
        Some(match sig {
            0 => return None,
            libc::SIGKILL => Signal::Kill,
            libc::SIGSEGV | libc::SIGBUS => Signal::InvalidMemory(sig),
            libc::SIGABRT => Signal::Abort,
            other => Signal::Other(other),
        })
    }

    pub fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Abort => libc::SIGABRT,
            Signal::InvalidMemory(n) | Signal::Other(n) => n,
        }
    }

    pub fn name(self) -> &'static str {
        name(self.number())
    }

    /// How a worker's end by this signal is recorded: what happened, and who did it.
    pub fn exit_detail(self) -> String {
        let (sig, name) = (self.number(), self.name());
        match self {
            Signal::Kill => format!(
                "killed by signal {sig} ({name}), which rayr did not send: another process or the kernel OOM killer did (check `dmesg`)"
            ),
            Signal::InvalidMemory(_) => {
                format!("crashed with signal {sig} ({name}): invalid memory access (unsafe code or a native library)")
            }
            Signal::Abort => {
                format!("aborted with signal {sig} ({name}): a panic with panic=abort, or abort() in native code")
            }
            Signal::Other(_) => format!("killed by signal {sig} ({name}), which rayr did not send"),
        }
    }

    /// What to do about a worker this signal ended. `peak_rss_bytes`: the most memory it
    /// held (0: not measured); `see_stderr`: a pointer to its stderr, appended where that
    /// helps (empty when there is none to show).
    pub fn advice(self, peak_rss_bytes: u64, see_stderr: &str) -> String {
        let (sig, name) = (self.number(), self.name());
        match self {
            Signal::Kill => {
                let rss = if peak_rss_bytes > 0 {
                    format!(" (its peak RSS was {})", human_bytes(peak_rss_bytes))
                } else {
                    String::new()
                };
                format!("SIGKILL was not sent by rayr: check the kernel OOM killer: `dmesg | grep -i kill`{rss}")
            }
            Signal::InvalidMemory(_) => format!(
                "it crashed on an invalid memory access ({name}): look at unsafe code and native libraries the task uses{see_stderr}"
            ),
            Signal::Abort => {
                format!("it aborted (a panic with panic = \"abort\", or abort() in native code){see_stderr}")
            }
            Signal::Other(_) => format!("signal {sig} ({name}) was not sent by rayr: find out which process sent it"),
        }
    }
}

/// `9` → `SIGKILL`; `"signal"` for numbers without a common name.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_is_recorded_and_advised_on_in_the_same_terms() {
        assert_eq!(Signal::of(0), None);
        let kill = Signal::of(9).unwrap();
        assert_eq!(kill, Signal::Kill);
        assert!(kill.exit_detail().contains("SIGKILL") && kill.exit_detail().contains("dmesg"));
        let advice = kill.advice(50 << 20, "");
        assert!(advice.contains("dmesg | grep -i kill") && advice.contains("50.0 MiB"), "{advice}");
        assert!(!kill.advice(0, "").contains("peak RSS"));

        let segv = Signal::of(libc::SIGSEGV).unwrap();
        assert!(segv.exit_detail().contains("invalid memory access"));
        assert!(segv.advice(0, "; its stderr is above").ends_with("its stderr is above"));
        assert_eq!(Signal::of(libc::SIGBUS), Some(Signal::InvalidMemory(libc::SIGBUS)));
        assert!(Signal::of(libc::SIGABRT).unwrap().advice(0, "").contains("panic = \"abort\""));

        let term = Signal::of(libc::SIGTERM).unwrap();
        assert_eq!(term.name(), "SIGTERM");
        assert!(term.advice(0, "").contains("find out which process sent it"));
        assert_eq!(name(64), "signal");
    }
}
