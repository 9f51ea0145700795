//! An asynchronous QMP client over a Unix socket.
//!
//! (Over 700 lines: about 300 are the unit tests, whose fake QMP server the
//! migration tests share.)
//!
//! One [`QmpClient`] owns one QMP connection. It is cheap to clone; clones share
//! the connection. A background reader task routes replies to the commands that
//! wait for them (matched by a per-connection numeric `id`, so any number of
//! commands may be in flight at once) and broadcasts asynchronous events to every
//! [`QmpClient::events`] subscriber.
//!
//! Wire protocol (QEMU `docs/interop/qmp-spec.rst`): the server sends a greeting
//! `{"QMP": {...}}`; the client must send `qmp_capabilities` before anything else;
//! every message is one JSON object on one line.
//!
//! When the socket closes (QEMU exited, or was killed), every command still
//! waiting fails with [`QmpError::Disconnected`], later commands fail the same
//! way, event subscribers see the channel close, and [`QmpClient::closed`]
//! resolves.

mod block;
mod commands;
mod event;
mod fd;
mod migration;

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

pub use block::{
    BlockJobInfo, BlockdevBitmapBackup, BlockdevMirror, BlockdevOnError, BlockdevOptions,
    DirtyBitmapInfo, FileChild, FileNode, InetAddr, JobStatus, MirrorCopyMode, MirrorSync,
    NamedBlockNode, NbdExport, NbdNode, NullNode, Qcow2Node, SocketAddress, TlsClient, TlsServer,
};
pub use commands::{BlockDeviceInfo, BlockInfo, CpuInfoFast, RunState, StatusInfo};
pub use event::{EventKind, QmpEvent, QmpTimestamp};
pub use migration::{
    MigrationCapability, MigrationInfo, MigrationParameters, MigrationRamStats, MigrationStatus,
    ObjectAdd, TlsEndpoint,
};

/// Default time a command may take before [`QmpError::Timeout`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time to wait for the greeting after connecting.
pub const DEFAULT_GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CHANNEL_CAPACITY: usize = 512;

/// Errors of the QMP layer. Each names the socket or the command it concerns.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting to the QMP socket failed.
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server did not greet in time. QEMU's QMP monitor serves one client at a
    /// time, so this usually means another client holds the connection.
    #[error("no QMP greeting on {path} within {timeout:?} (is another client connected?)")]
    GreetingTimeout { path: PathBuf, timeout: Duration },
    /// The first message was not a QMP greeting.
    #[error("unexpected QMP greeting on {path}: {line}")]
    BadGreeting { path: PathBuf, line: String },
    /// Capability negotiation was refused.
    #[error("QMP capability negotiation on {path} failed: {source}")]
    Negotiation {
        path: PathBuf,
        #[source]
        source: Box<QmpError>,
    },
    /// QEMU answered the command with an error.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// The connection closed before the reply arrived, or was already closed:
    /// QEMU has most likely exited.
    #[error("QMP connection {path} closed{} ({reason}); QEMU has probably exited", .command.as_ref().map(|c| format!(" while waiting for `{c}`")).unwrap_or_default())]
    Disconnected {
        path: PathBuf,
        command: Option<String>,
        reason: String,
    },
    /// No reply within the timeout.
    #[error("QMP command `{command}` got no reply within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// The reply did not have the shape the typed helper expects.
    #[error("cannot decode the reply to `{command}`: {source}")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// The arguments of a typed helper could not be encoded.
    #[error("cannot encode the arguments of `{command}`: {source}")]
    Encode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// Writing a command to the socket failed.
    #[error("writing `{command}` to QMP socket {path} failed: {source}")]
    Write {
        path: PathBuf,
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl QmpError {
    /// True when the error means the connection is gone (QEMU exited).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, QmpError::Disconnected { .. })
    }

    /// The QMP error class (`GenericError`, `CommandNotFound`, ...), if QEMU
    /// answered with an error.
    pub fn class(&self) -> Option<&str> {
        match self {
            QmpError::Command { class, .. } => Some(class),
            _ => None,
        }
    }
}

/// The server's greeting: QEMU's version and the capabilities it offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QmpGreeting {
    pub version: QemuVersion,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QemuVersion {
    pub qemu: QemuVersionTriple,
    #[serde(default)]
    pub package: String,
}

/// `major.minor.micro`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersionTriple {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for QemuVersionTriple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

type Reply = Result<Value, QmpError>;

struct Pending {
    command: String,
    tx: oneshot::Sender<Reply>,
}

/// Connection state shared by the clients and the reader task.
struct ConnState {
    pending: HashMap<u64, Pending>,
    /// `None` once the connection closed, so subscribers see the channel end.
    events: Option<broadcast::Sender<QmpEvent>>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

struct Shared {
    path: PathBuf,
    greeting: QmpGreeting,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    state: Arc<Mutex<ConnState>>,
    next_id: AtomicU64,
    closed_rx: watch::Receiver<bool>,
    timeout: Duration,
    reader: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last clone is gone: stop reading; dropping the halves closes the socket.
        self.reader.abort();
    }
}

/// A connected, negotiated QMP session. Clones share the connection.
#[derive(Clone)]
pub struct QmpClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("path", &self.shared.path)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Options for [`QmpClient::connect_with`].
#[derive(Debug, Clone)]
pub struct QmpOptions {
    /// How long to wait for the greeting.
    pub greeting_timeout: Duration,
    /// Default timeout of [`QmpClient::execute`].
    pub command_timeout: Duration,
}

impl Default for QmpOptions {
    fn default() -> Self {
        QmpOptions {
            greeting_timeout: DEFAULT_GREETING_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and negotiates
    /// capabilities, with the default options.
    pub async fn connect(path: impl AsRef<Path>) -> Result<QmpClient, QmpError> {
        Self::connect_with(path, QmpOptions::default()).await
    }

    /// Like [`QmpClient::connect`], with explicit timeouts.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: QmpOptions,
    ) -> Result<QmpClient, QmpError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.clone(),
                source,
            })?;
        let (read_half, write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);

        let greeting = tokio::time::timeout(options.greeting_timeout, read_greeting(&mut reader))
            .await
            .map_err(|_| QmpError::GreetingTimeout {
                path: path.clone(),
                timeout: options.greeting_timeout,
            })?
            .map_err(|line| QmpError::BadGreeting {
                path: path.clone(),
                line,
            })?;

        let (events_tx, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let state = Arc::new(Mutex::new(ConnState {
            pending: HashMap::new(),
            events: Some(events_tx),
            closed: None,
        }));
        let (closed_tx, closed_rx) = watch::channel(false);
        let reader_task = tokio::spawn(read_loop(reader, state.clone(), closed_tx, path.clone()));

        let client = QmpClient {
            shared: Arc::new(Shared {
                path: path.clone(),
                greeting,
                writer: tokio::sync::Mutex::new(write_half),
                state,
                next_id: AtomicU64::new(1),
                closed_rx,
                timeout: options.command_timeout,
                reader: reader_task,
            }),
        };
        client
            .execute_with_timeout("qmp_capabilities", None, options.greeting_timeout)
            .await
            .map_err(|e| QmpError::Negotiation {
                path,
                source: Box::new(e),
            })?;
        Ok(client)
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The server's greeting (QEMU version).
    pub fn greeting(&self) -> &QmpGreeting {
        &self.shared.greeting
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed_rx.borrow()
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<String> {
        lock(&self.shared.state).closed.clone()
    }

    /// Resolves when the connection has closed (EOF or read error).
    pub async fn closed(&self) {
        let mut rx = self.shared.closed_rx.clone();
        // An error means the reader task is gone, which also means closed.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Subscribes to asynchronous events. The receiver sees every event after
    /// this call; it reports `Closed` when the connection closes, and `Lagged`
    /// if it falls more than a few hundred events behind.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        match &lock(&self.shared.state).events {
            Some(tx) => tx.subscribe(),
            None => {
                // Already closed: hand out a receiver that is closed too.
                let (tx, rx) = broadcast::channel(1);
                drop(tx);
                rx
            }
        }
    }

    /// Executes `command` with optional `arguments` (a JSON object) and returns
    /// the `return` value, with the client's default timeout.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_with_timeout(command, arguments, self.shared.timeout)
            .await
    }

    /// Executes `command` and decodes its `return` value into `T`.
    pub async fn execute_as<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, QmpError> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value).map_err(|source| QmpError::Decode {
            command: command.to_string(),
            source,
        })
    }

    /// Executes `command` with an explicit timeout.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.send_command(command, arguments, timeout, None).await
    }

    /// Sends `command`, with `fd` attached (`SCM_RIGHTS`) to the message's
    /// first bytes when given, and waits for its reply up to `timeout`.
    async fn send_command(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.shared.state);
            if let Some(reason) = &state.closed {
                return Err(QmpError::Disconnected {
                    path: self.shared.path.clone(),
                    command: Some(command.to_string()),
                    reason: reason.clone(),
                });
            }
            state.pending.insert(
                id,
                Pending {
                    command: command.to_string(),
                    tx,
                },
            );
        }
        // Removes the pending entry however this function is left (error,
        // timeout, or the caller dropping the future).
        let _guard = PendingGuard {
            state: &self.shared.state,
            id,
        };

        let mut message = serde_json::Map::new();
        message.insert("execute".into(), Value::String(command.to_string()));
        if let Some(arguments) = arguments {
            message.insert("arguments".into(), arguments);
        }
        message.insert("id".into(), Value::from(id));
        let mut line = Value::Object(message).to_string();
        line.push('\n');
        tracing::trace!(socket = %self.shared.path.display(), %line, "qmp send");

        {
            let mut writer = self.shared.writer.lock().await;
            let written = async {
                let mut rest = line.as_bytes();
                if let Some(fd) = fd {
                    // QEMU takes the descriptor from the read that carries
                    // it and hands it to the command it then runs.
                    let sent = fd::send_with_fd(writer.as_ref(), rest, fd).await?;
                    rest = &rest[sent..];
                }
                writer.write_all(rest).await?;
                writer.flush().await
            }
            .await;
            if let Err(source) = written {
                // A broken pipe means QEMU closed the socket: report it as such.
                if let Some(reason) = lock(&self.shared.state).closed.clone() {
                    return Err(QmpError::Disconnected {
                        path: self.shared.path.clone(),
                        command: Some(command.to_string()),
                        reason,
                    });
                }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) {
                    return Err(QmpError::Disconnected {
                        path: self.shared.path.clone(),
                        command: Some(command.to_string()),
                        reason: source.to_string(),
                    });
                }
                return Err(QmpError::Write {
                    path: self.shared.path.clone(),
                    command: command.to_string(),
                    source,
                });
            }
        }

        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(QmpError::Disconnected {
                path: self.shared.path.clone(),
                command: Some(command.to_string()),
                reason: self
                    .close_reason()
                    .unwrap_or_else(|| "reader stopped".to_string()),
            }),
            Err(_) => Err(QmpError::Timeout {
                command: command.to_string(),
                timeout,
            }),
        }
    }
}

struct PendingGuard<'a> {
    state: &'a Mutex<ConnState>,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.state).pending.remove(&self.id);
    }
}

fn lock(state: &Mutex<ConnState>) -> std::sync::MutexGuard<'_, ConnState> {
    // A panic while holding this lock leaves the maps consistent; keep going.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads lines until the greeting. Returns the offending line on failure.
async fn read_greeting(reader: &mut BufReader<OwnedReadHalf>) -> Result<QmpGreeting, String> {
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) => return Err("<connection closed>".to_string()),
        Ok(_) => {}
        Err(e) => return Err(format!("<read error: {e}>")),
    }
    #[derive(Deserialize)]
    struct Greeting {
        #[serde(rename = "QMP")]
        qmp: QmpGreeting,
    }
    serde_json::from_str::<Greeting>(line.trim())
        .map(|g| g.qmp)
        .map_err(|_| line.trim().to_string())
}

async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    state: Arc<Mutex<ConnState>>,
    closed_tx: watch::Sender<bool>,
    path: PathBuf,
) {
    let mut line = String::new();
    let reason = loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => break "end of file".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read error: {e}"),
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        tracing::trace!(%text, "qmp recv");
        let message: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%text, error = %e, "ignoring a malformed QMP message");
                continue;
            }
        };
        dispatch(&state, message);
    };

    let pending = {
        let mut st = lock(&state);
        st.closed = Some(reason.clone());
        st.events = None; // subscribers now see Closed
        std::mem::take(&mut st.pending)
    };
    for (_, p) in pending {
        // A caller that stopped waiting needs no answer.
        let _ = p.tx.send(Err(QmpError::Disconnected {
            path: path.clone(),
            command: Some(p.command),
            reason: reason.clone(),
        }));
    }
    // Err only when nobody waits for the close.
    let _ = closed_tx.send(true);
}

fn dispatch(state: &Mutex<ConnState>, message: Value) {
    if message.get("event").is_some() {
        match serde_json::from_value::<QmpEvent>(message) {
            Ok(event) => {
                tracing::debug!(event = %event.event, "qmp event");
                if let Some(tx) = &lock(state).events {
                    // No subscriber is fine.
                    let _ = tx.send(event);
                }
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed QMP event"),
        }
        return;
    }
    let Some(id) = message.get("id").and_then(Value::as_u64) else {
        tracing::debug!(%message, "QMP reply without a known id");
        return;
    };
    let Some(pending) = lock(state).pending.remove(&id) else {
        tracing::debug!(id, "QMP reply for a command nobody waits for (timed out?)");
        return;
    };
    let reply = if let Some(ret) = message.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = message.get("error") {
        Err(QmpError::Command {
            command: pending.command,
            class: err
                .get("class")
                .and_then(Value::as_str)
                .unwrap_or("GenericError")
                .to_string(),
            desc: err
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    } else {
        Ok(Value::Null)
    };
    // A caller that stopped waiting (timeout) needs no answer.
    let _ = pending.tx.send(reply);
}

#[cfg(test)]
pub(crate) mod tests;
