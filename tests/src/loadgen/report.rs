//! The result of a run, as text for people and JSON for the benchmark script.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::config::LoadConfig;
use super::procstat::{MachineUsage, ProcUsage};
use super::stats::{CallsSummary, Percentiles};

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub protocol: String,
    pub calls_requested: usize,
    pub idle: bool,
    pub speech_ms: u64,
    pub silence_ms: u64,
    pub turn_window_ms: u64,
    pub provider_ms: u64,
    pub late_ms: u64,
    pub ramp_seconds: f64,
    pub window_seconds: f64,
    pub calls: CallsSummary,
    pub worker: Option<WorkerUsage>,
    pub standin: Option<ProcUsage>,
    pub loadgen: Option<ProcUsage>,
    /// The whole machine over the steady window (everything running on it).
    pub machine: MachineUsage,
}

/// The worker's cost, per sustained call.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerUsage {
    #[serde(flatten)]
    pub process: ProcUsage,
    pub cpu_percent_per_call: f64,
    pub rss_bytes_per_call: u64,
    /// Calls two dedicated cores would hold at this CPU per call.
    pub calls_per_two_cores: f64,
}

impl Report {
    pub fn new(
        config: &LoadConfig,
        calls: CallsSummary,
        ramp: Duration,
        window: Duration,
        [worker, standin, loadgen]: [Option<ProcUsage>; 3],
        machine: MachineUsage,
    ) -> Self {
        let sustained = calls.sustained;
        let worker = worker.map(|process| {
            let cpu_percent_per_call = process.cpu_percent_per_call(sustained);
            WorkerUsage {
                process,
                cpu_percent_per_call,
                rss_bytes_per_call: process.rss_bytes_per_call(sustained),
                calls_per_two_cores: if cpu_percent_per_call > 0.0 {
                    200.0 / cpu_percent_per_call
                } else {
                    0.0
                },
            }
        });
        Self {
            protocol: format!("{:?}", config.protocol).to_lowercase(),
            calls_requested: config.calls,
            idle: config.idle,
            speech_ms: config.speech_ms,
            silence_ms: config.silence_ms,
            turn_window_ms: config.turn_window_ms,
            provider_ms: config.provider_ms,
            late_ms: config.late_ms,
            ramp_seconds: ramp.as_secs_f64(),
            window_seconds: window.as_secs_f64(),
            calls,
            worker,
            standin,
            loadgen,
            machine,
        }
    }
}

fn percentiles(f: &mut fmt::Formatter<'_>, label: &str, p: &Percentiles) -> fmt::Result {
    if p.count == 0 {
        return writeln!(f, "{label}: no samples");
    }
    writeln!(
        f,
        "{label}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
    )
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.calls;
        let pattern = if self.idle {
            "idle (silence only)".to_owned()
        } else {
            format!(
                "{} ms tone / {} ms silence",
                self.speech_ms, self.silence_ms
            )
        };
        writeln!(
            f,
            "{} calls over {}, {pattern}; ramp {:.1} s, steady window {:.1} s",
            self.calls_requested, self.protocol, self.ramp_seconds, self.window_seconds
        )?;
        writeln!(
            f,
            "calls: {} connected, {} sustained",
            c.connected, c.sustained
        )?;
        for (reason, count) in &c.failures {
            writeln!(f, "  failed: {count} × {reason}")?;
        }
        percentiles(f, "connect", &c.connect)?;
        writeln!(
            f,
            "frames sent: {}, late (> {} ms): {} ({:.3}%), max lateness {:.1} ms",
            c.frames_sent,
            self.late_ms,
            c.frames_late,
            c.frames_late_percent,
            c.max_send_lateness_ms
        )?;
        writeln!(
            f,
            "reply frames: {}, late vs pacing (> {} ms): {} ({:.3}%), playback underruns: {} ({:.3}%), wrong size: {}",
            c.reply_frames,
            self.late_ms,
            c.reply_frames_late,
            c.reply_frames_late_percent,
            c.reply_underruns,
            c.reply_underruns_percent,
            c.reply_frames_misfit
        )?;
        writeln!(
            f,
            "turns: {} answered of {} ({:.2}%); unprompted replies {}, marks acknowledged {}, clears {}",
            c.turns_answered,
            c.turns,
            c.turns_answered_percent,
            c.unprompted_replies,
            c.marks_acknowledged,
            c.clears
        )?;
        percentiles(
            f,
            "time to first audio (end of speech → first reply audio)",
            &c.ttfa,
        )?;
        percentiles(
            f,
            &format!(
                "overhead (beyond the {} ms end-of-turn window and {} ms of provider latency)",
                self.turn_window_ms, self.provider_ms
            ),
            &c.overhead,
        )?;
        let tail = &c.overhead_tail;
        if tail.turns > 0 {
            writeln!(
                f,
                "  its slowest 1% ({} turns) fell in {} of the {} seconds with turns, at most {} in one second",
                tail.turns, tail.seconds, tail.of_seconds, tail.most_in_one_second
            )?;
        }
        percentiles(
            f,
            "first reply audio waiting in the generator's socket (left out of the two above)",
            &c.read_delay,
        )?;
        if let Some(w) = &self.worker {
            writeln!(
                f,
                "worker (pid {}): {:.1}% of a core = {:.4}% per call ({:.0} calls per two cores); RSS {:.1} MiB → {:.1} MiB = {:.1} KiB per call",
                w.process.pid,
                w.process.cpu_percent_of_core,
                w.cpu_percent_per_call,
                w.calls_per_two_cores,
                kib(w.process.rss_before_ramp_bytes) / 1024.0,
                kib(w.process.rss_end_bytes) / 1024.0,
                kib(w.rss_bytes_per_call),
            )?;
        }
        for (name, usage) in [
            ("stand-in", &self.standin),
            ("load generator", &self.loadgen),
        ] {
            if let Some(u) = usage {
                writeln!(
                    f,
                    "{name} (pid {}): {:.1}% of a core, RSS {:.1} MiB",
                    u.pid,
                    u.cpu_percent_of_core,
                    kib(u.rss_end_bytes) / 1024.0
                )?;
            }
        }
        let m = &self.machine;
        writeln!(
            f,
            "machine ({} cores, everything on it): {:.0}% of a core busy, of which softirq {:.0}% (loopback TCP, mostly charged to the sending process), steal {:.0}%",
            m.cores, m.busy_percent_of_core, m.softirq_percent_of_core, m.steal_percent_of_core
        )
    }
}
