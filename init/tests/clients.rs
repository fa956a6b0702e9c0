//! Many clients (issue 6): a client killed with SIGKILL in the middle of a
//! migration takes nothing from the others and its VRAM comes back; a
//! client can name only its own objects, views, VMs, buffer objects and
//! jobs: every forged or stale handle gets a typed error.

use std::io::BufRead;
use std::time::{Duration, Instant};

use init::client::{run_kernel, SvmBuffer};
use init::herd;
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::pager::{self as p, PagerError};
use ipc_protocol::interfaces::pressure::Status;
use ipc_protocol::types::{
    Advice, BoId, GpuId, JobId, JobStatus, KernelKind, Location, ObjectId, PageCount, ViewId, VmId,
};

fn boot(clients: usize) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let opts = BootOptions {
        clients,
        ..Default::default()
    };
    let (s, c) = System::boot(&opts).unwrap();
    (s, c.unwrap())
}

fn herd_ok(c: &Clients) {
    let cfg = herd::Config {
        mode: herd::Mode::IncAll,
        bytes: 2 << 20,
        threads: 4,
        reps: 1,
        gpu_threads: 64,
        same_start: false,
        gpus: 1,
    };
    let r = herd::run(c, &cfg).unwrap();
    assert_eq!(r.bad, 0, "{r:?}");
}

/// Waits until `f` holds, for up to 20 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigkill_of_a_client_mid_migration_leaves_the_others_served() {
    let (system, mut c) = boot(4);
    let svm = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    let gpu_base = c.gpu.call(g::Stats {}).unwrap().vram_used;
    let mm_base = c.pressure.call(Status {}).unwrap().svm_vram_bytes;
    for (k, slot) in std::mem::take(&mut c.slots).into_iter().enumerate() {
        // A client that moves 64 MiB between VRAM and RAM round after round.
        let mut child = slot.spawn(&svm, &["churn", "--size", "64M"]).unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the client made no progress");
            if line == "round 2" {
                break;
            }
        }
        // Into the next round: once it holds VRAM (the GPU is pulling the
        // buffer in), a little later each time (into the CPU's pull back).
        eventually("the client's next round took VRAM", || {
            c.gpu.call(g::Stats {}).unwrap().vram_used > gpu_base + (8 << 20)
        });
        std::thread::sleep(Duration::from_millis(13 * k as u64));
        let held = c.gpu.call(g::Stats {}).unwrap().vram_used - gpu_base;
        child.kill().unwrap();
        println!(
            "client {}: killed holding {} KiB of VRAM",
            slot.badge,
            held >> 10
        );
        child.wait().unwrap();
        // The system keeps serving the first client meanwhile...
        herd_ok(&c);
        // ...and once the slot's endpoints close too, everything the dead
        // client held comes back.
        drop(slot);
        eventually("the dead client's VRAM came back to the GPU server", || {
            c.gpu.call(g::Stats {}).unwrap().vram_used == gpu_base
        });
        eventually("mm-server's accounting went back to its baseline", || {
            c.pressure.call(Status {}).unwrap().svm_vram_bytes == mm_base
        });
        herd_ok(&c);
    }
    drop(c);
    assert!(system.shutdown().is_empty());
}

fn pager_err<T: std::fmt::Debug>(r: Result<T, CallError<PagerError>>) -> PagerError {
    match r {
        Err(CallError::Server(e)) => e,
        other => panic!("expected a pager error, got {other:?}"),
    }
}

fn gpu_err<T: std::fmt::Debug>(r: Result<T, CallError<GpuError>>) -> GpuError {
    match r {
        Err(CallError::Server(e)) => e,
        other => panic!("expected a GPU error, got {other:?}"),
    }
}

/// Every handle-taking call of `Pager` and `Gpu`, made by `b` with `a`'s
/// handles (or forged / stale ones): each refused with the typed error
/// that says "no such thing" (for `b` it does not exist).
fn refused_everywhere(
    b: &init::supervisor::Connection,
    object: ObjectId,
    view: ViewId,
    vm: VmId,
    bo: BoId,
    job: JobId,
    b_vm: VmId,
    b_view: ViewId,
) {
    let count = PageCount::new(1).unwrap();
    assert_eq!(
        pager_err(b.pager.call(p::DestroyObject { object })),
        PagerError::NoSuchObject
    );
    assert_eq!(
        pager_err(b.pager.call(p::Snapshot {
            object,
            first_page: 0,
            count
        })),
        PagerError::NoSuchObject
    );
    assert_eq!(
        pager_err(b.pager.call(p::Advise {
            object,
            first_page: 0,
            pages: 1,
            advice: Advice::PreferDevice
        })),
        PagerError::NoSuchObject
    );
    assert_eq!(
        pager_err(b.pager.call(p::Prefetch {
            object,
            first_page: 0,
            count,
            to: Location::Device,
            gpu: GpuId::new(0).unwrap()
        })),
        PagerError::NoSuchObject
    );
    let uffd = init::client::pager_uffd().unwrap();
    assert_eq!(
        pager_err(b.pager.call_with_handles(
            p::AttachView {
                object,
                addr: 0x7000_0000_0000,
                object_first_page: 0,
                pages: 1
            },
            vec![uffd]
        )),
        PagerError::NoSuchObject
    );
    assert_eq!(
        pager_err(b.pager.call(p::DetachView { view })),
        PagerError::NoSuchView
    );
    assert_eq!(gpu_err(b.gpu.call(g::DestroyVm { vm })), GpuError::NoSuchVm);
    assert_eq!(
        gpu_err(b.gpu.call(g::BindView {
            vm,
            view: b_view,
            gpu_addr: 0x7000_0000_0000,
            flags: 0,
        })),
        GpuError::NoSuchVm
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::BindView {
            vm: b_vm,
            view,
            gpu_addr: 0x7000_0000_0000,
            flags: 0,
        })),
        GpuError::NoSuchView
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::Unbind { vm, gpu_addr: 0 })),
        GpuError::NoSuchVm
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::Submit {
            vm,
            kernel: KernelKind::TouchPages,
            addr: 0,
            len: 4096,
            stride: 4,
            value: 0,
            threads: 1
        })),
        GpuError::NoSuchVm
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::Wait {
            job,
            timeout_ms: 10
        })),
        GpuError::NoSuchJob
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::MapBo {
            vm: b_vm,
            bo,
            gpu_addr: 0x6000_0000_0000
        })),
        GpuError::NoSuchBo
    );
    assert_eq!(
        gpu_err(b.gpu.call(g::MapBo {
            vm,
            bo,
            gpu_addr: 0x6000_0000_0000
        })),
        GpuError::NoSuchBo
    );
    assert_eq!(gpu_err(b.gpu.call(g::ReadBo { bo })), GpuError::NoSuchBo);
    assert_eq!(gpu_err(b.gpu.call(g::DestroyBo { bo })), GpuError::NoSuchBo);
}

#[test]
fn a_client_cannot_name_another_clients_handles() {
    let (system, mut c) = boot(2);
    let b = c.slots.remove(0).connect();
    assert_ne!(b.badge, c.badge);
    // Client A: an object with a view in VRAM, a VM binding it, a buffer
    // object and a finished job.
    let vm = c.gpu.call(g::CreateVm {}).unwrap().vm;
    let buf = SvmBuffer::new(&c.pager, 2 << 20).unwrap();
    c.gpu
        .call(g::BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .unwrap();
    // SAFETY: ours; the GPU job runs after the fill.
    unsafe { buf.words() }.fill(7);
    let job = c
        .gpu
        .call(g::Submit {
            vm,
            kernel: KernelKind::IncrementAll,
            addr: buf.addr,
            len: 2 << 20,
            stride: 4,
            value: 1,
            threads: 64,
        })
        .unwrap()
        .job;
    assert_eq!(
        c.gpu
            .call(g::Wait {
                job,
                timeout_ms: 60_000
            })
            .unwrap()
            .status,
        JobStatus::Completed
    );
    let bo = c
        .gpu
        .call(g::CreateBo {
            size_bytes: 1 << 20,
        })
        .unwrap()
        .bo;
    // Client B has its own VM and view to pair A's handles with.
    let b_vm = b.gpu.call(g::CreateVm {}).unwrap().vm;
    let b_buf = SvmBuffer::new(&b.pager, 1 << 20).unwrap();
    refused_everywhere(&b, buf.object, buf.view, vm, bo, job, b_vm, b_buf.view);
    // Forged handles: ids nobody was given.
    refused_everywhere(
        &b,
        ObjectId::raw(u32::MAX),
        ViewId::raw(u32::MAX),
        VmId::raw(u32::MAX),
        BoId::raw(u32::MAX),
        JobId::raw(u64::MAX),
        b_vm,
        b_buf.view,
    );
    // A's memory is untouched by all that: every word is 8, read back by
    // the CPU from VRAM.
    assert!(
        unsafe { buf.words() }.iter().all(|w| *w == 8),
        "client A's data changed"
    );
    // Stale handles: A's own, after A released them.
    let (object, view) = (buf.object, buf.view);
    c.gpu
        .call(g::Unbind {
            vm,
            gpu_addr: buf.addr,
        })
        .unwrap();
    buf.release(&c.pager).unwrap();
    c.gpu.call(g::DestroyBo { bo }).unwrap();
    c.gpu.call(g::DestroyVm { vm }).unwrap();
    let own_vm = c.gpu.call(g::CreateVm {}).unwrap().vm;
    let own_buf = SvmBuffer::new(&c.pager, 1 << 20).unwrap();
    refused_everywhere(
        &c,
        object,
        view,
        vm,
        bo,
        JobId::raw(u64::MAX),
        own_vm,
        own_buf.view,
    );
    // Both clients still work.
    b.gpu
        .call(g::BindView {
            vm: b_vm,
            view: b_buf.view,
            gpu_addr: b_buf.addr,
            flags: 0,
        })
        .unwrap();
    assert_eq!(
        run_kernel(
            &b.gpu,
            b_vm,
            KernelKind::IncrementAll,
            b_buf.addr,
            1 << 20,
            3
        )
        .unwrap()
        .status,
        JobStatus::Completed
    );
    assert!(
        unsafe { b_buf.words() }.iter().all(|w| *w == 3),
        "client B's data is wrong"
    );
    herd_ok(&c);
    drop((b, b_buf, own_buf));
    drop(c);
    assert!(system.shutdown().is_empty());
}
