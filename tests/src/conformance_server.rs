//! A small `Pager` server used to test the IPC layer itself, in-process and
//! as a separate process: it keeps memfd-backed objects and reports a
//! page as SYSTEM once it holds a non-zero byte, so a test can see that the
//! server reads what the client wrote through the passed memfd. It is not
//! the pager (that lives in `pager/`); it exercises every path of the serve
//! loop: handles both ways, typed errors, rights.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use ipc_protocol::interfaces::pager::*;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{ObjectId, PageStateCode, ViewId, PAGE_SIZE};
use ipc_protocol::wire::BoundedVec;
use ipc_protocol::Capability;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};

/// Pattern the server writes at the start of every object it creates.
pub const SERVER_PATTERN: &[u8] = b"written by the conformance server";
const MAX_OBJECT: u64 = 64 << 20;

struct Object {
    owner: u64,
    memfd: OwnedFd,
    size: u64,
}

#[derive(Default)]
pub struct ConformancePager {
    objects: Mutex<HashMap<u32, Object>>,
    next: AtomicU32,
}

impl ConformancePager {
    fn with_object<T>(
        &self,
        caller: &Capability,
        id: ObjectId,
        f: impl FnOnce(&Object) -> Result<T, PagerError>,
    ) -> Result<T, PagerError> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        match objects.get(&id.get()) {
            Some(o) if o.owner == caller.badge.0 => f(o),
            _ => Err(PagerError::NoSuchObject),
        }
    }
}

impl Handler<Pager> for ConformancePager {
    /// The caller is gone, or restarted: its objects go.
    fn disconnected(&self, caller: &Capability) {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, o| o.owner != caller.badge.0);
    }

    fn handle(
        &self,
        caller: &Capability,
        req: Request,
        mut handles: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), PagerError> {
        match req {
            Request::CreateObject(CreateObject { size_bytes }) => {
                if size_bytes == 0 || size_bytes % PAGE_SIZE != 0 || size_bytes > MAX_OBJECT {
                    return Err(PagerError::BadSize);
                }
                let memfd = memfd_create("conformance-object", MemfdFlags::CLOEXEC)
                    .map_err(|_| PagerError::Host)?;
                ftruncate(&memfd, size_bytes).map_err(|_| PagerError::Host)?;
                rustix::io::pwrite(&memfd, SERVER_PATTERN, 0).map_err(|_| PagerError::Host)?;
                let client_copy = memfd.try_clone().map_err(|_| PagerError::Host)?;
                let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                self.objects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        id,
                        Object {
                            owner: caller.badge.0,
                            memfd,
                            size: size_bytes,
                        },
                    );
                Ok((
                    Reply::CreateObject(ObjectCreated {
                        object: ObjectId::raw(id),
                        size_bytes,
                    }),
                    vec![client_copy],
                ))
            }
            Request::DestroyObject(DestroyObject { object }) => {
                self.with_object(caller, object, |_| Ok(()))?;
                self.objects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&object.get());
                Ok((Reply::DestroyObject(Done {}), vec![]))
            }
            Request::AttachView(AttachView {
                object,
                pages,
                object_first_page,
                ..
            }) => {
                let uffd = handles.pop().ok_or(PagerError::BadUserfaultfd)?;
                // A userfaultfd is an anon inode; a regular file is refused.
                let st = rustix::fs::fstat(&uffd).map_err(|_| PagerError::BadUserfaultfd)?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile
                {
                    return Err(PagerError::BadUserfaultfd);
                }
                self.with_object(caller, object, |o| {
                    if object_first_page
                        .checked_add(pages)
                        .is_none_or(|end| end * PAGE_SIZE > o.size)
                    {
                        return Err(PagerError::OutOfRange);
                    }
                    Ok(())
                })?;
                Ok((
                    Reply::AttachView(ViewAttached {
                        view: ViewId::raw(1),
                    }),
                    vec![],
                ))
            }
            // It keeps no views.
            Request::DetachView(_) | Request::FindView(_) => Err(PagerError::NoSuchView),
            Request::Advise(Advise { object, .. }) => {
                self.with_object(caller, object, |_| Ok(()))?;
                Ok((Reply::Advise(Done {}), vec![]))
            }
            Request::Prefetch(Prefetch { object, .. }) => {
                self.with_object(caller, object, |_| Ok(()))?;
                Ok((Reply::Prefetch(Prefetched { moved: 0 }), vec![]))
            }
            Request::Snapshot(Snapshot {
                object,
                first_page,
                count,
            }) => self.with_object(caller, object, |o| {
                let pages = count.get() as u64;
                if first_page
                    .checked_add(pages)
                    .is_none_or(|end| end * PAGE_SIZE > o.size)
                {
                    return Err(PagerError::OutOfRange);
                }
                let mut states = Vec::with_capacity(pages as usize);
                let mut page = vec![0u8; PAGE_SIZE as usize];
                for p in first_page..first_page + pages {
                    rustix::io::pread(&o.memfd, &mut page, p * PAGE_SIZE)
                        .map_err(|_| PagerError::Host)?;
                    states.push(if page.iter().any(|b| *b != 0) {
                        PageStateCode::System
                    } else {
                        PageStateCode::Empty
                    });
                }
                let states = BoundedVec::new(states).ok_or(PagerError::OutOfRange)?;
                Ok((Reply::Snapshot(PageStates { states }), vec![]))
            }),
            Request::Discard(Discard {
                object,
                first_page,
                pages,
            }) => self.with_object(caller, object, |o| {
                let start = first_page.checked_mul(PAGE_SIZE);
                let len = pages.checked_mul(PAGE_SIZE);
                let (Some(start), Some(len)) = (start, len) else {
                    return Err(PagerError::OutOfRange);
                };
                if pages == 0 || start.checked_add(len).is_none_or(|end| end > o.size) {
                    return Err(PagerError::OutOfRange);
                }
                // The data goes: the range reads as zeros from now on.
                use rustix::fs::{fallocate, FallocateFlags};
                fallocate(
                    &o.memfd,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    start,
                    len,
                )
                .map_err(|_| PagerError::Host)?;
                Ok((Reply::Discard(Done {}), vec![]))
            }),
            Request::Accounting(_) => {
                let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
                Ok((
                    Reply::Accounting(PagerTotals {
                        sessions: 0,
                        objects: objects.len() as u64,
                        object_bytes: objects.values().map(|o| o.size).sum(),
                        views: 0,
                        spaces: 0,
                        fault_threads: 0,
                        arena_bytes: 0,
                        collects: 0,
                    }),
                    vec![],
                ))
            }
            // The stub follows no address space: nothing is ever pending.
            Request::SyncViews(_) => Ok((Reply::SyncViews(Done {}), vec![])),
        }
    }
}
