//! The GPU server for Intel Xe. It owns the device (reached only through
//! [`hw::bar::Bar`]), GPU page tables, the copy engine, VRAM and buffer
//! objects, and the GPU fault queue (DESIGN.md section 1).
//!
//! - [`probe`]: device bring-up and engine self-test;
//! - [`device`]: copy engine, TLB invalidation, GuC message pump;
//! - [`density`]: how many pages a GPU fault migrates (UVM's tree rule);
//! - [`vram`]: the buddy allocator, blocks refcounted by resident pages (rule 6);
//! - [`ppgtt`]: page tables per GPU VM;
//! - [`server`]: the SVM core: GPU VMs, the fault path, the notifier
//!   (rules 5, 6, 8 and 9), over a [`platform::Platform`];
//! - [`views`]: bindings follow the pager's views (rule 8 for unmap/mremap);
//! - [`bo`], [`ww`]: the BO world and its reservation locks (rule 7);
//! - [`jobs`]: kernel and batch jobs checked and submitted, `Wait`;
//! - [`job_table`]: every client's jobs and results (per-client result slots);
//! - [`session`], [`budget`], [`end`], [`accounting`]: a session per client
//!   badge with its budget, the one place it ends, `Gpu::Accounting`;
//! - [`arena`]: the metadata arena sized at boot (frame words, fault logs);
//! - [`adopt`], [`restart`]: a restarted server takes over the pages its
//!   predecessor left in VRAM (from the pager's page states) and answers
//!   the jobs it took with `DeviceReset`;
//! - [`bind`]: `BindView` (the pager opens the view, the object is DMA-mapped);
//! - [`faults`]: GPU faults served by one worker per VM;
//! - [`host`]: the host runtime: the device model and IPC as the platform,
//!   and the IPC handlers;
//! - [`schemes`]: its endpoints as Redox scheme paths;
//! - [`pci_ids`]: the Xe2 GPUs it drives (Redox's `pcid.d` entry);
//! - `linux`, `redox`: the process's main on each target, over the same
//!   core and the same [`host`] platform (endpoints inherited sockets on
//!   Linux, schemes on Redox: `docs/redox.md`).

pub mod accounting;
pub mod adopt;
pub mod arena;
pub mod bind;
pub mod bo;
pub mod budget;
pub mod density;
pub mod device;
pub mod end;
pub mod fault_ahead;
pub mod fault_log;
pub mod faults;
pub mod frames;
pub mod host;
pub mod job_table;
pub mod jobs;
pub mod journal;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod pci_ids;
pub mod platform;
pub mod ppgtt;
pub mod prefetch;
pub mod probe;
pub mod protect;
pub mod rebuild;
#[cfg(target_os = "redox")]
pub mod redox;
pub mod restart;
pub mod schemes;
pub mod server;
pub mod session;
pub mod size_stats;
pub mod sync;
pub mod views;
pub mod vram;
pub mod ww;
