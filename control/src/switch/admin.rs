//! The running switch's admin socket: a Unix stream socket on which each connection sends one
//! JSON request line and reads one JSON reply line. A path socket (not bpffs pinning) because
//! `ip netns exec` remounts /sys, hiding bpffs, while the file system is shared by every
//! namespace: the lab and `pegasus switch status` reach the switch from anywhere.

use super::{Counters, Switch};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

/// Longest request line accepted, in bytes.
const REQUEST_LEN_MAX: usize = 64 * 1024;
/// How long a client waits for the switch.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the switch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Counters, ports, epoch and version counter.
    Status,
}

/// The switch's state as the admin socket reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub ports: Vec<String>,
    pub store_port: u16,
    pub epoch: u16,
    pub version_counter: u64,
    pub counters: Counters,
}

/// A reply: the result or an error message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Error(String),
}

/// What the server needs to answer requests.
pub struct SwitchHandle {
    pub switch: Mutex<Switch>,
    pub store_port: u16,
    pub epoch: u16,
}

impl SwitchHandle {
    fn status(&self) -> Result<Status> {
        let switch = self.switch.lock().expect("switch mutex poisoned");
        Ok(Status {
            ports: switch.ports().map(str::to_owned).collect(),
            store_port: self.store_port,
            epoch: self.epoch,
            version_counter: switch.version_counter()?,
            counters: switch.counters()?,
        })
    }

    fn answer(&self, request: &Request) -> Reply {
        let result = match request {
            Request::Status => self.status().map(Reply::Status),
        };
        result.unwrap_or_else(|e| Reply::Error(format!("{e:#}")))
    }
}

/// Serves the admin socket at `path` until the task is dropped. A stale socket file from a
/// dead switch is replaced; a live one is an error (two switches would fight over the ports).
pub async fn serve(path: PathBuf, handle: Arc<SwitchHandle>) -> Result<()> {
    let listener = bind(&path).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &handle).await {
                tracing::debug!("admin connection: {e:#}");
            }
        });
    }
}

async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another switch already serves {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding admin socket {}", path.display()))
}

async fn serve_one(stream: UnixStream, handle: &SwitchHandle) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_LEN_MAX as u64);
    reader.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle.answer(&request),
        Err(e) => Reply::Error(format!("bad request: {e}")),
    };
    let mut bytes = serde_json::to_vec(&reply)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    Ok(())
}

/// Sends one request to the switch whose admin socket is `path`.
pub async fn request(path: &Path, request: &Request) -> Result<Reply> {
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("no switch answers at {} (is it running?)", path.display()))?;
        let (read, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(request)?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        serde_json::from_str::<Reply>(&line).context("unreadable reply from the switch")
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .context("the switch did not answer in time")?
}

/// Fetches the switch's status.
pub async fn status(path: &Path) -> Result<Status> {
    match request(path, &Request::Status).await? {
        Reply::Status(s) => Ok(s),
        Reply::Error(e) => bail!("switch: {e}"),
    }
}
