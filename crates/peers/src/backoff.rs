//! Exponential redial backoff with jitter.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::config::BackoffConfig;

/// A persistent peer's run of consecutive failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records one more failure and returns the delay before the next attempt.
    pub(crate) fn next_delay(&mut self, config: &BackoffConfig, rng: &mut ChaCha8Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let nominal = nominal_delay(config, self.failures);
        let factor = if config.jitter > 0.0 {
            rng.random_range((1.0 - config.jitter)..=(1.0 + config.jitter))
        } else {
            1.0
        };
        nominal.mul_f64(factor).max(Duration::from_nanos(1))
    }

    /// Forgets the failures (after a connection stayed up for `stable_after`).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// The delay before jitter after the `failures`-th consecutive failure (1-based).
pub(crate) fn nominal_delay(config: &BackoffConfig, failures: u32) -> Duration {
    let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX).min(1024);
    let secs = config.initial.as_secs_f64() * config.multiplier.powi(exponent);
    // `min` also turns an overflow to infinity into the cap.
    let capped = secs.min(config.max.as_secs_f64());
    Duration::try_from_secs_f64(capped).unwrap_or(config.max)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn nominal_delays_double_and_cap() {
        let config = BackoffConfig::default();
        let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0];
        for (i, want) in expected.iter().enumerate() {
            let got = nominal_delay(&config, i as u32 + 1).as_secs_f64();
            assert!((got - want).abs() < 1e-9, "failure {}: {got} != {want}", i + 1);
        }
        assert_eq!(nominal_delay(&config, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let config = BackoffConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let mut b = Backoff::default();
            let d = b.next_delay(&config, &mut rng).as_secs_f64();
            assert!((0.4..=0.6).contains(&d), "{d}");
            seen.push(d);
        }
        seen.sort_by(f64::total_cmp);
        assert!(seen[199] - seen[0] > 0.1, "jitter should spread the delays");
    }

    #[test]
    fn reset_starts_over() {
        let config = BackoffConfig { jitter: 0.0, ..BackoffConfig::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut b = Backoff::default();
        b.next_delay(&config, &mut rng);
        assert_eq!(b.next_delay(&config, &mut rng), Duration::from_secs(1));
        assert_eq!(b.failures(), 2);
        b.reset();
        assert_eq!(b.next_delay(&config, &mut rng), Duration::from_millis(500));
    }
}
