//! Tools for testing and measuring the XDP program on synthetic packets (feature `testkit`):
//! a frame builder ([`packet`]), a namespace with known forwarding answers ([`testbed`]), the
//! helpers the fixture tests share ([`fixtures`]), the program's pipeline in plain Rust that
//! the differential test compares it with ([`reference`]), and the per-packet cost of each
//! path against the minimal programs measured in the same run ([`cost`]), and the forwarding
//! capacity of the XDP programs against the kernel's on veth ports ([`capacity`]).

pub mod capacity;
pub mod cost;
pub mod fixtures;
pub mod packet;
pub mod reference;
pub mod testbed;

/// Pins the calling thread to `cpu` (a test run measures on the CPU it is called from).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    pin_thread(0, cpu)
}

/// Pins the thread `tid` (0: the calling one; else another process's or a kernel thread) to
/// `cpu`.
pub(crate) fn pin_thread(tid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        anyhow::ensure!(
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0,
            "pinning thread {tid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The median of a benchmark's rounds (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "at least one round");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity(0) fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        anyhow::ensure!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}
