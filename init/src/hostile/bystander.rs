//! What the victim holds while the hostile client runs, so the hostile
//! client has real ids of another client to forge: an SVM buffer with a
//! known pattern, a VM it is bound in, a buffer object mapped there, and a
//! job that ran on it. After the hostile client is gone every word of both
//! must be as the victim left it.

use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{
    BindView, CreateBo, CreateVm, DestroyBo, DestroyVm, MapBo, ReadBo, Unbind,
};
use ipc_protocol::types::{BoId, JobId, JobStatus, KernelKind, ObjectId, ViewId, VmId};

use crate::client::{run_kernel, SvmBuffer};
use crate::supervisor::Clients;

/// The victim's ids, as handed to the hostile client.
#[derive(Debug, Clone, Copy)]
pub struct Bystander {
    pub object: ObjectId,
    pub view: ViewId,
    pub addr: u64,
    pub vm: VmId,
    pub bo: BoId,
    pub job: JobId,
}

const PAGES: usize = 16;
const BO_BYTES: u64 = 64 << 10;
const BO_ADDR: u64 = 1 << 40;
/// What the job adds to every word of the buffer object.
const BO_VALUE: u32 = 7;

fn pattern(i: usize) -> u32 {
    0xb5b5_0000 ^ i as u32
}

/// The victim's resources and their ids.
pub struct Held {
    pub ids: Bystander,
    buffer: SvmBuffer,
}

fn gpu<E: std::fmt::Debug>(what: &str) -> impl Fn(CallError<E>) -> String + '_ {
    move |e| format!("the victim's {what}: {e}")
}

impl Held {
    pub fn new(c: &Clients) -> Result<Self, String> {
        let buffer = SvmBuffer::new(&c.pager, PAGES * 4096).map_err(gpu("buffer"))?;
        // SAFETY: our buffer; no one else writes it (the hostile client
        // may only try).
        let words = unsafe { buffer.words() };
        for (i, w) in words.iter_mut().enumerate() {
            *w = pattern(i);
        }
        let vm = c.gpu.call(CreateVm {}).map_err(gpu("VM"))?.vm;
        let bind = BindView {
            vm,
            view: buffer.view,
            gpu_addr: buffer.addr,
            flags: 0,
        };
        c.gpu.call(bind).map_err(gpu("binding"))?;
        let bo = c
            .gpu
            .call(CreateBo {
                size_bytes: BO_BYTES,
            })
            .map_err(gpu("buffer object"))?
            .bo;
        let map = MapBo {
            vm,
            bo,
            gpu_addr: BO_ADDR,
        };
        c.gpu.call(map).map_err(gpu("MapBo"))?;
        let job = c
            .gpu
            .call(ipc_protocol::interfaces::gpu::Submit {
                vm,
                kernel: KernelKind::IncrementAll,
                addr: BO_ADDR,
                len: BO_BYTES,
                stride: 4,
                value: BO_VALUE,
                threads: 8,
            })
            .map_err(gpu("job"))?
            .job;
        let done = c
            .gpu
            .call(ipc_protocol::interfaces::gpu::Wait {
                job,
                timeout_ms: 60_000,
            })
            .map_err(gpu("job"))?;
        if done.status != JobStatus::Completed {
            return Err(format!("the victim's job ended {:?}", done.status));
        }
        let ids = Bystander {
            object: buffer.object,
            view: buffer.view,
            addr: buffer.addr,
            vm,
            bo,
            job,
        };
        Ok(Self { ids, buffer })
    }

    /// Counts the words that are not as the victim left them (the SVM
    /// buffer on the CPU, then after a GPU pass, and the buffer object).
    pub fn check(&self, c: &Clients) -> Result<u64, String> {
        // SAFETY: our buffer; the GPU job below is waited for before reading.
        let words = unsafe { self.buffer.words() };
        let mut bad = (0..words.len())
            .filter(|&i| {
                // SAFETY: inside the buffer.
                unsafe { std::ptr::read_volatile(words.as_ptr().add(i)) != pattern(i) }
            })
            .count() as u64;
        let b = &self.ids;
        let done = run_kernel(
            &c.gpu,
            b.vm,
            KernelKind::IncrementAll,
            b.addr,
            words.len() as u64 * 4,
            1,
        )
        .map_err(gpu("check job"))?;
        if done.status != JobStatus::Completed {
            return Err(format!("the victim's check job ended {:?}", done.status));
        }
        bad += (0..words.len())
            .filter(|&i| {
                // SAFETY: inside the buffer; the job is done.
                let w = unsafe { std::ptr::read_volatile(words.as_ptr().add(i)) };
                w != pattern(i).wrapping_add(1)
            })
            .count() as u64;
        // Back to the pattern for a later check.
        for (i, w) in words.iter_mut().enumerate() {
            *w = pattern(i);
        }
        bad += self.bad_bo_words(c)?;
        Ok(bad)
    }

    fn bad_bo_words(&self, c: &Clients) -> Result<u64, String> {
        let (data, mut fds) = c
            .gpu
            .call_with_handles(ReadBo { bo: self.ids.bo }, vec![])
            .map_err(gpu("ReadBo"))?;
        let fd = fds.pop().ok_or("ReadBo sent no memfd")?;
        let len = usize::try_from(data.size_bytes).map_err(|_| "ReadBo: a size past usize")?;
        let region = hw::shm::Region::map(fd, len).map_err(|e| format!("ReadBo's memfd: {e}"))?;
        let mut buf = vec![0u8; len];
        if !region.read(0, &mut buf) {
            return Err("ReadBo's memfd is too short".into());
        }
        Ok(buf
            .chunks_exact(4)
            .filter(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) != BO_VALUE)
            .count() as u64
            + (len as u64).abs_diff(BO_BYTES) / 4)
    }

    /// Gives everything back.
    pub fn release(self, c: &Clients) -> Result<(), String> {
        let b = self.ids;
        c.gpu
            .call(Unbind {
                vm: b.vm,
                gpu_addr: b.addr,
            })
            .map_err(gpu("Unbind"))?;
        c.gpu
            .call(DestroyBo { bo: b.bo })
            .map_err(gpu("DestroyBo"))?;
        c.gpu
            .call(DestroyVm { vm: b.vm })
            .map_err(gpu("DestroyVm"))?;
        self.buffer.release(&c.pager).map_err(gpu("buffer release"))
    }
}
