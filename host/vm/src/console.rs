//! The serial console: captured to a bounded log on disk and streamed live.
//!
//! QEMU listens on the console socket (`server=on,wait=off`) and serves one
//! client at a time; [`Console`] is that client. Everything the guest writes is
//! appended to `<id>.console.log` and broadcast to subscribers; input written
//! through [`Console::write`] goes to the guest. Dropping the last handle
//! detaches; QEMU then waits for the next client (output meanwhile is lost).
//!
//! The log is bounded: it is kept in two halves, `<log>` and `<log>.1`. When the
//! current half would exceed `max_log_bytes / 2`, it becomes `<log>.1`
//! (replacing the older one) and a new half starts. [`read_console_log`] returns
//! `.1` followed by the current half: always the most recent output, at most
//! `max_log_bytes` of it.
//!
//! The guest's console shows what it prints (cloud-init can echo keys and
//! hashes): both halves are created 0600, and an older log is made 0600.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Default bound of the console log: 1 MiB.
pub const DEFAULT_CONSOLE_LOG_BYTES: u64 = 1024 * 1024;

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

struct RingLog {
    path: PathBuf,
    rotated: PathBuf,
    file: tokio::fs::File,
    size: u64,
    half: u64,
}

/// Mode of the console log's files.
const LOG_MODE: u32 = 0o600;

/// Sets an existing log file's mode to 0600.
async fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o777 != LOG_MODE => {
            tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(LOG_MODE)).await
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl RingLog {
    async fn open(path: &Path, max: u64) -> std::io::Result<RingLog> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(path)
            .await?;
        make_private(path).await?;
        make_private(&rotated_path(path)).await?;
        let size = file.metadata().await?.len();
        Ok(RingLog {
            path: path.to_path_buf(),
            rotated: rotated_path(path),
            file,
            size,
            half: (max / 2).max(1),
        })
    }

    async fn append(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if data.len() as u64 > self.half {
            data = &data[data.len() - self.half as usize..];
        }
        if self.size + data.len() as u64 > self.half && self.size > 0 {
            self.file.flush().await?;
            tokio::fs::rename(&self.path, &self.rotated).await?;
            self.file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(LOG_MODE)
                .open(&self.path)
                .await?;
            self.size = 0;
        }
        self.file.write_all(data).await?;
        self.file.flush().await?;
        self.size += data.len() as u64;
        Ok(())
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
    let mut out = Vec::new();
    for p in [rotated_path(path), path.to_path_buf()] {
        match tokio::fs::read(&p).await {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

struct Inner {
    socket: PathBuf,
    log_path: PathBuf,
    log: Arc<tokio::sync::Mutex<RingLog>>,
    live: Arc<Mutex<Option<broadcast::Sender<ConsoleChunk>>>>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    closed_rx: watch::Receiver<bool>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
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
    /// Connects to the console socket and starts capturing into `log_path`
    /// (appending to what an earlier attachment captured).
    pub async fn attach(
        socket: impl AsRef<Path>,
        log_path: impl AsRef<Path>,
        options: ConsoleOptions,
    ) -> Result<Console, ConsoleError> {
        let socket = socket.as_ref().to_path_buf();
        let log_path = log_path.as_ref().to_path_buf();
        let stream = connect_retrying(&socket, options.connect_timeout).await?;
        let log = RingLog::open(&log_path, options.max_log_bytes)
            .await
            .map_err(|source| ConsoleError::Log {
                path: log_path.clone(),
                source,
            })?;
        let log = Arc::new(tokio::sync::Mutex::new(log));
        let (tx, _) = broadcast::channel(1024);
        let live = Arc::new(Mutex::new(Some(tx)));
        let (closed_tx, closed_rx) = watch::channel(false);
        let (mut read_half, write_half) = stream.into_split();

        let reader = {
            let log = log.clone();
            let live = live.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match read_half.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!(socket = %socket.display(), error = %e, "console read failed");
                            break;
                        }
                    };
                    let chunk: ConsoleChunk = Arc::from(&buf[..n]);
                    // Hold the log lock while broadcasting so that
                    // `subscribe_with_history` sees no gap and no duplicate.
                    let mut log = log.lock().await;
                    if let Err(e) = log.append(&chunk).await {
                        tracing::warn!(log = %log.path.display(), error = %e, "console log write failed");
                    }
                    if let Some(tx) = live.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        // No live reader is fine: the log has the bytes.
                        let _ = tx.send(chunk);
                    }
                }
                live.lock().unwrap_or_else(|e| e.into_inner()).take();
                // Err only when nobody waits for the close.
                let _ = closed_tx.send(true);
            })
        };

        Ok(Console {
            inner: Arc::new(Inner {
                socket,
                log_path,
                log,
                live,
                writer: tokio::sync::Mutex::new(write_half),
                closed_rx,
                reader,
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

    /// The captured log so far and a receiver for everything after it, with no
    /// gap and no overlap between them.
    pub async fn subscribe_with_history(
        &self,
    ) -> Result<(Vec<u8>, broadcast::Receiver<ConsoleChunk>), ConsoleError> {
        let log = self.inner.log.lock().await;
        let history = read_console_log(&log.path)
            .await
            .map_err(|source| ConsoleError::Log {
                path: log.path.clone(),
                source,
            })?;
        let rx = subscribe(&self.inner.live);
        drop(log);
        Ok((history, rx))
    }

    /// Everything captured so far (at most the configured bound).
    pub async fn read_log(&self) -> Result<Vec<u8>, ConsoleError> {
        let _log = self.inner.log.lock().await;
        read_console_log(&self.inner.log_path)
            .await
            .map_err(|source| ConsoleError::Log {
                path: self.inner.log_path.clone(),
                source,
            })
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
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn captures_rotates_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        let log = dir.path().join("c.log");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Echo what the client writes, then emit 300 numbered lines.
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            for i in 0..300 {
                s.write_all(format!("line {i:04}\n").as_bytes())
                    .await
                    .unwrap();
            }
            s.write_all(b"END\n").await.unwrap();
        });
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

        let first = rx.recv().await.unwrap();
        assert!(first.starts_with(b"ping"), "{first:?}");

        // Bounded: at most 1000 bytes on disk, and it is the most recent output.
        let kept = read_console_log(&log).await.unwrap();
        assert!(kept.len() <= 1000, "{}", kept.len());
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
