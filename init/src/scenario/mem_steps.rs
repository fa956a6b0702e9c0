//! Memory steps: allocate and free, change views (mremap, munmap,
//! mprotect), placement (advise, prefetch, snapshot), checks and probes.

use std::sync::{Arc, Mutex};

use ipc_protocol::interfaces::gpu::{
    BindView, Prefetch as GpuPrefetch, Protect, PROT_READ, PROT_WRITE,
};
use ipc_protocol::interfaces::pager::{
    Advise, AttachView, CreateObject, DestroyObject, DetachView, Discard, FindView, PagerError,
    Prefetch, Snapshot, SyncViews,
};
use ipc_protocol::types::{Advice, GpuId, Location, PageCount, PageStateCode, ViewId};

use super::exec::{StepError, StepResult};
use super::format::{AdviceKind, AllocKind, Fill, Place, ProbeExpect, Prot, Step};
use super::heap::Heap;
use super::memory::{self, PAGE};
use super::shadow::{compare, fill_value, Mismatch};
use super::value::Addr;
use super::world::{Alloc, Ctx, HeapState, Mapping, Object, Target, World};
use crate::client::{map_aligned, pager_uffd};

fn bad(msg: impl Into<String>) -> StepError {
    StepError::Scenario(msg.into())
}

/// Largest allocation a scenario may make (the machine has 24 GiB).
const MAX_ALLOC: u64 = 4 << 30;

pub fn alloc_or_free(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    match step {
        Step::Alloc {
            name,
            size,
            kind,
            align,
            fill,
            client,
            reuses,
            object_size,
        } => {
            if ctx.world().allocs.get(name).is_some_and(|a| !a.freed) {
                return Err(bad(format!("allocation {name:?} exists")));
            }
            let size = size.get();
            if size == 0 || size > MAX_ALLOC || !size.is_multiple_of(4) {
                return Err(bad(format!("size {size}: 4 bytes to 4 GiB, whole words")));
            }
            let a = match kind {
                AllocKind::Object => {
                    let object = object_size.map_or(size, |o| o.get());
                    if object < size || object > MAX_ALLOC {
                        return Err(bad(format!("object_size {object}: size to 4 GiB")));
                    }
                    let align = align.map(|a| a.get());
                    new_object_alloc(ctx, *client, size, object, align)?
                }
                _ if object_size.is_some() => {
                    return Err(bad("object_size: object allocations only"));
                }
                AllocKind::Malloc => malloc(ctx, *client, size, align.map_or(16, |a| a.get()))?,
                AllocKind::Reserve => {
                    let len = size.next_multiple_of(PAGE);
                    let addr = memory::reserve(len, align.map_or(2 << 20, |a| a.get()))
                        .map_err(StepError::Host)?;
                    ctx.world().reserved.push((addr, len));
                    Alloc {
                        kind: AllocKind::Reserve,
                        client: *client,
                        addr,
                        len: size,
                        object: None,
                        obj_off: 0,
                        holes: vec![],
                        freed: false,
                    }
                }
            };
            if let Some(old) = reuses {
                let w = ctx.world();
                let o = w.alloc(old)?;
                let same = o.freed && o.addr == a.addr;
                let detail = format!("{name} at {:#x}, {old} was at {:#x}", a.addr, o.addr);
                drop(w);
                ctx.report.check(
                    same,
                    label,
                    &format!("the heap handed {old}'s memory out again: {detail}"),
                );
            }
            write_fill(&a, *fill);
            ctx.world().allocs.insert(name.clone(), a);
            Ok(())
        }
        Step::Free { alloc } => free(ctx, alloc),
        _ => unreachable!("dispatched by op"),
    }
}

/// A pager object of `bytes` (rounded up to pages) for `client`.
fn create_object(ctx: &Ctx, client: usize, bytes: u64) -> Result<Arc<Object>, StepError> {
    let bytes = bytes.next_multiple_of(PAGE);
    let (created, mut fds) = ctx
        .conn(client)?
        .pager
        .call_with_handles(CreateObject { size_bytes: bytes }, vec![])?;
    let memfd = fds
        .pop()
        .ok_or_else(|| StepError::Host("CreateObject sent no memfd".into()))?;
    let o = Arc::new(Object {
        id: created.object,
        client,
        memfd,
        bytes,
        shadow: Mutex::new(vec![0; (bytes / 4) as usize]),
    });
    ctx.world().objects.push(o.clone());
    Ok(o)
}

/// Maps all of `o` and attaches it as a view; binds it in the client's
/// mirror VMs.
fn map_and_attach(ctx: &Ctx, o: &Arc<Object>, len: u64, align: u64) -> Result<u64, StepError> {
    if !align.is_power_of_two() || align < PAGE {
        return Err(bad(format!("align {align}: a power of two, at least 4K")));
    }
    let len = len.next_multiple_of(PAGE);
    let addr = map_aligned(&o.memfd, len as usize, align as usize)
        .map_err(|e| StepError::Host(format!("mmap: {e}")))?;
    let uffd = pager_uffd().map_err(|e| StepError::Host(format!("userfaultfd: {e}")))?;
    let (attached, _) = ctx.conn(o.client)?.pager.call_with_handles(
        AttachView {
            object: o.id,
            addr,
            object_first_page: 0,
            pages: len / PAGE,
        },
        vec![uffd],
    )?;
    ctx.world().mappings.push(Mapping {
        addr,
        len,
        object: o.clone(),
        obj_off: 0,
        view: Some(attached.view),
    });
    bind_in_mirrors(ctx, o.client, attached.view, addr)?;
    Ok(addr)
}

/// Binds a new view in every mirror VM of `client` (IGT's CPU_ADDR_MIRROR).
pub fn bind_in_mirrors(ctx: &Ctx, client: usize, view: ViewId, addr: u64) -> StepResult {
    let vms: Vec<_> = ctx
        .world()
        .vms
        .values()
        .filter(|v| v.mirror && v.client == client)
        .map(|v| (v.id, v.gpu))
        .collect();
    for (vm, gpu) in vms {
        ctx.gpu(client, gpu)?.call(BindView {
            vm,
            view,
            gpu_addr: addr,
            flags: 0,
        })?;
    }
    Ok(())
}

fn new_object_alloc(
    ctx: &Ctx,
    client: usize,
    size: u64,
    object_size: u64,
    align: Option<u64>,
) -> Result<Alloc, StepError> {
    let o = create_object(ctx, client, object_size)?;
    let addr = map_and_attach(ctx, &o, size, align.unwrap_or(2 << 20))?;
    Ok(Alloc {
        kind: AllocKind::Object,
        client,
        addr,
        len: size,
        object: Some(o),
        obj_off: 0,
        holes: vec![],
        freed: false,
    })
}

fn malloc(ctx: &Ctx, client: usize, size: u64, align: u64) -> Result<Alloc, StepError> {
    let making = ctx.making_heap.lock().unwrap_or_else(|e| e.into_inner());
    if !ctx.world().heaps.contains_key(&client) {
        let o = create_object(ctx, client, ctx.device.heap.get())?;
        let addr = map_and_attach(ctx, &o, o.bytes, 2 << 20)?;
        let heap = Heap::new(o.bytes);
        ctx.world().heaps.insert(
            client,
            HeapState {
                heap,
                object: o,
                addr,
            },
        );
    }
    drop(making);
    let mut w = ctx.world();
    let h = w.heaps.get_mut(&client).expect("made above");
    let off = h.heap.alloc(size, align).ok_or_else(|| {
        bad(format!(
            "the heap ({} bytes, device.heap) has no room for {size} bytes",
            h.heap.size()
        ))
    })?;
    Ok(Alloc {
        kind: AllocKind::Malloc,
        client,
        addr: h.addr + off,
        len: size,
        object: Some(h.object.clone()),
        obj_off: off,
        holes: vec![],
        freed: false,
    })
}

/// Writes the fill into memory and the shadow.
fn write_fill(a: &Alloc, fill: Fill) {
    let Some(o) = &a.object else { return };
    let mut shadow = o.shadow();
    let first = (a.obj_off / 4) as usize;
    for i in 0..(a.len / 4) as usize {
        if let Some(v) = fill_value(fill, i) {
            // SAFETY: inside a mapping this scenario made, just created.
            unsafe { std::ptr::write_volatile((a.addr as *mut u32).add(i), v) };
            shadow[first + i] = v;
        }
    }
}

fn free(ctx: &Ctx, name: &str) -> StepResult {
    let a = {
        let mut w = ctx.world();
        let a = w.alloc_mut(name)?;
        if a.freed {
            return Err(bad(format!("{name} was freed already")));
        }
        a.freed = true;
        a.clone()
    };
    match a.kind {
        AllocKind::Malloc => {
            let not_live = || bad(format!("{name}: not a live heap block"));
            if !heap_of(&mut ctx.world(), a.client).is_some_and(|h| h.is_live(a.obj_off)) {
                return Err(not_live());
            }
            // Its pages are discarded while the block is still ours: once
            // free, another thread's next block may be carved from them.
            discard_whole_pages(ctx, &a)?;
            if !heap_of(&mut ctx.world(), a.client).is_some_and(|h| h.free(a.obj_off)) {
                return Err(not_live());
            }
            Ok(())
        }
        AllocKind::Reserve => {
            ctx.world().reserved.retain(|r| r.0 != a.addr);
            // SAFETY: our reservation; nothing refers to it.
            unsafe { memory::unmap(a.addr, a.len.next_multiple_of(PAGE)) }.map_err(StepError::Host)
        }
        AllocKind::Object => release_object(ctx, a.object.as_ref().expect("an object")),
    }
}

fn heap_of(w: &mut World, client: usize) -> Option<&mut Heap> {
    w.heaps.get_mut(&client).map(|h| &mut h.heap)
}

/// A freed heap block gives its whole pages back as libsvm's `free` does
/// (`Pager::Discard`): they read as zeros next and lose their advice.
fn discard_whole_pages(ctx: &Ctx, a: &Alloc) -> StepResult {
    let o = a
        .object
        .as_ref()
        .expect("a heap block has its heap's object");
    let first = a.obj_off.next_multiple_of(PAGE) / PAGE;
    let end = (a.obj_off + a.len) / PAGE;
    if end <= first {
        return Ok(());
    }
    ctx.conn(a.client)?.pager.call(Discard {
        object: o.id,
        first_page: first,
        pages: end - first,
    })?;
    let (w0, w1) = ((first * PAGE / 4) as usize, (end * PAGE / 4) as usize);
    o.shadow()[w0..w1].iter_mut().for_each(|w| *w = 0);
    Ok(())
}

/// Detaches and unmaps every mapping of `o`, then destroys it (retrying
/// while the pager still finishes unmap events: `Busy`).
pub fn release_object(ctx: &Ctx, o: &Arc<Object>) -> StepResult {
    let maps: Vec<Mapping> = {
        let mut w = ctx.world();
        let (mine, rest) = w
            .mappings
            .drain(..)
            .partition(|m| Arc::ptr_eq(&m.object, o));
        w.mappings = rest;
        w.objects.retain(|x| !Arc::ptr_eq(x, o));
        mine
    };
    let pager = &ctx.conn(o.client)?.pager;
    for m in &maps {
        if let Some(view) = m.view {
            match pager.call(DetachView { view }) {
                Ok(_) | Err(ipc_protocol::client::CallError::Server(PagerError::NoSuchView)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // SAFETY: our mapping; no reference into it outlives this step.
        unsafe { memory::unmap(m.addr, m.len) }.map_err(StepError::Host)?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match pager.call(DestroyObject { object: o.id }) {
            Err(ipc_protocol::client::CallError::Server(PagerError::Busy))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            r => return r.map(|_| ()).map_err(Into::into),
        }
    }
}

pub fn change_view(ctx: &Ctx, step: &Step) -> StepResult {
    match step {
        Step::Mremap {
            alloc,
            dontunmap,
            grow,
            old_as,
        } => mremap(
            ctx,
            alloc,
            *dontunmap,
            grow.map_or(0, |g| g.get()),
            old_as.as_deref(),
        ),
        Step::Munmap { alloc, offset, len } => {
            let (a, off, len) = view_range(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            {
                // The syscall and its record at once: another thread's
                // mremap may be handed this range the moment it is free,
                // and its record must not be split away by ours.
                let mut w = ctx.world();
                // SAFETY: a range of our own mapping; its users are steps
                // that check `holes` first.
                unsafe { memory::unmap(a.addr + off, len) }.map_err(StepError::Host)?;
                split_mappings(&mut w.mappings, a.addr + off, len);
                w.alloc_mut(alloc)?.holes.push((off, len));
            }
            sync_views(ctx, a.client)
        }
        Step::Mprotect {
            alloc,
            prot,
            offset,
            len,
        } => {
            let (a, off, len) = view_range(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            // SAFETY: our own mapping; steps that touch it are the scenario's.
            unsafe { memory::protect(a.addr + off, len, *prot) }.map_err(StepError::Host)?;
            protect_in_vms(ctx, a.client, a.addr + off, len, *prot)
        }
        Step::Madvise {
            alloc,
            advice,
            offset,
            len,
        } => {
            let (a, off, len) = view_range(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            // SAFETY: our own mapping; dropping its pages is what the step says.
            unsafe { memory::discard(a.addr + off, len, *advice) }.map_err(StepError::Host)?;
            if let Some(o) = &a.object {
                let w0 = ((a.obj_off + off) / 4) as usize;
                let end = (((a.obj_off + off + len) / 4) as usize).min(o.shadow().len());
                o.shadow()[w0..end].iter_mut().for_each(|w| *w = 0);
            }
            // The pager discards what the kernel reported; GPU work next
            // must find it done.
            sync_views(ctx, a.client)
        }
        _ => unreachable!("dispatched by op"),
    }
}

/// A page-aligned range of an object allocation.
fn view_range(
    ctx: &Ctx,
    name: &str,
    off: u64,
    len: Option<u64>,
) -> Result<(Alloc, u64, u64), StepError> {
    let a = ctx.world().alloc(name)?.clone();
    if a.kind != AllocKind::Object && a.kind != AllocKind::Reserve {
        return Err(bad(format!(
            "{name}: views change only on object allocations"
        )));
    }
    let len = len.unwrap_or(a.len.saturating_sub(off));
    let end = off
        .checked_add(len)
        .filter(|e| *e <= a.len.next_multiple_of(PAGE));
    if !off.is_multiple_of(PAGE) || len == 0 || end.is_none() {
        return Err(bad(format!(
            "{name}: +{off:#x}, {len} bytes: pages inside it"
        )));
    }
    Ok((a, off, len.next_multiple_of(PAGE)))
}

/// Takes `[addr, addr + len)` out of the mappings. A mapping cut in two
/// loses its view id: the pager made new views of the parts.
fn split_mappings(maps: &mut Vec<Mapping>, addr: u64, len: u64) {
    let end = addr + len;
    let mut out = Vec::new();
    for m in maps.drain(..) {
        let mend = m.addr + m.len;
        if mend <= addr || end <= m.addr {
            out.push(m);
            continue;
        }
        if m.addr < addr {
            out.push(Mapping {
                len: addr - m.addr,
                view: None,
                ..m.clone()
            });
        }
        if end < mend {
            out.push(Mapping {
                addr: end,
                len: mend - end,
                obj_off: m.obj_off + (end - m.addr),
                view: None,
                ..m.clone()
            });
        }
    }
    *maps = out;
}

fn mremap(ctx: &Ctx, name: &str, dontunmap: bool, grow: u64, old_as: Option<&str>) -> StepResult {
    let a = ctx.world().alloc(name)?.clone();
    let o = a
        .object
        .clone()
        .filter(|_| a.kind == AllocKind::Object && !a.freed)
        .ok_or_else(|| bad(format!("{name}: mremap moves a live object allocation")))?;
    let old_len = a.len.next_multiple_of(PAGE);
    let new_len = old_len
        .checked_add(grow)
        .filter(|l| a.obj_off + l <= o.bytes && grow.is_multiple_of(PAGE))
        .ok_or_else(|| bad(format!("{name}: grow by whole pages, within its object")))?;
    // The syscall and its record at once (as munmap's): no other thread's
    // record of the range this move frees or takes comes in between.
    let mut w = ctx.world();
    let new = memory::move_range(a.addr, old_len, new_len, dontunmap).map_err(StepError::Host)?;
    let i = w
        .mappings
        .iter()
        .position(|m| m.addr == a.addr && Arc::ptr_eq(&m.object, &o))
        .ok_or_else(|| bad(format!("{name}: no mapping starts at its address")))?;
    if dontunmap {
        // The old range stays a view (it keeps the view id); the new one is
        // the pager's copy.
        w.mappings.push(Mapping {
            addr: new,
            len: new_len,
            object: o.clone(),
            obj_off: a.obj_off,
            view: None,
        });
        if let Some(old) = old_as {
            w.allocs.insert(old.to_string(), a.clone());
        }
    } else {
        let m = &mut w.mappings[i];
        m.addr = new;
        m.len = new_len;
        if grow > 0 {
            m.view = None;
        }
    }
    let al = w.alloc_mut(name)?;
    al.addr = new;
    al.len += grow;
    drop(w);
    sync_views(ctx, a.client)
}

/// The GPU follows an `mprotect` (`Gpu::Protect` in each of the client's
/// VMs, where views are bound at their CPU addresses), as libsvm's
/// `mprotect` does for programs.
fn protect_in_vms(ctx: &Ctx, client: usize, addr: u64, len: u64, prot: Prot) -> StepResult {
    let prot = match prot {
        Prot::None => 0,
        Prot::R => PROT_READ,
        Prot::Rw => PROT_READ | PROT_WRITE,
    };
    let vms: Vec<_> = ctx
        .world()
        .vms
        .values()
        .filter(|v| v.client == client)
        .map(|v| (v.id, v.gpu))
        .collect();
    for (vm, gpu) in vms {
        ctx.gpu(client, gpu)?.call(Protect {
            vm,
            gpu_addr: addr,
            len,
            prot,
        })?;
    }
    Ok(())
}

/// After a munmap or mremap of a view: the syscall returned once the pager
/// *read* the change; GPU work that follows must find it applied
/// (`Pager::SyncViews`).
fn sync_views(ctx: &Ctx, client: usize) -> StepResult {
    ctx.conn(client)?.pager.call(SyncViews {})?;
    learn_views(ctx, client)
}

/// A mapping a change cut out of a view is a view of its own now: learns
/// its id (`Pager::FindView`), as a program would to detach or bind it.
fn learn_views(ctx: &Ctx, client: usize) -> StepResult {
    let unknown: Vec<(u64, u64, u64)> = ctx
        .world()
        .mappings
        .iter()
        .filter(|m| m.view.is_none() && m.object.client == client)
        .map(|m| (m.addr, m.len, m.obj_off))
        .collect();
    for (addr, len, obj_off) in unknown {
        let found = match ctx.conn(client)?.pager.call(FindView { addr }) {
            Ok(f) => f,
            Err(ipc_protocol::client::CallError::Server(PagerError::NoSuchView)) => continue,
            Err(e) => return Err(e.into()),
        };
        let same = found.addr == addr
            && found.pages.checked_mul(PAGE) == Some(len)
            && found.object_first_page.checked_mul(PAGE) == Some(obj_off);
        if same {
            let mut w = ctx.world();
            if let Some(m) = w
                .mappings
                .iter_mut()
                .find(|m| m.addr == addr && m.len == len)
            {
                m.view = Some(found.view);
            }
        }
    }
    Ok(())
}

pub fn placement(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    match step {
        Step::Advise {
            alloc,
            advice,
            offset,
            len,
            gpu,
        } => {
            let (o, first, pages) = pages_of(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            let advice = advice_of(ctx, o.client, *advice, *gpu)?;
            ctx.conn(o.client)?.pager.call(Advise {
                object: o.id,
                first_page: first,
                pages,
                advice,
            })?;
            Ok(())
        }
        Step::Prefetch {
            alloc,
            to: Place::Device,
            offset,
            len,
            vm,
        } => prefetch_to_device(ctx, alloc, offset.get(), len.map(|l| l.get()), vm, label),
        Step::Prefetch {
            alloc,
            to: Place::System,
            offset,
            len,
            ..
        } => {
            let (o, first, pages) = pages_of(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            let mut moved = 0u64;
            // From every GPU of the system.
            for gpu in (0..ctx.device.gpus.max(1)).filter_map(GpuId::new) {
                for (f, n) in chunks(first, pages) {
                    let r = ctx.conn(o.client)?.pager.call(Prefetch {
                        object: o.id,
                        first_page: f,
                        count: n,
                        to: Location::System,
                        gpu,
                    })?;
                    moved += r.moved as u64;
                }
            }
            ctx.report.check(
                true,
                label,
                &format!("prefetch moved {moved} of {pages} pages to RAM"),
            );
            Ok(())
        }
        Step::Snapshot {
            alloc,
            offset,
            len,
            expect,
            settle_ms,
        } => {
            let (o, first, pages) = pages_of(ctx, alloc, offset.get(), len.map(|l| l.get()))?;
            let until = std::time::Instant::now()
                + std::time::Duration::from_millis((*settle_ms).min(10_000));
            loop {
                let mut states = Vec::new();
                for (f, n) in chunks(first, pages) {
                    let r = ctx.conn(o.client)?.pager.call(Snapshot {
                        object: o.id,
                        first_page: f,
                        count: n,
                    })?;
                    states.extend(r.states.into_vec());
                }
                let (ok, detail) = compare_states(&states, expect)?;
                if ok || std::time::Instant::now() >= until {
                    ctx.report.check(ok, label, &format!("{alloc}: {detail}"));
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        _ => unreachable!("dispatched by op"),
    }
}

/// The object and page range of `[off, off + len)` of an allocation.
fn pages_of(
    ctx: &Ctx,
    name: &str,
    off: u64,
    len: Option<u64>,
) -> Result<(Arc<Object>, u64, u64), StepError> {
    let t = ctx.world().resolve(
        &Addr {
            name: name.into(),
            offset: off,
        },
        len,
    )?;
    let Target::Mem {
        object: Some(o),
        obj_off,
        len,
        ..
    } = t
    else {
        return Err(bad(format!("{name}: not memory of a pager object")));
    };
    let first = obj_off / PAGE;
    let end = (obj_off + len).div_ceil(PAGE);
    Ok((o, first, end - first))
}

/// `(first, count)` pieces of at most one message's pages.
fn chunks(first: u64, pages: u64) -> impl Iterator<Item = (u64, PageCount)> {
    let max = ipc_protocol::types::MAX_PAGES_PER_MESSAGE as u64;
    (0..pages.div_ceil(max)).map(move |k| {
        let f = first + k * max;
        let n = (pages - k * max).min(max);
        (f, PageCount::new(n as u16).expect("1 to 512 pages"))
    })
}

/// Compares page states with `expect` (`STATE` or `STATE*N`, the last
/// entry covering the rest).
pub fn compare_states(
    states: &[PageStateCode],
    expect: &[String],
) -> Result<(bool, String), StepError> {
    let mut want: Vec<&str> = Vec::new();
    for (k, e) in expect.iter().enumerate() {
        let (state, n) = match e.split_once('*') {
            Some((s, n)) => (
                s.trim(),
                super::value::eval(n).map_err(|e| bad(e.0))? as usize,
            ),
            None if k + 1 == expect.len() => (e.trim(), states.len().saturating_sub(want.len())),
            None => (e.trim(), 1),
        };
        if !matches!(
            state,
            "empty" | "system" | "device" | "migrating" | "resident" | "not_device" | "any"
        ) {
            return Err(bad(format!("page state {state:?}")));
        }
        want.extend(std::iter::repeat_n(state, n));
    }
    if want.len() != states.len() {
        return Ok((
            false,
            format!(
                "{} pages, the expectation names {}",
                states.len(),
                want.len()
            ),
        ));
    }
    for (i, (got, w)) in states.iter().zip(&want).enumerate() {
        let ok = matches!(
            (*w, got),
            ("any", _)
                | ("empty", PageStateCode::Empty)
                | ("system", PageStateCode::System)
                | ("device", PageStateCode::Device)
                | ("migrating", PageStateCode::Migrating)
                | ("resident", PageStateCode::System | PageStateCode::Device)
                | ("not_device", PageStateCode::Empty | PageStateCode::System)
        );
        if !ok {
            return Ok((false, format!("page {i} is {got:?}, expected {w}")));
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for s in states {
        *counts.entry(format!("{s:?}")).or_insert(0) += 1;
    }
    Ok((
        true,
        format!("{} pages as expected {counts:?}", states.len()),
    ))
}

pub fn check(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    match step {
        Step::Check { at, len, words } => {
            let names: Vec<String> = match at {
                Some(a) => vec![a.name.clone()],
                None => {
                    let w = ctx.world();
                    w.allocs
                        .iter()
                        .filter(|(_, a)| !a.freed && a.object.is_some())
                        .map(|(n, _)| n.clone())
                        .collect()
                }
            };
            let mut m = Mismatch::default();
            let mut total = 0usize;
            for n in &names {
                let addr = at.clone().unwrap_or(Addr {
                    name: n.clone(),
                    offset: 0,
                });
                let (mm, t) = check_range(ctx, &addr, len.map(|l| l.get()))?;
                m.merge(mm);
                total += t;
            }
            let mut wrong = Vec::new();
            for wi in words {
                let t = ctx.world().resolve(&wi.at, Some(4))?;
                // SAFETY: a mapped word of this scenario's memory.
                let got = unsafe { std::ptr::read_volatile(t.addr() as *const u32) };
                if got as u64 != wi.value.get() {
                    wrong.push(format!(
                        "{}+{:#x} is {got:#x}, expected {:#x}",
                        wi.at.name,
                        wi.at.offset,
                        wi.value.get()
                    ));
                }
            }
            let what = if at.is_some() {
                names.join(",")
            } else {
                "every allocation".into()
            };
            let mut detail = format!("{what}: {}", m.describe(total));
            if !words.is_empty() {
                detail += &format!("; {} listed words: ", words.len());
                detail += &if wrong.is_empty() {
                    "as listed".into()
                } else {
                    wrong.join(", ")
                };
            }
            ctx.report
                .check(m.bad == 0 && wrong.is_empty(), label, &detail);
            Ok(())
        }
        Step::Probe { at, access, expect } => {
            let t = ctx.world().resolve(at, Some(4))?;
            let write = !matches!(
                access,
                super::format::Access::Read | super::format::Access::Touch
            );
            let ok = memory::probe(t.addr(), write).map_err(StepError::Host)?;
            let want = *expect == ProbeExpect::Ok;
            let what = if write { "write" } else { "read" };
            let got = if ok { "succeeded" } else { "got EFAULT" };
            ctx.report.check(
                ok == want,
                label,
                &format!("a CPU {what} at {}: {got}", at.name),
            );
            Ok(())
        }
        _ => unreachable!("dispatched by op"),
    }
}

/// Every word of a range against the shadow, skipping unmapped holes.
fn check_range(ctx: &Ctx, at: &Addr, len: Option<u64>) -> Result<(Mismatch, usize), StepError> {
    let (t, alloc) = {
        let w = ctx.world();
        (w.resolve(at, len)?, w.alloc(&at.name)?.clone())
    };
    let Target::Mem {
        addr,
        len,
        object: Some(o),
        obj_off,
        ..
    } = t
    else {
        return Err(bad(format!("{}: nothing to check", at.name)));
    };
    if !addr.is_multiple_of(4) || !len.is_multiple_of(4) {
        return Err(bad(format!("{}: check whole words", at.name)));
    }
    let expect: Vec<u32> =
        o.shadow()[(obj_off / 4) as usize..((obj_off + len) / 4) as usize].to_vec();
    let mut m = Mismatch::default();
    let mut checked = 0usize;
    // Page by page, so that unmapped pages are skipped.
    let mut off = 0u64;
    while off < len {
        let page_end = ((addr + off) / PAGE + 1) * PAGE - addr;
        let piece = (page_end.min(len)) - off;
        if !alloc.in_hole(at.offset + off, piece) {
            let w0 = (off / 4) as usize;
            let w1 = ((off + piece) / 4) as usize;
            // SAFETY: mapped (not in a hole) memory of this scenario.
            let mut mm = unsafe { compare(addr + off, &expect[w0..w1]) };
            if let Some((i, g, x)) = mm.first {
                mm.first = Some((i + w0, g, x));
            }
            m.merge(mm);
            checked += w1 - w0;
        }
        off += piece;
    }
    Ok((m, checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PageStateCode::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn page_state_expectations() {
        let st = [System, System, Device, Device, Device];
        assert!(compare_states(&st, &s(&["system*2", "device"])).unwrap().0);
        assert!(compare_states(&st, &s(&["resident"])).unwrap().0);
        let (ok, d) = compare_states(&st, &s(&["system*3", "device"])).unwrap();
        assert!(!ok && d.contains("page 2"), "{d}");
        assert!(
            !compare_states(&st, &s(&["system*2", "device*2"]))
                .unwrap()
                .0
        );
        assert!(!compare_states(&[Empty], &s(&["device"])).unwrap().0);
        assert!(compare_states(&[Empty], &s(&["not_device"])).unwrap().0);
        assert!(compare_states(&st, &s(&["sideways"])).is_err());
    }

    #[test]
    fn a_cut_mapping_loses_its_view_id() {
        let o = Arc::new(Object {
            id: ipc_protocol::types::ObjectId::raw(1),
            client: 0,
            memfd: rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::empty()).unwrap(),
            bytes: 4 * PAGE,
            shadow: Mutex::new(vec![]),
        });
        let mut maps = vec![Mapping {
            addr: 0x10000,
            len: 4 * PAGE,
            object: o,
            obj_off: 0,
            view: Some(ViewId::raw(5)),
        }];
        split_mappings(&mut maps, 0x11000, PAGE);
        let got: Vec<_> = maps
            .iter()
            .map(|m| (m.addr, m.len, m.obj_off, m.view))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x10000, PAGE, 0, None),
                (0x12000, 2 * PAGE, 2 * PAGE, None)
            ]
        );
    }
}

/// `Gpu::Prefetch` of an allocation's pages in `vm`, or in the first VM of
/// its client: the GPU address is the CPU address (mirrored bindings).
fn prefetch_to_device(
    ctx: &Ctx,
    alloc: &str,
    off: u64,
    len: Option<u64>,
    vm: &Option<String>,
    label: &str,
) -> StepResult {
    let t = ctx.world().resolve(
        &Addr {
            name: alloc.into(),
            offset: off,
        },
        len,
    )?;
    let Target::Mem {
        addr, len, client, ..
    } = t
    else {
        return Err(bad(format!("{alloc}: not memory of a pager object")));
    };
    let (vm, client) = {
        let w = ctx.world();
        let v = match vm {
            Some(name) => w.vm(name)?,
            None => w
                .vms
                .values()
                .find(|v| v.client == client)
                .ok_or_else(|| bad(format!("{alloc}: its client has no VM to prefetch in")))?,
        };
        (v.id, (v.client, v.gpu))
    };
    let start = addr & !(PAGE - 1);
    let end = (addr + len).next_multiple_of(PAGE);
    let r = ctx.gpu(client.0, client.1)?.call(GpuPrefetch {
        vm,
        gpu_addr: start,
        len: end - start,
    })?;
    ctx.report.check(
        true,
        label,
        &format!("prefetch: {} of {} pages in VRAM", r.in_vram, r.pages),
    );
    Ok(())
}

/// The wire advice of a scenario's `advice` (and `gpu`, for `prefer_gpu`
/// only: a GPU the booted system has).
fn advice_of(
    ctx: &Ctx,
    client: usize,
    advice: AdviceKind,
    gpu: Option<u8>,
) -> Result<Advice, StepError> {
    let named = |what: &str| StepError::Scenario(format!("advice {advice:?}: {what}"));
    let plain = match advice {
        AdviceKind::Default => Advice::Default,
        AdviceKind::PreferSystem => Advice::PreferSystem,
        AdviceKind::PreferDevice => Advice::PreferDevice,
        AdviceKind::AtomicDevice => Advice::AtomicDevice,
        AdviceKind::AtomicGlobal => Advice::AtomicGlobal,
        AdviceKind::AtomicCpu => Advice::AtomicCpu,
        AdviceKind::DeviceOnly => Advice::DeviceOnly,
        AdviceKind::AccessInPlace => Advice::AccessInPlace,
        AdviceKind::PreferGpu => {
            let gpu = gpu.ok_or_else(|| named("names its GPU with `gpu`"))?;
            ctx.gpu(client, gpu)?;
            return Advice::prefer_gpu(gpu).ok_or_else(|| named("no such GPU"));
        }
    };
    match gpu {
        Some(_) => Err(named("takes no gpu (prefer_gpu does)")),
        None => Ok(plain),
    }
}
