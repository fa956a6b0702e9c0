//! Who may talk to whom: every endpoint `init` creates at boot, the
//! descriptor each side gets, the interface, and the rights of the badge
//! the serving side assigns. The servers read their side from the command
//! line; this table is the one place it is decided (DESIGN.md 5a, 6).

use ipc_protocol::Rights;

/// The client's badge: the same number in every server, so the pager can
/// check that a view the GPU server opens for a client is that client's.
pub const CLIENT_BADGE: u64 = 100;

pub struct Endpoint {
    pub interface: &'static str,
    pub server: &'static str,
    pub server_fd: i32,
    /// `None`: the client side stays in `init` (the workload runner).
    pub client: Option<(&'static str, i32)>,
    pub rights: Rights,
}

pub const MANIFEST: &[Endpoint] = &[
    Endpoint { interface: "device control", server: "xe-model", server_fd: 3, client: Some(("xe-svm", 3)), rights: Rights::empty() },
    Endpoint {
        interface: "Gpu",
        server: "xe-svm",
        server_fd: 4,
        client: None,
        rights: Rights::GPU_VM.union(Rights::GPU_SUBMIT).union(Rights::GPU_BO).union(Rights::GPU_STATS),
    },
    Endpoint { interface: "PagerMigrate", server: "pager", server_fd: 5, client: Some(("xe-svm", 5)), rights: Rights::MIGRATE },
    Endpoint { interface: "GpuNotify", server: "xe-svm", server_fd: 6, client: Some(("pager", 6)), rights: Rights::NOTIFY },
    Endpoint {
        interface: "Pressure",
        server: "mm-server",
        server_fd: 3,
        client: Some(("xe-svm", 7)),
        rights: Rights::PRESSURE_REPORT.union(Rights::PRESSURE_RESERVE),
    },
    Endpoint {
        interface: "Pager",
        server: "pager",
        server_fd: 4,
        client: None,
        rights: Rights::OBJECT.union(Rights::VIEW).union(Rights::ADVISE).union(Rights::SNAPSHOT),
    },
];
