//! The hostile client's side of its endpoints: typed calls and raw frames,
//! each judged and counted ([`super::outcome`]), and the memory it maps.

use std::os::fd::OwnedFd;
use std::time::Duration;

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::Gpu;
use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::{Call, Interface};

use super::outcome::{judge, judge_raw, Expect, Tally};
use super::rng::Rng;
use super::Bystander;

/// How long the hostile client waits for any answer: a server that takes
/// longer is stuck (a violation), never waited on forever.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The hostile client: its endpoints, its randomness, what it got so far,
/// and the victim's ids it was handed to forge.
pub struct Hostile {
    pub pager: Client<Pager>,
    pub gpu: Client<Gpu>,
    pub rng: Rng,
    pub tally: Tally,
    pub victim: Bystander,
    /// Raw frames sent (of the run's `--frames` goal).
    pub frames: u64,
}

impl Hostile {
    pub fn new(pager: Client<Pager>, gpu: Client<Gpu>, seed: u64, victim: Bystander) -> Self {
        Self {
            pager,
            gpu,
            rng: Rng::new(seed),
            tally: Tally::default(),
            victim,
            frames: 0,
        }
    }

    /// A typed `Pager` call, judged; the reply when served.
    pub fn pager<C: Call<Interface = Pager> + Clone>(
        &mut self,
        expect: Expect,
        req: C,
    ) -> Option<C::Reply> {
        self.pager_with(expect, req, Vec::new()).map(|(r, _)| r)
    }

    pub fn pager_with<C: Call<Interface = Pager> + Clone>(
        &mut self,
        expect: Expect,
        req: C,
        handles: Vec<OwnedFd>,
    ) -> Option<(C::Reply, Vec<OwnedFd>)> {
        let r = self.pager.call_with_handles(req, handles);
        self.tally.add(judge(Pager::NAME, C::NAME, expect, &r));
        r.ok()
    }

    /// A typed `Gpu` call, judged; the reply when served.
    pub fn gpu<C: Call<Interface = Gpu> + Clone>(
        &mut self,
        expect: Expect,
        req: C,
    ) -> Option<C::Reply> {
        self.gpu_with(expect, req).map(|(r, _)| r)
    }

    pub fn gpu_with<C: Call<Interface = Gpu> + Clone>(
        &mut self,
        expect: Expect,
        req: C,
    ) -> Option<(C::Reply, Vec<OwnedFd>)> {
        let r = self.gpu.call_with_handles(req, Vec::new());
        self.tally.add(judge(Gpu::NAME, C::NAME, expect, &r));
        r.ok()
    }

    /// Sends `frame` raw on the `Pager` endpoint (`gpu`: the `Gpu` one)
    /// and judges the answer. The request id is written where the header
    /// keeps it; a frame too short to hold one is answered as id 0.
    pub fn raw(&mut self, gpu: bool, mut frame: Vec<u8>, handles: Vec<OwnedFd>) {
        self.frames += 1;
        let id = if frame.len() >= 24 {
            let id = if gpu {
                self.gpu.next_request_id()
            } else {
                self.pager.next_request_id()
            };
            frame[16..24].copy_from_slice(&id.to_le_bytes());
            id
        } else {
            0
        };
        let outcome = if gpu {
            judge_raw::<Gpu>("raw", &self.gpu.call_raw(id, &frame, handles))
        } else {
            judge_raw::<Pager>("raw", &self.pager.call_raw(id, &frame, handles))
        };
        self.tally.add(outcome);
    }

    /// Sends `frame` and does not wait: a notification or control frame,
    /// which no server answers.
    pub fn one_way(&mut self, gpu: bool, frame: &[u8]) {
        self.frames += 1;
        let t = if gpu {
            self.gpu.transport().clone()
        } else {
            self.pager.transport().clone()
        };
        let r = t.send(frame, Vec::new());
        self.tally.one_way(r.is_ok());
    }
}

/// A descriptor that is not a userfaultfd (an empty memfd).
pub fn not_a_uffd() -> Option<OwnedFd> {
    rustix::fs::memfd_create("hostile-not-uffd", rustix::fs::MemfdFlags::CLOEXEC).ok()
}

/// A fresh userfaultfd of this process.
pub fn uffd() -> Option<OwnedFd> {
    crate::client::pager_uffd().ok()
}

/// A page count known to be in range when this compiles.
pub const fn pages(n: u16) -> ipc_protocol::types::PageCount {
    match ipc_protocol::types::PageCount::new(n) {
        Some(c) => c,
        None => panic!("a page count of 1 to 512"),
    }
}

/// GPU 0.
pub const GPU0: ipc_protocol::types::GpuId = match ipc_protocol::types::GpuId::new(0) {
    Some(g) => g,
    None => panic!("0 is a GPU id"),
};
