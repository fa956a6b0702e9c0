"""A toy `Pager` (docs/ipc.md, interface 1) with small real semantics:
objects are memfds the caller maps; a page is reported `System` once it
holds a non-zero byte, `Empty` before; a view is recorded but never
faulted (there is no userfaultfd handling here). Every id is the caller's
own (per badge), counters never reuse an id, and each caller may hold a
bounded number of objects and views."""

import os
import stat
import threading

from .server import ServerError

PAGE = 4096
MAX_OBJECT_BYTES = 64 << 20
MAX_OBJECTS = 64
MAX_VIEWS = 64


class ToyPager:
    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 1
        self.objects = {}  # id -> (badge, memfd, pages)
        self.views = {}  # id -> (badge, object)

    def new_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def own_object(self, badge, oid):
        o = self.objects.get(oid)
        if o is None or o[0] != badge:
            raise ServerError("NoSuchObject")
        return o

    def disconnected(self, badge):
        with self.lock:
            for oid in [i for i, o in self.objects.items() if o[0] == badge]:
                os.close(self.objects.pop(oid)[1])
            for vid in [i for i, v in self.views.items() if v[0] == badge]:
                del self.views[vid]

    def handle(self, badge, name, f, fds):
        try:
            with self.lock:
                return getattr(self, "do_" + name)(badge, f, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def do_CreateObject(self, badge, f, _):
        size = f["size_bytes"]
        if size == 0 or size % PAGE or size > MAX_OBJECT_BYTES:
            raise ServerError("BadSize")
        if sum(1 for o in self.objects.values() if o[0] == badge) >= MAX_OBJECTS:
            raise ServerError("OutOfMetadata")
        fd = os.memfd_create("toy-pager-object", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        oid = self.new_id()
        self.objects[oid] = (badge, fd, size // PAGE)
        return {"object": oid, "size_bytes": size}, [os.dup(fd)]

    def do_DestroyObject(self, badge, f, _):
        self.own_object(badge, f["object"])
        if any(v == (badge, f["object"]) for v in self.views.values()):
            raise ServerError("Busy")
        os.close(self.objects.pop(f["object"])[1])
        return {}, []

    def do_AttachView(self, badge, f, fds):
        _, _, pages = self.own_object(badge, f["object"])
        end = f["object_first_page"] + f["pages"]
        if f["pages"] == 0 or end > pages or f["addr"] % PAGE:
            raise ServerError("OutOfRange")
        # A userfaultfd is an anonymous inode, never a regular file.
        if stat.S_ISREG(os.fstat(fds[0]).st_mode):
            raise ServerError("BadUserfaultfd")
        if sum(1 for v in self.views.values() if v[0] == badge) >= MAX_VIEWS:
            raise ServerError("OutOfMetadata")
        vid = self.new_id()
        self.views[vid] = (badge, f["object"])
        return {"view": vid}, []

    def do_DetachView(self, badge, f, _):
        v = self.views.get(f["view"])
        if v is None or v[0] != badge:
            raise ServerError("NoSuchView")
        del self.views[f["view"]]
        return {}, []

    def do_Advise(self, badge, f, _):
        self.own_object(badge, f["object"])
        return {}, []

    def do_Prefetch(self, badge, f, _):
        self.own_object(badge, f["object"])
        raise ServerError("NotSupported")

    def do_SyncViews(self, badge, f, _):
        # The toy follows no address space: no view change is ever pending.
        return {}, []

    def do_Snapshot(self, badge, f, _):
        _, fd, pages = self.own_object(badge, f["object"])
        first, count = f["first_page"], f["count"]
        if first + count > pages:
            raise ServerError("OutOfRange")
        states = []
        for p in range(first, first + count):
            data = os.pread(fd, PAGE, p * PAGE)
            states.append("System" if any(data) else "Empty")
        return {"states": states}, []
