//! The GPU server process: the runtime of the target it is built for, over
//! the same core (`xe_svm::server`, `host`).

fn main() {
    #[cfg(target_os = "linux")]
    xe_svm::linux::main();
    #[cfg(target_os = "redox")]
    xe_svm::redox::main();
}
