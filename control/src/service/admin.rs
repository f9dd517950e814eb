//! The running switch's admin socket: a Unix stream socket on which each connection sends one
//! JSON request line and reads one JSON reply line. A path socket (not bpffs pinning) because
//! `ip netns exec` remounts /sys, hiding bpffs, while the file system is shared by every
//! namespace: the lab and `pegasus switch status` reach the switch from anywhere.

use crate::controller::{Controller, DetectionSnapshot, HotKey};
use crate::switch::Counters;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

/// Longest request line accepted, in bytes.
const REQUEST_LEN_MAX: usize = 64 * 1024;
/// How long a client waits for the switch.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A request to the switch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Counters, ports, epoch, version counter and server loads.
    Status,
    /// Make keys hot.
    HotAdd { keys: Vec<String> },
    /// Make keys cold again (safely: home is brought up to date first).
    HotDel { keys: Vec<String> },
    /// The hot keys with their replica sets.
    HotList,
}

/// The switch's state as the admin socket reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub ports: Vec<String>,
    pub store_port: u16,
    pub epoch: u16,
    pub version_counter: u64,
    pub counters: Counters,
    /// Last load each server reported: (server id, load).
    pub server_loads: Vec<(u8, u16)>,
    /// Keys in the directory.
    pub hot_keys: usize,
    /// What hot-key detection has done.
    #[serde(default)]
    pub detection: DetectionSnapshot,
    /// The keys in the directory, with their replica sets, versions and counters.
    #[serde(default)]
    pub hot: Vec<HotKey>,
}

/// A reply: the result or an error message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Hot(Vec<HotKey>),
    Error(String),
}

/// The switch's state now (admin `Status`, metrics).
pub fn snapshot(controller: &Controller) -> Result<Status> {
    let hot = controller.list()?;
    let switch = controller.switch();
    Ok(Status {
        ports: switch.ports().map(str::to_owned).collect(),
        store_port: controller.store_port(),
        epoch: controller.epoch(),
        version_counter: switch.version_counter()?,
        counters: switch.counters()?,
        server_loads: switch.server_loads()?,
        hot_keys: hot.len(),
        detection: controller.detection_stats().snapshot(),
        hot,
    })
}

/// Carries out one request.
async fn answer(controller: &Controller, request: &Request) -> Reply {
    let result = match request {
        Request::Status => snapshot(controller).map(Reply::Status),
        Request::HotAdd { keys } => {
            let mut added = Vec::with_capacity(keys.len());
            let mut outcome = Ok(());
            for key in keys {
                match controller.add(key.as_bytes()).await {
                    Ok(hot) => added.push(hot),
                    Err(e) => {
                        outcome = Err(e.context(format!("adding {key}")));
                        break;
                    }
                }
            }
            outcome.map(|()| Reply::Hot(added))
        }
        Request::HotDel { keys } => {
            let mut outcome = Ok(());
            for key in keys {
                if let Err(e) = controller.evict(key.as_bytes()).await {
                    outcome = Err(e.context(format!("evicting {key}")));
                    break;
                }
            }
            outcome.and_then(|()| controller.list()).map(Reply::Hot)
        }
        Request::HotList => controller.list().map(Reply::Hot),
    };
    result.unwrap_or_else(|e| Reply::Error(format!("{e:#}")))
}

/// Serves the admin socket at `path` until the task is dropped. A stale socket file from a
/// dead switch is replaced; a live one is an error (two switches would fight over the ports).
pub async fn serve(path: PathBuf, handle: Arc<Controller>) -> Result<()> {
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

/// Binds the socket readable and writable by its owner only (mode 0600, whatever the
/// umask): the admin socket changes the directory.
async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another switch already serves {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // The socket is created with the umask's mode: no one else may connect even before the
    // chmod below. (Start-up is the only time the daemon creates files on other threads'
    // behalf, so the process-wide umask is briefly ours.)
    // SAFETY: umask(2) cannot fail.
    let umask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(umask) };
    let listener = bound.with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(listener)
}

/// Whether a peer may use the admin socket: root, or the user the switch runs as.
fn peer_allowed(stream: &UnixStream) -> Result<()> {
    let peer = stream
        .peer_cred()
        .context("reading the peer's credentials")?;
    // SAFETY: getuid(2) cannot fail.
    let own = unsafe { libc::getuid() };
    ensure!(
        peer.uid() == 0 || peer.uid() == own,
        "user {} may not use the admin socket",
        peer.uid()
    );
    Ok(())
}

async fn serve_one(stream: UnixStream, handle: &Controller) -> Result<()> {
    if let Err(e) = peer_allowed(&stream) {
        tracing::warn!("admin connection refused: {e:#}");
        return Err(e);
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_LEN_MAX as u64);
    reader.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => answer(handle, &request).await,
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

/// Sends a request that answers with hot keys.
pub async fn hot(path: &Path, request: &Request) -> Result<Vec<HotKey>> {
    match self::request(path, request).await? {
        Reply::Hot(keys) => Ok(keys),
        Reply::Error(e) => bail!("switch: {e}"),
        Reply::Status(_) => bail!("unexpected reply from the switch"),
    }
}

/// Fetches the switch's status.
pub async fn status(path: &Path) -> Result<Status> {
    match request(path, &Request::Status).await? {
        Reply::Status(s) => Ok(s),
        Reply::Error(e) => bail!("switch: {e}"),
        Reply::Hot(_) => bail!("unexpected reply from the switch"),
    }
}

/// Whether a switch answers at `path` with its status, without a runtime: how the lab knows
/// that a switch it started forwards (the admin socket is served only once the program is
/// attached). Errors say why not.
pub fn probe(path: &Path, timeout: Duration) -> Result<Status> {
    use std::io::{BufRead, Read, Write};
    let stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("no switch answers at {}", path.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut bytes = serde_json::to_vec(&Request::Status)?;
    bytes.push(b'\n');
    (&stream).write_all(&bytes)?;
    let mut line = String::new();
    std::io::BufReader::new(&stream)
        .take(REQUEST_LEN_MAX as u64 * 64)
        .read_line(&mut line)?;
    match serde_json::from_str::<Reply>(&line).context("unreadable reply from the switch")? {
        Reply::Status(s) => Ok(s),
        Reply::Error(e) => bail!("switch: {e}"),
        Reply::Hot(_) => bail!("unexpected reply from the switch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Whatever the umask, the socket is its owner's only; a stale one is replaced and a live
    /// one refused.
    #[tokio::test]
    async fn the_socket_is_private_and_single() {
        let dir = std::env::temp_dir().join(format!("pegasus-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switch.sock");
        // SAFETY: umask(2) cannot fail; this test's thread is the only one creating files.
        let before = unsafe { libc::umask(0) };
        let listener = bind(&path).await;
        // SAFETY: as above.
        unsafe { libc::umask(before) };
        let listener = listener.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            bind(&path).await.is_err(),
            "a live socket is not taken over"
        );
        drop(listener);
        assert!(bind(&path).await.is_ok(), "a stale socket is replaced");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_peer_of_the_same_user_is_allowed() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(peer_allowed(&a).is_ok());
    }
}
