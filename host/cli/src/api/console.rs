//! The streaming commands: the serial console (output streamed to stdout,
//! stdin lines sent as input) and the image upload (a file streamed as the
//! request body).

use super::client::{enc, query, CliError, CliResult, Client};
use nasvisor_api_types::ConsoleInputBody;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Largest console input of one request (the API's limit).
const MAX_INPUT: usize = nasvisor_api_types::MAX_CONSOLE_INPUT;
/// Ctrl-]: ends an interactive console session.
const ESCAPE: u8 = 0x1d;
/// After the end of piped input, output is still shown this long.
const LINGER: Duration = Duration::from_secs(1);

/// Sends `data` as console input, in pieces of at most 4096 bytes (split on
/// character boundaries).
pub fn send(c: &Client, vm: &str, data: &str) -> CliResult<()> {
    if data.is_empty() {
        return Err(CliError::msg("nothing to send: the text is empty"));
    }
    let path = format!("/api/v1/vms/{}/console", enc(vm));
    let mut rest = data;
    while !rest.is_empty() {
        let mut end = rest.len().min(MAX_INPUT);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let body = ConsoleInputBody {
            data: rest[..end].to_string(),
        };
        c.send::<_, ()>("POST", &path, &body)?;
        rest = &rest[end..];
    }
    Ok(())
}

/// Whether stdin is a terminal or a pipe (the cases where typed or piped
/// lines are sent to the console).
fn stdin_is_interactive() -> bool {
    use std::os::unix::fs::FileTypeExt;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return true;
    }
    std::fs::metadata("/proc/self/fd/0")
        .or_else(|_| std::fs::metadata("/dev/stdin"))
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

enum Event {
    /// The output stream ended (the server closed it, or an error).
    StreamEnd(CliResult<()>),
    /// Ctrl-] was typed.
    Escape,
    /// stdin reached its end.
    InputEof,
    /// Sending input failed.
    InputError(CliError),
}

fn copy_out(mut r: impl Read, endpoint: &str) -> CliResult<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let stdout = std::io::stdout();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(CliError::msg(format!(
                    "console stream from {endpoint} broke off: {e}"
                )))
            }
        };
        let mut out = stdout.lock();
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .map_err(|e| CliError::msg(format!("writing to stdout: {e}")))?;
    }
}

/// Every `let _ = tx.send(..)` below: a send fails only when the session
/// has already ended (its receiver is gone), and then nobody needs the event.
fn read_input(c: &Client, vm: &str, tx: &mpsc::Sender<Event>) {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match lock.read_until(b'\n', &mut line) {
            Ok(0) => {
                let _ = tx.send(Event::InputEof);
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Event::InputError(CliError::msg(format!(
                    "reading stdin: {e}"
                ))));
                return;
            }
        }
        let escape = line.iter().position(|b| *b == ESCAPE);
        let data = &line[..escape.unwrap_or(line.len())];
        if !data.is_empty() {
            if let Err(e) = send(c, vm, &String::from_utf8_lossy(data)) {
                let _ = tx.send(Event::InputError(e));
                return;
            }
        }
        if escape.is_some() {
            let _ = tx.send(Event::Escape);
            return;
        }
    }
}

/// `nasvisor vm console`.
pub fn run(c: &Client, vm: &str, follow: bool, tail: Option<u64>) -> CliResult<()> {
    let mut q = Vec::new();
    if follow {
        q.push(("follow", "true".to_string()));
    }
    if let Some(t) = tail {
        q.push(("tail", t.to_string()));
    }
    let reader = c.stream(&format!("/api/v1/vms/{}/console{}", enc(vm), query(&q)))?;
    let endpoint = c.endpoint().to_string();
    if !(follow && stdin_is_interactive()) {
        return copy_out(reader, &endpoint);
    }
    if std::io::stdin().is_terminal() {
        eprintln!("connected to the console of {vm}; type lines to send them, Ctrl-] then Enter (or Ctrl-D) to quit");
    }
    let (tx, rx) = mpsc::channel();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // Fails only when the session has already ended.
            let _ = tx.send(Event::StreamEnd(copy_out(reader, &endpoint)));
        });
    }
    {
        let c = c.clone();
        let vm = vm.to_string();
        std::thread::spawn(move || read_input(&c, &vm, &tx));
    }
    match rx.recv() {
        Ok(Event::StreamEnd(r)) => r,
        Ok(Event::Escape) | Err(_) => Ok(()),
        Ok(Event::InputError(e)) => Err(e),
        Ok(Event::InputEof) => {
            // Show what the last input produced for a moment.
            let deadline = Instant::now() + LINGER;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Event::StreamEnd(r)) => return r,
                    Ok(_) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

/// Counts what is read and shows the upload's progress on a terminal.
struct Progress<R> {
    inner: R,
    done: u64,
    total: u64,
    shown: u64,
    tty: bool,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.tty && self.total > 0 {
            let pct = self.done * 100 / self.total;
            if pct != self.shown || n == 0 {
                self.shown = pct;
                eprint!(
                    "\r\x1b[2Kuploading {:>3}% ({} of {} MiB)",
                    pct,
                    self.done >> 20,
                    self.total >> 20
                );
                if self.done >= self.total {
                    eprintln!();
                }
            }
        }
        Ok(n)
    }
}

/// Uploads `file` as the body of `POST path`, streamed; the Job answer.
/// `label` names the file's argument in errors (`--upload`, `bundle`).
pub fn upload<T: serde::de::DeserializeOwned>(
    c: &Client,
    path: &str,
    file: &Path,
    label: &str,
) -> CliResult<T> {
    let f = std::fs::File::open(file)
        .map_err(|e| CliError::msg(format!("{label} {}: {e}", file.display())))?;
    let meta = f
        .metadata()
        .map_err(|e| CliError::msg(format!("{label} {}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(CliError::msg(format!(
            "{label} {}: not a regular file",
            file.display()
        )));
    }
    let total = meta.len();
    let reader = Progress {
        inner: std::io::BufReader::with_capacity(256 * 1024, f),
        done: 0,
        total,
        shown: u64::MAX,
        tty: std::io::stderr().is_terminal(),
    };
    c.upload(path, reader, total)
}
