//! The library's error codes: every C entry point returns `SVM_OK` (0) or
//! one of these, negative (`svm.h`'s `svm_status`).

use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::GpuError;
use ipc_protocol::interfaces::pager::PagerError;
use ipc_protocol::transport::TransportError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum SvmError {
    /// No system to talk to (not started by `svm exec`, or it went).
    NotConnected = -1,
    /// A bad argument: null pointer, zero or overflowing length, a range
    /// that is not this library's memory, an unknown enum value.
    Invalid = -2,
    /// No memory: the pager refused an object, or the address space is full.
    NoMemory = -3,
    /// A budget the system gives this client is used up.
    OverBudget = -4,
    /// No such VM, job or object (or not this client's).
    NotFound = -5,
    /// The call or the job did not finish in time.
    Timeout = -6,
    /// The GPU job faulted on an address it could not reach.
    JobFaulted = -7,
    /// The GPU job was refused or hung (bad batch, device hang).
    JobFailed = -8,
    /// A server refused for a reason of its own (busy, no VRAM, host error).
    Server = -9,
    /// The endpoint failed (the server died or restarted).
    Transport = -10,
    /// Called in a forked child: the endpoints are the parent's.
    Forked = -11,
    /// The operation is not built yet.
    NotSupported = -12,
    /// A bug in this library caught at the boundary (it never aborts).
    Internal = -13,
    /// The endpoint lacks the right for this call.
    Denied = -14,
}

impl SvmError {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The text `svm_strerror` gives (NUL-terminated).
    pub fn text(code: i32) -> &'static [u8] {
        match code {
            0 => b"success\0",
            -1 => b"not connected to an xe-svm system\0",
            -2 => b"invalid argument\0",
            -3 => b"out of memory\0",
            -4 => b"over budget\0",
            -5 => b"no such VM, job or object\0",
            -6 => b"timed out\0",
            -7 => b"GPU job faulted\0",
            -8 => b"GPU job failed\0",
            -9 => b"server error\0",
            -10 => b"transport error\0",
            -11 => b"called in a forked child\0",
            -12 => b"not supported\0",
            -13 => b"internal error\0",
            -14 => b"permission denied\0",
            _ => b"unknown error\0",
        }
    }
}

fn transport(t: TransportError) -> SvmError {
    match t {
        TransportError::TimedOut => SvmError::Timeout,
        _ => SvmError::Transport,
    }
}

impl From<CallError<PagerError>> for SvmError {
    fn from(e: CallError<PagerError>) -> Self {
        match e {
            CallError::Server(p) => match p {
                PagerError::NoSuchObject | PagerError::NoSuchView => Self::NotFound,
                PagerError::OutOfRange | PagerError::BadSize | PagerError::BadUserfaultfd => {
                    Self::Invalid
                }
                PagerError::OutOfMetadata => Self::NoMemory,
                PagerError::OverBudget => Self::OverBudget,
                PagerError::NotSupported => Self::NotSupported,
                PagerError::Busy | PagerError::GpuUnavailable | PagerError::Host => Self::Server,
            },
            CallError::Transport(t) => transport(t),
            CallError::Denied(_) => Self::Denied,
            CallError::Protocol(_) | CallError::UnexpectedReply => Self::Internal,
        }
    }
}

impl From<CallError<GpuError>> for SvmError {
    fn from(e: CallError<GpuError>) -> Self {
        match e {
            CallError::Server(g) => match g {
                GpuError::NoSuchVm
                | GpuError::NoSuchView
                | GpuError::NoSuchJob
                | GpuError::NoSuchBo => Self::NotFound,
                GpuError::BadRange | GpuError::AddressInUse => Self::Invalid,
                GpuError::OutOfMetadata | GpuError::OutOfVram => Self::NoMemory,
                GpuError::NotSupported => Self::NotSupported,
                _ => Self::Server,
            },
            CallError::Transport(t) => transport(t),
            CallError::Denied(_) => Self::Denied,
            CallError::Protocol(_) | CallError::UnexpectedReply => Self::Internal,
        }
    }
}
