//! Network-namespace helpers: running `ip`/`ethtool`/`sysctl` commands, and moving the current
//! thread into a named namespace (for tests that run the XDP program where a FIB exists).

use anyhow::{Context, Result, bail};
use std::{fs::File, os::fd::AsRawFd, process::Command};

/// Runs a command to completion; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Sets a permanent neighbour entry in namespace `ns`: `addr` is at `mac` on `dev`.
pub fn set_neighbour(ns: &str, addr: &str, mac: &str, dev: &str) -> Result<()> {
    ip(&[
        "-n",
        ns,
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

/// Runs a command inside namespace `ns`.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    ip(&full)
}

/// Names of every network namespace on the host.
pub fn list() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Creates a namespace with its loopback up.
pub fn add(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a namespace; a missing one is not an error.
pub fn delete(ns: &str) -> Result<()> {
    if list()?.iter().any(|n| n == ns) {
        ip(&["netns", "delete", ns])?;
    }
    Ok(())
}

/// Moves the *calling thread* into namespace `ns` (setns(2) on /run/netns/NS). Other threads
/// are not affected; a thread that entered a namespace should not return to a pool.
pub fn enter_current_thread(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// True when running as root (the lab and the switch need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Deletes `pgt-TAG-PID-N` namespaces whose process PID no longer runs.
fn remove_orphans() -> Result<()> {
    for ns in list()? {
        let pid = ns
            .strip_prefix("pgt-")
            .and_then(|rest| rest.rsplit('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            tracing::info!(namespace = %ns, "removing a test namespace left by process {pid}");
            delete(&ns)?;
        }
    }
    Ok(())
}

/// A namespace with a unique name that is deleted when dropped, also when a test panics.
/// Names are `pgt-TAG-PID-N`, so parallel tests and processes never collide.
pub struct ScopedNetns {
    name: String,
}

impl ScopedNetns {
    /// Creates `pgt-TAG-PID-N` with its loopback up. First removes any `pgt-*` namespace
    /// whose process is gone (killed before it could clean up).
    pub fn new(tag: &str) -> Result<ScopedNetns> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_orphans()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pgt-{tag}-{}-{n}", std::process::id());
        add(&name)?;
        Ok(ScopedNetns { name })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScopedNetns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("warning: could not delete namespace {}: {e:#}", self.name);
        }
    }
}
