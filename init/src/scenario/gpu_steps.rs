//! GPU steps: VMs and bindings, fixed kernels and batch programs (with
//! their effect on the shadow), buffer objects, and the GPU server's
//! counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_protocol::interfaces::gpu::{
    BindView, CreateBo, CreateVm, DestroyVm, FaultLog, GpuStats, MapBo, ReadBo, Stats, Submit,
    Unbind, Wait, BIND_READ_ONLY,
};
use ipc_protocol::types::{JobStatus, KernelKind};

use super::exec::{StepError, StepResult};
use super::format::{JobExpect, Kernel, Step};
use super::memory::PAGE;
use super::shadow::compare;
use super::world::{Bo, Ctx, Target, Vm};

fn bad(msg: impl Into<String>) -> StepError {
    StepError::Scenario(msg.into())
}

pub fn vm_step(ctx: &Ctx, step: &Step) -> StepResult {
    match step {
        Step::Vm {
            name,
            mirror,
            client,
            gpu: on,
        } => {
            if ctx.world().vms.contains_key(name) {
                return Err(bad(format!("VM {name:?} exists")));
            }
            let gpu = ctx.gpu(*client, *on)?;
            let vm = gpu.call(CreateVm {})?.vm;
            if *mirror {
                for (view, addr) in ctx.world().views_of(*client) {
                    gpu.call(BindView {
                        vm,
                        view,
                        gpu_addr: addr,
                        flags: 0,
                    })?;
                }
            }
            ctx.world().vms.insert(
                name.clone(),
                Vm {
                    id: vm,
                    client: *client,
                    gpu: *on,
                    mirror: *mirror,
                },
            );
            Ok(())
        }
        Step::DestroyVm { vm } => {
            let v = ctx
                .world()
                .vms
                .remove(vm)
                .ok_or_else(|| bad(format!("no VM {vm:?}")))?;
            ctx.gpu(v.client, v.gpu)?.call(DestroyVm { vm: v.id })?;
            Ok(())
        }
        Step::Bind {
            vm,
            alloc,
            read_only,
        } => {
            let (vm, (client, on), view, addr) = {
                let w = ctx.world();
                let v = w.vm(vm)?;
                let a = w.alloc(alloc)?;
                let m = w
                    .mappings
                    .iter()
                    .find(|m| {
                        m.view.is_some()
                            && a.object.as_ref().is_some_and(|o| Arc::ptr_eq(o, &m.object))
                            && m.addr <= a.addr
                            && a.addr < m.addr + m.len
                    })
                    .ok_or_else(|| bad(format!("{alloc}: no view of ours maps it")))?;
                (v.id, (v.client, v.gpu), m.view.expect("filtered"), m.addr)
            };
            let flags = if *read_only { BIND_READ_ONLY } else { 0 };
            ctx.gpu(client, on)?.call(BindView {
                vm,
                view,
                gpu_addr: addr,
                flags,
            })?;
            Ok(())
        }
        Step::Unbind { vm, alloc } => {
            let (vm, client, addr) = {
                let w = ctx.world();
                let v = w.vm(vm)?;
                let a = w.alloc(alloc)?;
                let m = w
                    .mappings
                    .iter()
                    .find(|m| m.addr <= a.addr && a.addr < m.addr + m.len)
                    .map_or(a.addr, |m| m.addr);
                (v.id, (v.client, v.gpu), m)
            };
            ctx.gpu(client.0, client.1)?
                .call(Unbind { vm, gpu_addr: addr })?;
            Ok(())
        }
        _ => unreachable!("dispatched by op"),
    }
}

pub fn submit(ctx: &Ctx, step: &Step, label: &str, bound: Duration) -> StepResult {
    match step {
        Step::Gpu {
            vm,
            kernel,
            at,
            len,
            value,
            stride,
            threads,
            expect,
        } => {
            let (vm, (client, on), target) = {
                let w = ctx.world();
                let v = w.vm(vm)?;
                (
                    v.id,
                    (v.client, v.gpu),
                    w.resolve(at, len.map(|l| l.get()))?,
                )
            };
            let value = u32::try_from(value.get()).map_err(|_| bad("value: 32 bits"))?;
            let stride = stride.get();
            if target.is_empty()
                || !target.len().is_multiple_of(4)
                || !target.addr().is_multiple_of(4)
            {
                return Err(bad(format!("{}: a GPU range is whole words", at.name)));
            }
            if *kernel == Kernel::Store && (stride < 4 || !stride.is_multiple_of(4)) {
                return Err(bad("store: a stride of whole words"));
            }
            let gpu = ctx.gpu(client, on)?;
            let job = gpu
                .call(Submit {
                    vm,
                    kernel: kernel_kind(*kernel),
                    addr: target.addr(),
                    len: target.len(),
                    stride,
                    value,
                    threads: (*threads).max(1),
                })?
                .job;
            let timeout_ms = bound.as_millis().min(u32::MAX as u128) as u32;
            let done = gpu.call(Wait { job, timeout_ms })?;
            let ok = match (expect, done.status) {
                (JobExpect::Any, _) => true,
                (JobExpect::Completed, s) => s == JobStatus::Completed,
                (JobExpect::Faulted, s) => s == JobStatus::Faulted,
                (JobExpect::BadCommand, s) => s == JobStatus::BadCommand,
                (JobExpect::Hung, s) => s == JobStatus::Hung,
            };
            if done.status == JobStatus::Completed {
                apply(&target, *kernel, value, stride);
            }
            let detail = format!(
                "{kernel:?} over {}+{:#x} ({} bytes): {:?} after {} GPU faults, \
                 expected {expect:?}",
                at.name,
                at.offset,
                target.len(),
                done.status,
                done.faults
            );
            ctx.report.check(ok, label, &detail);
            if done.status == JobStatus::Running {
                return Err(StepError::Host(format!(
                    "the GPU job is still running: {detail}"
                )));
            }
            Ok(())
        }
        Step::Batch {
            vm,
            at,
            program,
            fence,
            fence_value,
            expect,
            wait,
            job,
        } => super::batch_steps::run(
            ctx,
            super::batch_steps::BatchStep {
                vm: vm.clone(),
                at: at.clone(),
                program: program.clone(),
                fence: fence.clone(),
                fence_value: fence_value.get(),
                expect: *expect,
            },
            (!*wait).then_some(job.as_deref()),
            label,
            bound,
        ),
        Step::WaitJob { job } => super::batch_steps::wait_job(ctx, job, bound),
        _ => unreachable!("dispatched by op"),
    }
}

fn kernel_kind(k: Kernel) -> KernelKind {
    match k {
        Kernel::Touch => KernelKind::TouchPages,
        Kernel::Inc => KernelKind::IncrementAll,
        Kernel::Store => KernelKind::StridedWrite,
        Kernel::AtomicAdd => KernelKind::AtomicAdd,
        Kernel::RandomRead => KernelKind::RandomRead,
        Kernel::Speculative => KernelKind::Speculative,
    }
}

/// What a completed kernel did to the words of `t`, in the shadow (the
/// device model's semantics: `hw/src/model/engines.rs`).
fn apply(t: &Target, kernel: Kernel, value: u32, stride: u64) {
    let (mut guard_o, mut guard_b);
    let (words, addr): (&mut [u32], u64) = match t {
        Target::Mem {
            object: Some(o),
            obj_off,
            len,
            addr,
            ..
        } => {
            guard_o = o.shadow();
            let w = (*obj_off / 4) as usize;
            (&mut guard_o[w..w + (*len / 4) as usize], *addr)
        }
        Target::Mem { object: None, .. } => return,
        Target::Bo {
            bo,
            off,
            len,
            gpu_addr,
        } => {
            guard_b = bo.shadow.lock().unwrap_or_else(|e| e.into_inner());
            let w = (*off / 4) as usize;
            (&mut guard_b[w..w + (*len / 4) as usize], *gpu_addr)
        }
    };
    match kernel {
        Kernel::Touch | Kernel::RandomRead | Kernel::Speculative => {}
        Kernel::Inc => words.iter_mut().for_each(|w| *w = w.wrapping_add(value)),
        Kernel::Store => {
            for i in (0..words.len()).step_by((stride / 4) as usize) {
                words[i] = value;
            }
        }
        Kernel::AtomicAdd => {
            // The first word of the range in each page it touches.
            let mut i = 0usize;
            while i < words.len() {
                words[i] = words[i].wrapping_add(value);
                let here = addr + 4 * i as u64;
                i += ((here / PAGE + 1) * PAGE - here) as usize / 4;
            }
        }
    }
}

pub fn bo_step(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    match step {
        Step::Bo {
            name,
            vm,
            size,
            gpu_addr,
        } => {
            let len = size.get();
            if len == 0 || !len.is_multiple_of(PAGE) || len > 1 << 30 {
                return Err(bad("a buffer object of whole pages, at most 1 GiB"));
            }
            let (vm, (client, on), addr) = {
                let mut w = ctx.world();
                let v = w.vm(vm)?;
                let (id, client) = (v.id, (v.client, v.gpu));
                let addr = match gpu_addr {
                    Some(a) => a.get(),
                    None => {
                        let a = w.next_bo_addr;
                        w.next_bo_addr += len.next_multiple_of(2 << 20);
                        a
                    }
                };
                (id, client, addr)
            };
            let gpu = ctx.gpu(client, on)?;
            let bo = gpu.call(CreateBo { size_bytes: len })?.bo;
            gpu.call(MapBo {
                vm,
                bo,
                gpu_addr: addr,
            })?;
            ctx.world().bos.insert(
                name.clone(),
                Arc::new(Bo {
                    id: bo,
                    client,
                    gpu: on,
                    gpu_addr: addr,
                    len,
                    shadow: Mutex::new(vec![0; (len / 4) as usize]),
                }),
            );
            Ok(())
        }
        Step::CheckBo { bo } => {
            let b = ctx
                .world()
                .bos
                .get(bo)
                .cloned()
                .ok_or_else(|| bad(format!("no buffer object {bo:?}")))?;
            let (data, mut fds) = ctx
                .gpu(b.client, b.gpu)?
                .call_with_handles(ReadBo { bo: b.id }, vec![])?;
            let fd = fds
                .pop()
                .ok_or_else(|| StepError::Host("ReadBo sent no memfd".into()))?;
            if data.size_bytes < b.len {
                return Err(StepError::Host(format!(
                    "ReadBo: {} bytes",
                    data.size_bytes
                )));
            }
            let addr = crate::client::map_aligned(&fd, b.len as usize, PAGE as usize)
                .map_err(|e| StepError::Host(format!("mmap: {e}")))?;
            let expect = b.shadow.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // SAFETY: a fresh mapping of `b.len` bytes, ours alone.
            let m = unsafe { compare(addr, &expect) };
            // SAFETY: as above, no reference into it remains.
            let _ = unsafe { super::memory::unmap(addr, b.len) };
            ctx.report.check(
                m.bad == 0,
                label,
                &format!("{bo}: {}", m.describe(expect.len())),
            );
            Ok(())
        }
        _ => unreachable!("dispatched by op"),
    }
}

/// The counters a `counters` step may name: cumulative ones compare the
/// change since the mark, the rest compare their value now.
const CUMULATIVE: [&str; 7] = [
    "gpu_faults",
    "prefetch_faults",
    "pages_to_vram",
    "pages_to_ram",
    "bo_evictions",
    "bo_restores",
    "invalidations",
];

fn counter(s: &GpuStats, name: &str) -> Option<u64> {
    Some(match name {
        "gpu_faults" => s.gpu_faults,
        "prefetch_faults" => s.prefetch_faults,
        "pages_to_vram" => s.pages_to_vram,
        "pages_to_ram" => s.pages_to_ram,
        "bo_evictions" => s.bo_evictions,
        "bo_restores" => s.bo_restores,
        "invalidations" => s.invalidations,
        "vram_used" => s.vram_used,
        "vram_total" => s.vram_total,
        "bo_vram_bytes" => s.bo_vram_bytes,
        other => return by_size(s, other),
    })
}

/// The per-page-size counters (`GpuStats::by_size`, all cumulative):
/// `FIELD_SIZE` (`to_vram_2m`, `to_ram_bytes_4k`, ...; sizes `4k`, `64k`,
/// `2m`) or `FIELD` summed over the sizes (`to_vram_bytes`). FIELD is one
/// of `to_vram`, `to_vram_bytes`, `to_vram_us`, `to_ram`, `to_ram_bytes`,
/// `to_ram_us`.
fn by_size(s: &GpuStats, name: &str) -> Option<u64> {
    let (field, size) = match name.rsplit_once('_') {
        Some((f, "4k")) => (f, Some(4096)),
        Some((f, "64k")) => (f, Some(65536)),
        Some((f, "2m")) => (f, Some(2 << 20)),
        _ => (name, None),
    };
    let get = |c: &ipc_protocol::interfaces::gpu::SizeStat| -> Option<u64> {
        Some(match field {
            "to_vram" => c.to_vram,
            "to_vram_bytes" => c.to_vram_bytes,
            "to_vram_us" => c.to_vram_us,
            "to_ram" => c.to_ram,
            "to_ram_bytes" => c.to_ram_bytes,
            "to_ram_us" => c.to_ram_us,
            _ => return None,
        })
    };
    let mut sum = 0u64;
    for c in s.by_size.as_slice() {
        let v = get(c)?;
        if size.is_none_or(|b| b == c.page_bytes) {
            sum = sum.saturating_add(v);
        }
    }
    get(s.by_size.as_slice().first()?).map(|_| sum)
}

/// `">= 512"` against `v`.
pub fn compare_counter(v: u64, expr: &str) -> Result<bool, StepError> {
    let e = expr.trim();
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some(rest) = e.strip_prefix(op) {
            let n = super::value::eval(rest).map_err(|e| bad(e.0))?;
            return Ok(match op {
                "==" => v == n,
                "!=" => v != n,
                ">=" => v >= n,
                "<=" => v <= n,
                ">" => v > n,
                _ => v < n,
            });
        }
    }
    Err(bad(format!(
        "{expr:?}: OP NUMBER, OP one of == != >= <= > <"
    )))
}

pub fn counters(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    let (Step::Mark { gpu, .. } | Step::Counters { gpu, .. }) = step else {
        unreachable!("dispatched by op")
    };
    let now = ctx.gpu(0, *gpu)?.call(Stats {})?;
    match step {
        Step::Mark { name, .. } => {
            ctx.world().marks.insert(name.clone(), now);
            Ok(())
        }
        Step::Counters { since, expect, .. } => {
            let base = {
                let w = ctx.world();
                let key = since.as_deref().unwrap_or("start");
                w.marks
                    .get(key)
                    .cloned()
                    .ok_or_else(|| bad(format!("no mark {key:?}")))?
            };
            let mut parts = Vec::new();
            let mut ok = true;
            for (name, expr) in expect {
                let (Some(n), Some(b)) = (counter(&now, name), counter(&base, name)) else {
                    return Err(bad(format!("no counter {name:?}")));
                };
                let v = if CUMULATIVE.contains(&name.as_str()) || by_size(&now, name).is_some() {
                    n.saturating_sub(b)
                } else {
                    n
                };
                let good = compare_counter(v, expr)?;
                ok &= good;
                parts.push(format!(
                    "{name}={v} ({expr}{})",
                    if good { "" } else { ": NO" }
                ));
            }
            ctx.report.check(ok, label, &parts.join(", "));
            Ok(())
        }
        _ => unreachable!("dispatched by op"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_target(words: usize, addr: u64) -> (Target, Arc<super::super::world::Object>) {
        let o = Arc::new(super::super::world::Object {
            id: ipc_protocol::types::ObjectId::raw(1),
            client: 0,
            memfd: rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::empty()).unwrap(),
            bytes: (words * 4) as u64,
            shadow: Mutex::new(vec![0; words]),
        });
        let t = Target::Mem {
            addr,
            len: (words * 4) as u64,
            object: Some(o.clone()),
            obj_off: 0,
            client: 0,
        };
        (t, o)
    }

    #[test]
    fn kernels_change_the_shadow_as_the_device_does() {
        let (t, o) = mem_target(2048, 0x20_0000);
        apply(&t, Kernel::Inc, 2, 4);
        assert!(o.shadow().iter().all(|w| *w == 2));
        apply(&t, Kernel::Store, 9, 4096);
        let s = o.shadow().clone();
        assert_eq!((s[0], s[1], s[1024]), (9, 2, 9));
        apply(&t, Kernel::Touch, 100, 4);
        assert_eq!(o.shadow()[5], 2);
        // An unaligned range: the first word of the range in each page.
        let (t, o) = mem_target(2048, 0x20_0000 + 0x800);
        apply(&t, Kernel::AtomicAdd, 1, 4);
        let s = o.shadow().clone();
        let hit: Vec<usize> = (0..2048).filter(|i| s[*i] == 1).collect();
        assert_eq!(hit, vec![0, 512, 1536]);
    }

    #[test]
    fn counter_comparisons() {
        assert!(compare_counter(512, ">= 512").unwrap());
        assert!(!compare_counter(511, ">=512").unwrap());
        assert!(compare_counter(0, "== 0").unwrap());
        assert!(compare_counter(3, "< 4K").unwrap());
        assert!(compare_counter(3, "about 3").is_err());
    }
}

/// `Gpu::FaultLog` of `vm`: at least `at_least` unserved faults, and at
/// most `at_most` in all when given.
pub fn fault_log(ctx: &Ctx, vm: &str, bounds: (u64, Option<u64>), label: &str) -> StepResult {
    let (at_least, at_most) = bounds;
    let (id, client) = {
        let w = ctx.world();
        let v = w.vm(vm)?;
        (v.id, (v.client, v.gpu))
    };
    let log = ctx.gpu(client.0, client.1)?.call(FaultLog { vm: id })?;
    let faults = log.faults.into_vec();
    let first = faults.first().map_or(String::from("none"), |f| {
        format!(
            "{:#x} (access {}, type {}, level {})",
            f.address, f.access, f.fault_type, f.level
        )
    });
    let most = at_most.map_or(String::new(), |m| format!(", at most {m}"));
    ctx.report.check(
        faults.len() as u64 >= at_least && at_most.is_none_or(|m| log.total <= m),
        label,
        &format!(
            "fault log of {vm}: {} entries ({} in all), first {first}; at least {at_least}{most}",
            faults.len(),
            log.total
        ),
    );
    Ok(())
}

/// `evacuate`: GPU `gpu` goes away; every page in its VRAM must come back.
pub fn evacuate(ctx: &Ctx, gpu: u8, label: &str) -> StepResult {
    use ipc_protocol::interfaces::pager_reclaim::Evacuate;
    let reclaim = ctx
        .clients
        .reclaim
        .as_ref()
        .ok_or_else(|| bad("evacuate: a system of several GPUs (`[device] gpus`)"))?;
    let gpu_id =
        ipc_protocol::types::GpuId::new(gpu).ok_or_else(|| bad("evacuate: GPU 0 to 15"))?;
    let r = reclaim
        .call(Evacuate { gpu: gpu_id })
        .map_err(|e| StepError::Host(format!("Evacuate: {e}")))?;
    ctx.report.check(
        r.left == 0,
        label,
        &format!(
            "GPU {gpu} evacuated: {} page(s) back in RAM, {} left",
            r.pages, r.left
        ),
    );
    Ok(())
}
