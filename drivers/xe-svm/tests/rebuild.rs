//! A restarted GPU server rebuilds its clients' VMs and bindings from the
//! journal its predecessor wrote (issue 14, `journal.rs`, `rebuild.rs`):
//! under the ids the clients hold, charged to them as before, and only
//! through the checks a client's own requests pass. Each test's second
//! server runs on a device of its own: what is tested here is the journal,
//! not the device (`adopt.rs`, `init/tests/gpu_restart.rs`).

mod common;

use std::sync::atomic::AtomicU64;

use common::World;
use ipc_protocol::interfaces::gpu::GpuError;
use ipc_protocol::types::JobStatus;
use xe_svm::journal::{BindingRecord, Journal};
use xe_svm::rebuild::Rebuilt;

const A: u64 = 100;
const B: u64 = 101;

/// A server that records in `words`, having rebuilt what they describe.
fn server_over(words: &'static [AtomicU64], spec: &str) -> (World, Rebuilt) {
    let w = World::new(common::budget(spec));
    let (journal, found) = Journal::open(words);
    assert!(w.server.inner.attach_journal(journal));
    let rebuilt = w.server.rebuild(&found);
    (w, rebuilt)
}

const LO: u64 = 0x10_0000;
const HI: u64 = 0x40_0000;
const FAR: u64 = 0x80_0000;

#[test]
fn vms_and_bindings_come_back_under_the_ids_their_clients_hold() {
    let words = session::journal::leaked(64);
    let (w1, nothing) = server_over(words, "");
    assert_eq!(nothing, Rebuilt::default());
    let va = w1.create_vm(A).unwrap().vm.get();
    let vb = w1.create_vm(B).unwrap().vm.get();
    let gone = w1.create_vm(A).unwrap().vm.get();
    w1.bind(A, va, 5, LO);
    w1.bind(A, va, 6, HI);
    w1.bind(B, vb, 7, LO);
    w1.unbind(A, va, HI).unwrap();
    w1.destroy_vm(A, gone).unwrap();
    drop(w1);

    let (w2, rebuilt) = server_over(words, "");
    let want = Rebuilt {
        vms: 2,
        bindings: 2,
        dropped: 0,
    };
    assert_eq!(rebuilt, want);
    // The bindings are where they were, and only there.
    assert_eq!(w2.bind_view(A, va, 8, LO), Err(GpuError::AddressInUse));
    assert_eq!(w2.bind_view(B, vb, 9, LO), Err(GpuError::AddressInUse));
    assert_eq!(w2.bind_view(A, va, 8, HI), Ok(()));
    // The destroyed VM stays gone; a VM stays its owner's.
    assert_eq!(w2.bind_view(A, gone, 8, FAR), Err(GpuError::NoSuchVm));
    assert_eq!(w2.bind_view(B, va, 8, FAR), Err(GpuError::NoSuchVm));
    // Work runs in the rebuilt VM at the rebuilt binding.
    let job = w2.touch(A, va, LO, 4096).unwrap();
    let done = w2.wait(A, job, 10_000).unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    drop(w2);

    // The next generation finds what the second one kept and added.
    let (_w3, rebuilt) = server_over(words, "");
    let want = Rebuilt {
        vms: 2,
        bindings: 3,
        dropped: 0,
    };
    assert_eq!(rebuilt, want);
}

/// Rebuilt bindings and VMs are charged as the client's own requests
/// were: a client at its `bindings` budget before the restart is at it
/// after, and one that unbinds gets room back.
#[test]
fn rebuilt_bindings_are_charged_to_their_client() {
    let words = session::journal::leaked(64);
    let (w1, _) = server_over(words, "bindings=2");
    let va = w1.create_vm(A).unwrap().vm.get();
    w1.bind(A, va, 5, LO);
    w1.bind(A, va, 6, HI);
    assert_eq!(w1.bind_view(A, va, 7, FAR), Err(GpuError::OverBudget));
    drop(w1);
    let (w2, rebuilt) = server_over(words, "bindings=2");
    assert_eq!(rebuilt.bindings, 2);
    assert_eq!(w2.bind_view(A, va, 7, FAR), Err(GpuError::OverBudget));
    w2.unbind(A, va, HI).unwrap();
    assert_eq!(w2.bind_view(A, va, 7, FAR), Ok(()));
}

fn record(view: u32, gpu_addr: u64, object: u32, first_page: u64, pages: u64) -> BindingRecord {
    BindingRecord {
        view,
        gpu_addr,
        object,
        first_page,
        pages,
        read_only: false,
    }
}

/// A journal is trusted no more than a client: records that name an id
/// nobody could hold, another's VM, pages outside their view's object or
/// none, addresses past the GPU's or in use, are dropped and cleared; the
/// good ones come back. (A view the pager no longer opens:
/// `init/tests/gpu_restart.rs`.)
#[test]
fn records_that_do_not_hold_are_dropped_and_cleared() {
    let words = session::journal::leaked(64);
    let (j, _) = Journal::open(words);
    // VM ids: the index is the ASID (1..), the generation above bit 20.
    let good = (1 << 20) | 3;
    j.record_vm(A, good).unwrap();
    j.record_vm(B, good).unwrap(); // the same id again, for another client
    j.record_vm(A, 7).unwrap(); // generation 0: never issued
    j.record_vm(A, (1 << 20) | 0xf_ffff).unwrap(); // past every ASID
    let ok = record(5, LO, 5, 0, 512);
    j.record_binding(1, A, good, ok).unwrap();
    let bad = [
        (A, good, record(6, LO, 6, 0, 16)),             // overlaps `ok`
        (A, good, record(6, HI, 6, 0, 0)),              // no page at all
        (A, good, record(6, HI, 99, 0, 16)),            // not view 6's object
        (A, good, record(6, HI, 6, 500, 100)),          // past the view's end
        (A, good, record(6, u64::MAX - 4095, 6, 0, 1)), // past the GPU's addresses
        (B, good, record(6, FAR, 6, 0, 16)),            // another's VM
        (A, 12345, record(6, FAR, 6, 0, 16)),           // no such VM
    ];
    for (i, (owner, vm, r)) in bad.into_iter().enumerate() {
        j.record_binding(10 + i as u64, owner, vm, r).unwrap();
    }
    drop(j);
    let (w, rebuilt) = server_over(words, "");
    let want = Rebuilt {
        vms: 1,
        bindings: 1,
        dropped: 3 + bad.len(),
    };
    let (_, found) = Journal::open(words);
    assert_eq!(rebuilt, want, "{found:?}");
    assert_eq!(w.bind_view(A, good, 8, LO), Err(GpuError::AddressInUse));
    drop(w);
    // What was dropped was cleared: the next generation finds only the
    // records that held.
    let (_, found) = Journal::open(words);
    assert_eq!(found.len(), 2, "{found:?}");
}

/// Bindings follow their views across a restart too. The GPU server dies
/// after an mremap's `ViewCopied` and before its `ViewGone`: the next
/// generation rebuilds both bindings from the journal; the pager's stub
/// sends the caught `ViewCopied` again (idempotent), which finds the twin
/// in place and makes nothing; then `ViewGone` leaves only the moved one.
#[test]
fn a_binding_that_followed_its_view_comes_back_where_it_went() {
    use ipc_protocol::interfaces::gpu_notify::{self as n, GpuNotify};
    use ipc_protocol::server::Handler;
    use ipc_protocol::types::ViewId;
    use ipc_protocol::{Capability, Rights};
    let notify = |w: &World, req| {
        let cap = Capability::new(1, Rights::NOTIFY);
        match Handler::<GpuNotify>::handle(&w.server, &cap, req, vec![]) {
            Ok((r, _)) => r,
            Err(e) => panic!("{e:?}"),
        }
    };
    let moved = n::ViewCopied {
        view: ViewId::raw(5),
        new_view: ViewId::raw(9),
        from: LO,
        to: HI,
    };
    let words = session::journal::leaked(64);
    let (w1, _) = server_over(words, "");
    let va = w1.create_vm(A).unwrap().vm.get();
    w1.bind(A, va, 5, LO);
    notify(&w1, n::Request::ViewCopied(moved.clone()));
    drop(w1);
    let w2 = World::new(common::budget(""));
    // The pager knows view 9 as the moved view of object 5.
    w2.pager.view_objects.lock().unwrap().insert(9, 5);
    let (journal, found) = Journal::open(words);
    w2.server.inner.attach_journal(journal);
    let rebuilt = w2.server.rebuild(&found);
    assert_eq!((rebuilt.vms, rebuilt.bindings, rebuilt.dropped), (1, 2, 0));
    match notify(&w2, n::Request::ViewCopied(moved)) {
        n::Reply::ViewCopied(c) => assert_eq!((c.bindings, c.skipped), (0, 1)),
        r => panic!("unexpected {r:?}"),
    }
    let gone = n::ViewGone {
        view: ViewId::raw(5),
    };
    notify(&w2, n::Request::ViewGone(gone));
    assert_eq!(w2.bind_view(A, va, 8, HI), Err(GpuError::AddressInUse));
    assert_eq!(w2.bind_view(A, va, 8, LO), Ok(()));
}

mod any_journal {
    //! Journals of random records, plausible and not: the rebuild never
    //! panics, every record is restored or dropped, what is restored is
    //! what the next generation finds, and no two restored bindings of a
    //! VM overlap.

    use super::*;
    use proptest::prelude::*;
    use xe_svm::journal::Record;

    fn vm_id() -> impl Strategy<Value = u32> {
        prop_oneof![(1u32..6).prop_map(|asid| (1 << 20) | asid), any::<u32>(),]
    }

    fn record() -> impl Strategy<Value = Record> {
        let owner = prop_oneof![Just(A), Just(B), any::<u64>()];
        let binding = (
            0u32..12,
            prop_oneof![(0u64..64).prop_map(|p| p << 21), any::<u64>()],
            0u32..12,
            prop_oneof![0u64..600, any::<u64>()],
            prop_oneof![0u64..600, any::<u64>()],
            any::<bool>(),
        )
            .prop_map(|(view, gpu_addr, object, first_page, pages, read_only)| {
                BindingRecord {
                    view,
                    gpu_addr,
                    object,
                    first_page,
                    pages,
                    read_only,
                }
            });
        prop_oneof![
            (owner.clone(), vm_id()).prop_map(|(owner, vm)| Record::Vm { owner, vm }),
            (owner, vm_id(), binding).prop_map(|(owner, vm, binding)| Record::Binding {
                owner,
                vm,
                binding
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn any_journal_is_restored_or_dropped_record_by_record(
            records in proptest::collection::vec(record(), 0..24)
        ) {
            let words = session::journal::leaked(32);
            let (j, _) = Journal::open(words);
            for (i, r) in records.iter().enumerate() {
                let written = match *r {
                    Record::Vm { owner, vm } => j.record_vm(owner, vm),
                    Record::Binding { owner, vm, binding } => {
                        j.record_binding(i as u64, owner, vm, binding)
                    }
                };
                prop_assert!(written.is_ok());
            }
            // One record per VM key: a VM recorded twice is one record.
            let written = j.len();
            drop(j);
            let (w, rebuilt) = server_over(words, "");
            prop_assert_eq!(rebuilt.vms + rebuilt.bindings + rebuilt.dropped, written);
            let (_, kept) = Journal::open(words);
            prop_assert_eq!(kept.len(), rebuilt.vms + rebuilt.bindings);
            let bindings: Vec<(u64, u32, BindingRecord)> = kept
                .iter()
                .filter_map(|(_, r)| match *r {
                    Record::Binding { owner, vm, binding } => Some((owner, vm, binding)),
                    Record::Vm { .. } => None,
                })
                .collect();
            for (i, (o, v, b)) in bindings.iter().enumerate() {
                for (o2, v2, b2) in &bindings[i + 1..] {
                    let overlap = b.gpu_addr < b2.gpu_addr + b2.pages * 4096
                        && b2.gpu_addr < b.gpu_addr + b.pages * 4096;
                    prop_assert!(!(o == o2 && v == v2 && overlap), "{b:?} and {b2:?}");
                }
            }
            drop(w);
        }
    }
}
