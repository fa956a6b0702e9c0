//! A restarted pager's take-over (`core/rebuild.rs`, issue 14), on the
//! model runtime: one core journals and keeps its descriptors, a second
//! (generation 2) takes over from the same journal, the kept handles and
//! the same device, and finds every object, view and page where it was.
#![cfg(not(feature = "shuttle"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pager::core::rebuild::{RebuildError, Rebuilt};
use pager::journal::{Journal, Record, ViewRecord};
use pager::state::Residency;
use pager::testing::runtime::{
    cpu_write, gpu_migrate, gpu_open, model_core, object_with_view, seed, small_config, ModelCore,
    ModelHandle,
};
use session::journal::leaked as words;
use session::Handle;

const CLIENT: u64 = 100;
const GPU: u64 = 1;
const A: u64 = 0x1000_0000;
const B: u64 = 0x2000_0000;
const PAGE: u64 = 4096;

/// A core of `generation` journaling into `w`, and what was there.
fn journaled(w: &'static [AtomicU64], generation: u32) -> (Arc<ModelCore>, Vec<(u32, Record)>) {
    let mut cfg = small_config("");
    cfg.generation = generation;
    let core = model_core(cfg);
    let (j, records) = Journal::open(w);
    core.attach_journal(j);
    (core, records)
}

/// Generation 2 takes over from `old`: the device (its VRAM) and what the
/// keeper held carry over, as they outlive a pager. `before` runs on the
/// new core first.
fn try_take_over(
    old: &ModelCore,
    w: &'static [AtomicU64],
    before: impl FnOnce(&ModelCore),
) -> (Arc<ModelCore>, Result<Rebuilt, RebuildError>) {
    let (new, records) = journaled(w, 2);
    let vram = old.rt.vram.lock().unwrap().clone();
    *new.rt.vram.lock().unwrap() = vram;
    before(&new);
    let mut kept = std::mem::take(&mut *old.rt.kept.lock().unwrap());
    let r = new.rebuild(&records, &mut |k| kept.remove(&k.key()));
    (new, r)
}

fn take_over(old: &ModelCore, w: &'static [AtomicU64]) -> (Arc<ModelCore>, Rebuilt) {
    let (new, r) = try_take_over(old, w, |_| {});
    (new, r.expect("the take-over"))
}

#[test]
fn a_restarted_core_finds_every_object_view_and_page_where_it_was() {
    let w = words(64);
    let (old, _) = journaled(w, 1);
    let s = old.client(CLIENT).unwrap();
    let (o1, v1) = object_with_view(&old, &s, 8, A).unwrap();
    let (o2, v2) = object_with_view(&old, &s, 4, B).unwrap();
    seed(&s.object(o1).unwrap(), |p| 100 + p as u64);
    seed(&s.object(o2).unwrap(), |p| 200 + p as u64);
    let g = old.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&old, &g, CLIENT, v1).unwrap();
    let mem = s.object(o1).unwrap().memory.clone();
    assert_eq!(gpu_migrate(&old, &g, gid, &mem, 2, 5), Ok(5));

    let (new, r) = take_over(&old, w);
    assert_eq!(
        (r.objects, r.spaces, r.views, r.dropped),
        (2, 2, 2, 0),
        "{r:?}"
    );
    assert_eq!((r.device_pages, r.stale_frames), (5, 0), "{r:?}");
    let s2 = new.find_client(CLIENT).expect("the client's session");
    assert_eq!(s2.slot, s.slot, "the slot its ids carry");
    let obj = s2.object(o1).expect("object 1 under its id");
    for p in 0..8 {
        let i = obj.table.info(p).unwrap();
        assert!(!i.locked);
        match p {
            2..=6 => assert!(
                matches!(i.residency, Residency::Device { gpu: 0, .. }),
                "{p}"
            ),
            _ => assert_eq!(i.residency, Residency::System, "page {p}"),
        }
    }
    assert!(s2.object(o2).is_some(), "object 2 under its id");
    for (v, addr, o) in [(v1, A, o1), (v2, B, o2)] {
        let view = s2.view(v).expect("the view under its id");
        assert_eq!((view.addr, view.object.id), (addr, o));
    }
    let g2 = new.gpu_of(0).expect("the GPU server's session");
    let known = g2
        .object(Handle::from_raw(gid.get()))
        .expect("the GPU's id");
    assert!(Arc::ptr_eq(&known, &obj));
    assert!(
        obj.seq.load(Ordering::Acquire) >= 1 << 40,
        "sequences past generation 1's"
    );
    // A CPU write to a page in VRAM brings it back through the new core.
    let space = s2
        .spaces()
        .into_iter()
        .find(|sp| sp.view_at(A).is_some())
        .unwrap();
    cpu_write(&new, &space, A + 3 * PAGE, 3, 1);
    assert_eq!(obj.memory.words[3].load(Ordering::Acquire), 104);
    // The journal holds every record again, and nothing else.
    assert_eq!(new.journal().unwrap().len(), 2 + 2 + 2 + 1);
}

/// A frame the GPU server names past what a page-state word holds would be
/// recorded as another frame: the take-over refuses to serve instead.
#[test]
fn a_frame_past_what_a_state_word_holds_fails_the_take_over() {
    let w = words(64);
    let (old, _) = journaled(w, 1);
    let s = old.client(CLIENT).unwrap();
    let (o1, v1) = object_with_view(&old, &s, 8, A).unwrap();
    seed(&s.object(o1).unwrap(), |p| 100 + p as u64);
    let g = old.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&old, &g, CLIENT, v1).unwrap();
    let mem = s.object(o1).unwrap().memory.clone();
    assert_eq!(gpu_migrate(&old, &g, gid, &mem, 0, 4), Ok(4));
    let (_, r) = try_take_over(&old, w, |new| {
        let past = pager::state::MAX_PFN;
        new.rt.frames_from.store(past, Ordering::Release);
    });
    assert_eq!(r.err(), Some(RebuildError::GpuFrames));
}

/// A space whose process exited while no pager ran (a fork's child) is
/// restored, then ends at the take-over: nothing else would end it, and it
/// would hold its owner's `spaces` budget for good.
#[test]
fn a_restored_space_whose_process_is_gone_ends_at_the_take_over() {
    let w = words(64);
    let (old, _) = journaled(w, 1);
    let s = old.client(CLIENT).unwrap();
    let (_o1, v1) = object_with_view(&old, &s, 4, A).unwrap();
    let (_o2, v2) = object_with_view(&old, &s, 4, B).unwrap();
    let gone = s.view(v2).unwrap().space.id;
    let key = pager::journal::Kept::Space(gone).key();
    old.rt
        .kept
        .lock()
        .unwrap()
        .insert(key, ModelHandle::GonePort);
    let (new, r) = take_over(&old, w);
    assert_eq!((r.spaces, r.views, r.dropped), (2, 2, 0), "{r:?}");
    let s2 = new.find_client(CLIENT).unwrap();
    assert_eq!(s2.spaces().len(), 1, "the gone process's space ended");
    assert!(s2.view(v1).is_some() && s2.view(v2).is_none());
}

/// A record whose descriptor the keeper does not have (the pager died
/// between handing it over and writing the record, or the keeper refused
/// it) is dropped, with what depends on it; the rest is restored.
#[test]
fn records_without_their_descriptors_are_dropped_with_what_depends_on_them() {
    let w = words(64);
    let (old, _) = journaled(w, 1);
    let s = old.client(CLIENT).unwrap();
    let (o1, v1) = object_with_view(&old, &s, 4, A).unwrap();
    let (_o2, v2) = object_with_view(&old, &s, 4, B).unwrap();
    let key = pager::journal::Kept::Object(o1.raw()).key();
    old.rt.kept.lock().unwrap().remove(&key);
    let (new, r) = take_over(&old, w);
    // Object 1 and its view go; its space has no view left and goes too.
    assert_eq!((r.objects, r.views), (1, 1), "{r:?}");
    assert_eq!(r.dropped, 2, "{r:?}");
    let s2 = new.find_client(CLIENT).unwrap();
    assert!(s2.object(o1).is_none() && s2.view(v1).is_none());
    assert!(s2.view(v2).is_some());
    assert_eq!(s2.spaces().len(), 1, "the space left without views stopped");
}

fn record() -> impl proptest::strategy::Strategy<Value = Record> {
    use proptest::prelude::*;
    // Ids near the ones a session of slot 1 issues, and anything.
    let id = prop_oneof![(0x1000u32..0x1010).prop_map(|i| i | 1 << 20), any::<u32>()];
    let owner = prop_oneof![Just(CLIENT), any::<u64>()];
    // Mostly the size of the memory the keeper gives back (16 pages).
    let bytes = prop_oneof![3 => Just(16 * PAGE), 1 => any::<u64>()];
    prop_oneof![
        (owner.clone(), id.clone(), 0u32..4, bytes).prop_map(|(owner, id, gpu_id, bytes)| {
            let mut gpu_ids = [0; pager::journal::GPUS];
            gpu_ids[0] = gpu_id;
            Record::Object {
                owner,
                id,
                gpu_ids,
                bytes,
            }
        }),
        (owner.clone(), 0u64..8, any::<bool>()).prop_map(|(owner, id, forked)| Record::Space {
            owner,
            id,
            forked
        }),
        (
            owner,
            id.clone(),
            id,
            0u64..8,
            any::<u64>(),
            0u64..64,
            0u64..64,
            any::<bool>()
        )
            .prop_map(
                |(owner, id, object, space, addr, first_page, pages, forked)| {
                    Record::View(ViewRecord {
                        owner,
                        id,
                        client_id: id,
                        object,
                        space,
                        addr: addr & !0xfff,
                        first_page,
                        pages,
                        forked,
                    })
                }
            ),
        Just(Record::Gpu { badge: GPU, gpu: 0 }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the journal says, the take-over neither panics nor loses
    /// count: each record is restored or dropped (and cleared), and the
    /// journal holds no more records than were restored.
    #[test]
    fn any_journal_is_restored_or_dropped_record_by_record(
        records in proptest::collection::vec(record(), 0..24)
    ) {
        let w = words(64);
        let (j, _) = Journal::open(w);
        for r in &records {
            let _ = j.put(r);
        }
        drop(j);
        let (new, found) = journaled(w, 2);
        let mut kept = |k: pager::journal::Kept| match k {
            pager::journal::Kept::Object(_) => {
                let m = pager::testing::runtime::ModelMemory {
                    words: (0..16).map(|_| AtomicU64::new(1)).collect(),
                };
                Some(ModelHandle::Memory(Arc::new(m)))
            }
            pager::journal::Kept::Space(_) => Some(ModelHandle::Port),
        };
        let r = new.rebuild(&found, &mut kept).expect("no GPU frames to ask");
        let restored = r.objects + r.spaces + r.views;
        let gpu = new.gpu_sessions().len();
        proptest::prop_assert_eq!(restored + gpu + r.dropped, found.len());
        proptest::prop_assert!(new.journal().unwrap().len() <= restored + gpu);
    }
}
