//! Fault injection for tests and experiments: a random share of the packets arriving at chosen
//! interfaces (in chosen namespaces) is dropped, by an XDP program (`fault_loss`), for as long
//! as the returned [`PacketLoss`] lives. (This kernel has no `netem`; and the switch's XDP
//! redirects bypass qdiscs anyway, so loss is injected where packets arrive.)

use super::netns;
use crate::switch::OBJECT;
use anyhow::{Context, Result, anyhow, ensure};
use aya::{
    EbpfLoader,
    maps::Array,
    programs::{Xdp, XdpMode},
};
use pegasus_common::switch as shared;
use std::{sync::mpsc, thread::JoinHandle};

/// Packets dropped at random while this lives; dropping it detaches the program everywhere.
pub struct PacketLoss {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PacketLoss {
    /// Drops `percent` % of the packets arriving at each `(namespace, interface)`.
    pub fn start(targets: &[(String, String)], percent: f64) -> Result<PacketLoss> {
        ensure!(
            (0.0..=100.0).contains(&percent),
            "loss is a percentage, not {percent}"
        );
        let per_million = (percent * 10_000.0).round() as u32;
        let targets = targets.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // A thread of its own: it enters each namespace to attach, and holds the links.
        let thread = std::thread::spawn(move || {
            let attached = (|| {
                let mut ebpf = EbpfLoader::new()
                    .load(OBJECT)
                    .context("loading the XDP object")?;
                let mut loss: Array<_, u32> = Array::try_from(
                    ebpf.map_mut(shared::MAP_FAULT_LOSS)
                        .context("no loss map in the object")?,
                )?;
                loss.set(0, per_million, 0)?;
                let program: &mut Xdp = ebpf
                    .program_mut(shared::PROGRAM_FAULT_LOSS)
                    .context("no loss program in the object")?
                    .try_into()?;
                program.load().context("verifying the loss program")?;
                for (ns, interface) in &targets {
                    netns::enter_current_thread(ns)?;
                    program
                        .attach(interface, XdpMode::Driver)
                        .with_context(|| format!("attaching loss to {interface} in {ns}"))?;
                }
                Ok(ebpf)
            })();
            match attached {
                Ok(ebpf) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(ebpf);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the loss thread died"))??;
        Ok(PacketLoss {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
