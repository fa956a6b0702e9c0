//! The Redox kernel's scheme request and completion records, modelled field
//! for field on `redox_syscall` 0.9's `schemev2::Sqe` and `Cqe` (a host test
//! checks the layout against that crate), and decoded into the requests our
//! scheme endpoints answer. Only the kernel writes a record: `caller` and
//! the uid/gid word are its, never the client's.

/// `schemev2::Sqe`: 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sqe {
    pub opcode: u8,
    pub sqe_flags: u8,
    pub _rsvd: u16,
    /// The request's tag, echoed in its completion.
    pub tag: u32,
    pub args: [u64; 6],
    /// The calling context (process) id.
    pub caller: u64,
}

/// `schemev2::Cqe`: 16 bytes. `result` is a count, or `-errno` as `u64`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cqe {
    /// Bits 2:0: the completion opcode (0: a regular response).
    pub flags: u8,
    pub extra_raw: [u8; 3],
    pub tag: u32,
    pub result: u64,
}

/// The `schemev2::Opcode` values our endpoints use.
pub mod opcode {
    pub const REQUEST_MMAP: u8 = 21;
    pub const CANCEL: u8 = 25;
    pub const CLOSE_MSG: u8 = 27;
    pub const CALL: u8 = 28;
    pub const OPEN_AT: u8 = 29;
    pub const SENDFD: u8 = 12;
    pub const RECVFD: u8 = 31;
}

/// `SqeFlags::MULTIPLE_IDS`: a call on several handles at once.
pub const SQE_MULTIPLE_IDS: u8 = 1 << 1;

/// Who sent a request, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Errors a scheme request is answered with (Redox's errno numbers, which
/// are Linux's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    /// Path not one of the endpoints.
    NoEntry = 2,
    /// A handle id this scheme never gave out, or already closed.
    BadHandle = 9,
    /// A handle for a reply is not there (yet).
    Again = 11,
    /// The opener may not mint this endpoint's capability.
    Access = 13,
    /// The endpoint was opened already (a capability is minted once).
    Exists = 17,
    Invalid = 22,
    TooManyHandles = 24,
    NotImplemented = 38,
    /// More handles than one frame carries.
    MessageSize = 90,
    NotSupported = 95,
}

impl Errno {
    /// The completion's `result` for this error (`-errno`, as the kernel
    /// reads it).
    pub fn result(self) -> u64 {
        (-(self as i32) as i64) as u64
    }
}

/// One request, decoded. Buffers (a path, a call payload) are mapped into
/// the daemon by the kernel; the record carries only their lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Open {
        path_len: u64,
        flags: u64,
    },
    Call {
        id: u64,
        payload_len: u64,
        metadata: [u64; 3],
    },
    /// The client moved `num_fds` descriptors to handle `id`, for the frame
    /// whose request id is `token`.
    SendFd {
        id: u64,
        flags: u64,
        token: u64,
        num_fds: u64,
    },
    /// The client asks for the `num_fds` descriptors of the reply to `token`.
    RecvFd {
        id: u64,
        flags: u64,
        num_fds: u64,
        token: u64,
    },
    /// The last descriptor of handle `id` was closed.
    Close {
        id: u64,
    },
    Cancel,
    /// A lazy-mapping fault upcall: nothing produces it today (see
    /// docs/redox.md); the pager will.
    RequestMmap,
    /// Anything else is answered `NotSupported`.
    Other {
        opcode: u8,
    },
}

impl Sqe {
    pub const SIZE: usize = 64;

    /// Reads a record from the bytes the kernel wrote.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(w)
        };
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(8 + 8 * i);
        }
        Self {
            opcode: b[0],
            sqe_flags: b[1],
            _rsvd: u16::from_ne_bytes([b[2], b[3]]),
            tag: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            args,
            caller: u64_at(56),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0] = self.opcode;
        b[1] = self.sqe_flags;
        b[2..4].copy_from_slice(&self._rsvd.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tag.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b[56..64].copy_from_slice(&self.caller.to_ne_bytes());
        b
    }

    /// The caller as `redox-scheme` reads it: pid from `caller`, uid and
    /// gid from the last argument word.
    pub fn caller(&self) -> Caller {
        Caller {
            pid: self.caller,
            uid: self.args[5] as u32,
            gid: (self.args[5] >> 32) as u32,
        }
    }

    /// The request, with `redox-scheme` 0.12's argument layout per opcode.
    pub fn request(&self) -> Request {
        let a = self.args;
        match self.opcode {
            opcode::OPEN_AT => Request::Open {
                path_len: a[2],
                flags: a[3],
            },
            // A call on several handles is not part of our protocol.
            opcode::CALL if self.sqe_flags & SQE_MULTIPLE_IDS != 0 => Request::Other {
                opcode: opcode::CALL,
            },
            opcode::CALL => Request::Call {
                id: a[0],
                payload_len: a[2],
                metadata: [a[3], a[4], a[5]],
            },
            opcode::SENDFD => Request::SendFd {
                id: a[0],
                flags: a[1],
                token: a[2],
                num_fds: a[3],
            },
            opcode::RECVFD => Request::RecvFd {
                id: a[0],
                flags: a[1],
                num_fds: a[2],
                token: a[3],
            },
            opcode::CLOSE_MSG => Request::Close { id: a[0] },
            opcode::CANCEL => Request::Cancel,
            opcode::REQUEST_MMAP => Request::RequestMmap,
            other => Request::Other { opcode: other },
        }
    }
}

impl Cqe {
    pub fn regular(tag: u32, result: Result<usize, Errno>) -> Self {
        Self {
            flags: 0,
            extra_raw: [0; 3],
            tag,
            result: match result {
                Ok(n) => n as u64,
                Err(e) => e.result(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syscall::schemev2 as real;

    /// A record with a different value in every field.
    fn real_sqe(opcode: u8) -> real::Sqe {
        real::Sqe {
            opcode,
            sqe_flags: real::SqeFlags::empty(),
            _rsvd: 0x0203,
            tag: 0x0405_0607,
            args: [11, 12, 13, 14, 15, (7 << 32) | 6],
            caller: 0x0809_0a0b_0c0d_0e0f,
        }
    }

    #[test]
    fn the_records_have_the_kernels_layout() {
        assert_eq!(
            core::mem::size_of::<Sqe>(),
            core::mem::size_of::<real::Sqe>()
        );
        assert_eq!(core::mem::size_of::<Sqe>(), Sqe::SIZE);
        assert_eq!(
            core::mem::size_of::<Cqe>(),
            core::mem::size_of::<real::Cqe>()
        );
        let theirs = real_sqe(28);
        let bytes: [u8; Sqe::SIZE] = (*theirs).try_into().unwrap();
        let ours = Sqe::from_bytes(&bytes);
        assert_eq!(ours.to_bytes(), bytes);
        assert_eq!(
            (ours.opcode, ours.tag, ours.caller),
            (28, theirs.tag, theirs.caller)
        );
        assert_eq!(ours.args, theirs.args);
        assert_eq!(
            ours.caller(),
            Caller {
                pid: theirs.caller,
                uid: 6,
                gid: 7
            }
        );
        let cqe = Cqe::regular(9, Err(Errno::BadHandle));
        let mut real_cqe = real::Cqe::default();
        real_cqe.tag = 9;
        real_cqe.result =
            syscall::error::Error::mux(Err(syscall::error::Error::new(syscall::error::EBADF)))
                as u64;
        assert_eq!((cqe.tag, cqe.result), (real_cqe.tag, real_cqe.result));
    }

    #[test]
    fn opcodes_and_errnos_are_redoxs() {
        use real::Opcode;
        for (ours, theirs) in [
            (opcode::REQUEST_MMAP, Opcode::RequestMmap),
            (opcode::CANCEL, Opcode::Cancel),
            (opcode::CLOSE_MSG, Opcode::CloseMsg),
            (opcode::CALL, Opcode::Call),
            (opcode::OPEN_AT, Opcode::OpenAt),
            (opcode::SENDFD, Opcode::Sendfd),
            (opcode::RECVFD, Opcode::Recvfd),
        ] {
            assert_eq!(ours, theirs as u8, "{theirs:?}");
        }
        assert_eq!(SQE_MULTIPLE_IDS, real::SqeFlags::MULTIPLE_IDS.bits());
        use syscall::error as e;
        for (ours, theirs) in [
            (Errno::NoEntry, e::ENOENT),
            (Errno::BadHandle, e::EBADF),
            (Errno::Again, e::EAGAIN),
            (Errno::Access, e::EACCES),
            (Errno::Exists, e::EEXIST),
            (Errno::Invalid, e::EINVAL),
            (Errno::TooManyHandles, e::EMFILE),
            (Errno::NotImplemented, e::ENOSYS),
            (Errno::MessageSize, e::EMSGSIZE),
            (Errno::NotSupported, e::EOPNOTSUPP),
        ] {
            assert_eq!(ours as i32, theirs, "{ours:?}");
        }
    }

    #[test]
    fn requests_decode_with_redox_schemes_argument_layout() {
        let sqe = |op| Sqe::from_bytes(&(*real_sqe(op)).try_into().unwrap());
        assert_eq!(
            sqe(opcode::CALL).request(),
            Request::Call {
                id: 11,
                payload_len: 13,
                metadata: [14, 15, (7 << 32) | 6]
            }
        );
        assert_eq!(
            sqe(opcode::SENDFD).request(),
            Request::SendFd {
                id: 11,
                flags: 12,
                token: 13,
                num_fds: 14
            }
        );
        assert_eq!(
            sqe(opcode::RECVFD).request(),
            Request::RecvFd {
                id: 11,
                flags: 12,
                num_fds: 13,
                token: 14
            }
        );
        assert_eq!(sqe(opcode::CLOSE_MSG).request(), Request::Close { id: 11 });
        assert_eq!(
            sqe(opcode::OPEN_AT).request(),
            Request::Open {
                path_len: 13,
                flags: 14
            }
        );
        assert_eq!(sqe(opcode::REQUEST_MMAP).request(), Request::RequestMmap);
        assert_eq!(sqe(200).request(), Request::Other { opcode: 200 });
        let mut multi = sqe(opcode::CALL);
        multi.sqe_flags = SQE_MULTIPLE_IDS;
        assert_eq!(
            multi.request(),
            Request::Other {
                opcode: opcode::CALL
            }
        );
    }
}
