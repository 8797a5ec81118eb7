//! The one table of suspended work: requests waiting for an answer (the origin, WebCrypto, a
//! Durable Object, a job, a timer) and jobs waiting for a fetch. Each entry is found again
//! by the [`WaitId`] its answer carries back.
//!
//! Each id carries the epoch of the wasm instance that made it (its top [`EPOCH_BITS`] bits:
//! 4,096 instances before an epoch repeats, far more re-instantiations than an isolate lives
//! through while an old promise is still pending). After a trap the entry reinstantiates the
//! wasm, and callbacks of promises the old instance started call the new one: without the
//! epoch, an old WebCrypto verdict (`valid`) could land on a new request suspended under the
//! same number, which is how an unverified token would get through. An answer whose epoch is
//! not this instance's finds nothing.
//!
//! Jobs (key-set refreshes, revocation pulls) have a table of their own, told apart by a bit
//! of the id: their fetches always settle (each has a timeout), and requests coming and
//! going must never push a running job out, or its answer (a revocation page, the key set)
//! would be lost.
//!
//! A request the runtime cancels never answers, so its entry would stay: the table is a ring
//! of slots, and an entry is dropped when its slot comes round again, [`CAPACITY`] waits
//! later (its answer, should it still come, finds nothing). At a thousand requests a second
//! in one isolate that is many seconds, far beyond a WebCrypto verify; an origin slower than
//! that loses only its log line.

/// Bits of an id that name the instance; the next bit names the table (requests or jobs);
/// the rest count.
pub const EPOCH_BITS: u32 = 12;
const TABLE_BIT: u32 = 1 << (31 - EPOCH_BITS);
const COUNT_MASK: u32 = TABLE_BIT - 1;

/// Slots in the ring (grown on demand up to this).
pub(crate) const CAPACITY: usize = 16_384;

/// The number a suspended entry is found by: a plain `u32` so it crosses to JS for free
/// (a `#[wasm_bindgen]` object would be registered with a `FinalizationRegistry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaitId(pub u32);

/// Values waiting for an answer, by number.
#[derive(Debug)]
pub(crate) struct Waits<T> {
    epoch: u32,
    table: u32,
    next: u32,
    slots: Vec<Option<(WaitId, T)>>,
}

impl<T> Waits<T> {
    /// An empty table for the instance numbered `epoch`; `second` sets the table bit.
    pub(crate) const fn new(epoch: u32, second: bool) -> Self {
        Self {
            epoch,
            table: if second { TABLE_BIT } else { 0 },
            next: 0,
            slots: Vec::new(),
        }
    }

    /// Keeps `value`; its number, and the value where it now lives.
    pub(crate) fn park(&mut self, value: T) -> (WaitId, &mut T) {
        let id = WaitId((self.epoch << (32 - EPOCH_BITS)) | self.table | (self.next & COUNT_MASK));
        self.next = self.next.wrapping_add(1) & COUNT_MASK;
        let at = slot(id);
        match self.slots.get_mut(at) {
            Some(entry) => *entry = Some((id, value)),
            None => self.slots.push(Some((id, value))),
        }
        #[allow(clippy::expect_used, reason = "stored just above")]
        let (_, value) = self
            .slots
            .get_mut(at)
            .and_then(Option::as_mut)
            .expect("stored just above");
        (id, value)
    }

    /// The value parked under `id`, left in place.
    pub(crate) fn get(&self, id: WaitId) -> Option<&T> {
        match self.slots.get(slot(id))? {
            Some((parked, value)) if *parked == id && self.owns(id) => Some(value),
            _ => None,
        }
    }

    /// The value parked under `id`, to change in place.
    pub(crate) fn get_mut(&mut self, id: WaitId) -> Option<&mut T> {
        if !self.owns(id) {
            return None;
        }
        match self.slots.get_mut(slot(id))? {
            Some((parked, value)) if *parked == id => Some(value),
            _ => None,
        }
    }

    /// The value parked under `id`, once; nothing for an id of another epoch.
    pub(crate) fn take(&mut self, id: WaitId) -> Option<T> {
        if !self.owns(id) {
            return None;
        }
        let slot = self.slots.get_mut(slot(id))?;
        match slot.take() {
            Some((parked, value)) if parked == id => Some(value),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Whether `id` is of this instance and this table.
    pub(crate) fn owns(&self, id: WaitId) -> bool {
        id.0 >> (32 - EPOCH_BITS) == self.epoch & (u32::MAX >> (32 - EPOCH_BITS))
            && id.0 & TABLE_BIT == self.table
    }
}

/// Where `id` lives. (`CAPACITY` divides the count's range, so the ring stays in step when
/// counts wrap, and slots fill in order while the ring grows.)
fn slot(id: WaitId) -> usize {
    usize::try_from(id.0 & COUNT_MASK).unwrap_or(0) % CAPACITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_once_and_the_table_stays_bounded() {
        let mut waits = Waits::new(1, false);
        let (first, _) = waits.park("first");
        for _ in 0..CAPACITY {
            waits.park("later");
        }
        assert_eq!(waits.slots.len(), CAPACITY);
        assert_eq!(waits.take(first), None, "the oldest made room");
        let (id, _) = waits.park("mine");
        assert_eq!(waits.get(id), Some(&"mine"));
        assert_eq!(waits.take(id), Some("mine"));
        assert_eq!(waits.take(id), None);
    }

    #[test]
    fn an_answer_for_an_earlier_instance_finds_nothing() {
        // The instance before the trap parked a verify under its first number...
        let mut old = Waits::new(3, false);
        let (old_id, _) = old.park("old request");
        // ...the new instance (after the trap) parks its own first request...
        let mut new = Waits::new(4, false);
        let (new_id, _) = new.park("new request");
        assert_ne!(old_id, new_id, "same count, different epochs");
        // ...and the old promise's answer arrives at the new instance.
        assert_eq!(new.get(old_id), None);
        assert_eq!(new.take(old_id), None);
        assert_eq!(new.take(new_id), Some("new request"), "untouched");
    }

    #[test]
    fn the_two_tables_never_answer_for_each_other() {
        let mut requests = Waits::new(2, false);
        let mut jobs = Waits::new(2, true);
        let (request, _) = requests.park("request");
        let (job, _) = jobs.park("job");
        assert_ne!(request, job);
        assert_eq!((requests.get(job), jobs.get(request)), (None, None));
        assert_eq!(jobs.take(job), Some("job"));
        assert_eq!(requests.take(request), Some("request"));
    }

    #[test]
    fn counts_wrap_within_the_epoch() {
        let mut waits = Waits::new(5, false);
        for _ in 0..CAPACITY {
            waits.park("filler");
        }
        waits.next = COUNT_MASK;
        let (last, _) = waits.park("last");
        let (wrapped, _) = waits.park("wrapped");
        assert_eq!(last.0 >> (32 - EPOCH_BITS), 5);
        assert_eq!(wrapped.0 >> (32 - EPOCH_BITS), 5);
        assert_eq!(wrapped.0 & COUNT_MASK, 0);
        assert_eq!(waits.take(last), Some("last"));
        assert_eq!(waits.take(wrapped), Some("wrapped"));
    }
}
