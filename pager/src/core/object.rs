//! Memory objects (DESIGN.md 2): the pages, their state words and locks,
//! and the views that reach them. State belongs to the object's pages,
//! never to a view.

use ipc_protocol::types::Advice;
use session::{Handle, RangeMap};

use super::budget::Charge;
use super::runtime::Runtime;
use super::view::View;
use crate::state::PageTable;
use crate::sync::{lock, read, write, Arc, AtomicBool, AtomicU64, Mutex, Ordering, RwLock};

pub struct Object<R: Runtime> {
    /// The owner's id for it.
    pub id: Handle,
    /// The owner's badge.
    pub owner: u64,
    pub memory: R::Memory,
    pub table: PageTable,
    views: RwLock<Vec<Arc<View<R>>>>,
    /// Invalidation sequence (rule 8).
    pub seq: AtomicU64,
    /// Being ended: no new migration may start on it.
    dying: AtomicBool,
    /// The id each GPU's server knows it by, once it opened a view of it
    /// (by GPU: a server's session belongs to one GPU, `GpuSession::gpu`).
    gpu_ids: Mutex<GpuIds>,
    /// Its pages' advice (`advice.rs`): (preferred location, atomics).
    pub advice: Mutex<RangeMap<(Advice, Advice)>>,
    /// Its regions that came back from VRAM lately (`thrash.rs`).
    pub thrash: Mutex<super::thrash::ThrashLog>,
    /// Its count and bytes in the owner's budget.
    _charge: Charge,
}

/// Ranges of one object with advice other than the default, at most
/// (`OverBudget` past it). IGT's `threads-*-new-madvise` advises a new
/// heap buffer per exec and keeps them: 3 threads of 128 on one heap.
/// A range is a B-tree entry of about 48 bytes: 24 KiB per object at
/// most, 6 MiB for a client at its object budget.
pub const MAX_ADVICE_RANGES: usize = 512;

impl<R: Runtime> Object<R> {
    pub fn new(
        id: Handle,
        owner: u64,
        memory: R::Memory,
        table: PageTable,
        charge: Charge,
    ) -> Self {
        Self {
            id,
            owner,
            memory,
            table,
            views: RwLock::new(Vec::new()),
            seq: AtomicU64::new(0),
            dying: AtomicBool::new(false),
            gpu_ids: Mutex::new(GpuIds::default()),
            advice: Mutex::new(RangeMap::new(
                (Advice::Default, Advice::Default),
                MAX_ADVICE_RANGES,
            )),
            thrash: Mutex::new(Default::default()),
            _charge: charge,
        }
    }

    pub fn pages(&self) -> usize {
        self.table.len()
    }

    pub fn is_dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    /// Marks it dying; `false` if it already was (someone else ends it).
    pub fn start_dying(&self) -> bool {
        !self.dying.swap(true, Ordering::AcqRel)
    }

    pub fn add_view(&self, v: Arc<View<R>>) {
        write(&self.views).push(v);
    }

    pub fn remove_view(&self, v: &View<R>) {
        write(&self.views).retain(|x| !core::ptr::eq(&**x, v));
    }

    pub fn views(&self) -> Vec<Arc<View<R>>> {
        read(&self.views).clone()
    }

    /// Forgets every view (the object's end; they were retired).
    pub fn clear_views(&self) {
        write(&self.views).clear();
    }

    /// The id GPU `gpu`'s server knows it by.
    pub fn gpu_id(&self, gpu: u8) -> Option<Handle> {
        lock(&self.gpu_ids).get(gpu)
    }

    /// Every GPU whose server opened it, with its id there: the servers
    /// that may map its pages (rule 8 tells each of them).
    pub fn gpu_ids(&self) -> GpuIds {
        *lock(&self.gpu_ids)
    }

    pub fn set_gpu_id(&self, gpu: u8, id: Option<Handle>) {
        lock(&self.gpu_ids).set(gpu, id);
    }
}

/// GPUs one pager serves (`svm boot --gpus` takes up to 8; a page's
/// state word could tell 16 apart).
pub const MAX_GPUS: usize = 8;

/// The id an object has in each GPU server's session, by GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuIds([Option<Handle>; MAX_GPUS]);

impl GpuIds {
    pub fn get(&self, gpu: u8) -> Option<Handle> {
        self.0.get(gpu as usize).copied().flatten()
    }

    /// Sets GPU `gpu`'s id (a GPU past [`MAX_GPUS`] has none to set).
    pub fn set(&mut self, gpu: u8, id: Option<Handle>) {
        if let Some(at) = self.0.get_mut(gpu as usize) {
            *at = id;
        }
    }

    /// (GPU, id) of every GPU that has one, in GPU order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Handle)> + '_ {
        (0u8..)
            .zip(self.0.iter())
            .filter_map(|(gpu, id)| id.map(|id| (gpu, id)))
    }
}
