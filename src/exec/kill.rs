//! The kill ladder both executors drive: at the deadline SIGTERM, after the grace period
//! SIGKILL, after another grace period give up waiting; and once the script is over, a
//! bounded drain of what is still in flight.
//!
//! It is a plain state machine over [`Instant`]s so that the local executor's async loop
//! and the SSH executor's `poll(2)` loop share one shape: each asks [`Ladder::due`] for the
//! step to take now, and sleeps until [`Ladder::next`].

use std::time::{Duration, Instant};

/// A step to take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The deadline passed: send SIGTERM.
    Term,
    /// The grace period after SIGTERM passed: send SIGKILL.
    Kill,
    /// The grace period after SIGKILL passed and it is still not over: stop waiting.
    GiveUp,
    /// The drain window after the end passed: stop reading.
    StopDraining,
}

/// The ladder for one attempt.
#[derive(Debug, Clone)]
pub struct Ladder {
    deadline: Instant,
    grace: Duration,
    drain: Duration,
    timed_out: bool,
    kill_at: Option<Instant>,
    give_up_at: Option<Instant>,
    drain_until: Option<Instant>,
}

impl Ladder {
    /// A ladder for an attempt due at `deadline`.
    pub fn new(deadline: Instant, grace: Duration, drain: Duration) -> Ladder {
        Ladder {
            deadline,
            grace,
            drain,
            timed_out: false,
            kill_at: None,
            give_up_at: None,
            drain_until: None,
        }
    }

    /// The script is over (locally: bash exited; over SSH: the result is in). The deadline
    /// no longer applies; what is still in flight gets the drain window.
    pub fn ended(&mut self, now: Instant) {
        if self.drain_until.is_none() {
            self.drain_until = Some(now + self.drain);
        }
    }

    /// Whether the deadline passed before the end.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The step due at `now`, if any. Call until it returns `None`.
    pub fn due(&mut self, now: Instant) -> Option<Step> {
        if self.drain_until.is_some_and(|d| now >= d) {
            self.drain_until = Some(far(now));
            return Some(Step::StopDraining);
        }
        if !self.timed_out && self.drain_until.is_none() && now >= self.deadline {
            self.timed_out = true;
            self.kill_at = Some(now + self.grace);
            return Some(Step::Term);
        }
        if self.kill_at.is_some_and(|k| now >= k) {
            self.kill_at = None;
            self.give_up_at = Some(now + self.grace);
            return Some(Step::Kill);
        }
        if self.give_up_at.is_some_and(|g| now >= g) {
            self.give_up_at = None;
            return Some(Step::GiveUp);
        }
        None
    }

    /// When the next step falls due (`None`: nothing is pending).
    pub fn next(&self) -> Option<Instant> {
        let deadline = (!self.timed_out && self.drain_until.is_none()).then_some(self.deadline);
        [deadline, self.kill_at, self.give_up_at, self.drain_until]
            .into_iter()
            .flatten()
            .min()
    }
}

fn far(now: Instant) -> Instant {
    now + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_kill_give_up_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Ladder::new(t0 + ms(100), ms(10), ms(5));
        assert_eq!(l.due(t0), None);
        assert_eq!(l.next(), Some(t0 + ms(100)));
        assert_eq!(l.due(t0 + ms(100)), Some(Step::Term));
        assert!(l.timed_out());
        assert_eq!(l.due(t0 + ms(105)), None);
        assert_eq!(l.due(t0 + ms(110)), Some(Step::Kill));
        assert_eq!(l.due(t0 + ms(120)), Some(Step::GiveUp));
        assert_eq!(l.due(t0 + ms(200)), None);
    }

    #[test]
    fn an_end_cancels_the_deadline_and_starts_the_drain() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Ladder::new(t0 + ms(100), ms(10), ms(5));
        l.ended(t0 + ms(50));
        assert_eq!(l.next(), Some(t0 + ms(55)));
        assert_eq!(l.due(t0 + ms(101)), Some(Step::StopDraining));
        assert!(!l.timed_out());
        assert_eq!(l.due(t0 + ms(102)), None);
    }
}
