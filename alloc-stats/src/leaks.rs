//! Leak detection over a history of samples: steady growth, not merely "higher than before".
//!
//! For each series (a component's live bytes, the process's thread count, a component's live
//! blocks) a least-squares line is fitted against time. A series is flagged when the line rises
//! faster than a minimum rate *and* fits well (coefficient of determination `r²` at least
//! [`LeakConfig::min_fit`]) *and* the series really grew over the window *and* it still grows in
//! the window's recent half (at half the window's rate at least). A sawtooth (a cache that
//! fills and is flushed) fits a line badly, a steady component has no slope, and both are left
//! alone. A sawtooth whose floor rises is a leak: when the series as a whole fits a line badly,
//! the same tests are made on its troughs (at least five), and the finding gives the floor's rate.

use crate::history::Sample;
use alloc_core::ComponentId;
use std::fmt;

/// Thresholds for [`detect_leaks`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakConfig {
    /// Samples needed before anything is judged. Default 10.
    pub min_samples: usize,
    /// `r²` a rising line must reach. Default 0.8.
    pub min_fit: f64,
    /// Bytes per second a component must grow by. Default 1024.
    pub min_bytes_per_sec: f64,
    /// Growth over the window, in bytes, below which nothing is flagged. Default 64 KiB.
    pub min_growth_bytes: u64,
    /// Threads per second the process must grow by. Default 0.05 (3 a minute).
    pub min_threads_per_sec: f64,
    /// Live blocks per second a component must grow by. Default 10.
    pub min_blocks_per_sec: f64,
    /// Growth over the window, in live blocks, below which nothing is flagged. Default 100.
    pub min_growth_blocks: u64,
}

impl Default for LeakConfig {
    fn default() -> Self {
        LeakConfig {
            min_samples: 10,
            min_fit: 0.8,
            min_bytes_per_sec: 1024.0,
            min_growth_bytes: 64 * 1024,
            min_threads_per_sec: 0.05,
            min_blocks_per_sec: 10.0,
            min_growth_blocks: 100,
        }
    }
}

/// What kind of growth was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakKind {
    /// A component's live bytes grow steadily.
    Bytes(ComponentId),
    /// A component's live blocks (allocations minus frees) grow steadily.
    Blocks(ComponentId),
    /// The process's thread count grows steadily (the Rust twin of a goroutine leak).
    Threads,
}

/// One suspected leak.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LeakFinding {
    /// What grows.
    pub kind: LeakKind,
    /// Growth per second (bytes, blocks or threads).
    pub rate_per_sec: f64,
    /// How well a line fits the series (1.0 = exactly).
    pub fit: f64,
    /// First and last value of the series in the window.
    pub from: f64,
    /// Last value.
    pub to: f64,
    /// Samples and seconds the evidence spans.
    pub samples: usize,
    /// Seconds the window spans.
    pub seconds: f64,
}

impl fmt::Display for LeakFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, unit) = match self.kind {
            LeakKind::Bytes(c) => (format!("component {:?} live bytes", c.name()), "bytes"),
            LeakKind::Blocks(c) => (format!("component {:?} live blocks", c.name()), "blocks"),
            LeakKind::Threads => ("thread count".to_string(), "threads"),
        };
        write!(
            f,
            "{what} grow by {} {unit}/s: {} -> {} over {:.1} s ({} samples, fit r\u{b2} = {:.2})",
            Rate(self.rate_per_sec),
            self.from,
            self.to,
            self.seconds,
            self.samples,
            self.fit
        )
    }
}

/// A rate with three significant digits or more: a slow leak of 0.06 threads a second reads
/// 0.0600, not 0.1.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = match self.0.abs() {
            r if r >= 100.0 => 0,
            r if r >= 10.0 => 1,
            r if r >= 1.0 => 2,
            r if r > 0.0 => (2.0 - r.log10().floor()).min(12.0) as usize,
            _ => 0,
        };
        write!(f, "{:.*}", digits, self.0)
    }
}

/// Least-squares slope and `r²` of `points` (x, y).
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((slope, r2))
}

fn judge(
    kind: LeakKind,
    samples: &[Sample],
    value: impl Fn(&Sample) -> Option<f64>,
    min_rate: f64,
    min_growth: f64,
    config: &LeakConfig,
) -> Option<LeakFinding> {
    let t0 = samples.first()?.at;
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| value(s).map(|v| (s.at.duration_since(t0).as_secs_f64(), v)))
        .collect();
    if points.len() < config.min_samples {
        return None;
    }
    let seconds = points[points.len() - 1].0;
    let finding = |series: &[(f64, f64)]| {
        let (slope, fit) = fit_line(series)?;
        let (from, to) = (series[0].1, series[series.len() - 1].1);
        // Growth that has stopped is not a leak: a cache that warmed up early in the window and
        // has stayed full since still fits a rising line. The recent half must grow at half the
        // rate too.
        let still_growing =
            fit_line(&series[series.len() / 2..]).is_some_and(|(recent, _)| recent >= slope / 2.0);
        (slope >= min_rate && fit >= config.min_fit && to - from >= min_growth && still_growing)
            .then_some(LeakFinding {
                kind,
                rate_per_sec: slope,
                fit,
                from,
                to,
                samples: points.len(),
                seconds,
            })
    };
    // A sawtooth whose floor rises fits a line badly when the teeth are tall next to the rise;
    // its troughs, though, rise steadily.
    finding(&points).or_else(|| {
        let floor = troughs(&points);
        (floor.len() >= MIN_TROUGHS)
            .then(|| finding(&floor))
            .flatten()
    })
}

/// Troughs needed before the floor of a series is judged.
const MIN_TROUGHS: usize = 5;

/// The troughs of `points`: each point below the next one and not above the one before.
fn troughs(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    (0..points.len().saturating_sub(1))
        .filter(|&i| points[i].1 < points[i + 1].1 && (i == 0 || points[i].1 <= points[i - 1].1))
        .map(|i| points[i])
        .collect()
}

/// Looks for steady growth in `samples` (oldest first).
///
/// ```
/// use alloc_stats::{detect_leaks, LeakConfig};
/// assert!(detect_leaks(&[], &LeakConfig::default()).is_empty());
/// ```
pub fn detect_leaks(samples: &[Sample], config: &LeakConfig) -> Vec<LeakFinding> {
    let mut components: Vec<ComponentId> = samples
        .iter()
        .flat_map(|s| s.components.iter().map(|c| c.0))
        .collect();
    components.sort();
    components.dedup();
    let mut findings = Vec::new();
    for c in components {
        findings.extend(judge(
            LeakKind::Bytes(c),
            samples,
            |s| Some(s.live_of(c) as f64),
            config.min_bytes_per_sec,
            config.min_growth_bytes as f64,
            config,
        ));
        findings.extend(judge(
            LeakKind::Blocks(c),
            samples,
            |s| Some(s.blocks_of(c) as f64),
            config.min_blocks_per_sec,
            config.min_growth_blocks as f64,
            config,
        ));
    }
    findings.extend(judge(
        LeakKind::Threads,
        samples,
        |s| s.threads.map(|t| t as f64),
        config.min_threads_per_sec,
        2.0,
        config,
    ));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// One sample a second; `f(i)` gives (live bytes, live blocks, threads) at second `i`.
    fn series(n: usize, c: ComponentId, f: impl Fn(usize) -> (u64, u64, u64)) -> Vec<Sample> {
        let t0 = Instant::now();
        (0..n)
            .map(|i| {
                let (bytes, blocks, threads) = f(i);
                Sample {
                    at: t0 + Duration::from_secs(i as u64),
                    live_bytes: bytes,
                    live_blocks: blocks,
                    threads: Some(threads),
                    resident_bytes: None,
                    components: vec![(c, bytes, blocks)],
                }
            })
            .collect()
    }

    /// A deterministic wobble of +-`amp`.
    fn noise(i: usize, amp: u64) -> u64 {
        (i as u64 * 2_654_435_761) % (2 * amp + 1)
    }

    #[test]
    fn a_steadily_leaking_component_is_found_with_its_rate() {
        let c = alloc_core::component("leak-test-leaky");
        // 10 KiB a second, with up to +-4 KiB of noise.
        let s = series(60, c, |i| {
            (
                1_000_000 + i as u64 * 10_240 + noise(i, 4096),
                1000 + 10 * i as u64,
                8,
            )
        });
        let found = detect_leaks(&s, &LeakConfig::default());
        let bytes = found
            .iter()
            .find(|f| f.kind == LeakKind::Bytes(c))
            .expect("a byte leak");
        assert!((bytes.rate_per_sec - 10_240.0).abs() < 200.0, "{bytes}");
        assert!(bytes.fit > 0.99, "{bytes}");
        assert!(bytes.to_string().contains("leak-test-leaky"));
        assert!(found.iter().any(|f| f.kind == LeakKind::Blocks(c)));
        assert!(!found.iter().any(|f| f.kind == LeakKind::Threads));
    }

    #[test]
    fn a_steady_component_is_not_flagged() {
        let c = alloc_core::component("leak-test-steady");
        let s = series(100, c, |i| {
            (5_000_000 + noise(i, 200_000), 500 + noise(i, 20), 8)
        });
        assert!(detect_leaks(&s, &LeakConfig::default()).is_empty());
    }

    #[test]
    fn a_sawtooth_is_not_flagged() {
        let c = alloc_core::component("leak-test-sawtooth");
        // A cache that fills by 100 KiB a second and is flushed every 10 s.
        let s = series(100, c, |i| {
            ((i % 10) as u64 * 102_400, (i % 10) as u64 * 100, 8)
        });
        let found = detect_leaks(&s, &LeakConfig::default());
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_sawtooth_on_a_rising_floor_is_flagged() {
        let c = alloc_core::component("leak-test-rising-saw");
        let s = series(100, c, |i| {
            (i as u64 * 50_000 + (i % 10) as u64 * 20_000, 0, 8)
        });
        assert!(detect_leaks(&s, &LeakConfig::default())
            .iter()
            .any(|f| f.kind == LeakKind::Bytes(c)));
    }

    #[test]
    fn a_sawtooth_whose_floor_rises_slowly_is_flagged() {
        let c = alloc_core::component("leak-test-slow-floor");
        // A cache that fills by 100 KiB a second and is flushed every 10 s, on a floor that leaks
        // 10 kB a second (1 MB over the window, ten times the minimum rate).
        let s = series(100, c, |i| {
            (
                2_000_000 + i as u64 * 10_000 + (i % 10) as u64 * 102_400,
                0,
                8,
            )
        });
        let found = detect_leaks(&s, &LeakConfig::default());
        let floor = found
            .iter()
            .find(|f| f.kind == LeakKind::Bytes(c))
            .unwrap_or_else(|| panic!("the rising floor is a leak: {found:?}"));
        assert!((floor.rate_per_sec - 10_000.0).abs() < 500.0, "{floor}");
    }

    #[test]
    fn a_few_blocks_more_in_a_short_window_are_not_a_leak() {
        let c = alloc_core::component("leak-test-few-blocks");
        // 11 blocks a second for 9 s: fast enough, a perfect line, but 99 blocks in all.
        let s = series(10, c, |i| (1_000_000, 1000 + 11 * i as u64, 8));
        let found = detect_leaks(&s, &LeakConfig::default());
        assert!(found.is_empty(), "{found:?}");
        // With a lower floor for the growth, the same series is flagged.
        let low = LeakConfig {
            min_growth_blocks: 50,
            ..LeakConfig::default()
        };
        assert!(detect_leaks(&s, &low)
            .iter()
            .any(|f| f.kind == LeakKind::Blocks(c)));
    }

    #[test]
    fn rates_keep_three_significant_digits() {
        let shown = |r: f64| Rate(r).to_string();
        assert_eq!(shown(65_432.1), "65432");
        assert_eq!(shown(12.345), "12.3");
        assert_eq!(shown(1.2345), "1.23");
        assert_eq!(shown(0.06), "0.0600");
        assert_eq!(shown(0.00123), "0.00123");
        assert_eq!(shown(0.0), "0");
    }

    #[test]
    fn growth_that_stopped_is_not_flagged() {
        let c = alloc_core::component("leak-test-plateau");
        // A cache that warms up by 100 kB a second for 60 s, then stays full for the last 40 s.
        let s = series(100, c, |i| {
            let warm = i.min(60) as u64;
            (warm * 100_000 + noise(i, 2000), warm * 100, 8)
        });
        let found = detect_leaks(&s, &LeakConfig::default());
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn growing_threads_are_found() {
        let c = alloc_core::component("leak-test-threads");
        let s = series(30, c, |i| (1000, 10, 4 + i as u64 / 3));
        let found = detect_leaks(&s, &LeakConfig::default());
        let t = found
            .iter()
            .find(|f| f.kind == LeakKind::Threads)
            .expect("thread growth");
        assert!((t.rate_per_sec - 1.0 / 3.0).abs() < 0.05, "{t}");
    }

    #[test]
    fn too_few_samples_judge_nothing() {
        let c = alloc_core::component("leak-test-few");
        let s = series(5, c, |i| {
            (i as u64 * 1_000_000, i as u64 * 1000, 4 + i as u64)
        });
        assert!(detect_leaks(&s, &LeakConfig::default()).is_empty());
    }

    #[test]
    fn the_fit_of_a_line_is_exact() {
        let (slope, r2) = fit_line(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((slope - 2.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
        assert_eq!(fit_line(&[(1.0, 1.0)]), None);
    }
}
