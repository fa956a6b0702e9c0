//! The `PagerMigrate` interface: the GPU server's fault path (DESIGN.md 5,
//! "GPU fault"), served for its session. It names objects by the ids its
//! session gave them (`OpenView`), so it reaches only objects of views a
//! client bound; its collects are its session's until finalized, and go
//! back if the session ends first. Rule 9: nothing here waits on the GPU
//! server.

use ipc_protocol::interfaces::pager_migrate::{self as m, MigrateError as E};
use ipc_protocol::types::{ObjectId, PageMask, Seq};
use ipc_protocol::wire::BoundedVec;
use session::Handle;

use super::backend::CoreBackend;
use super::object::Object;
use super::runtime::Runtime;
use super::session::{GpuSession, InFlight};
use super::Core;
use crate::migrate::{collect, finalize, Chunk, Peers};
use crate::state::{Residency, MAX_PFN};
use crate::sync::{Arc, Ordering};

type Answer<R> = Result<(m::Reply, Vec<<R as Runtime>::Handle>), E>;

/// Where each page of `in_place` (relative to `chunk`, locked by a collect:
/// its word still names its source) is (`Collected.peer_frames`), and the
/// pages named: one whose frame an entry cannot hold is left out (it
/// migrates instead).
fn peer_frames<R: Runtime>(
    o: &Object<R>,
    chunk: Chunk,
    in_place: &PageMask,
) -> (PageMask, Vec<u32>) {
    let mut named = PageMask::EMPTY;
    let mut frames = Vec::with_capacity(in_place.count() as usize);
    for i in in_place.iter() {
        let frame = match o.table.info(chunk.first + i).map(|f| f.residency) {
            Ok(Residency::Device { gpu, pfn }) => m::peer_frame(gpu, pfn),
            _ => None,
        };
        if let Some(f) = frame {
            named.set(i);
            frames.push(f);
        }
    }
    (named, frames)
}

/// The chunk `[first, first + count)` of `o`, checked.
fn chunk_of<R: Runtime>(o: &Object<R>, first: u64, count: u16) -> Result<Chunk, E> {
    let end = first.checked_add(count as u64).ok_or(E::OutOfRange)?;
    if count == 0 || end > o.pages() as u64 {
        return Err(E::OutOfRange);
    }
    Ok(Chunk {
        first: first as usize,
        count: count as usize,
    })
}

impl<R: Runtime> Core<R> {
    /// Serves one `PagerMigrate` request of the GPU server's session `g`.
    pub fn migrate_request(&self, g: &GpuSession<R>, req: m::Request) -> Answer<R> {
        use m::{Reply, Request};
        // A GPU server moves pages into its own GPU's VRAM and no other's.
        let named = match &req {
            Request::Collect(c) => Some(c.gpu),
            Request::Finalize(f) => Some(f.gpu),
            Request::Resident(r) => Some(r.gpu),
            Request::OpenView(_) | Request::GetPages(_) => None,
        };
        if named.is_some_and(|gpu| !g.owns_gpu(gpu.get())) {
            return Err(E::NotOwner);
        }
        match req {
            Request::OpenView(o) => {
                let (reply, h) = self.open_view(g, o)?;
                Ok((Reply::OpenView(reply), vec![h]))
            }
            Request::GetPages(q) => Ok((Reply::GetPages(self.get_pages(g, q)?), vec![])),
            Request::Collect(c) => Ok((Reply::Collect(self.collect(g, c)?), vec![])),
            Request::Finalize(f) => Ok((Reply::Finalize(self.finalize(g, f)?), vec![])),
            Request::Resident(q) => Ok((Reply::Resident(self.resident(g, q)?), vec![])),
        }
    }

    /// A live object the GPU server opened.
    fn opened(&self, g: &GpuSession<R>, id: ObjectId) -> Result<Arc<Object<R>>, E> {
        g.object(Handle::from_raw(id.get()))
            .filter(|o| !o.is_dying())
            .ok_or(E::NoSuchObject)
    }

    /// Opens client `client`'s view for a GPU binding: the view must be
    /// that client's (its id is looked up in that client's session only).
    fn open_view(
        &self,
        g: &GpuSession<R>,
        q: m::OpenView,
    ) -> Result<(m::ViewOpened, R::Handle), E> {
        let s = self.find_client(q.client).ok_or(E::NoSuchView)?;
        // A fork's twin is not the client's to bind.
        let v = s
            .view(Handle::from_raw(q.view.get()))
            .filter(|v| !v.forked)
            .ok_or(E::NoSuchView)?;
        if v.object.is_dying() {
            return Err(E::NoSuchObject);
        }
        let id = g.open(&v.object).ok_or(if v.object.is_dying() {
            E::NoSuchObject
        } else {
            E::OverBudget
        })?;
        self.note_object(&v.object);
        let h = self
            .rt
            .share_memory(&v.object.memory)
            .map_err(|_| E::Host)?;
        Ok((
            m::ViewOpened {
                object: ObjectId::raw(id.raw()),
                addr: v.addr,
                object_first_page: v.first_page as u64,
                pages: v.pages as u64,
            },
            h,
        ))
    }

    fn get_pages(&self, g: &GpuSession<R>, q: m::GetPages) -> Result<m::Pages, E> {
        let o = self.opened(g, q.object)?;
        let chunk = chunk_of(&o, q.first_page, q.count.get())?;
        let seq = o.seq.load(Ordering::Acquire);
        let (mut system, mut device, mut empty) =
            (PageMask::EMPTY, PageMask::EMPTY, PageMask::EMPTY);
        for (i, pg) in chunk.pages() {
            let info = o.table.info(pg).map_err(|_| E::OutOfRange)?;
            if info.locked {
                continue;
            }
            match info.residency {
                Residency::System => system.set(i),
                Residency::Device { .. } => device.set(i),
                Residency::Empty => empty.set(i),
            }
        }
        Ok(m::Pages {
            seq: Seq::raw(seq),
            system,
            device,
            empty,
        })
    }

    /// Collect (rule 1): trylocks the chunk's pages and records what it got
    /// as the session's until its finalize. A dying object takes no new
    /// migration (its end waits for the ones in flight).
    fn collect(&self, g: &GpuSession<R>, c: m::Collect) -> Result<m::Collected, E> {
        let o = self.opened(g, c.object)?;
        let chunk = chunk_of(&o, c.first_page, c.count.get())?;
        // A restarted server's predecessor, or sent to ours: nothing will
        // finalize it.
        if c.generation < g.generation() || c.pager_generation.max(1) < self.cfg.generation {
            return Err(E::Stale);
        }
        g.reserve_collect()?;
        let backend = CoreBackend::for_gpu(self, &o, g.gpu);
        let seq = o.seq.load(Ordering::Acquire);
        // Pages in another GPU's VRAM move straight to this one's.
        let got = match collect(&o.table, &backend, chunk, g.gpu, Peers::Take) {
            Ok(got) => got,
            Err(_) => {
                g.unreserve_collect();
                return Err(E::Host);
            }
        };
        if !got.got.is_empty() && o.is_dying() {
            // Its end began while the pages were being taken: it may have
            // passed them already, so this migration must not go on (the
            // locks order it: an end that passed a page before this collect
            // took it had marked the object dying first).
            let f = InFlight {
                object: o,
                chunk,
                gpu: c.gpu.get(),
                collected: got,
                since_us: self.rt.now_us(),
                generation: c.generation,
            };
            self.undo_collect(&f);
            g.unreserve_collect();
            return Err(E::NoSuchObject);
        }
        let mut remote = super::advice::remote_pages(&o, chunk, &got.got, g.gpu).or(
            &super::unreached::unreached_pages(&o, chunk)
                .or(&self.held_pages(&o, chunk))
                .and(&got.got),
        );
        // Peer pages mapped in place, where a reply can name their frame;
        // one it cannot migrates (every page is either mapped where it is
        // or moved, so the fault progresses).
        let in_place = got.peer.and(&remote);
        let (in_place, peer_frames) = peer_frames(&o, chunk, &in_place);
        remote = remote.and_not(&got.peer).or(&in_place);
        let reply = m::Collected {
            seq: Seq::raw(seq),
            got: got.got,
            zero: got.zero,
            device: got.device,
            remote,
            cpu_atomics: super::advice::cpu_atomic_pages(&o, chunk),
            peer: got.peer,
            peer_frames: BoundedVec::new(peer_frames).ok_or(E::Host)?,
        };
        if got.got.is_empty() {
            g.unreserve_collect();
            return Ok(reply);
        }
        let f = InFlight {
            object: o,
            chunk,
            gpu: c.gpu.get(),
            collected: got,
            since_us: self.rt.now_us(),
            generation: c.generation,
        };
        if let Err(f) = g.record(f) {
            // The session ended meanwhile (or the arena is full): the
            // pages go back at once.
            self.undo_collect(&f);
            g.unreserve_collect();
            return Err(if g.is_ended() {
                E::NoSuchObject
            } else {
                E::OverBudget
            });
        }
        // A newer generation took over meanwhile: this one, recorded after
        // its undo, is undone here (`resident.rs`).
        let newest = g.generation();
        if c.generation < newest {
            self.undo_older_collects(g, newest);
            return Err(E::Stale);
        }
        Ok(reply)
    }

    /// Finalize: each collected page by its own result; names the collect
    /// by its chunk and `got` mask.
    fn finalize(&self, g: &GpuSession<R>, f: m::Finalize) -> Result<m::Finalized, E> {
        // A dying object still takes the finalize of a collect in flight.
        let o = g
            .object(Handle::from_raw(f.object.get()))
            .ok_or(E::NoSuchObject)?;
        let chunk = chunk_of(&o, f.first_page, f.count.get())?;
        // Frames of the chunk's pages must fit a state word.
        if f.vram_first_pfn > MAX_PFN - chunk.count as u64 {
            return Err(E::OutOfRange);
        }
        if f.got.is_empty() {
            // A collect that got nothing has nothing to finalize.
            return Ok(m::Finalized {
                device: 0,
                returned: 0,
                device_pages: PageMask::EMPTY,
                late: PageMask::EMPTY,
            });
        }
        let taken = g
            .take(&o, chunk, f.gpu.get(), &f.got)
            .ok_or(E::NotCollected)?;
        let backend = CoreBackend::for_gpu(self, &o, g.gpu);
        let c = &taken.rec.collected;
        let r = finalize(
            &o.table,
            &backend,
            chunk,
            c,
            &f.migrated.and(&c.got),
            f.gpu.get(),
            f.vram_first_pfn,
        );
        g.unreserve_collect();
        let done = r.map_err(|_| E::Host)?;
        Ok(m::Finalized {
            device: done.device.count() as u16,
            returned: done.returned as u16,
            device_pages: done.device,
            late: done.late,
        })
    }
}
