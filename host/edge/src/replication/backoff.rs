//! Capped exponential backoff with jitter, so a down cloud is retried
//! patiently and many edges do not retry in lockstep.

use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The current ceiling; `None` right after a success.
    ceiling: Option<Duration>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            ceiling: None,
        }
    }

    pub fn reset(&mut self) {
        self.ceiling = None;
    }

    /// The next wait: the ceiling doubles (up to `max`) on every failure,
    /// and the wait is drawn from its upper half ("equal jitter").
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = match self.ceiling {
            None => self.min,
            Some(c) => (c * 2).min(self.max),
        };
        self.ceiling = Some(ceiling);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(min, max);
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            let ceiling = backoff.ceiling.unwrap();
            assert!(ceiling >= last_ceiling && ceiling <= max);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            last_ceiling = ceiling;
        }
        assert_eq!(last_ceiling, max);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
