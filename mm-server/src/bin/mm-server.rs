//! The memory-pressure broker process: the runtime of the target it is
//! built for, over the same core (`mm_server::broker`, `evictor`).

fn main() {
    #[cfg(not(target_os = "redox"))]
    mm_server::host::main();
    #[cfg(target_os = "redox")]
    mm_server::redox::main();
}
