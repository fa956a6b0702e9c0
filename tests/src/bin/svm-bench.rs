//! Side-by-side benchmarks: each of our paths against its bare floor on
//! the same machine in the same run, reported as a ratio.
//! `cargo run --release -p tests --bin svm-bench`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::bar::Bar;
use hw::model::{spawn_in_process, Config};
use hw::shm::Region;
use hw::xe::commands::{Command, MemCopy};
use hw::xe::layout::{self, Ring};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::pager::{Advise, CreateObject, Pager};
use ipc_protocol::transport::{SeqPacket, Transport};
use ipc_protocol::types::Advice;
use ipc_protocol::{Capability, Rights};
use tests::conformance_server::ConformancePager;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median of `reps` batches of `n` operations, in microseconds per op.
fn per_op_us(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e6 / n as f64
            })
            .collect(),
    )
}

fn ipc() -> (f64, f64) {
    // Floor: a bare seqpacket echo of a 32-byte datagram.
    let (a, b) = SeqPacket::pair().unwrap();
    std::thread::spawn(move || {
        while let Ok(r) = b.recv(None) {
            if b.send(&r.bytes, vec![]).is_err() {
                break;
            }
        }
    });
    let frame = [0u8; 32];
    let bare = per_op_us(15, 2000, || {
        a.send(&frame, vec![]).unwrap();
        a.recv(None).unwrap();
    });
    // Ours: a typed call through the client stub and the serve loop.
    let (c, s) = SeqPacket::pair().unwrap();
    ipc_protocol::server::spawn::<Pager, _>(
        "bench",
        Arc::new(s),
        Capability::new(1, Rights::all()),
        Arc::new(ConformancePager::default()),
        1,
    );
    let client: Client<Pager> = Client::new(Arc::new(c));
    let (obj, _) = client
        .call_with_handles(CreateObject { size_bytes: 4096 }, vec![])
        .unwrap();
    let typed = per_op_us(15, 2000, || {
        client
            .call(Advise {
                object: obj.object,
                first_page: 0,
                pages: 1,
                advice: Advice::PreferDevice,
            })
            .unwrap();
    });
    (bare, typed)
}

fn copy() -> (f64, f64) {
    const BYTES: usize = 2 << 20;
    let src = Region::create("src", BYTES).unwrap();
    let dst = Region::create("dst", BYTES).unwrap();
    src.write(0, &vec![0x5au8; BYTES]);
    dst.write(0, &vec![0u8; BYTES]);
    let mut buf = vec![0u8; BYTES];
    // Floor: memcpy of 2 MiB between two shared mappings.
    let bare = per_op_us(15, 20, || {
        src.read(0, &mut buf);
        dst.write(0, &buf);
    });
    let (t, _h) = spawn_in_process(Config {
        vram_bytes: 64 << 20,
        ..Default::default()
    })
    .unwrap();
    let bar = Bar::connect(t, Duration::from_secs(10)).unwrap();
    let s = bar.dma_map(0, src.dup_fd().unwrap(), BYTES as u64).unwrap();
    let seq = AtomicU32::new(1);
    // Ours: system -> VRAM through the copy ring, submission and completion included.
    let engine = per_op_us(15, 20, || {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        bar.submit(
            Ring::Copy,
            n,
            &Command::MemCopy(MemCopy::contiguous(s, 0, BYTES as u64).unwrap()),
        )
        .unwrap();
        bar.wait_seqno(layout::REG_BCS_DONE, n, Duration::from_secs(10))
            .unwrap();
    });
    (bare, engine)
}

/// The floor for the herd's CPU phase: a bare userfaultfd handler thread
/// answering each missing fault with one `UFFDIO_COPY` of the 2 MiB chunk
/// around it from a ready buffer; `threads` readers walk every page from
/// staggered starts, as in the herd. Microseconds per page, median of `reps`.
fn uffd_floor(bytes: usize, threads: usize, reps: usize) -> f64 {
    use pager::host::uffd::{create_for_client, Event, Uffd};
    use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
    let pages = bytes / 4096;
    let src: Vec<u32> = (0..bytes / 4).map(|i| i as u32 + 1).collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let memfd = rustix::fs::memfd_create("floor", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, bytes as u64).unwrap();
        // SAFETY: a fresh shared mapping, unmapped below.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &memfd,
                0,
            )
        }
        .unwrap() as usize;
        let uffd = Arc::new(Uffd::new(create_for_client().unwrap()));
        // No view-change events: a bare handler (and munmap below must not
        // wait for a reader that has stopped).
        uffd.handshake(pager::host::uffd::WP_FEATURES).unwrap();
        uffd.register(base as u64, bytes as u64).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (u, s, srcp) = (uffd.clone(), stop.clone(), src.as_ptr() as usize);
        let handler = std::thread::spawn(move || {
            let mut ev = Vec::new();
            while !s.load(Ordering::Acquire) {
                ev.clear();
                if !u.wait_readable(Duration::from_millis(10)) {
                    continue;
                }
                u.read_events(&mut ev).unwrap();
                for e in &ev {
                    if let Event::PageFault { address, .. } = *e {
                        let chunk = (address as usize - base) & !((2 << 20) - 1);
                        let len = (2usize << 20).min(bytes - chunk);
                        // SAFETY: `src` covers the buffer and outlives the handler.
                        let (_, stop) = unsafe {
                            u.copy_mode(
                                (base + chunk) as u64,
                                (srcp + chunk) as *const u8,
                                len as u64,
                                0,
                            )
                        };
                        assert!(
                            matches!(stop, None | Some(rustix::io::Errno::EXIST)),
                            "floor copy: {stop:?}"
                        );
                        u.wake(address & !4095, 4096).unwrap();
                    }
                }
            }
        });
        let t0 = Instant::now();
        let readers: Vec<_> = (0..threads)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut bad = 0;
                    for k in 0..pages {
                        let pg = (k + t * pages / threads) % pages;
                        // SAFETY: inside the mapping.
                        if unsafe { std::ptr::read_volatile((base as *const u32).add(pg * 1024)) }
                            != (pg * 1024) as u32 + 1
                        {
                            bad += 1;
                        }
                    }
                    bad
                })
            })
            .collect();
        let bad: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        times.push(t0.elapsed().as_secs_f64() * 1e6 / pages as f64);
        assert_eq!(bad, 0);
        stop.store(true, Ordering::Release);
        handler.join().unwrap();
        // SAFETY: our mapping.
        unsafe { munmap(base as *mut _, bytes) }.unwrap();
    }
    median(times)
}

fn herd_side_by_side() {
    use init::herd::{self, Mode};
    use init::supervisor::{BootOptions, System};
    let (system, clients) = match System::boot(&BootOptions::default()) {
        Ok((s, Some(c))) => (s, c),
        Ok((s, None)) => {
            s.shutdown();
            return;
        }
        Err(e) => {
            eprintln!("svm-bench: boot failed: {e} (build the workspace with --release first)");
            return;
        }
    };
    println!("herd CPU phase, per page (median of 5): bare uffd floor | svm touch-pg | ratio");
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = vec![
        ("floor 64 MiB".into(), vec![]),
        ("svm 64 MiB".into(), vec![]),
    ];
    for (bytes, threads) in [
        (2usize << 20, 1usize),
        (2 << 20, 16),
        (64 << 20, 1),
        (64 << 20, 2),
        (64 << 20, 4),
        (64 << 20, 8),
        (64 << 20, 16),
    ] {
        let floor = uffd_floor(bytes, threads, 5);
        let cfg = herd::Config {
            mode: Mode::Touch,
            bytes,
            threads,
            reps: 5,
            gpu_threads: 64,
            same_start: false,
        };
        match herd::run(&clients, &cfg) {
            Ok(r) if bytes == 64 << 20 => {
                curves[0].1.push((threads as f64, floor));
                curves[1].1.push((threads as f64, r.per_page_cpu_us));
                println!("  {:>3} MiB {:>2} threads   {floor:6.3} us | {:6.3} us (gpu phase {:8.1} us, bad {}) | {:.2}", bytes >> 20, threads, r.per_page_cpu_us, r.gpu_phase_med_us, r.bad, r.per_page_cpu_us / floor)
            }
            Ok(r) => println!(
                "  {:>3} MiB {:>2} threads   {floor:6.3} us | {:6.3} us (gpu phase {:8.1} us, bad {}) | {:.2}",
                bytes >> 20,
                threads,
                r.per_page_cpu_us,
                r.gpu_phase_med_us,
                r.bad,
                r.per_page_cpu_us / floor
            ),
            Err(e) => println!("  {} MiB {threads} threads: herd failed: {e}", bytes >> 20),
        }
    }
    let path = std::path::Path::new("target").join("herd-scaling.svg");
    match std::fs::write(
        &path,
        svg_plot(
            "Herd CPU phase, 64 MiB: microseconds per page vs CPU threads",
            &curves,
        ),
    ) {
        Ok(()) => println!("plot: {}", path.display()),
        Err(e) => eprintln!("svm-bench: writing {}: {e}", path.display()),
    }
    drop(clients);
    system.shutdown();
}

/// A small line plot as SVG (no plotting dependency needed for two curves).
fn svg_plot(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, m) = (640.0, 400.0, 60.0);
    let pts = curves.iter().flat_map(|c| c.1.iter());
    let xmax = pts.clone().map(|p| p.0).fold(1.0, f64::max);
    let ymax = pts.map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let x = |v: f64| m + v / xmax * (w - 2.0 * m);
    let y = |v: f64| h - m - v / ymax.max(1e-9) * (h - 2.0 * m);
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='{}' y='24' text-anchor='middle' font-size='14'>{title}</text>\n", w / 2.0);
    s += &format!("<line x1='{m}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{m}' y1='{m}' x2='{m}' y2='{}' stroke='black'/>\n", h - m, w - m, h - m, h - m);
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        s += &format!(
            "<text x='{}' y='{}' text-anchor='end'>{v:.2}</text>\n",
            m - 6.0,
            y(v) + 4.0
        );
    }
    for c in curves {
        for (t, _) in &c.1 {
            s += &format!(
                "<text x='{}' y='{}' text-anchor='middle'>{t}</text>\n",
                x(*t),
                h - m + 16.0
            );
        }
    }
    s += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>CPU threads</text>\n",
        w / 2.0,
        h - 14.0
    );
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = ["#888888", "#c0392b", "#2471a3"][i % 3];
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        s += &format!(
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>\n",
            path.join(" ")
        );
        for (a, b) in points {
            s += &format!(
                "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{color}'/>\n",
                x(*a),
                y(*b)
            );
        }
        s += &format!(
            "<text x='{}' y='{}' fill='{color}'>{name}</text>\n",
            w - m - 110.0,
            m + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}

fn main() {
    println!(
        "# svm-bench on {} cores ({})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    let only = std::env::args().nth(1);
    if only.as_deref() == Some("herd") {
        herd_side_by_side();
        return;
    }
    let (bare, typed) = ipc();
    println!("ipc round trip      bare seqpacket {bare:8.2} us | typed call {typed:8.2} us | ratio {:.2}", typed / bare);
    let (bare, engine) = copy();
    let gbps = |us: f64| (2u64 << 20) as f64 / us / 1e3;
    println!(
        "2 MiB copy          memcpy {bare:8.1} us ({:.2} GB/s) | copy engine {engine:8.1} us ({:.2} GB/s) | ratio {:.2}",
        gbps(bare),
        gbps(engine),
        engine / bare
    );
    herd_side_by_side();
}
