//! Several GPUs in one system (issue 17): devices 1.. beside the device
//! [`MANIFEST`] wires.
//!
//! Each device is a device model, a memory-pressure broker (mm-server) and
//! a GPU server of its own, joined by the manifest's rows between those
//! three and the pager and `init` (its control channel, `Pressure`,
//! `GpuShrink`, `PagerMigrate`, `GpuNotify`, `PagerReclaim`, and a `Gpu`
//! endpoint per client slot), with the same descriptors and flags as
//! device 0's. The pager takes one `--migrate-fd` and `--notify-fd` per
//! device, in device order, and each device's mm-server's `PagerReclaim`
//! as an `--extra-endpoint` ([`DEVICE_PAGER_FD`]): each mm-server keeps
//! its own device's VRAM and evicts that GPU's pages (`--gpu-id`).
//!
//! **Peer windows.** `init` makes every device's VRAM, a memfd it hands
//! to the device model ([`VRAM_FD`]) and to every other device's GPU server
//! ([`PEER_VRAM_FD`]): the stand-in for PCIe peer-to-peer BARs, through
//! which a GPU server's copy engine pushes pages to a peer.
//!
//! **Restarts.** Under `Supervision::Restart` a device's GPU server and
//! mm-server are restarted as device 0's are: the device model outlives
//! its driver (its attach channel takes each generation's control
//! socket), and the GPU server keeps a journal of its own, so its next
//! generation takes over the pages the pager records in its VRAM.

use std::os::fd::{AsFd, OwnedFd};

use crate::manifest::{
    Endpoint, DEVICES_RECLAIM_BADGE, DEVICES_RECLAIM_FD, DEVICE_MODELS, DEVICE_PAGER_FD,
    DEVICE_RECLAIM_BADGE, GPU_SERVERS, MANIFEST, MAX_GPUS, MM_SERVERS, PEER_VRAM_FD, VRAM_FD,
};
use crate::process::Recipe;
use crate::supervisor::{
    give_journal, restarted, server_args, wire_row, Attach, BootError, BootOptions,
};

/// The processes of a device, in start order.
const DEVICE_SIDES: [&str; 3] = ["xe-model", "mm-server", "xe-svm"];

/// One device past the first: its endpoints' ends, by manifest row.
struct Device {
    /// (manifest row, its (server end, client end) pairs).
    ends: Vec<(&'static Endpoint, Vec<(OwnedFd, OwnedFd)>)>,
}

/// Devices 1.. of a system and every device's VRAM.
pub struct Devices {
    vram_bytes: u64,
    /// Device `d`'s VRAM memfd.
    vram: Vec<OwnedFd>,
    more: Vec<Device>,
    /// `init`'s `PagerReclaim` endpoint (pager's end, ours), to evacuate
    /// a device that goes away (`PagerReclaim::Evacuate`).
    reclaim: Option<(OwnedFd, OwnedFd)>,
}

/// Whether row `e` joins a device to the pager or `init` (or to itself).
fn per_device(e: &Endpoint) -> bool {
    let device = |p: &str| DEVICE_SIDES.contains(&p);
    let other = |p: Option<&str>| p.is_none_or(|p| device(p) || p == "pager");
    let client = e.client.as_ref().map(|c| c.process);
    (device(e.server.process) && other(client))
        || (client.is_some_and(device) && other(Some(e.server.process)))
}

fn err(what: &str, e: impl std::fmt::Display) -> BootError {
    BootError::Endpoint(format!("{what}: {e}"))
}

/// A memfd of `bytes` for device `d`'s VRAM.
fn vram_memfd(d: usize, bytes: u64) -> Result<OwnedFd, BootError> {
    use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
    let fd = memfd_create(format!("xe-vram{d}"), MemfdFlags::CLOEXEC)
        .map_err(|e| err("device VRAM", e))?;
    ftruncate(&fd, bytes).map_err(|e| err("device VRAM", e))?;
    Ok(fd)
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, BootError> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| err("duplicating an endpoint", e))
}

fn pair() -> Result<(OwnedFd, OwnedFd), BootError> {
    use ipc_protocol::transport::SeqPacket;
    let (a, b) = SeqPacket::pair().map_err(|e| err("an endpoint", e))?;
    let end = |s: &SeqPacket| s.fd().as_fd().try_clone_to_owned();
    Ok((
        end(&a).map_err(|e| err("an endpoint", e))?,
        end(&b).map_err(|e| err("an endpoint", e))?,
    ))
}

/// The pager's descriptor for row `e` of device `d` (1..).
fn pager_fd(e: &Endpoint, d: usize) -> i32 {
    let k = match e.interface {
        "PagerMigrate" => 0,
        "GpuNotify" => 1,
        _ => 2,
    };
    DEVICE_PAGER_FD + 3 * d as i32 + k
}

/// The pager's flag for row `e` of device `d`: the row's own, but
/// `PagerReclaim` (the pager takes one `--reclaim-fd`, device 0's) comes
/// as one more endpoint.
fn pager_flag(e: &Endpoint, flag: &str, d: usize) -> String {
    let fd = pager_fd(e, d);
    if e.interface != "PagerReclaim" {
        return format!("{flag}={fd}");
    }
    let extra = ipc_protocol::transport::ExtraEndpoint {
        interface: "PagerReclaim".into(),
        fd,
        badge: DEVICE_RECLAIM_BADGE + d as u64,
        rights: e.rights,
    };
    format!("--extra-endpoint={extra}")
}

impl Devices {
    /// The devices of a boot with `opts.gpus` GPUs and `clients` client
    /// slots; none for one GPU.
    pub fn new(opts: &BootOptions, clients: usize) -> Result<Option<Self>, BootError> {
        let gpus = usize::from(opts.gpus.max(1));
        if gpus == 1 || opts.probe_only {
            return Ok(None);
        }
        if gpus > MAX_GPUS {
            return Err(err("--gpus", format!("at most {MAX_GPUS}")));
        }
        let vram_bytes = opts.device.vram_bytes;
        let vram = (0..gpus)
            .map(|d| vram_memfd(d, vram_bytes))
            .collect::<Result<_, _>>()?;
        let mut more = Vec::new();
        for _ in 1..gpus {
            let mut ends = Vec::new();
            for e in MANIFEST.iter().filter(|e| per_device(e)) {
                let n = if e.per_client { clients } else { 1 };
                ends.push((e, (0..n).map(|_| pair()).collect::<Result<_, _>>()?));
            }
            more.push(Device { ends });
        }
        Ok(Some(Self {
            vram_bytes,
            vram,
            more,
            reclaim: Some(pair()?),
        }))
    }

    /// Device 0's model gets its VRAM.
    pub fn give_model0(
        &self,
        fds: &mut Vec<(OwnedFd, i32)>,
        args: &mut Vec<String>,
    ) -> Result<(), BootError> {
        fds.push((dup(&self.vram[0])?, VRAM_FD));
        args.push(format!("--vram-fd={VRAM_FD}"));
        Ok(())
    }

    /// GPU server `d` gets the other devices' VRAM as its peer windows.
    pub fn give_peers(
        &self,
        d: usize,
        fds: &mut Vec<(OwnedFd, i32)>,
        args: &mut Vec<String>,
    ) -> Result<(), BootError> {
        for (peer, vram) in self.vram.iter().enumerate().filter(|(p, _)| *p != d) {
            let fd = PEER_VRAM_FD + peer as i32;
            fds.push((dup(vram)?, fd));
            args.push(format!("--peer-vram={peer}:{fd}:{}", self.vram_bytes));
        }
        Ok(())
    }

    /// The pager gets devices 1..'s `PagerMigrate` and `GpuNotify` ends,
    /// one `--migrate-fd` and `--notify-fd` each, in device order, and
    /// `init`'s `PagerReclaim` endpoint.
    pub fn give_pager(
        &self,
        fds: &mut Vec<(OwnedFd, i32)>,
        args: &mut Vec<String>,
    ) -> Result<(), BootError> {
        if let Some((pager, _)) = &self.reclaim {
            let e = ipc_protocol::transport::ExtraEndpoint {
                interface: "PagerReclaim".into(),
                fd: DEVICES_RECLAIM_FD,
                badge: DEVICES_RECLAIM_BADGE,
                rights: ipc_protocol::Rights::RECLAIM,
            };
            fds.push((dup(pager)?, DEVICES_RECLAIM_FD));
            args.push(format!("--extra-endpoint={e}"));
        }
        for (i, dev) in self.more.iter().enumerate() {
            for (e, pairs) in &dev.ends {
                let (Some((server, client)), d) = (pairs.first(), i + 1) else {
                    continue;
                };
                if e.server.process == "pager" {
                    fds.push((dup(server)?, pager_fd(e, d)));
                    args.push(pager_flag(e, e.server.flag, d));
                } else if let Some(c) = e.client.as_ref().filter(|c| c.process == "pager") {
                    fds.push((dup(client)?, pager_fd(e, d)));
                    args.push(pager_flag(e, c.flag, d));
                }
            }
        }
        Ok(())
    }

    /// The recipes of device `d`'s (1..) model, mm-server and GPU server,
    /// in start order: the manifest's descriptors and flags for each, plus
    /// its VRAM (model), its GPU (mm-server, server) and its peer windows
    /// (server).
    pub fn recipes(&self, d: usize, opts: &BootOptions) -> Result<Vec<Recipe>, BootError> {
        let dev = &self.more[d - 1];
        // The device outlives a GPU server that is restarted.
        let mut attach = Attach::new(opts)?;
        let mut out = Vec::new();
        for process in DEVICE_SIDES {
            let mut fds: Vec<(OwnedFd, i32)> = Vec::new();
            let mut args = server_args(process, opts);
            if process != "xe-model" {
                args.push(format!("--gpu-id={d}"));
            }
            for (e, pairs) in &dev.ends {
                wire_row(e, pairs, process, &mut fds, &mut args)?;
            }
            match process {
                "xe-model" => {
                    fds.push((dup(&self.vram[d])?, VRAM_FD));
                    args.push(format!("--vram-fd={VRAM_FD}"));
                    attach.give_device(&mut fds, &mut args);
                }
                "xe-svm" => {
                    self.give_peers(d, &mut fds, &mut args)?;
                    if restarted(opts, process) {
                        give_journal(process, &mut fds, &mut args)?;
                    }
                }
                _ => {}
            }
            out.push(Recipe {
                exe: crate::supervisor::exe(process)?,
                args,
                fds,
                lifeline: process != "xe-model",
                restartable: restarted(opts, process),
                stdout_to_stderr: opts.stdout_to_stderr,
                device: match process {
                    "xe-svm" => attach.kept.take(),
                    _ => None,
                },
                keeper: None,
                ready_deadline: crate::supervisor::ready_deadline(process, opts),
            });
        }
        Ok(out)
    }

    /// `init`'s end of its `PagerReclaim` endpoint (once).
    pub fn take_reclaim(&mut self) -> Option<OwnedFd> {
        self.reclaim.take().map(|(_, ours)| ours)
    }

    /// Devices past the first.
    pub fn more(&self) -> usize {
        self.more.len()
    }

    /// The processes of device `d`, in the order of [`Self::recipes`].
    pub fn names(d: usize) -> [&'static str; 3] {
        [DEVICE_MODELS[d], MM_SERVERS[d], GPU_SERVERS[d]]
    }

    /// The `Gpu` ends `init` keeps, by client slot: devices 1..'s, in
    /// device order.
    pub fn client_gpus(&mut self, clients: usize) -> Vec<Vec<OwnedFd>> {
        let mut by_slot: Vec<Vec<OwnedFd>> = (0..clients).map(|_| Vec::new()).collect();
        for dev in &mut self.more {
            for (e, pairs) in &mut dev.ends {
                if e.interface != "Gpu" || e.client.is_some() {
                    continue;
                }
                for (slot, (_, client)) in std::mem::take(pairs).into_iter().enumerate() {
                    if let Some(s) = by_slot.get_mut(slot) {
                        s.push(client);
                    }
                }
            }
        }
        by_slot
    }
}
