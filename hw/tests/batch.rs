//! Batch buffers of MI instructions run by the device model from GPU
//! virtual addresses, with page tables in VRAM written by hand: every word
//! the batches write is checked, and every bad batch ends with a typed
//! status while the device keeps running others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::model::{BatchLimits, Config};
use hw::xe::batch::Batch;
use hw::xe::layout::JobState;
use hw::xe::mi::{AtomicOp, Compare};
use hw::xe::pte::{PageSize, Target};

mod rig;
use rig::{serve_faults_with, Rig, VRAM};

const ASID: u32 = 3;
const PAGE: u64 = 4096;
/// Where batches and data live: GPU VA `VA + off` is VRAM `PA + off`.
const VA: u64 = 0x7f00_0000_0000;
const PA: u64 = 0x10_0000;

const DONE: u32 = JobState::Done as u32;

fn rig_with(limits: BatchLimits) -> Rig {
    Rig::with_config(Config {
        vram_bytes: VRAM,
        hw_threads: 16,
        batch: limits,
        ..Default::default()
    })
}

/// A rig with `pages` pages mapped at `VA` -> `PA`, zeroed.
fn mapped_rig(pages: u64, limits: BatchLimits) -> Rig {
    let rig = rig_with(limits);
    for p in 0..pages {
        rig.bar.vram().write(PA + p * PAGE, &[0u8; 4096]);
        rig.map(
            ASID,
            VA + p * PAGE,
            PA + p * PAGE,
            PageSize::Size4K,
            Target::Device,
        );
    }
    rig
}

fn va(off: u64) -> u64 {
    VA + off
}

#[test]
fn stores_land_and_the_fence_is_written_last() {
    let rig = mapped_rig(4, BatchLimits::default());
    let batch = Batch::new()
        .store_dword(va(0x1000), 0xdead_beef)
        .store_qword(va(0x1008), 0x0123_4567_89ab_cdef)
        .store_dwords(va(0x1ffc), &[1, 2, 3]) // crosses into the next page
        .end();
    rig.write_words(PA, &batch);
    let job = rig.submit_batch(ASID, va(0), va(0x3000), 0xfeed_f00d_cafe_beef);
    assert_eq!(rig.wait(job), (DONE, 0));
    assert_eq!(rig.vram_u32(PA + 0x1000), 0xdead_beef);
    assert_eq!(rig.vram_u64(PA + 0x1008), 0x0123_4567_89ab_cdef);
    let three: Vec<u32> = (0..3).map(|i| rig.vram_u32(PA + 0x1ffc + 4 * i)).collect();
    assert_eq!(three, [1, 2, 3]);
    assert_eq!(rig.vram_u64(PA + 0x3000), 0xfeed_f00d_cafe_beef);
    // Nothing else in the data pages was touched.
    for off in (0x1000..0x3000).step_by(4) {
        if ![0x1000, 0x1008, 0x100c, 0x1ffc, 0x2000, 0x2004].contains(&off) {
            assert_eq!(rig.vram_u32(PA + off), 0, "stray write at {off:#x}");
        }
    }
}

#[test]
fn a_batch_faults_on_its_own_instructions_and_replays() {
    let rig = Arc::new(rig_with(BatchLimits::default()));
    // The batch is in VRAM but not mapped: instruction fetch faults first,
    // then the data page, then the fence page.
    let batch = Batch::new().store_dword(va(0x1010), 77).end();
    rig.write_words(PA, &batch);
    rig.bar.vram().write(PA + 0x1000, &[0u8; 8192]);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_faults_with(rig.clone(), stop.clone(), |f| {
        (f.asid == ASID && f.address >= VA).then(|| PA + (f.address - VA))
    });
    let job = rig.submit_batch(ASID, va(0), va(0x2000), 9);
    let (state, faults) = rig.wait(job);
    stop.store(true, Ordering::Release);
    assert_eq!(server.join().unwrap(), 3, "batch, data and fence pages");
    assert_eq!((state, faults), (DONE, 3));
    assert_eq!(rig.vram_u32(PA + 0x1010), 77);
    assert_eq!(rig.vram_u64(PA + 0x2000), 9);
}

#[test]
fn atomics_from_many_batches_at_once_end_at_the_exact_sum() {
    let rig = mapped_rig(8 + 2 * 32, BatchLimits::default());
    let counter = va(0x1000);
    let qcounter = va(0x1008);
    let batches = 32u64;
    let rounds = 50;
    for b in 0..batches {
        let mut batch = Batch::new();
        for _ in 0..rounds {
            batch = batch
                .atomic_inc(counter)
                .atomic_add(counter, 3)
                .atomic_dec(counter)
                .atomic(AtomicOp::Add, qcounter, 5, 0);
        }
        // 50 rounds of 28 dwords: two pages per batch.
        rig.write_words(PA + (8 + 2 * b) * PAGE, &batch.end());
    }
    // More batches than hardware threads: they run 16 at a time.
    let jobs: Vec<u32> = (0..batches)
        .map(|b| rig.submit_batch(ASID, va((8 + 2 * b) * PAGE), 0, 0))
        .collect();
    for job in jobs {
        assert_eq!(rig.wait(job), (DONE, 0));
    }
    assert_eq!(rig.vram_u32(PA + 0x1000), (batches * rounds * 3) as u32);
    assert_eq!(
        rig.vram_u32(PA + 0x1004),
        0,
        "dword atomics stay in their dword"
    );
    assert_eq!(rig.vram_u32(PA + 0x1008), (batches * rounds * 5) as u32);
}

#[test]
fn cmpxchg_returns_the_old_value_through_a_register() {
    let rig = mapped_rig(2, BatchLimits::default());
    rig.bar.vram().write(PA + 0x1000, &7u32.to_le_bytes());
    let batch = Batch::new()
        .atomic_cmpxchg(va(0x1000), 6, 100) // no match: stays 7
        .store_gpr(8, va(0x1010)) // CS_GPR4 low: the old value, 7
        .atomic_cmpxchg(va(0x1000), 7, 200) // match: becomes 200
        .store_gpr(8, va(0x1014))
        .load_gpr(0, 11) // CS_GPR0: operand 1 of an atomic without inline data
        .push(hw::xe::mi::Instruction::Atomic(hw::xe::mi::Atomic {
            op: AtomicOp::Add,
            size: hw::xe::mi::AtomicSize::Dword,
            addr: va(0x1018),
            inline: None,
            return_data: false,
        }))
        .end();
    rig.write_words(PA, &batch);
    assert_eq!(rig.run_batch(ASID, va(0)), (DONE, 0));
    assert_eq!(rig.vram_u32(PA + 0x1000), 200);
    assert_eq!(rig.vram_u32(PA + 0x1010), 7);
    assert_eq!(rig.vram_u32(PA + 0x1014), 7);
    assert_eq!(rig.vram_u32(PA + 0x1018), 11);
}

#[test]
fn a_semaphore_wait_is_released_by_another_batch() {
    let rig = mapped_rig(4, BatchLimits::default());
    let (flag, out) = (va(0x3000), va(0x3004));
    let waiter = Batch::new()
        .semaphore_wait(flag, Compare::GreaterOrEqual, 2)
        .store_dword(out, 42)
        .end();
    let releaser = Batch::new().atomic_inc(flag).atomic_inc(flag).end();
    rig.write_words(PA, &waiter);
    rig.write_words(PA + 0x1000, &releaser);
    let waiting = rig.submit_batch(ASID, va(0), 0, 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        rig.bar.job_result(waiting),
        None,
        "the waiter must still wait"
    );
    assert_eq!(rig.vram_u32(PA + 0x3004), 0);
    // The engine takes the releaser while the waiter holds its thread.
    let releasing = rig.submit_batch(ASID, va(0x1000), 0, 0);
    assert_eq!(rig.wait(releasing), (DONE, 0));
    assert_eq!(rig.wait(waiting), (DONE, 0));
    assert_eq!(rig.vram_u32(PA + 0x3004), 42);
    assert_eq!(rig.vram_u32(PA + 0x3000), 2);
}

#[test]
fn copy_mem_mem_copies_each_dword() {
    let rig = mapped_rig(3, BatchLimits::default());
    let src: Vec<u32> = (0..16).map(|i| 0x5a5a_0000 | i).collect();
    rig.write_words(PA + 0x1000, &src);
    let mut batch = Batch::new();
    for i in 0..16 {
        batch = batch.copy_mem_mem(va(0x2000 + 4 * (15 - i)), va(0x1000 + 4 * i));
    }
    rig.write_words(PA, &batch.end());
    assert_eq!(rig.run_batch(ASID, va(0)), (DONE, 0));
    for i in 0..16u64 {
        assert_eq!(rig.vram_u32(PA + 0x2000 + 4 * (15 - i)), src[i as usize]);
    }
}

#[test]
fn batch_start_chains_and_a_second_level_batch_returns() {
    let rig = mapped_rig(5, BatchLimits::default());
    let data = |i: u64| va(0x4000 + 4 * i);
    let first = Batch::new()
        .store_dword(data(0), 1)
        .call(va(0x1000))
        .store_dword(data(2), 3) // after the second-level batch returns
        .jump(va(0x2000))
        .store_dword(data(5), 0xbad) // never: the chain does not come back
        .end();
    let second = Batch::new().store_dword(data(1), 2).end();
    let chained = Batch::new().store_dword(data(3), 4).end();
    rig.write_words(PA, &first);
    rig.write_words(PA + 0x1000, &second);
    rig.write_words(PA + 0x2000, &chained);
    assert_eq!(rig.run_batch(ASID, va(0)), (DONE, 0));
    let got: Vec<u32> = (0..6).map(|i| rig.vram_u32(PA + 0x4000 + 4 * i)).collect();
    assert_eq!(got, [1, 2, 3, 4, 0, 0]);
    // A second-level batch that starts another second-level batch is bad.
    let nested = Batch::new().call(va(0x1000)).end();
    rig.write_words(PA + 0x3000, &Batch::new().call(va(0x3100)).end());
    rig.write_words(PA + 0x3100, &nested);
    assert_eq!(
        rig.run_batch(ASID, va(0x3000)).0,
        JobState::BadCommand as u32
    );
}

#[test]
fn bad_instructions_end_bad_command_and_the_device_lives_on() {
    let rig = Arc::new(mapped_rig(2, BatchLimits::default()));
    let bad: [&[u32]; 5] = [
        &[0x3f << 23],                               // unknown MI opcode
        &[0x7a00_0004, 0, 0, 0, 0, 0],               // a 3D command
        &[0x1000_0002, 0x1002, 0x7f00, 1],           // misaligned store
        &[0x1880_0001, 0, 0],                        // batch start into the GGTT
        &Batch::new().store_dword(1 << 48, 1).end(), // address beyond 48 bits
    ];
    for (i, words) in bad.iter().enumerate() {
        rig.write_words(PA, words);
        let (state, _) = rig.run_batch(ASID, va(0));
        assert_eq!(state, JobState::BadCommand as u32, "batch {i}");
        // And the next good batch runs.
        rig.write_words(
            PA,
            &Batch::new().store_dword(va(0x1000), i as u32 + 1).end(),
        );
        assert_eq!(rig.run_batch(ASID, va(0)), (DONE, 0));
        assert_eq!(rig.vram_u32(PA + 0x1000), i as u32 + 1);
    }
    // A batch at an address nobody maps: its fetch faults, the driver
    // refuses, and the job ends Faulted.
    let stop = Arc::new(AtomicBool::new(false));
    let refuser = serve_faults_with(rig.clone(), stop.clone(), |_| None);
    let (state, faults) = rig.run_batch(ASID, 0x10_0000_0000);
    stop.store(true, Ordering::Release);
    assert_eq!(refuser.join().unwrap(), 1);
    assert_eq!((state, faults), (JobState::Faulted as u32, 1));
}

#[test]
fn an_endless_loop_and_an_endless_wait_end_hung_within_their_bounds() {
    let rig = mapped_rig(
        3,
        BatchLimits {
            max_instructions: 20_000,
            semaphore_timeout: Duration::from_millis(300),
        },
    );
    // A batch that jumps to itself forever.
    rig.write_words(PA, &Batch::new().noop().jump(va(0)).into_words());
    let t0 = Instant::now();
    assert_eq!(rig.run_batch(ASID, va(0)).0, JobState::Hung as u32);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // A wait that never holds, while another batch runs beside it.
    let never = Batch::new()
        .semaphore_wait(va(0x2000), Compare::Equal, 1)
        .end();
    rig.write_words(PA + 0x1000, &never);
    rig.write_words(PA + 0x1800, &Batch::new().store_dword(va(0x2004), 5).end());
    let t0 = Instant::now();
    let waiting = rig.submit_batch(ASID, va(0x1000), va(0x2008), 1);
    assert_eq!(rig.run_batch(ASID, va(0x1800)), (DONE, 0));
    assert_eq!(rig.wait(waiting).0, JobState::Hung as u32);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(rig.vram_u32(PA + 0x2004), 5);
    assert_eq!(rig.vram_u64(PA + 0x2008), 0, "a hung job writes no fence");
}

#[test]
fn invalidations_are_not_held_up_by_a_waiting_batch_and_it_sees_the_new_page() {
    let rig = mapped_rig(3, BatchLimits::default());
    let flag = va(0x2000);
    let batch = Batch::new()
        .semaphore_wait(flag, Compare::Equal, 9)
        .store_dword(va(0x1000), 1)
        .end();
    rig.write_words(PA, &batch);
    let job = rig.submit_batch(ASID, va(0), 0, 0);
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..10 {
        let t0 = Instant::now();
        rig.invalidate(ASID, flag, 12);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // Move the flag to another VRAM page holding 9: the polls follow the
    // new translation once it is invalidated.
    let other = PA + 0x10_0000;
    rig.bar.vram().write(other, &9u32.to_le_bytes());
    rig.map(ASID, flag, other, PageSize::Size4K, Target::Device);
    rig.invalidate(ASID, flag, 12);
    assert_eq!(rig.wait(job), (DONE, 0));
    assert_eq!(rig.vram_u32(PA + 0x1000), 1);
    assert_eq!(
        rig.vram_u32(PA + 0x2000),
        0,
        "the old page was never written"
    );
}

#[test]
fn a_stopping_device_ends_a_batch_stalled_on_a_fault_at_once() {
    use hw::bar::Bar;
    use hw::xe::commands::{BatchSubmit, Command};
    use hw::xe::layout::{self, Ring};
    let (t, device) = hw::model::spawn_in_process(Config {
        vram_bytes: VRAM,
        hw_threads: 4,
        ..Default::default()
    })
    .unwrap();
    let bar = Bar::connect(t, Duration::from_secs(10)).unwrap();
    let b = BatchSubmit {
        job: 1,
        asid: ASID,
        batch_addr: VA,
        fence_addr: 0,
        fence_value: 0,
    };
    bar.submit(Ring::Compute, 1, &Command::Batch(b)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bar.reg(layout::REG_FAULTS_RAISED) == 0 {
        assert!(Instant::now() < deadline, "the batch never faulted");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nobody answers the fault; the driver goes away.
    let t0 = Instant::now();
    drop(bar);
    assert!(device.join().unwrap().is_ok());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
