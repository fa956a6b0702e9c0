//! The servers' log lines in a replay (`sim --replay --log LEVEL`), each
//! with the shuttle task that wrote it, so a failing schedule can be read
//! step by step.

struct TaskLog;

impl log::Log for TaskLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let task = shuttle::current::me();
            eprintln!("[{task:?}] {} {}", r.level(), r.args());
        }
    }

    fn flush(&self) {}
}

/// Prints log lines at `level` and above from now on.
pub fn install(level: log::LevelFilter) {
    static LOGGER: TaskLog = TaskLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
