//! The pager restarted (issue 14): init kills nothing but the pager, and
//! its next generation takes over from the journal and the descriptors
//! init kept (`pager/src/core/rebuild.rs`). No word is lost, wherever its
//! page was: in RAM, in VRAM, or on its way. A CPU fault raised while the
//! pager is down waits for the next generation instead of reading a hole
//! of the memfd as zeros; the client's VM, bindings, objects and views
//! work on as before. Every test runs under a time limit.

mod common;

use std::time::Duration;

use common::{bad_words, boot_mib, bound_buffer, bounded, increment};
use init::client::SvmBuffer;
use init::supervisor::System;
use ipc_protocol::interfaces::gpu::CreateVm;
use ipc_protocol::interfaces::pager::Accounting;

const LIMIT: Duration = Duration::from_secs(90);
const RESTART: Duration = Duration::from_secs(20);

/// Kills the pager and waits until generation `next` serves (the stub
/// sends the idempotent `Accounting` again after the announcement).
fn kill_pager(system: &mut System, c: &init::supervisor::Clients, next: u32) {
    system.kill("pager").unwrap();
    assert!(
        system.wait_generation("pager", next, RESTART),
        "the pager was not restarted as generation {next}"
    );
    c.pager.call(Accounting {}).expect("the next pager serves");
}

/// A buffer in VRAM (a GPU pass moved it), one in RAM only, and one CPU
/// reader that faults on the VRAM buffer while the pager is dead: every
/// word of each is right after the restart, the reader's included, and
/// the GPU and the CPU go on using all of them.
#[test]
fn pages_in_ram_and_vram_outlive_a_killed_pager_word_for_word() {
    bounded(LIMIT, || {
        let (mut system, c) = boot_mib(64);
        let vm = c.gpu.call(CreateVm {}).expect("a VM").vm;
        let in_vram = bound_buffer(&c, vm, 8 << 20, 0);
        increment(&c, vm, &in_vram);
        let in_ram = SvmBuffer::new(&c.pager, 2 << 20).expect("a buffer");
        // SAFETY: ours until release; no job runs on it.
        for (i, w) in unsafe { in_ram.words() }.iter_mut().enumerate() {
            *w = (i as u32) ^ 0xa5a5_a5a5;
        }
        system.kill("pager").unwrap();
        // Faults on pages whose only copy is in VRAM: they wait for the
        // next generation (init holds the userfaultfd), then read the data.
        let (addr, len) = (in_vram.addr as usize, in_vram.len);
        let reader = std::thread::spawn(move || {
            let base = addr as *const u32;
            (0..len / 4)
                .step_by(1024)
                // SAFETY: inside `in_vram`, released only after the join.
                .filter(|&i| unsafe { std::ptr::read_volatile(base.add(i)) } != i as u32 + 1)
                .count()
        });
        assert!(system.wait_generation("pager", 2, RESTART));
        assert_eq!(
            reader.join().unwrap(),
            0,
            "a fault raised while the pager was down"
        );
        c.pager.call(Accounting {}).expect("the next pager serves");
        assert_eq!(
            bad_words(&in_vram, |i| i as u32 + 1),
            0,
            "the pages VRAM held"
        );
        assert_eq!(
            bad_words(&in_ram, |i| i as u32 ^ 0xa5a5_a5a5),
            0,
            "the pages RAM held"
        );
        // The same binding, through the next pager's collects.
        increment(&c, vm, &in_vram);
        assert_eq!(bad_words(&in_vram, |i| i as u32 + 2), 0, "after a GPU pass");
        // New objects and views work beside the rebuilt ones.
        let fresh = bound_buffer(&c, vm, 1 << 20, 7);
        increment(&c, vm, &fresh);
        assert_eq!(
            bad_words(&fresh, |i| i as u32 + 8),
            0,
            "a buffer made after"
        );
        system.check_alive().unwrap();
        for b in [fresh, in_ram, in_vram] {
            b.release(&c.pager).unwrap();
        }
        drop(c);
        assert!(system.shutdown().is_empty());
    });
}

/// Killed again and again, with pages going back and forth in between:
/// each generation takes over from the last, and the words hold. The
/// CPU reads before each kill invalidate the GPU's mappings (the GPU
/// server keeps the newest sequence it saw), and the first GPU pass of
/// each generation must still map what it collects.
#[test]
fn three_pager_generations_in_a_row_keep_every_word() {
    bounded(LIMIT, || {
        let (mut system, c) = boot_mib(32);
        let vm = c.gpu.call(CreateVm {}).expect("a VM").vm;
        let buf = bound_buffer(&c, vm, 4 << 20, 0);
        let mut passes = 0u32;
        let pass = |passes: &mut u32| {
            increment(&c, vm, &buf);
            *passes += 1;
        };
        for next in 2..=4u32 {
            pass(&mut passes);
            assert_eq!(
                bad_words(&buf, |i| i as u32 + passes),
                0,
                "before kill {next}"
            );
            pass(&mut passes);
            kill_pager(&mut system, &c, next);
            pass(&mut passes);
            assert_eq!(
                bad_words(&buf, |i| i as u32 + passes),
                0,
                "generation {next}"
            );
        }
        assert_eq!(system.generation("pager"), Some(4));
        system.check_alive().unwrap();
        buf.release(&c.pager).unwrap();
        drop(c);
        assert!(system.shutdown().is_empty());
    });
}

/// `svm run recovery --kill pager`: the pager killed with a buffer in
/// VRAM, twice; every word comes back and the four times are printed.
#[test]
fn pager_recovery_rounds_lose_no_word() {
    bounded(LIMIT, || {
        common::recovery(&["--kill", "pager"]);
    });
}
