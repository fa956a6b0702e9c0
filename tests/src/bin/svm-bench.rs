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
    ipc_protocol::server::spawn::<Pager, _>("bench", Arc::new(s), Capability::new(1, Rights::all()), Arc::new(ConformancePager::default()), 1);
    let client: Client<Pager> = Client::new(Arc::new(c));
    let (obj, _) = client.call_with_handles(CreateObject { size_bytes: 4096 }, vec![]).unwrap();
    let typed = per_op_us(15, 2000, || {
        client.call(Advise { object: obj.object, first_page: 0, pages: 1, advice: Advice::PreferDevice }).unwrap();
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
    let (t, _h) = spawn_in_process(Config { vram_bytes: 64 << 20, ..Default::default() }).unwrap();
    let bar = Bar::connect(t, Duration::from_secs(10)).unwrap();
    let s = bar.dma_map(0, src.dup_fd().unwrap(), BYTES as u64).unwrap();
    let seq = AtomicU32::new(1);
    // Ours: system -> VRAM through the copy ring, submission and completion included.
    let engine = per_op_us(15, 20, || {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        bar.submit(Ring::Copy, n, &Command::MemCopy(MemCopy::contiguous(s, 0, BYTES as u64).unwrap())).unwrap();
        bar.wait_seqno(layout::REG_BCS_DONE, n, Duration::from_secs(10)).unwrap();
    });
    (bare, engine)
}

fn main() {
    println!("# svm-bench on {} cores ({})", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH);
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
}
