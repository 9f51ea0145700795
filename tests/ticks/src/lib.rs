//! The guest-visible gap of a live move, seen from outside: a shell loop in
//! the guest prints `TICK n` on its serial console every few milliseconds,
//! and a thread here tails the console logs QEMU writes on every host,
//! stamping each whole line as it arrives. A pause of the guest shows as a
//! longer interval between two consecutive ticks; the guest's own clock
//! cannot show it (its virtual clock stops while it is paused).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shell line that starts the ticker in the bundled guest (typed on its
/// console with `vm console-send`), one tick every `every`.
pub fn ticker_command(every: Duration) -> String {
    format!(
        "(n=0; while :; do echo \"TICK $n\"; n=$((n+1)); usleep {}; done) >/dev/ttyS0 &",
        every.as_micros()
    )
}

/// When a tick arrived, and in which of the logs (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    pub at: Instant,
    /// The same moment on the wall clock (to set beside a daemon's log).
    pub wall: std::time::SystemTime,
    pub log: usize,
}

/// The longest interval between two consecutive ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gap {
    pub length: Duration,
    /// The logs of the tick before it and of the tick after it.
    pub between: (usize, usize),
    /// How many ticks the window held.
    pub ticks: usize,
}

/// Tails console logs and records when each `TICK n` line first arrived.
pub struct TickMeter {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u64, Tick>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TickMeter {
    /// Starts tailing `logs` (the VM's console log on each host) from their
    /// present ends, polling every millisecond.
    pub fn start(logs: Vec<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut tails: Vec<(PathBuf, u64, Vec<u8>)> = logs
                .into_iter()
                .map(|p| {
                    let end = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    (p, end, Vec::new())
                })
                .collect();
            while !s.load(Ordering::Relaxed) {
                for (log, (path, at, partial)) in tails.iter_mut().enumerate() {
                    let Ok(mut f) = std::fs::File::open(&*path) else {
                        continue;
                    };
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    if len < *at {
                        // A new file in its place (rotated, or a new QEMU).
                        *at = 0;
                        partial.clear();
                    }
                    if len == *at || f.seek(SeekFrom::Start(*at)).is_err() {
                        continue;
                    }
                    let mut new = Vec::new();
                    if f.read_to_end(&mut new).is_err() {
                        continue;
                    }
                    let now = Instant::now();
                    *at += new.len() as u64;
                    partial.extend_from_slice(&new);
                    while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=nl).collect();
                        if let Some(n) = tick_of(&String::from_utf8_lossy(&line)) {
                            m.lock().unwrap().entry(n).or_insert(Tick {
                                at: now,
                                wall: std::time::SystemTime::now(),
                                log,
                            });
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        TickMeter {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Every tick seen so far, in order.
    pub fn ticks(&self) -> Vec<(u64, Tick)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(n, t)| (*n, *t))
            .collect()
    }
}

impl Drop for TickMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The number of a whole `TICK n` line (the typed command's echo and lines
/// torn by other writers are not ticks).
fn tick_of(line: &str) -> Option<u64> {
    let at = line.rfind("TICK ")?;
    line[at + 5..].trim().parse().ok()
}

/// The longest interval between two consecutive ticks that both arrived
/// within `[from, to]`. A missing tick number (a torn line) joins its
/// neighbours' intervals.
pub fn longest_gap(ticks: &[(u64, Tick)], from: Instant, to: Instant) -> Gap {
    let inside: Vec<&Tick> = ticks
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.at >= from && t.at <= to)
        .collect();
    let mut gap = inside
        .windows(2)
        .map(|w| Gap {
            length: w[1].at.saturating_duration_since(w[0].at),
            between: (w[0].log, w[1].log),
            ticks: 0,
        })
        .max_by_key(|g| g.length)
        .unwrap_or_default();
    gap.ticks = inside.len();
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_whole_numbered_lines_only() {
        assert_eq!(tick_of("TICK 12\n"), Some(12));
        assert_eq!(tick_of("ACK 3TICK 12\r\n"), Some(12));
        assert_eq!(tick_of("(n=0; while :; do echo \"TICK $n\"; ...\n"), None);
        assert_eq!(tick_of("TICK \n"), None);
    }

    #[test]
    fn the_longest_gap_is_taken_inside_the_window_only() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let tick = |n, ms, log| {
            let wall = std::time::SystemTime::now();
            (
                n,
                Tick {
                    at: at(ms),
                    wall,
                    log,
                },
            )
        };
        let ticks = [
            tick(0, 0, 0),
            tick(1, 10, 0),
            tick(2, 80, 1),
            tick(3, 90, 1),
            tick(4, 300, 1),
        ];
        let g = |from, to| {
            let g = longest_gap(&ticks, at(from), at(to));
            (g.length.as_millis(), g.between, g.ticks)
        };
        assert_eq!(g(0, 100), (70, (0, 1), 4));
        assert_eq!(g(5, 95), (70, (0, 1), 3));
        assert_eq!(g(85, 95), (0, (0, 0), 1));
    }
}
