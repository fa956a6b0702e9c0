//! Who may talk to whom: every endpoint `init` creates at boot, which
//! process serves it and which calls it, the descriptor and command-line
//! flag each side gets, and the rights the serving side grants the badge.
//! The supervisor wires descriptors and flags from this table alone
//! (docs/design.md 5a, 6).

use ipc_protocol::Rights;

/// The first client's badge: the same number in every server, so the pager
/// can check that a view the GPU server opens for a client is that client's.
/// Client slot `i` has badge `CLIENT_BADGE + i`.
pub const CLIENT_BADGE: u64 = 100;

/// Clients a system can be booted with (`BootOptions::clients`).
pub const MAX_CLIENTS: usize = 8;

/// A per-client endpoint of slot `i` sits at the manifest's descriptor plus
/// `i` times this, on the serving side.
pub const CLIENT_FD_STRIDE: i32 = 16;

pub fn client_badge(slot: usize) -> u64 {
    CLIENT_BADGE + slot as u64
}

/// The descriptor a per-client endpoint of `slot` gets in its server.
pub fn client_fd(base: i32, slot: usize) -> i32 {
    base + CLIENT_FD_STRIDE * slot as i32
}

/// One side of an endpoint: the process, the descriptor it inherits the
/// socket as, and the flag that tells it which descriptor that is.
pub struct Side {
    pub process: &'static str,
    pub fd: i32,
    pub flag: &'static str,
}

pub struct Endpoint {
    pub interface: &'static str,
    pub server: Side,
    /// `None`: the calling side stays in `init` (the workload runner).
    pub client: Option<Side>,
    /// What the server grants this endpoint's badge; passed to the server
    /// as `--<name>-rights=<bits>` next to `--<name>-fd`.
    pub rights: Rights,
    /// One endpoint per client slot, each with the slot's badge (passed as
    /// `--client-badge` after its `--client-fd`).
    pub per_client: bool,
}

/// Servers `init` starts again when they die (`process.rs`). The device
/// model is hardware: it is never restarted, it outlives its driver
/// instead ([`DEVICE_ATTACH_FD`]). The GPU server rebuilds its state after
/// a restart from the pager's page states, adopting the pages its
/// predecessor left in VRAM (issue 14); the pager rebuilds its objects,
/// spaces and views from its journal and the descriptors `init` kept
/// ([`KEEP_FD`]), and its page states from the memfds and the GPU server.
pub const RESTARTABLE: &[&str] = &["mm-server", "xe-svm", "pager"];

/// The device model's attach channel (`xe-model --attach-fd`), when the
/// GPU server is restartable: the device then outlives its driver, resets
/// what the driver set up when it dies (VRAM kept), and takes the next
/// generation's control socket, which `init` sends on this channel. The
/// device stops when `init` closes it.
pub const DEVICE_ATTACH_FD: i32 = 4;

/// A restartable server's journal (`xe-svm --journal-fd`, `pager
/// --journal-fd`): a memfd `init` makes at boot and hands every
/// generation, where the server records what its clients hold (the GPU
/// server: VMs and bindings, `drivers/xe-svm/src/journal.rs`; the pager:
/// objects, address spaces and views, `pager/src/journal.rs`) and from
/// which the next generation rebuilds it.
pub const JOURNAL_FD: i32 = 9;

/// The pager's descriptor keeper (`pager --keep-fd`), when it is
/// restartable: `init` keeps a duplicate of every object memfd and client
/// userfaultfd the pager holds, and hands them to the next generation
/// (`ipc_protocol::keeper`, `init/src/keeper.rs`).
pub const KEEP_FD: i32 = 10;

/// GPUs a system boots with at most (`svm boot --gpus N`).
pub const MAX_GPUS: usize = 8;

/// Device `d`'s model and GPU server processes. Device 0's are the ones
/// [`MANIFEST`] wires; devices 1.. (several GPUs, issue 17) are wired the
/// same way by `init/src/devices.rs`, for the endpoints a device has: its
/// control channel, `PagerMigrate` and `GpuNotify` with the pager, and a
/// `Gpu` endpoint per client slot.
pub const DEVICE_MODELS: [&str; MAX_GPUS] = [
    "xe-model",
    "xe-model1",
    "xe-model2",
    "xe-model3",
    "xe-model4",
    "xe-model5",
    "xe-model6",
    "xe-model7",
];
pub const GPU_SERVERS: [&str; MAX_GPUS] = [
    "xe-svm", "xe-svm1", "xe-svm2", "xe-svm3", "xe-svm4", "xe-svm5", "xe-svm6", "xe-svm7",
];
/// Device `d`'s memory-pressure broker: one mm-server per device, each
/// keeping its device's VRAM (`mm-server --gpu-id d`).
pub const MM_SERVERS: [&str; MAX_GPUS] = [
    "mm-server",
    "mm-server1",
    "mm-server2",
    "mm-server3",
    "mm-server4",
    "mm-server5",
    "mm-server6",
    "mm-server7",
];

/// With several GPUs, `init` makes each device's VRAM (a memfd) and hands
/// it to its model as this descriptor (`xe-model --vram-fd`).
pub const VRAM_FD: i32 = 5;

/// And to every other device's GPU server as `PEER_VRAM_FD + d`
/// (`xe-svm --peer-vram d:FD:BYTES`): its peer window on device `d`.
pub const PEER_VRAM_FD: i32 = 140;

/// The pager's `PagerMigrate`, `GpuNotify` and `PagerReclaim` endpoints
/// of device `d` past the first: `DEVICE_PAGER_FD + 3 d` and the two
/// after, passed as one more `--migrate-fd` and `--notify-fd` (the pager
/// numbers GPUs in the order of those flags) and an `--extra-endpoint`
/// (badge `DEVICE_RECLAIM_BADGE + d`) for device `d`'s mm-server.
pub const DEVICE_PAGER_FD: i32 = 200;
pub const DEVICE_RECLAIM_BADGE: u64 = 10;

/// With several GPUs, `init` keeps a `PagerReclaim` endpoint of its own to
/// evacuate a device that goes away: the pager's `--extra-endpoint` at
/// this descriptor, with this badge (`init/src/devices.rs`).
pub const DEVICES_RECLAIM_FD: i32 = DEVICE_PAGER_FD - 1;
pub const DEVICES_RECLAIM_BADGE: u64 = 9;

/// Start order: each process's servers exist before its clients call them.
pub const START_ORDER: [&str; 4] = ["xe-model", "mm-server", "xe-svm", "pager"];

pub const MANIFEST: &[Endpoint] = &[
    Endpoint {
        interface: "device control",
        server: Side {
            process: "xe-model",
            fd: 3,
            flag: "--control-fd",
        },
        client: Some(Side {
            process: "xe-svm",
            fd: 3,
            flag: "--device-fd",
        }),
        rights: Rights::empty(),
        per_client: false,
    },
    Endpoint {
        interface: "Pressure",
        server: Side {
            process: "mm-server",
            fd: 3,
            flag: "--gpu-fd",
        },
        client: Some(Side {
            process: "xe-svm",
            fd: 7,
            flag: "--pressure-fd",
        }),
        rights: Rights::PRESSURE_REPORT.union(Rights::PRESSURE_RESERVE),
        per_client: false,
    },
    Endpoint {
        interface: "Gpu",
        server: Side {
            process: "xe-svm",
            fd: 4,
            flag: "--client-fd",
        },
        client: None,
        rights: Rights::GPU_VM
            .union(Rights::GPU_SUBMIT)
            .union(Rights::GPU_BO)
            .union(Rights::GPU_STATS),
        per_client: true,
    },
    Endpoint {
        interface: "GpuNotify",
        server: Side {
            process: "xe-svm",
            fd: 6,
            flag: "--notify-fd",
        },
        client: Some(Side {
            process: "pager",
            fd: 6,
            flag: "--notify-fd",
        }),
        rights: Rights::NOTIFY,
        per_client: false,
    },
    Endpoint {
        interface: "PagerMigrate",
        server: Side {
            process: "pager",
            fd: 5,
            flag: "--migrate-fd",
        },
        client: Some(Side {
            process: "xe-svm",
            fd: 5,
            flag: "--migrate-fd",
        }),
        rights: Rights::MIGRATE,
        per_client: false,
    },
    Endpoint {
        interface: "GpuShrink",
        server: Side {
            process: "xe-svm",
            fd: 8,
            flag: "--shrink-fd",
        },
        client: Some(Side {
            process: "mm-server",
            fd: 4,
            flag: "--shrink-fd",
        }),
        rights: Rights::SHRINK,
        per_client: false,
    },
    Endpoint {
        interface: "PagerReclaim",
        server: Side {
            process: "pager",
            fd: 7,
            flag: "--reclaim-fd",
        },
        client: Some(Side {
            process: "mm-server",
            fd: 5,
            flag: "--reclaim-fd",
        }),
        rights: Rights::RECLAIM,
        per_client: false,
    },
    Endpoint {
        interface: "Pressure status",
        server: Side {
            process: "mm-server",
            fd: 6,
            flag: "--status-fd",
        },
        client: None,
        rights: Rights::PRESSURE_STATUS,
        per_client: false,
    },
    Endpoint {
        interface: "Pager",
        server: Side {
            process: "pager",
            fd: 4,
            flag: "--client-fd",
        },
        client: None,
        rights: Rights::OBJECT
            .union(Rights::VIEW)
            .union(Rights::ADVISE)
            .union(Rights::SNAPSHOT),
        per_client: true,
    },
];

/// An interface a server serves that the black-box conformance suite
/// (`svm conformance ipc --system`) talks to. With
/// `BootOptions::conformance`, init makes two extra endpoints per entry and
/// keeps their calling ends: one with every right the interface defines and
/// one with none (refusals are checked there, so no request on it ever
/// reaches a handler). The server gets them as `--extra-endpoint`.
pub struct ConformanceEndpoint {
    pub interface: &'static str,
    pub process: &'static str,
}

pub const CONFORMANCE: &[ConformanceEndpoint] = &[
    ConformanceEndpoint {
        interface: "Pager",
        process: "pager",
    },
    ConformanceEndpoint {
        interface: "PagerMigrate",
        process: "pager",
    },
    ConformanceEndpoint {
        interface: "PagerReclaim",
        process: "pager",
    },
    ConformanceEndpoint {
        interface: "Gpu",
        process: "xe-svm",
    },
    ConformanceEndpoint {
        interface: "GpuNotify",
        process: "xe-svm",
    },
    ConformanceEndpoint {
        interface: "GpuShrink",
        process: "xe-svm",
    },
    ConformanceEndpoint {
        interface: "Pressure",
        process: "mm-server",
    },
];

/// Conformance endpoint `i` sits at this descriptor plus `2 i` (every
/// right) or `2 i + 1` (none) in its server; above every manifest and
/// per-client descriptor, below the staging range.
pub const CONFORMANCE_FD: i32 = 160;
/// Its badge, numbered the same way: never a client slot's badge, so the
/// suite names only what it made itself.
pub const CONFORMANCE_BADGE: u64 = 900;

pub fn conformance_fd(i: usize, denied: bool) -> i32 {
    CONFORMANCE_FD + 2 * i as i32 + denied as i32
}

pub fn conformance_badge(i: usize, denied: bool) -> u64 {
    CONFORMANCE_BADGE + 2 * i as u64 + denied as u64
}

/// What one client may make a server hold, and the metadata arena the
/// server sizes at boot: passed as `--budget name=value,...` and
/// `--arena-mib` (README, "Budgets", lists every resource, its default and
/// the error a client sees past it).
pub struct ServerBudget {
    pub process: &'static str,
    /// `name=value,...` (K, M, G suffixes: powers of 1024).
    pub spec: &'static str,
    /// The metadata arena, for servers that size one at boot.
    pub arena_mib: Option<u64>,
}

/// Metadata the pager keeps for its peers (the GPU server's opened objects
/// and collects in flight), on top of its clients' (`pager::core::PEER_METADATA`).
pub const PAGER_PEER_METADATA_MIB: u64 = 16;

/// DMA slots the GPU server has for client objects (the device's 64, less
/// the staging buffer's, the zero page's, the BO pool's and slot 0).
pub const GPU_OBJECT_DMA_SLOTS: u64 = 60;
/// Job table slots of the device (`hw::xe::layout::JOB_SLOTS`).
pub const GPU_JOB_SLOTS: u64 = 192;
/// The GPU server's BO pool (`xe-svm --bo-pool-mib`'s default).
pub const GPU_BO_POOL_MIB: u64 = 1024;

pub const BUDGETS: &[ServerBudget] = &[
    ServerBudget {
        process: "pager",
        spec:
            "objects=256,object_bytes=8G,views=1024,spaces=16,fault_threads=80,metadata_bytes=17M",
        // Every client slot at its metadata budget, plus the peers'.
        arena_mib: Some(MAX_CLIENTS as u64 * 17 + PAGER_PEER_METADATA_MIB),
    },
    ServerBudget {
        process: "xe-svm",
        spec: "vms=8,bindings=4096,bos=1024,bo_bytes=128M,jobs_in_flight=16,result_slots=256,\
               dma_slots=16,vram_bytes=64G,metadata_bytes=9M",
        arena_mib: None,
    },
];

/// The `--budget` and `--arena-mib` flags of `process`, from [`BUDGETS`].
pub fn budget_args(process: &str) -> Vec<String> {
    BUDGETS
        .iter()
        .filter(|b| b.process == process)
        .flat_map(|b| {
            let arena = b.arena_mib.map(|m| format!("--arena-mib={m}"));
            std::iter::once(format!("--budget={}", b.spec)).chain(arena)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `name=value` of a budget spec (K, M, G: powers of 1024).
    fn amount(spec: &str, name: &str) -> u64 {
        let v = spec
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} is in the spec"));
        let (digits, scale) = match v.as_bytes().last() {
            Some(b'K') => (&v[..v.len() - 1], 1u64 << 10),
            Some(b'M') => (&v[..v.len() - 1], 1 << 20),
            Some(b'G') => (&v[..v.len() - 1], 1 << 30),
            _ => (v, 1),
        };
        digits.parse::<u64>().unwrap() * scale
    }

    /// Every client slot at its metadata budget, and the peers', fit the
    /// pager's arena: one client's exhaustion is its own error, never the
    /// server's (the pager also refuses to boot otherwise).
    #[test]
    fn every_clients_metadata_budget_fits_the_pagers_arena() {
        let b = BUDGETS.iter().find(|b| b.process == "pager").unwrap();
        let per_client = amount(b.spec, "metadata_bytes");
        let need = per_client * MAX_CLIENTS as u64 + (PAGER_PEER_METADATA_MIB << 20);
        let arena = b.arena_mib.unwrap();
        assert!(need <= arena << 20, "{need} bytes do not fit {arena} MiB");
        // 8 bytes of page state per page of the client's objects.
        assert!(per_client >= amount(b.spec, "object_bytes") / 4096 * 8);
        assert_eq!(
            budget_args("pager"),
            [
                format!("--budget={}", b.spec),
                format!("--arena-mib={arena}")
            ]
        );
    }

    /// Every client slot at its GPU budget fits what the device and the
    /// GPU server have: one client's exhaustion is never another's.
    #[test]
    fn every_clients_gpu_budget_fits_the_gpu_server() {
        let b = BUDGETS.iter().find(|b| b.process == "xe-svm").unwrap();
        let clients = MAX_CLIENTS as u64;
        // DMA slots are over-committed (the device model has 64): a client
        // at its limit leaves most of them to the others.
        assert!(amount(b.spec, "dma_slots") * 3 < GPU_OBJECT_DMA_SLOTS);
        assert!(amount(b.spec, "jobs_in_flight") * clients <= GPU_JOB_SLOTS);
        assert!(amount(b.spec, "bo_bytes") * clients <= GPU_BO_POOL_MIB << 20);
        // ASIDs 1..512.
        assert!(amount(b.spec, "vms") * clients <= 511);
        assert_eq!(budget_args("xe-svm"), [format!("--budget={}", b.spec)]);
    }

    #[test]
    fn every_process_gets_distinct_descriptors() {
        for p in START_ORDER {
            let mut fds: Vec<i32> = Vec::new();
            for e in MANIFEST {
                if e.server.process == p {
                    let slots = if e.per_client { MAX_CLIENTS } else { 1 };
                    fds.extend((0..slots).map(|i| client_fd(e.server.fd, i)));
                }
                if let Some(c) = e.client.as_ref().filter(|c| c.process == p) {
                    fds.push(c.fd);
                }
            }
            for (i, c) in CONFORMANCE.iter().enumerate() {
                if c.process == p {
                    fds.extend([conformance_fd(i, false), conformance_fd(i, true)]);
                }
            }
            if p == "xe-model" {
                fds.push(DEVICE_ATTACH_FD);
            }
            if p == "xe-svm" || p == "pager" {
                fds.push(JOURNAL_FD);
            }
            if p == "pager" {
                fds.push(KEEP_FD);
            }
            let n = fds.len();
            fds.sort();
            fds.dedup();
            assert_eq!(fds.len(), n, "{p} gets one descriptor twice");
            assert!(
                fds.iter().all(|fd| *fd >= 3),
                "{p}: descriptors 0-2 are stdio"
            );
            assert!(
                fds.iter().all(|fd| *fd < 256),
                "{p}: descriptors above 255 are where endpoints are staged"
            );
        }
    }

    #[test]
    fn every_conformance_endpoint_names_an_interface_its_server_serves() {
        for c in CONFORMANCE {
            assert!(
                ipc_protocol::interfaces::NAMES.contains(&c.interface),
                "{} is no interface",
                c.interface
            );
            let served = MANIFEST
                .iter()
                .any(|e| e.server.process == c.process && e.interface.starts_with(c.interface));
            assert!(served, "{} does not serve {}", c.process, c.interface);
        }
        let badges = (0..CONFORMANCE.len()).map(|i| conformance_badge(i, true));
        assert!(badges.max().unwrap() < 1000);
        assert!(CONFORMANCE_BADGE > client_badge(MAX_CLIENTS));
    }

    #[test]
    fn servers_start_before_their_clients() {
        let pos = |p: &str| START_ORDER.iter().position(|x| *x == p).unwrap();
        for e in MANIFEST {
            if let Some(c) = &e.client {
                // The pager and the GPU server call each other (rule 9: over
                // separate endpoints), and mm-server calls back into both
                // (its eviction loop runs only once they serve); every other
                // client starts after its server.
                if !["PagerMigrate", "GpuShrink", "PagerReclaim"].contains(&e.interface) {
                    assert!(
                        pos(e.server.process) < pos(c.process),
                        "{} starts after its client",
                        e.server.process
                    );
                }
            }
        }
    }
}
