//! Sequences of requests driven into one pager core (the model runtime),
//! for the cargo-fuzz target `fuzz/fuzz_targets/pager_sequence.rs` and the
//! bounded proptest in `tests/tests/handler_fuzz.rs`.
//!
//! The input bytes are read as a program: each step picks a client (three
//! of them) and an action: a `Pager` request with chosen or decoded
//! fields (ids from what the client was given, another client's, or raw),
//! a CPU fault in one of its views, a GPU server's collect and finalize,
//! an eviction, or the client's end. After every step:
//! - nothing panicked and every answer is a reply or a typed error;
//! - another client's id never names anything (`NoSuchObject`,
//!   `NoSuchView`);
//! - no client holds more than its budget;
//!
//! and at the end, once every session ended, every server-wide total is
//! zero and the metadata arena is empty.

use std::collections::BTreeMap;

use ipc_protocol::interfaces::pager::{self as p, PagerError as E};
use ipc_protocol::interfaces::pager_reclaim as r;
use ipc_protocol::types::{Advice, GpuId, Location, ObjectId, PageCount, ViewId};
use ipc_protocol::Message;
use session::Handle;

use super::runtime::{gpu_migrate, gpu_open, model_core, small_config, ModelCore, ModelHandle};
use crate::core::view::PAGE;
use crate::sync::Arc;

/// Client badges the program picks from.
const BADGES: [u64; 3] = [100, 101, 102];
/// The GPU server's badge.
const GPU: u64 = 7;
/// Steps one program may take.
pub const MAX_STEPS: usize = 256;

/// Reads the program's bytes; past the end every read is 0.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (self.u8() as u64) << (8 * i))
    }

    /// A number that is usually interesting: small, an edge, or any.
    fn number(&mut self) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            4095,
            4096,
            1 << 47,
            u64::MAX,
            u64::MAX - 4095,
            1 << 63,
        ];
        match self.u8() % 4 {
            0 => self.u8() as u64,
            1 => EDGES[self.u8() as usize % EDGES.len()],
            2 => (self.u8() as u64 + 1) * PAGE,
            _ => self.u64(),
        }
    }
}

/// What each client was given, and the budgets it must stay within.
#[derive(Default)]
struct Given {
    objects: BTreeMap<u64, Vec<u32>>,
    views: BTreeMap<u64, Vec<u32>>,
}

impl Given {
    /// An id for client `badge`: its own, another's (`true`), or raw.
    fn pick(list: &BTreeMap<u64, Vec<u32>>, badge: u64, inp: &mut Input) -> (u32, bool) {
        let choice = inp.u8();
        let other = BADGES[(choice as usize / 4) % BADGES.len()];
        let from = |b: u64| list.get(&b).filter(|v| !v.is_empty()).cloned();
        match choice % 4 {
            0 | 1 => match from(badge) {
                Some(v) => (v[inp.u8() as usize % v.len()], false),
                None => (inp.u64() as u32, false),
            },
            2 if other != badge => match from(other) {
                Some(v) => (v[inp.u8() as usize % v.len()], true),
                None => (inp.u64() as u32, false),
            },
            _ => (inp.u64() as u32, false),
        }
    }
}

/// What a program did: requests served and refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    pub served: u64,
    pub refused: u64,
}

/// Runs the program in `data`; panics on a broken property (a finding).
pub fn run(data: &[u8]) -> Ran {
    let mut ran = Ran::default();
    let core = model_core(small_config("objects=8,views=16,spaces=4,fault_threads=20"));
    let mut given = Given::default();
    let mut inp = Input { data, at: 0 };
    for _ in 0..MAX_STEPS {
        if inp.done() {
            break;
        }
        let badge = BADGES[inp.u8() as usize % BADGES.len()];
        match step(&core, &mut given, badge, &mut inp) {
            Some(true) => ran.served += 1,
            Some(false) => ran.refused += 1,
            None => {}
        }
        check_budgets(&core);
    }
    for b in BADGES {
        core.end_client(b);
    }
    core.end_gpu(GPU);
    let t = core.accounting();
    assert_eq!(
        (
            t.sessions,
            t.objects,
            t.object_bytes,
            t.views,
            t.spaces,
            t.fault_threads,
            t.collects
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "every session ended, yet totals remain: {t:?}"
    );
    assert_eq!(core.arena().used(), 0, "the metadata arena is not empty");
    ran
}

/// No session over its budget.
fn check_budgets(core: &ModelCore) {
    let b = &core.cfg.budget;
    for s in core.clients() {
        let objects = s.objects().len() as u64;
        assert!(
            objects <= b.objects,
            "client {} holds {objects} objects",
            s.badge
        );
        assert!(
            s.spaces().len() as u64 <= b.spaces,
            "client {} over spaces",
            s.badge
        );
    }
}

/// One step; for a `Pager` request, whether it was served.
fn step(core: &Arc<ModelCore>, given: &mut Given, badge: u64, inp: &mut Input) -> Option<bool> {
    let Ok(s) = core.client(badge) else {
        return None; // every session slot is taken: a typed refusal
    };
    let op = inp.u8() % 12;
    let (req, foreign, handles): (p::Request, bool, Vec<ModelHandle>) = match op {
        0 => (
            p::CreateObject {
                size_bytes: inp.number(),
            }
            .into(),
            false,
            vec![],
        ),
        1 => {
            let (id, foreign) = Given::pick(&given.objects, badge, inp);
            (
                p::DestroyObject {
                    object: ObjectId::raw(id),
                }
                .into(),
                foreign,
                vec![],
            )
        }
        2 => {
            let (id, foreign) = Given::pick(&given.objects, badge, inp);
            let req = p::AttachView {
                object: ObjectId::raw(id),
                addr: inp.number() & !(PAGE - 1) | 1 << 32,
                object_first_page: inp.number() % 64,
                pages: inp.number() % 64,
            };
            let h = match inp.u8() % 8 {
                0 => vec![],
                1 => vec![ModelHandle::Memory(Arc::new(super::runtime::ModelMemory {
                    words: Vec::new(),
                }))],
                _ => vec![ModelHandle::Port],
            };
            (req.into(), foreign, h)
        }
        3 => {
            let (id, foreign) = Given::pick(&given.views, badge, inp);
            (
                p::DetachView {
                    view: ViewId::raw(id),
                }
                .into(),
                foreign,
                vec![],
            )
        }
        4..=6 => {
            let (id, foreign) = Given::pick(&given.objects, badge, inp);
            let object = ObjectId::raw(id);
            let first_page = inp.number();
            let count = PageCount::new(1 + inp.u8() as u16 * 2).unwrap_or(PAGES_1);
            let req: p::Request = match op {
                4 => p::Advise {
                    object,
                    first_page,
                    pages: inp.number(),
                    advice: Advice::PreferDevice,
                }
                .into(),
                5 => p::Prefetch {
                    object,
                    first_page,
                    count,
                    to: Location::Device,
                    gpu: GPU0,
                }
                .into(),
                _ => p::Snapshot {
                    object,
                    first_page,
                    count,
                }
                .into(),
            };
            (req, foreign, vec![])
        }
        7 => {
            // A request decoded from the program's bytes, as a server would.
            let opcode = inp.u8() as u16 % 10;
            let n = inp.u8() as usize % 48;
            let payload: Vec<u8> = (0..n).map(|_| inp.u8()).collect();
            match p::Request::decode_payload(opcode, &payload, 0) {
                Ok(req) => (req, false, vec![]),
                Err(_) => return None,
            }
        }
        8 => {
            cpu_fault(core, &s, inp);
            return None;
        }
        9 => {
            gpu_fault(core, given, badge, inp);
            return None;
        }
        10 => {
            let _ = core.reclaim_request(r::Request::Evict(r::Evict {
                gpu: GPU0,
                bytes: inp.number(),
            }));
            let _ = core.reclaim_request(r::Request::Usage(r::Usage {}));
            return None;
        }
        _ => {
            core.end_client(badge);
            given.objects.remove(&badge);
            given.views.remove(&badge);
            return None;
        }
    };
    let what = format!("{req:?}");
    let answer = core.pager_request(&s, req, handles);
    let served = answer.is_ok();
    match answer {
        Ok(_) if foreign => panic!("client {badge} was served another client's id: {what}"),
        Ok((p::Reply::CreateObject(o), _)) => {
            given.objects.entry(badge).or_default().push(o.object.get())
        }
        Ok((p::Reply::AttachView(v), _)) => {
            given.views.entry(badge).or_default().push(v.view.get())
        }
        Ok(_) => {}
        Err(e) if foreign => assert!(
            matches!(e, E::NoSuchObject | E::NoSuchView),
            "another client's id answered {e:?}, not NoSuch*: {what}"
        ),
        Err(_) => {}
    }
    Some(served)
}

const PAGES_1: PageCount = match PageCount::new(1) {
    Some(c) => c,
    None => panic!("1 is a page count"),
};
const GPU0: GpuId = match GpuId::new(0) {
    Some(g) => g,
    None => panic!("0 is a GPU id"),
};

/// A CPU fault (read or write) at some page of one of the client's views.
fn cpu_fault(
    core: &Arc<ModelCore>,
    s: &Arc<crate::core::session::ClientSession<super::runtime::ModelRuntime>>,
    inp: &mut Input,
) {
    let spaces = s.spaces();
    if spaces.is_empty() {
        return;
    }
    let space = &spaces[inp.u8() as usize % spaces.len()];
    let views = space.views();
    if views.is_empty() {
        return;
    }
    let v = &views[inp.u8() as usize % views.len()];
    let page = inp.u8() as u64 % v.len().div_ceil(PAGE).max(1);
    core.serve_fault(space, v.addr + page * PAGE, inp.u8().is_multiple_of(2));
}

/// The GPU server opens one of the client's views and migrates a chunk of
/// its object to VRAM.
fn gpu_fault(core: &Arc<ModelCore>, given: &Given, badge: u64, inp: &mut Input) {
    let Some(views) = given.views.get(&badge).filter(|v| !v.is_empty()) else {
        return;
    };
    let view = Handle::from_raw(views[inp.u8() as usize % views.len()]);
    let Ok(g) = core.gpu_session(GPU, 0) else {
        return;
    };
    let Ok(object) = gpu_open(core, &g, badge, view) else {
        return;
    };
    let Some(s) = core.find_client(badge) else {
        return;
    };
    let Some(v) = s.view(view) else { return };
    let first = inp.u8() as u64 % (v.object.pages() as u64).max(1);
    let count = (v.object.pages() as u64 - first).clamp(1, 512) as u16;
    let memory = v.object.memory.clone();
    let _ = gpu_migrate(core, &g, object, &memory, first, count);
}

// Real threads and locks: not under the shuttle build (its primitives
// panic outside a shuttle run).
#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::{run, Ran};

    #[test]
    fn a_program_that_makes_an_object_and_views_it_is_served() {
        // Client 100 creates 4 pages; attaches 2 of them at 0x1_0000_2000
        // (own id, a port); faults a page; client 101 forges 100's object.
        let program = [
            0, 0, 2, 3, // create (3 + 1) pages
            0, 2, 0, 0, // attach own object 0
            0, 2, // addr: small number 2 -> page-aligned below 2^32, then | 2^32
            0, 0, // first page 0
            0, 2, // pages 2
            2, // a port
            0, 8, 0, 0, 0, 1, // a CPU write fault
            1, 1, 2, 0, // client 101 destroys client 100's object 0
        ];
        let ran = run(&program);
        assert!(ran.served >= 2, "{ran:?}");
        assert_eq!(run(&[]), Ran::default());
        let bytes: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        run(&bytes);
    }
}
