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

/// Tails console logs and records when each `TICK n` line first arrived.
pub struct TickMeter {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u64, Instant>>>,
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
                for (path, at, partial) in &mut tails {
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
                            m.lock().unwrap().entry(n).or_insert(now);
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

    /// Every tick seen so far, in order, with its arrival.
    pub fn ticks(&self) -> Vec<(u64, Instant)> {
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
/// within `[from, to]`, and how many ticks that window holds. A missing
/// tick number (a torn line) joins its neighbours' intervals.
pub fn longest_gap(ticks: &[(u64, Instant)], from: Instant, to: Instant) -> (Duration, usize) {
    let inside: Vec<&(u64, Instant)> = ticks
        .iter()
        .filter(|(_, t)| *t >= from && *t <= to)
        .collect();
    let longest = inside
        .windows(2)
        .map(|w| w[1].1.saturating_duration_since(w[0].1))
        .max()
        .unwrap_or_default();
    (longest, inside.len())
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
        let ticks = [
            (0, at(0)),
            (1, at(10)),
            (2, at(80)),
            (3, at(90)),
            (4, at(300)),
        ];
        assert_eq!(
            longest_gap(&ticks, at(0), at(100)),
            (Duration::from_millis(70), 4)
        );
        assert_eq!(
            longest_gap(&ticks, at(5), at(95)),
            (Duration::from_millis(70), 3)
        );
        assert_eq!(longest_gap(&ticks, at(85), at(95)), (Duration::ZERO, 1));
    }
}
