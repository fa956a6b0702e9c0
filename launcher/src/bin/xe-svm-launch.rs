//! The launcher on Redox: opens every endpoint of the manifest once the
//! servers are up, hands each server what it calls, and keeps the client
//! endpoints (`launcher::redox`). Off Redox, `svm boot` does this job.

fn main() {
    #[cfg(target_os = "redox")]
    launcher::redox::main();
    #[cfg(not(target_os = "redox"))]
    {
        eprintln!("xe-svm-launch: the Redox launcher; on Linux, `svm boot` wires the system");
        std::process::exit(2);
    }
}
