//! The scenario format (`docs/scenarios.md`): what a file may say, as
//! serde types. A file is TOML; [`crate::scenario::expand`] turns it into
//! instances (matrix and parameters applied) whose steps parse into
//! [`Step`]. Every table rejects keys it does not know, so a typo is an
//! error at load time, not a step that silently does nothing.

use serde::Deserialize;

use super::value::{Addr, Num};

/// The device a scenario boots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    #[serde(default = "default_vram")]
    pub vram: Num,
    #[serde(default = "default_hw_threads")]
    pub hw_threads: u16,
    /// GPUs, each a device model and a GPU server under the one pager
    /// (1 to 8); a `vm` step names the GPU it lives on.
    #[serde(default = "one")]
    pub gpus: u8,
    /// Client slots (each with its own badge, like a process of its own).
    #[serde(default = "one_usize")]
    pub clients: usize,
    /// The malloc-like heap's object, in bytes.
    #[serde(default = "default_heap")]
    pub heap: Num,
    /// Fault injection: the device model fails every Nth copy (0: never).
    #[serde(default)]
    pub fail_copy_every: u32,
    /// The pager's anti-thrashing (`--thrash on`; off by default: every
    /// GPU fault migrates).
    #[serde(default)]
    pub thrash_hold: bool,
    /// Chunks each GPU server moves ahead of a stream of faults (its
    /// `--fault-ahead`, 0 to 8; 0, the default, is off).
    #[serde(default)]
    pub fault_ahead: u8,
}

impl Default for Device {
    fn default() -> Self {
        Self {
            vram: default_vram(),
            hw_threads: default_hw_threads(),
            gpus: 1,
            clients: 1,
            heap: default_heap(),
            fail_copy_every: 0,
            thrash_hold: false,
            fault_ahead: 0,
        }
    }
}

fn default_vram() -> Num {
    Num(256 << 20)
}
fn default_hw_threads() -> u16 {
    64
}
fn default_heap() -> Num {
    Num(64 << 20)
}
fn one() -> u8 {
    1
}
fn one_usize() -> usize {
    1
}

/// A scenario that is known to fail today: the feature it needs and the
/// issue that will make it pass. An expected failure that passes is
/// reported as a failure, so the marking goes when the feature lands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFailure {
    pub issue: u32,
    /// The feature, in a word or two (`prefetch`, `several GPUs`).
    pub feature: String,
    /// Optional: the failure must mention this text (e.g. `NotSupported`),
    /// so a scenario failing for another reason is still a failure.
    #[serde(default)]
    pub matches: Option<String>,
}

/// Keys every step may carry besides its own (taken off before the step
/// itself is parsed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// Run the step only if every condition holds (`"${flag}"`, `"${n} > 1"`).
    #[serde(default)]
    pub when: Conditions,
    /// Skip the step if any condition holds.
    #[serde(default)]
    pub unless: Conditions,
    /// The step's time bound (default [`DEFAULT_STEP_TIMEOUT_S`]).
    pub timeout_s: Option<u64>,
    /// The step must fail with this error (a server error's name such as
    /// `NotSupported`, or `Host`, `Transport`, `Denied`).
    pub expect_error: Option<String>,
    /// A label for the check lines.
    pub label: Option<String>,
}

pub const COMMON_KEYS: [&str; 5] = ["when", "unless", "timeout_s", "expect_error", "label"];
pub const DEFAULT_STEP_TIMEOUT_S: u64 = 30;

/// One condition or a list of them; a condition is a boolean (what
/// `"${flag}"` becomes) or text for [`super::value::condition`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Conditions {
    #[default]
    None,
    One(Cond),
    All(Vec<Cond>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Cond {
    Bool(bool),
    Text(String),
}

impl Cond {
    fn text(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

impl Conditions {
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::None => vec![],
            Self::One(c) => vec![c.text()],
            Self::All(v) => v.iter().map(Cond::text).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocKind {
    /// Its own memory object and view, 2 MiB aligned unless `align` says.
    Object,
    /// Carved out of the scenario's heap object: several allocations
    /// share pages, at unaligned addresses, and `free` hands memory back
    /// for the next allocation (like `malloc`).
    Malloc,
    /// An address range with nothing mapped (PROT_NONE, unknown to the
    /// pager): accesses there fault.
    Reserve,
}

/// What an allocation holds at first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Word `i` of the allocation is `i` (hmm-tests' `ptr[i] = i`).
    #[default]
    Index,
    /// A distinct hashed value per word (catches a page in the wrong place).
    Hash,
    Zero,
    /// Every byte this value (IGT's `memset(5)`).
    Byte(u8),
    Word(u32),
    /// The CPU never touches it (IGT's `nomemset`): the GPU's first access
    /// faults on untouched memory.
    None,
}

impl<'de> Deserialize<'de> for Fill {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let num = |t: &str| super::value::eval(t).map_err(|e| D::Error::custom(e.0));
        Ok(match s.as_str() {
            "index" => Fill::Index,
            "hash" => Fill::Hash,
            "zero" => Fill::Zero,
            "none" => Fill::None,
            _ => match s.split_once(':') {
                Some(("byte", v)) => Fill::Byte(
                    u8::try_from(num(v)?).map_err(|_| D::Error::custom("byte: over 255"))?,
                ),
                Some(("word", v)) => Fill::Word(
                    u32::try_from(num(v)?).map_err(|_| D::Error::custom("word: over 32 bits"))?,
                ),
                _ => {
                    return Err(D::Error::custom(format!(
                        "fill {s:?}: index, hash, zero, none, byte:N or word:N"
                    )))
                }
            },
        })
    }
}

/// The fixed GPU kernels (`Gpu::Submit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// Read one word per page.
    Touch,
    /// Add `value` to every word.
    Inc,
    /// Write `value` every `stride` bytes (a store of one dword with `len = 4`).
    Store,
    /// Atomically add `value` to the first word of the range in each page.
    AtomicAdd,
    /// Read words at pseudo-random pages.
    RandomRead,
    /// Reads one word per page with the hardware prefetcher running a page
    /// ahead: its faults (past the range: nothing mapped) are acknowledged
    /// and dropped, never fatal.
    Speculative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobExpect {
    #[default]
    Completed,
    Faulted,
    /// A batch held an instruction the GPU cannot run.
    BadCommand,
    /// A batch ran past the GPU's bounds and was stopped.
    Hung,
    /// Any (the outcome is what a later check looks at).
    Any,
}

/// How CPU threads divide the pages of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Thread `t` takes the `t`-th contiguous share.
    #[default]
    Own,
    /// Page `p` belongs to thread `p % threads`.
    Interleaved,
    /// Every thread walks every page in the same order (a herd on one page
    /// at a time; with `barrier`, in lockstep).
    SamePage,
    /// Every thread walks every page, each starting at a different page
    /// (the anchor herd).
    Staggered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read every word and check it.
    Read,
    /// Read the first word of each page and check it.
    Touch,
    /// Write `value` to every word.
    Write,
    /// Add `value` to every word (plain loads and stores: own pages only).
    Inc,
    /// Add `value` to every word with atomics (any pattern).
    AtomicInc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prot {
    None,
    R,
    Rw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdviceKind {
    Default,
    PreferSystem,
    PreferDevice,
    AtomicDevice,
    /// GPU atomics allowed wherever the page is.
    AtomicGlobal,
    /// GPU atomics refused: only the CPU does atomics.
    AtomicCpu,
    /// The pages live in VRAM: a CPU access to one there is refused.
    DeviceOnly,
    /// Every GPU maps the pages where they are, a peer's VRAM included.
    AccessInPlace,
    /// GPU `gpu`'s VRAM (the step's `gpu`): the others map them in place.
    PreferGpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAdvice {
    Dontneed,
    Free,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    System,
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeExpect {
    /// The access succeeds.
    Ok,
    /// The kernel refuses it (`EFAULT`: nothing mapped, or not allowed).
    Efault,
}

/// One explicit word expectation: the word at `at` is `value`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordIs {
    pub at: Addr,
    pub value: Num,
}

/// One instruction of a batch program (Xe command-streamer instructions,
/// run by the device from GPU virtual addresses).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Instr {
    /// `MI_STORE_DATA_IMM`, one dword.
    StoreDword { addr: Addr, value: Num },
    /// `MI_STORE_DATA_IMM`, one qword.
    StoreQword { addr: Addr, value: Num },
    /// `MI_ATOMIC` increment of a dword.
    AtomicInc { addr: Addr },
    /// `MI_ATOMIC` add to a dword.
    AtomicAdd { addr: Addr, value: Num },
    /// `MI_ATOMIC` compare-exchange of a dword.
    AtomicCmpxchg {
        addr: Addr,
        compare: Num,
        value: Num,
    },
    /// `MI_SEMAPHORE_WAIT` polling until the dword at `addr` compares.
    SemaphoreWait {
        addr: Addr,
        #[serde(default = "eq")]
        compare: String,
        value: Num,
    },
    /// `MI_COPY_MEM_MEM` of one dword.
    Copy { from: Addr, to: Addr },
    /// `MI_BATCH_BUFFER_START`: the program goes on at `to` (the
    /// instructions that follow are placed there).
    Jump { to: Addr },
    /// A user fence: a qword store the client waits on.
    UserFence { addr: Addr, value: Num },
}

fn eq() -> String {
    "eq".into()
}

/// One step. Keys shared by every step are in [`Common`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Allocate memory and fill it.
    Alloc {
        name: String,
        size: Num,
        #[serde(default = "object")]
        kind: AllocKind,
        align: Option<Num>,
        #[serde(default)]
        fill: Fill,
        #[serde(default)]
        client: usize,
        /// A malloc allocation must land at this earlier allocation's address
        /// (the allocator handed the memory out again).
        reuses: Option<String>,
        /// An object allocation's object is this big (at least `size`);
        /// only `size` is mapped, the rest is room for `mremap` growth.
        object_size: Option<Num>,
    },
    /// Free an allocation: a malloc one goes back to the heap (its pages
    /// stay where they are); an object is detached, unmapped and destroyed.
    Free {
        alloc: String,
    },
    /// A GPU VM. `mirror`: every view of the client is bound at its CPU
    /// address, now and when made (IGT's `CPU_ADDR_MIRROR`).
    Vm {
        name: String,
        #[serde(default = "yes")]
        mirror: bool,
        #[serde(default)]
        client: usize,
        /// The GPU whose server holds the VM (0 to `gpus - 1`): its jobs
        /// run there, its faults bring pages into that GPU's VRAM.
        #[serde(default)]
        gpu: u8,
    },
    DestroyVm {
        vm: String,
    },
    Bind {
        vm: String,
        alloc: String,
        /// `BindView` with `BIND_READ_ONLY`: the GPU may only read it.
        #[serde(default)]
        read_only: bool,
    },
    Unbind {
        vm: String,
        alloc: String,
    },
    /// A fixed kernel over `[at, at + len)`.
    Gpu {
        vm: String,
        kernel: Kernel,
        at: Addr,
        len: Option<Num>,
        #[serde(default = "one_num")]
        value: Num,
        #[serde(default = "four")]
        stride: Num,
        #[serde(default = "threads64")]
        threads: u16,
        #[serde(default)]
        expect: JobExpect,
    },
    /// A batch program placed at `at` (in SVM memory: the GPU faults on its
    /// own instructions) and run.
    Batch {
        vm: String,
        at: Addr,
        program: Vec<Instr>,
        /// The job's user fence: `fence_value` is written there as a qword
        /// when the batch ends.
        fence: Option<Addr>,
        #[serde(default = "one_num")]
        fence_value: Num,
        #[serde(default)]
        expect: JobExpect,
        /// `false`: submit and go on; `wait_job` with the name in `job`
        /// waits for it later.
        #[serde(default = "yes")]
        wait: bool,
        job: Option<String>,
    },
    /// Waits for a batch submitted with `wait = false`.
    WaitJob {
        job: String,
    },
    /// Polls the word at `at` until it holds `value` (the CPU waiting on a
    /// user fence in memory the GPU is writing).
    WaitWord {
        at: Addr,
        value: Num,
    },
    /// Gives an allocation a new name; the old one is free for a new
    /// allocation (IGT's `new`: the old buffer stays until the end).
    Rename {
        alloc: String,
        to: String,
    },
    /// CPU threads over `[at, at + len)`.
    Cpu {
        at: Addr,
        len: Option<Num>,
        access: Access,
        #[serde(default = "one_num")]
        value: Num,
        #[serde(default = "one_num")]
        threads: Num,
        #[serde(default)]
        pattern: Pattern,
        /// Threads meet at a barrier before each page.
        #[serde(default)]
        barrier: bool,
        /// Thread `t` goes through allocation `through[t % n]` (other
        /// addresses of the same memory, e.g. `mremap` copies).
        #[serde(default)]
        through: Vec<String>,
    },
    /// Every word of `[at, at + len)` against what the scenario wrote, and
    /// the listed words against their values.
    Check {
        at: Option<Addr>,
        len: Option<Num>,
        #[serde(default)]
        words: Vec<WordIs>,
    },
    /// Fork `children` processes that run `child` (CPU steps only); the
    /// parent runs `parent` meanwhile, then waits for them.
    Fork {
        #[serde(default = "one_num")]
        children: Num,
        child: Vec<toml::Table>,
        #[serde(default)]
        parent: Vec<toml::Table>,
    },
    /// `mremap` an object allocation to a fresh address (`MREMAP_MAYMOVE |
    /// MREMAP_FIXED`), optionally `MREMAP_DONTUNMAP` (the old range stays a
    /// view, named `old_as` if given) and growing by `grow` bytes.
    Mremap {
        alloc: String,
        #[serde(default)]
        dontunmap: bool,
        grow: Option<Num>,
        old_as: Option<String>,
    },
    Munmap {
        alloc: String,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
    },
    Mprotect {
        alloc: String,
        prot: Prot,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
    },
    /// `madvise(2)` on part of an allocation: the CPU side drops pages
    /// (`dontneed`, `free`, `remove`); the data is gone, so the shadow
    /// holds zeros there (what discarding means to SVM users, issue 16).
    Madvise {
        alloc: String,
        advice: HostAdvice,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
    },
    Advise {
        alloc: String,
        advice: AdviceKind,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
        /// The GPU `prefer_gpu` names (and only it).
        gpu: Option<u8>,
    },
    /// To `system`: `Pager::Prefetch`; to `device`: `Gpu::Prefetch` in
    /// `vm` (default: the first VM, by name, of the allocation's client).
    Prefetch {
        alloc: String,
        to: Place,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
        vm: Option<String>,
    },
    /// The pager's per-page states of an allocation (`Pager::Snapshot`):
    /// `expect` lists `STATE` or `STATE*N`, the last entry covering the
    /// rest; states: empty, system, device, migrating, resident (system or
    /// device), not_device (empty or system), any.
    Snapshot {
        alloc: String,
        #[serde(default)]
        offset: Num,
        len: Option<Num>,
        expect: Vec<String>,
        /// Look again for up to this long until the states match: the
        /// pager unlocks a page's state word just after the faulting
        /// thread is woken, so a page the CPU already reads can still show
        /// `migrating` for a moment (default 100 ms).
        #[serde(default = "settle")]
        settle_ms: u64,
    },
    /// One CPU access through the kernel (a pipe): an address with nothing
    /// mapped gives `EFAULT` instead of a crash.
    Probe {
        at: Addr,
        #[serde(default = "read")]
        access: Access,
        expect: ProbeExpect,
    },
    /// A buffer object of `size`, mapped in `vm` at `gpu_addr` (default: a
    /// fresh address above the CPU's); zeroed.
    Bo {
        name: String,
        vm: String,
        size: Num,
        gpu_addr: Option<Num>,
    },
    /// Every word of a buffer object against what the scenario's GPU work
    /// wrote (`Gpu::ReadBo`).
    CheckBo {
        bo: String,
    },
    /// Remember GPU `gpu`'s server's counters under `name`.
    Mark {
        name: String,
        #[serde(default)]
        gpu: u8,
    },
    /// GPU `gpu`'s server's counters since `since` (a mark of that GPU;
    /// default the scenario's start, GPU 0's): `expect` maps each counter
    /// to a comparison like `">= 512"` or `"== 0"` (`vram_used` is
    /// compared as it is now).
    Counters {
        since: Option<String>,
        expect: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        gpu: u8,
    },
    /// Run `steps` `count` times, with `${var}` the round (from 0).
    Repeat {
        count: Num,
        #[serde(default = "var_i")]
        var: String,
        steps: Vec<toml::Table>,
    },
    /// Run `steps` in `threads` threads at once (`${var}` the thread), or
    /// each branch of `branches` in a thread of its own.
    Parallel {
        threads: Option<Num>,
        #[serde(default = "var_t")]
        var: String,
        #[serde(default)]
        steps: Vec<toml::Table>,
        #[serde(default)]
        branches: Vec<Vec<toml::Table>>,
    },
    Sleep {
        us: Num,
    },
    /// Device `gpu` goes away (`PagerReclaim::Evacuate`): nothing moves
    /// into its VRAM from then on, and every page in it comes back to RAM
    /// (a boot of several GPUs).
    Evacuate {
        gpu: u8,
    },
    /// The VM's fault log (`Gpu::FaultLog`: address, access, type, level)
    /// must hold at least `at_least` entries.
    FaultLog {
        vm: String,
        #[serde(default)]
        at_least: Num,
        /// At most this many in all (absent: no bound).
        at_most: Option<Num>,
    },
}

fn settle() -> u64 {
    100
}
fn object() -> AllocKind {
    AllocKind::Object
}
fn yes() -> bool {
    true
}
fn one_num() -> Num {
    Num(1)
}
fn four() -> Num {
    Num(4)
}
fn threads64() -> u16 {
    64
}
fn read() -> Access {
    Access::Read
}
fn var_i() -> String {
    "i".into()
}
fn var_t() -> String {
    "t".into()
}

impl Step {
    pub fn op(&self) -> &'static str {
        match self {
            Self::Alloc { .. } => "alloc",
            Self::Free { .. } => "free",
            Self::Vm { .. } => "vm",
            Self::DestroyVm { .. } => "destroy_vm",
            Self::Bind { .. } => "bind",
            Self::Unbind { .. } => "unbind",
            Self::Gpu { .. } => "gpu",
            Self::Batch { .. } => "batch",
            Self::WaitJob { .. } => "wait_job",
            Self::WaitWord { .. } => "wait_word",
            Self::Rename { .. } => "rename",
            Self::Cpu { .. } => "cpu",
            Self::Check { .. } => "check",
            Self::Fork { .. } => "fork",
            Self::Mremap { .. } => "mremap",
            Self::Munmap { .. } => "munmap",
            Self::Mprotect { .. } => "mprotect",
            Self::Madvise { .. } => "madvise",
            Self::Advise { .. } => "advise",
            Self::Prefetch { .. } => "prefetch",
            Self::Snapshot { .. } => "snapshot",
            Self::Probe { .. } => "probe",
            Self::Bo { .. } => "bo",
            Self::CheckBo { .. } => "check_bo",
            Self::Mark { .. } => "mark",
            Self::Counters { .. } => "counters",
            Self::Repeat { .. } => "repeat",
            Self::Parallel { .. } => "parallel",
            Self::Sleep { .. } => "sleep",
            Self::FaultLog { .. } => "fault_log",
            Self::Evacuate { .. } => "evacuate",
        }
    }
}

/// A step as written: its own keys and the common ones.
#[derive(Debug, Clone)]
pub struct ParsedStep {
    pub common: Common,
    pub step: Step,
}

/// Parses one step table (after substitution).
pub fn parse_step(table: &toml::Table) -> Result<ParsedStep, String> {
    let mut own = table.clone();
    let mut common = toml::Table::new();
    for k in COMMON_KEYS {
        if let Some(v) = own.remove(k) {
            common.insert(k.to_string(), v);
        }
    }
    let op = own
        .get("op")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let common: Common = toml::Value::Table(common)
        .try_into()
        .map_err(|e| format!("step {op}: {e}"))?;
    let step: Step = toml::Value::Table(own)
        .try_into()
        .map_err(|e| format!("step {op}: {e}"))?;
    Ok(ParsedStep { common, step })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(text: &str) -> Result<ParsedStep, String> {
        parse_step(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn a_step_parses_with_its_common_keys() {
        let s = step(
            "op = \"gpu\"\nvm = \"v\"\nkernel = \"inc\"\nat = \"buf+4K\"\nlen = \"8K\"\n\
             when = \"true\"\nexpect_error = \"Busy\"",
        )
        .unwrap();
        assert_eq!(s.common.expect_error.as_deref(), Some("Busy"));
        assert_eq!(s.common.when.list(), vec!["true"]);
        match s.step {
            Step::Gpu {
                at,
                len,
                kernel,
                value,
                ..
            } => {
                assert_eq!(at.offset, 4096);
                assert_eq!(len, Some(Num(8192)));
                assert_eq!(kernel, Kernel::Inc);
                assert_eq!(value, Num(1));
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_ops_are_errors() {
        let e =
            step("op = \"gpu\"\nvm = \"v\"\nkernel = \"inc\"\nat = \"b\"\nlenn = 4").unwrap_err();
        assert!(e.contains("lenn"), "{e}");
        assert!(step("op = \"teleport\"").is_err());
        assert!(step("op = \"alloc\"\nname = \"a\"\nsize = \"-4K\"").is_err());
        assert!(step("op = \"alloc\"\nname = \"a\"\nsize = 4096\nfill = \"byte:300\"").is_err());
    }

    #[test]
    fn batch_programs_parse() {
        let s = step(
            r#"op = "batch"
vm = "v"
at = "buf"
program = [
  { op = "store_dword", addr = "buf+0x100", value = 7 },
  { op = "atomic_cmpxchg", addr = "buf+0x104", compare = 0, value = 1 },
  { op = "semaphore_wait", addr = "buf+0x108", value = 1 },
  { op = "jump", to = "buf+4K" },
  { op = "user_fence", addr = "buf+0x110", value = 1 },
]"#,
        )
        .unwrap();
        match s.step {
            Step::Batch { program, .. } => assert_eq!(program.len(), 5),
            s => panic!("{s:?}"),
        }
    }
}
