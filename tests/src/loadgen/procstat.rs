//! CPU time and resident memory of a process, from `/proc` (Linux). Sampled at the start and
//! end of the steady window to give CPU per call and memory per call.

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`. Linux fixes this "USER_HZ"
/// at 100 in its user ABI on every mainstream architecture.
pub const USER_HZ: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time of all its threads.
    pub cpu: Duration,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}: {source}")]
    Read { pid: u32, source: std::io::Error },
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format { pid: u32, file: &'static str },
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcError::Read { pid, source })
    };
    let cpu = parse_cpu(&read("stat")?).ok_or(ProcError::Format { pid, file: "stat" })?;
    let rss_bytes = parse_rss(&read("status")?).ok_or(ProcError::Format {
        pid,
        file: "status",
    })?;
    Ok(ProcSample { cpu, rss_bytes })
}

/// `utime + stime` from a `stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// `VmRSS` from a `status` file, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whole-machine CPU time from the first line of `/proc/stat`, in clock ticks summed over all
/// cores. Loopback TCP receive processing runs in softirq context; tick accounting charges it to
/// the process it interrupted, usually the sender, so per-process numbers move the worker's
/// receive-side kernel work to the generator (and the generator's to the worker). The machine
/// total shows what everything together cost, other people's work on a shared machine included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSample {
    pub cores: usize,
    /// Everything but idle and iowait.
    pub busy: u64,
    pub softirq: u64,
    pub steal: u64,
    pub total: u64,
}

/// Parses `/proc/stat`.
pub fn parse_machine(stat: &str) -> Option<MachineSample> {
    let mut lines = stat.lines();
    let first = lines.next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = first
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is included in user).
    let [user, nice, system, idle, iowait, irq, softirq, steal] = *ticks.get(..8)? else {
        return None;
    };
    let cores = lines.filter(|l| l.starts_with("cpu")).count().max(1);
    let busy = user + nice + system + irq + softirq + steal;
    Some(MachineSample {
        cores,
        busy,
        softirq,
        steal,
        total: busy + idle + iowait,
    })
}

/// Reads `/proc/stat`.
pub fn machine() -> Result<MachineSample, ProcError> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|source| ProcError::Read { pid: 0, source })?;
    parse_machine(&stat).ok_or(ProcError::Format {
        pid: 0,
        file: "stat",
    })
}

/// The machine's CPU over the steady window, in percent of one core (200% = both of two cores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineUsage {
    pub cores: usize,
    pub busy_percent_of_core: f64,
    pub softirq_percent_of_core: f64,
    pub steal_percent_of_core: f64,
}

impl MachineUsage {
    pub fn between(start: MachineSample, end: MachineSample) -> Self {
        let total = end.total.saturating_sub(start.total);
        let share = |a: u64, b: u64| {
            if total == 0 {
                0.0
            } else {
                b.saturating_sub(a) as f64 * 100.0 * end.cores as f64 / total as f64
            }
        };
        Self {
            cores: end.cores,
            busy_percent_of_core: share(start.busy, end.busy),
            softirq_percent_of_core: share(start.softirq, end.softirq),
            steal_percent_of_core: share(start.steal, end.steal),
        }
    }
}

/// A process's share of the steady window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcUsage {
    pub pid: u32,
    /// CPU used over the window, in percent of one core.
    pub cpu_percent_of_core: f64,
    pub rss_before_ramp_bytes: u64,
    pub rss_end_bytes: u64,
}

impl ProcUsage {
    /// Usage between two samples taken `window` apart, with RSS measured before the ramp.
    pub fn between(
        pid: u32,
        before_ramp: ProcSample,
        start: ProcSample,
        end: ProcSample,
        window: Duration,
    ) -> Self {
        let cpu = end.cpu.saturating_sub(start.cpu);
        let cpu_percent_of_core = if window.is_zero() {
            0.0
        } else {
            cpu.as_secs_f64() * 100.0 / window.as_secs_f64()
        };
        Self {
            pid,
            cpu_percent_of_core,
            rss_before_ramp_bytes: before_ramp.rss_bytes,
            rss_end_bytes: end.rss_bytes,
        }
    }

    /// CPU per call, in percent of one core.
    pub fn cpu_percent_per_call(&self, calls: usize) -> f64 {
        if calls == 0 {
            0.0
        } else {
            self.cpu_percent_of_core / calls as f64
        }
    }

    /// Growth of resident memory from before the ramp to the end, per call.
    pub fn rss_bytes_per_call(&self, calls: usize) -> u64 {
        self.rss_end_bytes
            .saturating_sub(self.rss_before_ramp_bytes)
            .checked_div(calls as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (callfleet (w) x) S 1 4242 4242 0 -1 4194560 9000 0 3 0 1234 566 0 0 20 0 3 0 100 5000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_cpu_past_a_tricky_name() {
        assert_eq!(parse_cpu(STAT), Some(Duration::from_millis(18_000)));
        assert_eq!(parse_cpu("garbage"), None);
        assert_eq!(parse_cpu("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tw\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }

    #[test]
    fn machine_usage() {
        let stat = |user, idle, softirq| {
            format!(
                "cpu  {user} 0 100 {idle} 0 0 {softirq} 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\ncpu1 1 2 3 4 5 6 7 8 0 0\nintr 1\n"
            )
        };
        let start = parse_machine(&stat(1_000, 10_000, 50)).unwrap();
        assert_eq!((start.cores, start.busy, start.total), (2, 1_150, 11_150));
        // 200 ticks over 2 cores: 100 busy (of which 20 softirq), 100 idle.
        let end = parse_machine(&stat(1_080, 10_100, 70)).unwrap();
        let usage = MachineUsage::between(start, end);
        assert_eq!(usage.busy_percent_of_core, 100.0);
        assert_eq!(usage.softirq_percent_of_core, 20.0);
        assert_eq!(parse_machine("intr 1"), None);
        assert!(machine().unwrap().total > 0);
    }

    #[test]
    fn usage_per_call() {
        let at = |cpu_ms, rss| ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_bytes: rss,
        };
        let usage = ProcUsage::between(
            1,
            at(0, 10_000_000),
            at(1_000, 12_000_000),
            at(7_000, 30_000_000),
            Duration::from_secs(60),
        );
        assert!((usage.cpu_percent_of_core - 10.0).abs() < 1e-9);
        assert!((usage.cpu_percent_per_call(1_000) - 0.01).abs() < 1e-12);
        assert_eq!(usage.rss_bytes_per_call(1_000), 20_000);
        assert_eq!(usage.rss_bytes_per_call(0), 0);
        assert_eq!(
            ProcUsage::between(1, at(0, 0), at(0, 0), at(5, 0), Duration::ZERO).cpu_percent_of_core,
            0.0
        );
    }
}
