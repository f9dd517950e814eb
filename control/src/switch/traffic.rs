//! The two ends of `pegasus switch capacity`, programs of the switch's object that are not
//! the switch: a generator that sends frames from inside the kernel (a test run with live
//! frames) and a sink that counts and drops what arrives.

use super::{Switch, shared};
use anyhow::{Context, Result, ensure};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use std::time::{Duration, Instant};

/// Frames the kernel sends per batch of a live-frames test run (its own default).
const GENERATOR_BATCH: u32 = 64;

impl Switch {
    /// Loads the traffic generator (not attached anywhere) and points it at the port `to`,
    /// an interface index of the namespace [`Self::generate`] will run in.
    pub fn load_traffic_generator(&mut self, to: u32) -> Result<()> {
        self.load_extra(shared::PROGRAM_TRAFFIC_GENERATOR)?;
        let mut port: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(shared::MAP_GENERATOR_PORT)?)?;
        port.set(0, to, 0)?;
        Ok(())
    }

    /// Sends `count` copies of `frame` out of the generator's port, from the calling thread
    /// (in its network namespace, on its CPU), as fast as the kernel can; returns the time it
    /// took. Frames the port cannot take (its peer's queue full) are lost there.
    pub fn generate(&self, frame: &[u8], count: u32) -> Result<Duration> {
        ensure!(count > 0, "generate at least one frame");
        let program: &Xdp = self
            .ebpf
            .program(shared::PROGRAM_TRAFFIC_GENERATOR)
            .context("the object has no traffic generator")?
            .try_into()?;
        let started = Instant::now();
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(GENERATOR_BATCH),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN with live frames failed (kernel >= 5.18?)")?;
        Ok(started.elapsed())
    }

    /// Attaches the traffic sink to `interface` of the calling thread's namespace (native
    /// mode) until the switch is dropped: every frame arriving there is counted and dropped.
    pub fn attach_traffic_sink(&mut self, interface: &str) -> Result<()> {
        // The link stays with the program, which the object detaches when it is dropped.
        let _link = self.attach_extra(shared::PROGRAM_TRAFFIC_SINK, interface)?;
        Ok(())
    }

    /// Frames the traffic sink has taken so far, summed over CPUs.
    pub fn traffic_sink_count(&self) -> Result<u64> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(shared::MAP_SINK_COUNT)?)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }
}
