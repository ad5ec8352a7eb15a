//! Random choices, drawn from a seed or read from a tape.
//!
//! Every random choice a simulation makes — the fault mix, each server's
//! faults, the workload, the scheduler's order, the client's own seed — goes
//! through one [`Choices`] stream per component. In a seeded run each stream
//! draws from its own generator and writes every choice down as bytes; those
//! bytes, one string per stream, are the run's [`Tape`], and replaying the
//! tape makes the same run, event for event.
//!
//! A tape need not come from a seed. Where a stream's bytes run out every
//! choice is the calmest one: no fault, the first option, the low end of a
//! range. So a failing run can be shrunk by cutting its tape and lowering its
//! bytes ([`shrink`]; [`crate::swarm::shrink_failure`] for the swarm), and
//! any byte string — a fuzzer's input, say ([`Tape::uniform`]) — can drive a
//! run.
//!
//! Each choice reads a fixed number of bytes, big-endian (`below(n)` just
//! enough for `n - 1`), and takes them modulo its range. A recorded tape
//! holds values already in range, so there lowering a byte lowers the
//! value, which is what the shrinker relies on.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// One component's stream of random choices.
pub struct Choices {
    source: Source,
    /// Every choice made, as the bytes that replay it.
    record: Arc<Mutex<Vec<u8>>>,
}

enum Source {
    Seeded(fastrand::Rng),
    Tape { bytes: Arc<[u8]>, at: usize },
}

impl fmt::Debug for Choices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Seeded(_) => "seeded",
            Source::Tape { .. } => "tape",
        };
        f.debug_struct("Choices")
            .field("source", &source)
            .field("recorded", &self.record.lock().unwrap().len())
            .finish()
    }
}

impl Choices {
    /// A stream drawn from `seed`.
    pub fn seeded(seed: u64) -> Choices {
        Choices {
            source: Source::Seeded(fastrand::Rng::with_seed(seed)),
            record: Arc::default(),
        }
    }

    /// A stream that reads `bytes`, then makes the calmest choice forever.
    pub fn replaying(bytes: impl Into<Arc<[u8]>>) -> Choices {
        Choices {
            source: Source::Tape {
                bytes: bytes.into(),
                at: 0,
            },
            record: Arc::default(),
        }
    }

    /// The bytes that replay the choices made so far.
    pub fn recorded(&self) -> Vec<u8> {
        self.record.lock().unwrap().clone()
    }

    /// A handle on the record, which stays readable after the stream moves.
    pub(crate) fn record_handle(&self) -> Arc<Mutex<Vec<u8>>> {
        self.record.clone()
    }

    /// A number in `0..n` (0 when `n` is 0 or 1); 0 is the calmest.
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        self.draw(width_of(n - 1), Some(n))
    }

    /// Any `u64`; 0 is the calmest.
    pub fn u64(&mut self) -> u64 {
        self.draw(8, None)
    }

    /// An index into a list of `len`; the first is the calmest.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// One of `options`, which are listed calmest first.
    ///
    /// # Panics
    /// If `options` is empty.
    pub fn pick<T: Clone>(&mut self, options: &[T]) -> T {
        options[self.index(options.len())].clone()
    }

    /// A number in `range`; its start is the calmest.
    pub fn in_range(&mut self, range: Range<u64>) -> u64 {
        range.start + self.below(range.end.saturating_sub(range.start))
    }

    /// `true` with probability `p`; `false` is the calmest.
    pub fn chance(&mut self, p: f64) -> bool {
        const SCALE: f64 = 65_536.0;
        let drawn = self.below(1 << 16) as f64;
        drawn >= (1.0 - p) * SCALE
    }

    /// A number in `[0, 1)`; 0 is the calmest.
    pub fn unit(&mut self) -> f64 {
        self.below(1 << 32) as f64 / (1u64 << 32) as f64
    }

    /// Which of several events with probabilities `weights` happens, if any;
    /// none is the calmest. Where the weights add up to more than 1, the
    /// later ones are cut short (the first ones keep theirs).
    pub fn weighted(&mut self, weights: &[f64]) -> Option<usize> {
        let drawn = self.unit();
        // Counted down from 1, so that a low draw is no event at all.
        let mut edge = 1.0;
        for (i, weight) in weights.iter().enumerate() {
            edge -= weight;
            if drawn >= edge {
                return Some(i);
            }
        }
        None
    }

    fn draw(&mut self, width: usize, modulus: Option<u64>) -> u64 {
        let value = match &mut self.source {
            Source::Seeded(rng) => match modulus {
                Some(n) => rng.u64(..n),
                None => rng.u64(..),
            },
            Source::Tape { bytes, at } => {
                let read = (0..width).fold(0u64, |value, i| {
                    (value << 8) | u64::from(bytes.get(*at + i).copied().unwrap_or(0))
                });
                *at += width;
                modulus.map_or(read, |n| read % n)
            }
        };
        let bytes = value.to_be_bytes();
        self.record
            .lock()
            .unwrap()
            .extend_from_slice(&bytes[8 - width..]);
        value
    }
}

/// How many bytes hold numbers up to `max`.
fn width_of(max: u64) -> usize {
    (8 - max.leading_zeros() as usize / 8).max(1)
}

/// The bytes that replay a run: one string per component stream.
///
/// Its text form ([`Tape::to_text`]) is one line per stream, the bytes in
/// hex then the stream's name; it is what a shrunk failure is saved as.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tape {
    streams: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, bytes) in &self.streams {
            map.entry(name, &bytes.len());
        }
        map.finish()
    }
}

impl Tape {
    /// A tape whose every stream reads `bytes`: one byte string (a fuzzer's
    /// input) driving every component.
    pub fn uniform(bytes: &[u8]) -> Tape {
        let mut tape = Tape::default();
        tape.set_stream("", bytes.to_vec());
        tape
    }

    /// The bytes of the stream `name`; a uniform tape's bytes for any name.
    pub fn stream(&self, name: &str) -> &[u8] {
        self.streams
            .get(name)
            .or_else(|| self.streams.get(""))
            .map_or(&[], Vec::as_slice)
    }

    /// The streams, by name.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.streams
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
    }

    /// Sets the bytes of the stream `name`. Trailing zero bytes are dropped:
    /// a stream that has run out reads zeros anyway.
    pub fn set_stream(&mut self, name: &str, mut bytes: Vec<u8>) {
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        if bytes.is_empty() {
            self.streams.remove(name);
        } else {
            self.streams.insert(name.to_owned(), bytes);
        }
    }

    /// Bytes over all streams.
    pub fn len(&self) -> usize {
        self.streams.values().map(Vec::len).sum()
    }

    /// Whether every stream is empty (the calmest run).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text form: `<hex bytes> <stream name>` per line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (name, bytes) in &self.streams {
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text.push(' ');
            text.push_str(name);
            text.push('\n');
        }
        text
    }

    /// Writes the text form to `path`.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_text())
    }

    /// Reads a tape saved by [`save`](Self::save).
    pub fn load(path: &std::path::Path) -> std::io::Result<Tape> {
        let text = std::fs::read_to_string(path)?;
        Tape::from_text(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Reads the text form back.
    pub fn from_text(text: &str) -> Result<Tape, TapeError> {
        let mut tape = Tape::default();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (hex, name) = line.split_once(' ').unwrap_or((line, ""));
            let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            let bytes = hex
                .as_bytes()
                .chunks(2)
                .map(|pair| match pair {
                    &[high, low] => Some(digit(high)? << 4 | digit(low)?),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or(TapeError { line: number + 1 })?;
            tape.set_stream(name, bytes);
        }
        Ok(tape)
    }
}

/// A tape's text form had a line that is not `<hex bytes> <stream name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeError {
    /// The line, from 1.
    pub line: usize,
}

impl fmt::Display for TapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tape line {} is not `<hex bytes> <stream name>`",
            self.line
        )
    }
}

impl std::error::Error for TapeError {}

/// A failing run cut down by [`shrink`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Shrunk {
    /// The smallest tape found that still fails the same way.
    pub tape: Tape,
    /// How it fails: the signature the scenario gave for it.
    pub failure: String,
    /// Runs made while shrinking, the first included.
    pub runs: usize,
}

/// Cuts a failing run's tape down, keeping each cut after which the run
/// still fails the same way; `None` if `tape` does not fail.
///
/// `run` replays the scenario from a tape and returns how it failed (a
/// signature, compared for equality, so a cut that turns one failure into
/// another is refused) or `None` if it passed, together with the tape of
/// the choices that run made. The cuts, tried in every stream from whole
/// streams down to single bytes: delete a block of bytes, then zero it
/// (where a stream runs out it reads zeros, the calmest choices); last,
/// lower each remaining byte as far as it will go. At most `max_runs` runs
/// are made.
pub fn shrink(
    tape: Tape,
    max_runs: usize,
    mut run: impl FnMut(&Tape) -> (Option<String>, Tape),
) -> Option<Shrunk> {
    let (failure, recorded) = run(&tape);
    let failure = failure?;
    let mut shrinker = Shrinker {
        best: smaller_of(tape, recorded),
        failure,
        runs: 1,
        max_runs,
        run: &mut run,
    };
    let longest = shrinker
        .best
        .streams()
        .map(|(_, b)| b.len())
        .max()
        .unwrap_or(0);
    let mut block = longest.next_power_of_two();
    while block >= 1 && shrinker.has_runs_left() {
        for name in shrinker.stream_names() {
            shrinker.cut_blocks(&name, block);
        }
        block /= 2;
    }
    for name in shrinker.stream_names() {
        shrinker.lower_bytes(&name);
    }
    Some(Shrunk {
        tape: shrinker.best,
        failure: shrinker.failure,
        runs: shrinker.runs,
    })
}

/// The order shrinking moves down: fewer bytes, then lower ones.
fn shrink_key(tape: &Tape) -> (usize, Vec<(&str, &[u8])>) {
    (tape.len(), tape.streams().collect())
}

fn smaller_of(a: Tape, b: Tape) -> Tape {
    if shrink_key(&b) < shrink_key(&a) {
        b
    } else {
        a
    }
}

struct Shrinker<'a, F> {
    best: Tape,
    failure: String,
    runs: usize,
    max_runs: usize,
    run: &'a mut F,
}

impl<F: FnMut(&Tape) -> (Option<String>, Tape)> Shrinker<'_, F> {
    fn has_runs_left(&self) -> bool {
        self.runs < self.max_runs
    }

    fn stream_names(&self) -> Vec<String> {
        self.best
            .streams()
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Runs `name` replaced by `bytes`; keeps the result if it fails the
    /// same way and is smaller.
    fn try_stream(&mut self, name: &str, bytes: Vec<u8>) -> bool {
        if !self.has_runs_left() {
            return false;
        }
        let mut candidate = self.best.clone();
        candidate.set_stream(name, bytes);
        if shrink_key(&candidate) >= shrink_key(&self.best) {
            return false;
        }
        self.runs += 1;
        match (self.run)(&candidate) {
            (Some(failure), recorded) if failure == self.failure => {
                self.best = smaller_of(candidate, recorded);
                true
            }
            _ => false,
        }
    }

    fn cut_blocks(&mut self, name: &str, block: usize) {
        let mut start = 0;
        while start < self.best.stream(name).len() && self.has_runs_left() {
            let bytes = self.best.stream(name).to_vec();
            let end = (start + block).min(bytes.len());
            let mut deleted = bytes[..start].to_vec();
            deleted.extend_from_slice(&bytes[end..]);
            if self.try_stream(name, deleted) {
                // The bytes after the block moved to `start`: look there again.
                continue;
            }
            if bytes[start..end].iter().any(|&b| b != 0) {
                let mut zeroed = bytes.clone();
                zeroed[start..end].fill(0);
                self.try_stream(name, zeroed);
            }
            start += block;
        }
    }

    /// Lowers each byte to the least value that still fails, by bisection.
    fn lower_bytes(&mut self, name: &str) {
        let mut at = 0;
        while at < self.best.stream(name).len() && self.has_runs_left() {
            let (mut low, mut high) = (0u8, self.best.stream(name)[at]);
            while low < high && self.has_runs_left() {
                let mid = low + (high - low) / 2;
                let mut bytes = self.best.stream(name).to_vec();
                bytes[at] = mid;
                if self.try_stream(name, bytes) {
                    match self.best.stream(name).get(at) {
                        Some(&now) => high = now.min(mid),
                        None => return,
                    }
                } else {
                    low = mid + 1;
                }
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(choices: &mut Choices) -> Vec<u64> {
        vec![
            choices.below(10),
            choices.below(300),
            choices.in_range(1_000..40_000),
            u64::from(choices.chance(0.3)),
            choices.u64(),
            choices.weighted(&[0.2, 0.3]).map_or(9, |i| i as u64),
            choices.index(3) as u64,
        ]
    }

    #[test]
    fn a_recording_replays_the_same_choices() {
        for seed in 0..200 {
            let mut seeded = Choices::seeded(seed);
            let first = draws(&mut seeded);
            let mut replay = Choices::replaying(seeded.recorded());
            assert_eq!(draws(&mut replay), first, "seed {seed}");
            assert_eq!(replay.recorded(), seeded.recorded());
        }
    }

    /// One draw of each kind, chosen by `kind`, with `param` shaping its range.
    fn draw_by(choices: &mut Choices, kind: u8, param: u64) -> u64 {
        match kind % 6 {
            0 => choices.below(param),
            1 => choices.in_range(param / 2..param),
            2 => u64::from(choices.chance((param % 101) as f64 / 100.0)),
            3 => choices.weighted(&[0.25, 0.5]).map_or(7, |i| i as u64),
            4 => choices.u64(),
            _ => choices.index((param % 300) as usize) as u64,
        }
    }

    proptest::proptest! {
        /// Whatever bytes a tape holds (a fuzzer's, a shrinker's cut), the
        /// recording of a run replays that run, and records itself.
        #[test]
        fn any_tape_replays_through_its_recording(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            draws in proptest::collection::vec((0u8..6, 0u64..100_000), 0..40),
        ) {
            let mut first = Choices::replaying(bytes);
            let values: Vec<u64> = draws.iter().map(|&(k, p)| draw_by(&mut first, k, p)).collect();
            let mut again = Choices::replaying(first.recorded());
            let replayed: Vec<u64> = draws.iter().map(|&(k, p)| draw_by(&mut again, k, p)).collect();
            proptest::prop_assert_eq!(&replayed, &values);
            proptest::prop_assert_eq!(again.recorded(), first.recorded());
        }
    }

    #[test]
    fn an_exhausted_tape_makes_the_calmest_choices() {
        let mut calm = Choices::replaying(Vec::new());
        assert_eq!(draws(&mut calm), vec![0, 0, 1_000, 0, 0, 9, 0]);
        assert!(!calm.chance(0.999));
        assert_eq!(calm.pick(&["first", "second"]), "first");
    }

    #[test]
    fn choices_read_just_enough_bytes() {
        assert_eq!(width_of(0), 1);
        assert_eq!(width_of(255), 1);
        assert_eq!(width_of(256), 2);
        assert_eq!(width_of(u64::MAX), 8);
        let mut choices = Choices::replaying(vec![7, 1, 2, 0xff]);
        assert_eq!(choices.below(10), 7);
        assert_eq!(choices.below(1_000), 258);
        assert_eq!(choices.below(2), 1);
        assert_eq!(choices.recorded(), vec![7, 1, 2, 1]);
    }

    #[test]
    fn chance_and_weights_follow_their_probabilities() {
        let mut choices = Choices::seeded(5);
        let hits = (0..20_000).filter(|_| choices.chance(0.25)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[choices.weighted(&[0.1, 0.3]).map_or(2, |i| i)] += 1;
        }
        assert!((1_700..2_300).contains(&counts[0]), "{counts:?}");
        assert!((5_500..6_500).contains(&counts[1]), "{counts:?}");
        assert!(!Choices::seeded(1).chance(0.0));
        assert!(Choices::seeded(1).chance(1.0));
    }

    #[test]
    fn shrinking_keeps_only_the_choices_a_failure_needs() {
        // The scenario: 50 calls; it fails when some call is cancelled with a
        // delay of 900 ms or more. Each call draws whether it is cancelled,
        // then its delay.
        let scenario = |tape: &Tape| {
            let mut choices = Choices::replaying(tape.stream("workload"));
            let mut failure = None;
            for call in 0..50 {
                let cancelled = choices.chance(0.3);
                let delay = choices.in_range(0..1_000);
                if cancelled && delay >= 900 && failure.is_none() {
                    failure = Some(format!("call {call} cancelled late"));
                }
            }
            let mut recorded = Tape::default();
            recorded.set_stream("workload", choices.recorded());
            (
                failure.map(|f| f.split(' ').skip(2).collect::<String>()),
                recorded,
            )
        };
        // A seeded run's choices, as its tape; the first seed that fails.
        let seeded_tape = |seed| {
            let mut choices = Choices::seeded(seed);
            for _ in 0..50 {
                choices.chance(0.3);
                choices.in_range(0..1_000);
            }
            let mut tape = Tape::default();
            tape.set_stream("workload", choices.recorded());
            tape
        };
        let failing = (0..)
            .map(seeded_tape)
            .find(|tape| scenario(tape).0.is_some())
            .unwrap();
        let shrunk = shrink(failing.clone(), 2_000, scenario).expect("it fails");
        assert_eq!(shrunk.failure, "cancelledlate");
        // One call's two choices are left: cancelled (at the calmest value that
        // still says yes) and a delay of exactly 900 ms.
        let mut replay = Choices::replaying(shrunk.tape.stream("workload"));
        assert!(replay.chance(0.3));
        assert_eq!(replay.in_range(0..1_000), 900);
        assert_eq!(shrunk.tape.len(), 4, "{:?}", shrunk.tape.to_text());
        assert!(shrunk.runs < 2_000, "{}", shrunk.runs);
        assert!(shrink(Tape::default(), 10, scenario).is_none());
    }

    #[test]
    fn the_text_form_round_trips() {
        let mut tape = Tape::default();
        tape.set_stream("faults", vec![1, 0xab, 0]);
        tape.set_stream("server api.test:443", vec![0, 0, 9]);
        tape.set_stream("scheduler", vec![0, 0]);
        assert_eq!(tape.stream("faults"), &[1, 0xab]);
        assert_eq!(tape.stream("scheduler"), &[] as &[u8]);
        assert_eq!(tape.len(), 5);
        let text = tape.to_text();
        assert_eq!(text, "01ab faults\n000009 server api.test:443\n");
        assert_eq!(Tape::from_text(&text), Ok(tape));
        assert_eq!(Tape::from_text("0g x\n"), Err(TapeError { line: 1 }));
        assert_eq!(Tape::from_text("01 x\n0é0 y\n"), Err(TapeError { line: 2 }));
        assert_eq!(Tape::from_text("+1+2 x\n"), Err(TapeError { line: 1 }));
        assert_eq!(Tape::from_text("012 x\n"), Err(TapeError { line: 1 }));
        let uniform = Tape::uniform(&[3, 0]);
        assert_eq!(uniform.stream("anything"), &[3]);
        assert_eq!(Tape::from_text(&uniform.to_text()), Ok(uniform));
        assert!(Tape::uniform(&[0; 100]).is_empty());
    }
}
