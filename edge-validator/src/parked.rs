//! Requests (and issuer fetch jobs) parked in wasm while a JS promise runs (WebCrypto's verify,
//! the origin's answer, an issuer fetch...), found again by a number the promise's callback
//! passes back.
//!
//! Why numbers and not `#[wasm_bindgen]` objects: wasm-bindgen wraps every Rust object handed
//! to JS in a JS object registered with a `FinalizationRegistry`; with two per fresh-token
//! request that showed in `benches/run` CPU profiles. A number crosses for free.
//!
//! Each id carries the epoch of the wasm instance that parked it (its top [`EPOCH_BITS`]
//! bits: 4,096 instances before an epoch repeats, far more re-instantiations than an
//! isolate lives through while an old promise is still pending). After a trap, the entry reinstantiates the wasm, and callbacks of promises the old
//! instance started call the exports of the new one: without the epoch, an old WebCrypto
//! verdict (`valid`) could land on a new request parked under the same number, which is how
//! an unverified token would get through. A callback whose epoch is not this instance's
//! finds nothing.
//!
//! A request the runtime cancels never calls back, so its entry would stay: the table is a
//! ring of slots, and an entry is dropped when its slot comes round again, `CAPACITY`
//! requests later (its callback, should it still come, finds nothing). At a thousand
//! requests a second in one isolate that is 16 s, far beyond a WebCrypto verify; an origin
//! slower than that loses only its log line.

use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

/// A per-isolate table of parked values (a `thread_local!`).
pub(crate) type Table<T> = LocalKey<RefCell<Parked<T>>>;

/// Bits of an id that name the instance; the rest count.
pub(crate) const EPOCH_BITS: u32 = 12;
const COUNT_MASK: u32 = u32::MAX >> EPOCH_BITS;

thread_local! {
    /// This instance's epoch (`runtime`'s instance count, set once at start).
    static EPOCH: Cell<u32> = const { Cell::new(0) };
}

/// Sets this instance's epoch (called once when the instance starts).
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn set_epoch(instance: u32) {
    EPOCH.with(|epoch| epoch.set(instance));
}

/// Parks `value` in `table`; its number.
pub(crate) fn park<T>(table: &'static Table<T>, value: T) -> u32 {
    let epoch = EPOCH.with(Cell::get);
    table.with(|parked| parked.borrow_mut().park(epoch, value))
}

/// The value parked in `table` under `id`, once (by this instance).
pub(crate) fn take<T>(table: &'static Table<T>, id: u32) -> Option<T> {
    let epoch = EPOCH.with(Cell::get);
    table.with(|parked| parked.borrow_mut().take(epoch, id))
}

/// Slots in the ring (grown on demand up to this).
const CAPACITY: usize = 16_384;

/// Values waiting for a callback, by number.
pub(crate) struct Parked<T> {
    next: u32,
    slots: Vec<Option<(u32, T)>>,
}

/// `epoch`'s tag in the top bits of an id.
fn tag(epoch: u32, count: u32) -> u32 {
    (epoch << (32 - EPOCH_BITS)) | (count & COUNT_MASK)
}

impl<T> Parked<T> {
    pub(crate) const fn new() -> Self {
        Self {
            next: 0,
            slots: Vec::new(),
        }
    }

    /// Keeps `value` and returns its number, tagged with the instance's `epoch`.
    pub(crate) fn park(&mut self, epoch: u32, value: T) -> u32 {
        let id = tag(epoch, self.next);
        self.next = self.next.wrapping_add(1) & COUNT_MASK;
        let entry = Some((id, value));
        match self.slots.get_mut(slot(id)) {
            Some(slot) => *slot = entry,
            None => self.slots.push(entry),
        }
        id
    }

    /// The value parked under `id`, once; nothing for an id of another `epoch`.
    pub(crate) fn take(&mut self, epoch: u32, id: u32) -> Option<T> {
        if id >> (32 - EPOCH_BITS) != epoch & (u32::MAX >> (32 - EPOCH_BITS)) {
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
}

/// Where `id` lives. (`CAPACITY` divides the count's range, so the ring stays in step when
/// counts wrap, and slots fill in order while the ring grows.)
fn slot(id: u32) -> usize {
    usize::try_from(id & COUNT_MASK).unwrap_or(0) % CAPACITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_once_and_the_table_stays_bounded() {
        let mut parked = Parked::new();
        let first = parked.park(1, "first");
        for _ in 0..CAPACITY {
            parked.park(1, "later");
        }
        assert_eq!(parked.slots.len(), CAPACITY);
        assert_eq!(parked.take(1, first), None, "the oldest made room");
        let id = parked.park(1, "mine");
        assert_eq!(parked.take(1, id), Some("mine"));
        assert_eq!(parked.take(1, id), None);
    }

    #[test]
    fn a_callback_of_an_earlier_instance_finds_nothing() {
        // The instance before the trap parked a verify under its first number...
        let mut old = Parked::new();
        let old_id = old.park(3, "old request");
        // ...the new instance (after the trap) parks its own first request...
        let mut new = Parked::new();
        let new_id = new.park(4, "new request");
        assert_ne!(old_id, new_id, "same count, different epochs");
        // ...and the old promise's callback arrives at the new instance's exports.
        assert_eq!(new.take(4, old_id), None);
        assert_eq!(new.take(4, new_id), Some("new request"), "untouched");
    }

    #[test]
    fn counts_wrap_within_the_epoch() {
        let mut parked = Parked::new();
        for _ in 0..CAPACITY {
            parked.park(5, "filler");
        }
        parked.next = COUNT_MASK;
        let last = parked.park(5, "last");
        let wrapped = parked.park(5, "wrapped");
        assert_eq!(last >> (32 - EPOCH_BITS), 5);
        assert_eq!(wrapped >> (32 - EPOCH_BITS), 5);
        assert_eq!(wrapped & COUNT_MASK, 0);
        assert_eq!(parked.take(5, last), Some("last"));
        assert_eq!(parked.take(5, wrapped), Some("wrapped"));
    }

    thread_local! {
        static TABLE: RefCell<Parked<String>> = const { RefCell::new(Parked::new()) };
    }

    #[test]
    fn a_thread_local_table_parks_and_gives_back() {
        let id = park(&TABLE, "waiting".to_owned());
        assert_eq!(take(&TABLE, id).as_deref(), Some("waiting"));
        assert_eq!(take(&TABLE, id), None);
    }
}
