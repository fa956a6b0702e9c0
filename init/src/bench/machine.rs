//! What the numbers were measured on: they mean little without it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub arch: &'static str,
    pub kernel: String,
    pub started_utc: String,
    /// 1-minute load average at the start and the end (other processes
    /// running on the machine show here).
    pub load_start: f64,
    pub load_end: Option<f64>,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn now() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            arch: std::env::consts::ARCH,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            started_utc: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            load_start: load_average(),
            load_end: None,
        }
    }

    pub fn finish(&mut self) {
        self.load_end = Some(load_average());
    }

    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {}, Linux {}, {}; load average {:.2} at the start{}",
            self.cores,
            self.cpu,
            self.arch,
            self.kernel,
            self.started_utc,
            self.load_start,
            self.load_end
                .map(|l| format!(", {l:.2} at the end"))
                .unwrap_or_default()
        )
    }
}
