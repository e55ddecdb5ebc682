//! Ids for the queries Ballista runs, read from the system clock on demand.
//!
//! Ballista's default job id generator reads ferroid's `MonotonicClock`,
//! which a background thread advances every millisecond for as long as the
//! process lives: an idle scheduler woke a thousand times a second and used
//! about 4% of a core doing nothing, on the same cores as the executors'
//! tasks. [`JobIds`] gives ids of the same shape (a snowflake: milliseconds
//! since the Unix epoch in the top 48 bits, a sequence in the low 16,
//! written as 13 characters of Crockford base32, so ids sort as text in the
//! order they were made) and reads the clock only when an id is asked for.
//! The scheduler hands it to Ballista through
//! `SchedulerConfig::job_id_generator`.
//!
//! ```
//! use quiver_scheduler::job_ids::JobIds;
//! let ids = JobIds::new();
//! let (a, b) = (ids.next_id(), ids.next_id());
//! assert_eq!(a.len(), 13);
//! assert!(a < b);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use ballista_scheduler::scheduler_server::JobIdGenerator;

/// Bits of an id below the timestamp: ids made within one millisecond.
const SEQUENCE_BITS: u32 = 16;

/// Crockford's base32 digits, as Ballista's default ids use them.
const DIGITS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Unique, time-ordered job ids without a clock thread.
///
/// Safe to call from many tasks at once: each id is greater than every id
/// this generator returned before, even when the system clock steps back
/// or more than 65,536 ids are asked for in one millisecond (the ids then
/// run ahead of the clock until it catches up).
#[derive(Debug, Default)]
pub struct JobIds {
    last: AtomicU64,
}

impl JobIds {
    /// A generator whose first id comes from the current time.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id as a number: the current time in milliseconds shifted
    /// above the sequence bits, or one more than the last id if that is
    /// greater.
    ///
    /// ```
    /// use quiver_scheduler::job_ids::JobIds;
    /// let ids = JobIds::new();
    /// let first = ids.next();
    /// assert!(ids.next() > first);
    /// ```
    pub fn next(&self) -> u64 {
        let now = unix_millis() << SEQUENCE_BITS;
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last + 1)))
            .unwrap_or_else(|last| last); // the closure always returns Some
        now.max(previous + 1)
    }

    /// The next id as Ballista stores it: [`next`](Self::next) in 13 base32
    /// digits.
    pub fn next_id(&self) -> String {
        encode(self.next())
    }
}

#[async_trait::async_trait]
impl JobIdGenerator for JobIds {
    async fn next_id(&self) -> String {
        JobIds::next_id(self)
    }
}

/// Milliseconds since the Unix epoch in the low 48 bits (0 for a clock set
/// before 1970: the sequence keeps ids unique).
fn unix_millis() -> u64 {
    crate::clock::now_ms() & ((1 << (64 - SEQUENCE_BITS)) - 1)
}

/// `id` as 13 Crockford base32 digits, most significant first and
/// zero-padded, so the text sorts as the number does.
fn encode(id: u64) -> String {
    (0..13)
        .rev()
        .map(|digit| char::from(DIGITS[((id >> (5 * digit)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn encoding_is_fixed_width_and_sorts_like_the_number() {
        assert_eq!(encode(0), "0000000000000");
        assert_eq!(encode(31), "000000000000Z");
        assert_eq!(encode(32), "0000000000010");
        assert_eq!(encode(u64::MAX), "FZZZZZZZZZZZZ");
        let numbers = [0, 1, 31, 32, 1 << 40, (1 << 40) + 1, u64::MAX / 3, u64::MAX];
        for pair in numbers.windows(2) {
            assert!(encode(pair[0]) < encode(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn ids_carry_the_time_they_were_made() {
        let before = unix_millis();
        let id = JobIds::new().next();
        let after = unix_millis();
        let millis = id >> SEQUENCE_BITS;
        assert!(before <= millis && millis <= after, "{before} <= {millis} <= {after}");
    }

    #[test]
    fn ids_stay_unique_and_increasing_across_threads_and_a_busy_millisecond() {
        let ids = Arc::new(JobIds::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..100_000).map(|_| ids.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for thread in threads {
            let made = thread.join().expect("id thread");
            assert!(made.windows(2).all(|w| w[0] < w[1]), "one caller's ids increase");
            all.extend(made);
        }
        assert_eq!(all.len(), 400_000, "no id twice");
    }

    #[test]
    fn a_clock_behind_the_last_id_still_gives_a_greater_id() {
        let ids = JobIds::new();
        let ahead = (unix_millis() + 60_000) << SEQUENCE_BITS;
        ids.last.store(ahead, Ordering::Release);
        assert_eq!(ids.next(), ahead + 1);
        assert_eq!(ids.next(), ahead + 2);
    }
}
