//! The serial console: logged by QEMU itself to a bounded log on disk,
//! streamed live, and written to.
//!
//! QEMU listens on the console socket (`server=on,wait=off`) and serves one
//! client at a time; [`Console`] is that client, for input. QEMU also appends
//! everything the guest writes to `<id>.console.log` itself (the chardev's
//! `logfile`, with `logappend=on`), whether a client is attached or not: the
//! log stays whole while nasvisord is down or restarting. [`Console`] follows
//! that file (at each output on the socket, and every
//! [`TAIL_POLL`]) and broadcasts what was appended; the socket's output is only
//! drained, so that QEMU never blocks on it.
//!
//! The log is bounded: it is kept in two halves, `<log>` and `<log>.1`. When
//! the current half exceeds `max_log_bytes / 2`, [`Console`] copies it to
//! `<log>.1` (replacing the older one) and empties it; QEMU, which appends,
//! goes on at its start. Output QEMU appends in the instant between that copy
//! and the truncation is streamed live but not kept (as with logrotate's
//! `copytruncate`). While no [`Console`] follows it (nasvisord down), the
//! current half grows without bound; the next attachment cuts it back to its
//! most recent `max_log_bytes / 2`. [`read_console_log`] returns `.1`
//! followed by the current half: always the most recent output.
//!
//! The guest's console shows what it prints (cloud-init can echo keys and
//! hashes): both halves are created 0600 ([`prepare_log`] before QEMU starts),
//! and an older log is made 0600.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

/// Default bound of the console log: 1 MiB.
pub const DEFAULT_CONSOLE_LOG_BYTES: u64 = 1024 * 1024;

/// How often the log is looked at when the socket says nothing (QEMU writes
/// the socket first, then the log).
pub const TAIL_POLL: Duration = Duration::from_millis(100);

/// The most read from the log at once.
const READ_CHUNK: u64 = 64 * 1024;

/// A piece of console output.
pub type ConsoleChunk = Arc<[u8]>;

/// Errors of the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot connect to console socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console {path} is closed (QEMU exited or the console was detached)")]
    Closed { path: PathBuf },
    #[error("writing to console {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Options of [`Console::attach`].
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Bound of the on-disk log (both halves together).
    pub max_log_bytes: u64,
    /// How long to retry connecting while the socket does not accept yet.
    pub connect_timeout: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            max_log_bytes: DEFAULT_CONSOLE_LOG_BYTES,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Mode of the console log's files.
const LOG_MODE: u32 = 0o600;

/// Sets an existing log file's mode to 0600.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o777 != LOG_MODE => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(LOG_MODE))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the console log `path` (0600) for QEMU to append to, keeping
/// what it holds, and makes both halves 0600. Called before QEMU starts:
/// QEMU would create it world-readable.
pub fn prepare_log(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)?;
    make_private(path)?;
    make_private(&rotated_path(path))
}

/// Follows the log QEMU appends to.
struct Tail {
    path: PathBuf,
    rotated: PathBuf,
    half: u64,
    /// How much of the current half has been streamed (or, at attachment,
    /// was there already): history is `.1` and the current half up to here.
    pos: u64,
}

impl Tail {
    fn open(path: &Path, max: u64) -> std::io::Result<Tail> {
        prepare_log(path)?;
        let pos = std::fs::metadata(path)?.len();
        Ok(Tail {
            path: path.to_path_buf(),
            rotated: rotated_path(path),
            half: (max / 2).max(1),
            pos,
        })
    }

    /// Streams what QEMU appended since the last call to `live`, then
    /// rotates when the current half is full.
    async fn pump(&mut self, live: &Live) -> std::io::Result<()> {
        let len = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if len < self.pos {
            // Emptied by someone else: follow from its start.
            self.pos = 0;
        }
        if len > self.pos {
            let mut f = tokio::fs::File::open(&self.path).await?;
            f.seek(std::io::SeekFrom::Start(self.pos)).await?;
            let mut left = len - self.pos;
            while left > 0 {
                let mut buf = vec![0u8; left.min(READ_CHUNK) as usize];
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                send(live, buf);
                self.pos += n as u64;
                left = left.saturating_sub(n as u64);
            }
        }
        if self.pos > self.half {
            self.rotate(live).await?;
        }
        Ok(())
    }

    /// Keeps the most recent half of the current log in `.1` and empties
    /// the current one (see the module's documentation); streams what was
    /// appended since the last pump first.
    async fn rotate(&mut self, live: &Live) -> std::io::Result<()> {
        let mut f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .await?;
        let len = f.metadata().await?.len();
        let from = self.pos.min(len.saturating_sub(self.half));
        f.seek(std::io::SeekFrom::Start(from)).await?;
        let mut data = Vec::with_capacity(len.saturating_sub(from) as usize);
        f.read_to_end(&mut data).await?;
        f.set_len(0).await?;
        drop(f);
        let seen = ((self.pos - from) as usize).min(data.len());
        if seen < data.len() {
            send(live, data[seen..].to_vec());
        }
        self.pos = 0;
        let keep = &data[data.len().saturating_sub(self.half as usize)..];
        write_private(&self.rotated, keep).await
    }

    /// `.1` and the current half up to what was streamed, at most the last
    /// `max` bytes of it.
    async fn history(&self, max: u64) -> std::io::Result<Vec<u8>> {
        let mut out = read_or_empty(&self.rotated).await?;
        match tokio::fs::File::open(&self.path).await {
            Ok(f) => {
                let mut cur = Vec::with_capacity(self.pos as usize);
                f.take(self.pos).read_to_end(&mut cur).await?;
                out.extend_from_slice(&cur);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let excess = out.len().saturating_sub(max as usize);
        out.drain(..excess);
        Ok(out)
    }
}

/// Writes `data` to `path` through a temporary file created 0600, renamed
/// over it.
async fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(LOG_MODE)
        .open(&tmp)
        .await?;
    f.write_all(data).await?;
    f.flush().await?;
    drop(f);
    make_private(&tmp)?;
    tokio::fs::rename(&tmp, path).await
}

async fn read_or_empty(path: &Path) -> std::io::Result<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Reads a console log (the rotated half, then the current one). Missing files
/// read as empty.
pub async fn read_console_log(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = read_or_empty(&rotated_path(path)).await?;
    out.extend(read_or_empty(path).await?);
    Ok(out)
}

/// The live stream's sender; `None` once the console closed.
type Live = Mutex<Option<broadcast::Sender<ConsoleChunk>>>;

fn send(live: &Live, data: Vec<u8>) {
    if let Some(tx) = live.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        // No live reader is fine: the log has the bytes.
        let _ = tx.send(Arc::from(data));
    }
}

struct Inner {
    socket: PathBuf,
    log_path: PathBuf,
    max_log_bytes: u64,
    tail: Arc<tokio::sync::Mutex<Tail>>,
    live: Arc<Live>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    closed_rx: watch::Receiver<bool>,
    drain: JoinHandle<()>,
    follower: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.drain.abort();
        self.follower.abort();
    }
}

/// An attached serial console. Clones share the attachment.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("socket", &self.inner.socket)
            .field("log", &self.inner.log_path)
            .finish()
    }
}

impl Console {
    /// Connects to the console socket and follows the log QEMU keeps at
    /// `log_path`: what it holds already is history, what QEMU appends from
    /// now on is streamed live.
    pub async fn attach(
        socket: impl AsRef<Path>,
        log_path: impl AsRef<Path>,
        options: ConsoleOptions,
    ) -> Result<Console, ConsoleError> {
        let socket = socket.as_ref().to_path_buf();
        let log_path = log_path.as_ref().to_path_buf();
        let stream = connect_retrying(&socket, options.connect_timeout).await?;
        let log_err = |source| ConsoleError::Log {
            path: log_path.clone(),
            source,
        };
        let (tx, _) = broadcast::channel(1024);
        let live: Arc<Live> = Arc::new(Mutex::new(Some(tx)));
        let mut tail = Tail::open(&log_path, options.max_log_bytes).map_err(log_err)?;
        // A log that grew while nobody followed it is cut back now.
        tail.pump(&live).await.map_err(log_err)?;
        let tail = Arc::new(tokio::sync::Mutex::new(tail));
        let (closed_tx, closed_rx) = watch::channel(false);
        let (mut read_half, write_half) = stream.into_split();
        let output = Arc::new(Notify::new());
        let (eof_tx, mut eof_rx) = watch::channel(false);

        // The socket's output is drained (QEMU would block on a full
        // socket); each read says that the log grew.
        let drain = {
            let output = output.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match read_half.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => output.notify_one(),
                        Err(e) => {
                            tracing::debug!(socket = %socket.display(), error = %e, "console read failed");
                            break;
                        }
                    }
                }
                // Err only when the follower is gone.
                let _ = eof_tx.send(true);
            })
        };
        let follower = {
            let tail = tail.clone();
            let live = live.clone();
            tokio::spawn(async move {
                loop {
                    let closed = tokio::select! {
                        _ = output.notified() => {
                            // QEMU writes the socket, then the log.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            false
                        }
                        _ = eof_rx.changed() => true,
                        _ = tokio::time::sleep(TAIL_POLL) => false,
                    };
                    let mut t = tail.lock().await;
                    if let Err(e) = t.pump(&live).await {
                        tracing::warn!(log = %t.path.display(), error = %e, "cannot follow the console log");
                    }
                    if closed {
                        break;
                    }
                }
                // QEMU closed the console (it exited): what it logged
                // before is streamed above.
                live.lock().unwrap_or_else(|e| e.into_inner()).take();
                // Err only when nobody waits for the close.
                let _ = closed_tx.send(true);
            })
        };

        Ok(Console {
            inner: Arc::new(Inner {
                socket,
                log_path,
                max_log_bytes: options.max_log_bytes,
                tail,
                live,
                writer: tokio::sync::Mutex::new(write_half),
                closed_rx,
                drain,
                follower,
            }),
        })
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    /// Live output from now on. The receiver reports `Closed` when QEMU closes
    /// the console.
    pub fn subscribe(&self) -> broadcast::Receiver<ConsoleChunk> {
        subscribe(&self.inner.live)
    }

    /// The log so far (at most the configured bound) and a receiver for
    /// everything after it, with no gap and no overlap between them.
    pub async fn subscribe_with_history(
        &self,
    ) -> Result<(Vec<u8>, broadcast::Receiver<ConsoleChunk>), ConsoleError> {
        let tail = self.inner.tail.lock().await;
        let history = tail
            .history(self.inner.max_log_bytes)
            .await
            .map_err(|source| ConsoleError::Log {
                path: self.inner.log_path.clone(),
                source,
            })?;
        let rx = subscribe(&self.inner.live);
        drop(tail);
        Ok((history, rx))
    }

    /// Everything logged so far (at most the configured bound).
    pub async fn read_log(&self) -> Result<Vec<u8>, ConsoleError> {
        self.subscribe_with_history().await.map(|(h, _)| h)
    }

    /// Sends input to the guest's serial port.
    pub async fn write(&self, data: &[u8]) -> Result<(), ConsoleError> {
        if self.is_closed() {
            return Err(ConsoleError::Closed {
                path: self.inner.socket.clone(),
            });
        }
        let mut w = self.inner.writer.lock().await;
        w.write_all(data)
            .await
            .map_err(|source| ConsoleError::Write {
                path: self.inner.socket.clone(),
                source,
            })?;
        w.flush().await.map_err(|source| ConsoleError::Write {
            path: self.inner.socket.clone(),
            source,
        })
    }

    /// True once QEMU closed the console.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed_rx.borrow()
    }

    /// Resolves when QEMU closes the console.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed_rx.clone();
        // An error means the reader task is gone, which also means closed.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits until the log contains `needle`, up to `timeout`. Returns the log.
    pub async fn wait_for_output(
        &self,
        needle: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let (mut seen, mut rx) = match self.subscribe_with_history().await {
            Ok(v) => v,
            Err(_) => return Err(Vec::new()),
        };
        loop {
            if contains(&seen, needle) {
                return Ok(seen);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Ok(chunk)) => seen.extend_from_slice(&chunk),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    seen = self.read_log().await.unwrap_or(seen);
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    return if contains(&seen, needle) {
                        Ok(seen)
                    } else {
                        Err(seen)
                    };
                }
            }
        }
    }
}

fn subscribe(
    live: &Mutex<Option<broadcast::Sender<ConsoleChunk>>>,
) -> broadcast::Receiver<ConsoleChunk> {
    match live.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = broadcast::channel(1);
            drop(tx);
            rx
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn connect_retrying(path: &Path, timeout: Duration) -> Result<UnixStream, ConsoleError> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(source) if Instant::now() >= deadline => {
                return Err(ConsoleError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{UnixListener, UnixStream};

    /// What QEMU does with the guest's output: to the socket's client
    /// (when there is one), then appended to the log.
    async fn emit(client: Option<&mut UnixStream>, log: &Path, data: &[u8]) {
        if let Some(s) = client {
            s.write_all(data).await.unwrap();
        }
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .await
            .unwrap();
        f.write_all(data).await.unwrap();
        // A tokio file writes on a thread of its own: without the flush the
        // next emit's write may reach the file first.
        f.flush().await.unwrap();
    }

    #[tokio::test]
    async fn follows_rotates_and_streams_the_log_qemu_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        let log = dir.path().join("c.log");
        prepare_log(&log).unwrap();
        let listener = UnixListener::bind(&sock).unwrap();
        let server = {
            let log = log.clone();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                // Echo what the client writes, then emit 300 numbered lines.
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                emit(Some(&mut s), &log, &buf).await;
                for i in 0..300 {
                    let line = format!("line {i:04}\n");
                    emit(Some(&mut s), &log, line.as_bytes()).await;
                    if i % 20 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                emit(Some(&mut s), &log, b"END\n").await;
            })
        };
        let console = Console::attach(
            &sock,
            &log,
            ConsoleOptions {
                max_log_bytes: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut rx = console.subscribe();
        console.write(b"ping").await.unwrap();
        let out = console
            .wait_for_output(b"END\n", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(contains(&out, b"END"));
        server.await.unwrap();
        console.closed().await;

        // Live: everything, in order, once.
        let mut streamed = Vec::new();
        while let Ok(chunk) = rx.recv().await {
            streamed.extend_from_slice(&chunk);
        }
        let mut want = b"ping".to_vec();
        for i in 0..300 {
            want.extend_from_slice(format!("line {i:04}\n").as_bytes());
        }
        want.extend_from_slice(b"END\n");
        assert_eq!(
            String::from_utf8_lossy(&streamed),
            String::from_utf8_lossy(&want)
        );

        // Bounded: the most recent output, about 1000 bytes of it.
        let kept = read_console_log(&log).await.unwrap();
        assert!(kept.len() <= 1000 + 200, "{}", kept.len());
        assert!(kept.len() >= 500, "{}", kept.len());
        assert!(kept.ends_with(b"line 0299\nEND\n"));
        assert!(!contains(&kept, b"line 0000"));
        assert!(rotated_path(&log).exists());
        assert!(console.write(b"x").await.is_err());
        use std::os::unix::fs::PermissionsExt;
        for p in [log.clone(), rotated_path(&log)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{p:?}: the console may show secrets");
        }
    }

    #[tokio::test]
    async fn output_logged_while_nobody_followed_is_history_cut_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        let log = dir.path().join("c.log");
        prepare_log(&log).unwrap();
        // QEMU logs on while no client is attached (nasvisord is down).
        for i in 0..500 {
            emit(None, &log, format!("away {i:04}\n").as_bytes()).await;
        }
        let listener = UnixListener::bind(&sock).unwrap();
        let server = {
            let log = log.clone();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                emit(Some(&mut s), &log, b"back\n").await;
                s
            })
        };
        let console = Console::attach(
            &sock,
            &log,
            ConsoleOptions {
                max_log_bytes: 2000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (history, mut rx) = console.subscribe_with_history().await.unwrap();
        // The most recent half of what was logged while away.
        assert!(
            history.ends_with(b"away 0499\n"),
            "{}",
            String::from_utf8_lossy(&history)
        );
        assert!(history.len() <= 1000, "{}", history.len());
        assert!(!contains(&history, b"away 0399\n"));
        assert!(contains(&history, b"away 0450\n"));
        console.write(b"ping").await.unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&chunk[..], b"back\n", "live output follows the history");
        let _s = server.await.unwrap();
        let all = console.read_log().await.unwrap();
        assert!(all.ends_with(b"away 0499\nback\n"));
    }

    #[tokio::test]
    async fn connect_error_names_the_socket() {
        let e = Console::attach(
            "/nonexistent/x.sock",
            "/nonexistent/x.log",
            ConsoleOptions {
                connect_timeout: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.sock"), "{e}");
    }
}
