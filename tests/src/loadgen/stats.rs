//! Per-call counters, merged into a run summary with percentiles. Pure: outcomes in, summary
//! out, so the arithmetic is unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What one simulated call measured. Counts cover the steady window only (after every call of
/// the ramp connected), so connection set-up does not blur the steady state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    /// The WebSocket upgrade and opening frames succeeded.
    pub connected: bool,
    /// Why the call failed to connect or ended early, if it did.
    pub error: Option<String>,
    pub connect_time: Option<Duration>,
    pub frames_sent: u64,
    /// Frames sent later than the tolerance after their schedule.
    pub frames_late: u64,
    pub max_send_lateness: Duration,
    pub reply_frames: u64,
    /// Reply frames arriving later than the tolerance against the worker's pacing.
    pub reply_frames_late: u64,
    /// Reply frames that arrived after the carrier had played everything before them (an
    /// audible gap), the first frame of each reply excepted.
    pub reply_underruns: u64,
    /// Reply frames whose payload was not one 20 ms frame.
    pub reply_frames_misfit: u64,
    /// Caller turns whose whole answer window fell in the steady window.
    pub turns: u64,
    /// Of those, turns with reply audio before the caller spoke again.
    pub turns_answered: u64,
    /// End of caller speech → first reply audio byte, per answered turn.
    pub ttfa: Vec<Duration>,
    /// Send of the frame that completed the end-of-turn window → first reply audio, per
    /// answered turn.
    pub after_window: Vec<Duration>,
    /// When each of those windows closed, since the run began, and the call's turn number
    /// (from 1; same order), to tell a tail clustered in a few seconds from one spread over
    /// the run, and calls' first turns from later ones.
    pub window_closed_at: Vec<(Duration, u64)>,
    /// First reply audio's kernel arrival → the generator reading it, per answered turn: the
    /// generator's own delay, which `ttfa` and `after_window` leave out.
    pub first_audio_read_delay: Vec<Duration>,
    /// Reply audio that no caller turn asked for (greetings, replies after the turn closed).
    pub unprompted_replies: u64,
    pub marks_acknowledged: u64,
    pub clears: u64,
    /// Error frames from the worker, by code.
    pub error_frames: BTreeMap<String, u64>,
}

impl CallOutcome {
    /// A call that never got going.
    pub fn failed(error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    /// Connected and ran to the end without being dropped or sent an error.
    pub fn sustained(&self) -> bool {
        self.connected && self.error.is_none() && self.error_frames.is_empty()
    }
}

/// Nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `values` (sorted in place); all zero when empty.
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        Self {
            count: values.len(),
            p50_ms: nearest_rank(values, 50.0),
            p90_ms: nearest_rank(values, 90.0),
            p99_ms: nearest_rank(values, 99.0),
            max_ms: values[values.len() - 1],
        }
    }
}

/// The nearest-rank percentile `p` of sorted, non-empty `values`.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The calls of a run, merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallsSummary {
    pub requested: usize,
    pub connected: usize,
    pub sustained: usize,
    /// Failures by reason (connect errors, drops, error frames).
    pub failures: BTreeMap<String, usize>,
    pub connect: Percentiles,
    pub frames_sent: u64,
    pub frames_late: u64,
    pub frames_late_percent: f64,
    pub max_send_lateness_ms: f64,
    pub reply_frames: u64,
    pub reply_frames_late: u64,
    pub reply_frames_late_percent: f64,
    pub reply_underruns: u64,
    pub reply_underruns_percent: f64,
    pub reply_frames_misfit: u64,
    pub turns: u64,
    pub turns_answered: u64,
    pub turns_answered_percent: f64,
    pub unprompted_replies: u64,
    pub marks_acknowledged: u64,
    pub clears: u64,
    /// End of caller speech → first reply audio.
    pub ttfa: Percentiles,
    /// First reply audio after the end-of-turn window closed, minus the configured provider
    /// latencies: what the worker (and the machine) added.
    pub overhead: Percentiles,
    /// How long first reply audio waited in the generator's socket before it was read (left
    /// out of `ttfa` and `overhead`, which time audio by its arrival).
    pub read_delay: Percentiles,
    /// Where in the run the turns at or above the overhead's p99 fell.
    pub overhead_tail: TailSpread,
}

/// Where a run's slowest turns fell in time. Crowded into a few seconds, they point at the
/// machine (the hypervisor or a neighbour took the cores for a moment); spread over the run, at
/// a steady cost of the pipeline or of sharing two cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TailSpread {
    /// Turns with an overhead at or above the p99.
    pub turns: usize,
    /// Distinct whole seconds (since the run began) those turns fell in.
    pub seconds: usize,
    /// Distinct whole seconds with any measured turn.
    pub of_seconds: usize,
    /// The most of them in any one second.
    pub most_in_one_second: usize,
}

impl TailSpread {
    /// The spread of the `turns` at or above `threshold_ms`.
    pub fn of(turns: &[TimedTurn], threshold_ms: f64) -> Self {
        let mut all = BTreeMap::<u64, usize>::new();
        let mut tail = BTreeMap::<u64, usize>::new();
        for turn in turns {
            let second = turn.closed_at.as_secs();
            all.entry(second).or_default();
            if turn.overhead_ms >= threshold_ms {
                *tail.entry(second).or_default() += 1;
            }
        }
        Self {
            turns: tail.values().sum(),
            seconds: tail.len(),
            of_seconds: all.len(),
            most_in_one_second: tail.values().copied().max().unwrap_or(0),
        }
    }
}

/// Merges call outcomes; `provider` is the configured sum of provider latencies to first
/// audio, subtracted from the after-window times to give the overhead.
pub fn summarize(outcomes: &[CallOutcome], provider: Duration) -> CallsSummary {
    let mut s = CallsSummary {
        requested: outcomes.len(),
        ..CallsSummary::default()
    };
    let mut connect = Vec::new();
    let mut ttfa = Vec::new();
    let mut overhead = Vec::new();
    let mut read_delay = Vec::new();
    let mut max_lateness = Duration::ZERO;
    for o in outcomes {
        s.connected += usize::from(o.connected);
        s.sustained += usize::from(o.sustained());
        if let Some(error) = &o.error {
            *s.failures.entry(error.clone()).or_default() += 1;
        }
        for code in o.error_frames.keys() {
            *s.failures.entry(format!("error frame {code}")).or_default() += 1;
        }
        connect.extend(o.connect_time.map(ms));
        s.frames_sent += o.frames_sent;
        s.frames_late += o.frames_late;
        max_lateness = max_lateness.max(o.max_send_lateness);
        s.reply_frames += o.reply_frames;
        s.reply_frames_late += o.reply_frames_late;
        s.reply_underruns += o.reply_underruns;
        s.reply_frames_misfit += o.reply_frames_misfit;
        s.turns += o.turns;
        s.turns_answered += o.turns_answered;
        s.unprompted_replies += o.unprompted_replies;
        s.marks_acknowledged += o.marks_acknowledged;
        s.clears += o.clears;
        ttfa.extend(o.ttfa.iter().copied().map(ms));
        overhead.extend(o.after_window.iter().map(|d| ms(*d) - ms(provider)));
        read_delay.extend(o.first_audio_read_delay.iter().copied().map(ms));
    }
    s.connect = Percentiles::of(&mut connect);
    s.frames_late_percent = percent(s.frames_late, s.frames_sent);
    s.max_send_lateness_ms = ms(max_lateness);
    s.reply_frames_late_percent = percent(s.reply_frames_late, s.reply_frames);
    s.reply_underruns_percent = percent(s.reply_underruns, s.reply_frames);
    s.turns_answered_percent = percent(s.turns_answered, s.turns);
    s.ttfa = Percentiles::of(&mut ttfa);
    s.overhead = Percentiles::of(&mut overhead);
    if s.overhead.count > 0 {
        s.overhead_tail = TailSpread::of(&timed_overhead(outcomes, provider), s.overhead.p99_ms);
    }
    s.read_delay = Percentiles::of(&mut read_delay);
    s
}

/// An answered turn: when its window closed (since the run began), the call's turn number and
/// the overhead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedTurn {
    pub closed_at: Duration,
    pub call_turn: u64,
    pub overhead_ms: f64,
}

/// Every answered turn, in time order.
pub fn timed_overhead(outcomes: &[CallOutcome], provider: Duration) -> Vec<TimedTurn> {
    let mut turns: Vec<TimedTurn> = outcomes
        .iter()
        .flat_map(|o| o.window_closed_at.iter().zip(&o.after_window))
        .map(|(&(closed_at, call_turn), d)| TimedTurn {
            closed_at,
            call_turn,
            overhead_ms: ms(*d) - ms(provider),
        })
        .collect();
    turns.sort_by_key(|t| t.closed_at);
    turns
}

/// `turns` as CSV (`--turns-csv`): when each window closed since the run began and on the wall
/// clock (the run began at `began_unix` since the Unix epoch), the call's turn number, the
/// overhead.
pub fn turns_csv(turns: &[TimedTurn], began_unix: Duration) -> String {
    let mut csv = String::from("window_closed_s,unix_s,call_turn,overhead_ms\n");
    for turn in turns {
        let at = turn.closed_at;
        csv.push_str(&format!(
            "{:.3},{:.3},{},{:.3}\n",
            at.as_secs_f64(),
            (began_unix + at).as_secs_f64(),
            turn.call_turn,
            turn.overhead_ms
        ));
    }
    csv
}

/// Milliseconds, exact for whole milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut values);
        assert_eq!(
            (p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let mut few = vec![3.0, 1.0, 2.0];
        let p = Percentiles::of(&mut few);
        assert_eq!((p.p50_ms, p.p90_ms, p.p99_ms), (2.0, 3.0, 3.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        assert_eq!(nearest_rank(&[7.0], 0.0), 7.0);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(1, 200), 0.5);
        assert_eq!(percent(5, 0), 0.0);
    }

    #[test]
    fn merges_outcomes() {
        let ms = Duration::from_millis;
        let good = CallOutcome {
            connected: true,
            connect_time: Some(ms(2)),
            frames_sent: 1000,
            frames_late: 10,
            max_send_lateness: ms(30),
            reply_frames: 200,
            reply_frames_late: 2,
            reply_underruns: 1,
            turns: 4,
            turns_answered: 4,
            ttfa: vec![ms(1260), ms(1270)],
            after_window: vec![ms(652), ms(661)],
            window_closed_at: vec![(ms(10_200), 2), (ms(17_300), 3)],
            first_audio_read_delay: vec![ms(0), ms(3)],
            marks_acknowledged: 8,
            ..CallOutcome::default()
        };
        let mut errored = good.clone();
        errored.error_frames.insert("TIMEOUT".into(), 1);
        errored.turns_answered = 3;
        errored.max_send_lateness = ms(45);
        let refused = CallOutcome::failed("HTTP 503 WORKER_FULL".into());
        let s = summarize(&[good.clone(), errored, refused], ms(650));
        assert_eq!((s.requested, s.connected, s.sustained), (3, 2, 1));
        assert_eq!(s.failures.get("HTTP 503 WORKER_FULL"), Some(&1));
        assert_eq!(s.failures.get("error frame TIMEOUT"), Some(&1));
        assert_eq!((s.frames_sent, s.frames_late), (2000, 20));
        assert_eq!(s.frames_late_percent, 1.0);
        assert_eq!(s.max_send_lateness_ms, 45.0);
        assert_eq!(s.reply_frames_late_percent, 1.0);
        assert_eq!(s.reply_underruns_percent, 0.5);
        assert_eq!((s.turns, s.turns_answered), (8, 7));
        assert_eq!(s.turns_answered_percent, 87.5);
        assert_eq!(s.ttfa.count, 4);
        assert_eq!(s.ttfa.p50_ms, 1260.0);
        assert_eq!(s.overhead.max_ms, 11.0);
        assert_eq!(s.overhead.p50_ms, 2.0);
        // Both calls' 11 ms turn closed in second 17: the tail in one second of two.
        assert_eq!(
            s.overhead_tail,
            TailSpread {
                turns: 2,
                seconds: 1,
                of_seconds: 2,
                most_in_one_second: 2
            }
        );
        assert_eq!((s.read_delay.count, s.read_delay.max_ms), (4, 3.0));
        assert_eq!(s.connect.count, 2);
        assert!(good.sustained());
    }
}
