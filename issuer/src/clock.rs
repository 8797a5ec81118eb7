//! The issuer's time source. Handlers read the time from [`AppState::clock`](crate::AppState)
//! instead of the system clock, so a test can stand at a chosen instant (the boundary of a
//! revocation's life, a token's expiry) without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shared::UnixTime;

/// Where "now" comes from: the system clock, or a [`ManualTime`] a test moves.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicU64>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(ms) => write!(f, "Clock::Manual({})", ms.load(Ordering::Relaxed)),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands at `start` until the returned handle moves it.
    #[must_use]
    pub fn manual(start: UnixTime) -> (Self, ManualTime) {
        let millis = Arc::new(AtomicU64::new(start.as_millis()));
        (
            Self(Source::Manual(Arc::clone(&millis))),
            ManualTime(millis),
        )
    }

    /// Now, to the millisecond.
    #[must_use]
    pub fn now(&self) -> UnixTime {
        match &self.0 {
            Source::System => crate::db::precise_now(),
            Source::Manual(millis) => UnixTime::from_millis(millis.load(Ordering::SeqCst)),
        }
    }

    /// Now, in whole seconds since the epoch (the database's unit).
    #[must_use]
    pub fn unix_secs(&self) -> i64 {
        i64::try_from(self.now().as_secs()).unwrap_or(i64::MAX)
    }
}

/// The handle that moves a [`Clock::manual`].
#[derive(Debug, Clone)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// Sets the time.
    pub fn set(&self, at: UnixTime) {
        self.0.store(at.as_millis(), Ordering::SeqCst);
    }

    /// Sets the time to `secs` seconds since the epoch.
    pub fn set_secs(&self, secs: i64) {
        self.set(UnixTime::from_secs(u64::try_from(secs).unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_until_moved() {
        let (clock, time) = Clock::manual(UnixTime::from_secs(100));
        assert_eq!(clock.unix_secs(), 100);
        time.set_secs(250);
        assert_eq!(clock.clone().unix_secs(), 250);
        assert!(Clock::system().unix_secs() > 1_700_000_000);
    }
}
