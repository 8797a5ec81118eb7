//! Requests (and issuer fetch jobs) parked in wasm while a JS promise runs (WebCrypto's verify,
//! the origin's answer, an issuer fetch...), found again by a number the promise's callback
//! passes back.
//!
//! Why numbers and not `#[wasm_bindgen]` objects: wasm-bindgen wraps every Rust object handed
//! to JS in a JS object registered with a `FinalizationRegistry`; with two per fresh-token
//! request that showed in `benches/run` CPU profiles. A number crosses for free.
//!
//! A request the runtime cancels never calls back, so its entry would stay: the table is a
//! ring of slots, and an entry is dropped when its slot comes round again, `CAPACITY`
//! requests later (its callback, should it still come, finds nothing). At a thousand
//! requests a second in one isolate that is 16 s, far beyond a WebCrypto verify; an origin
//! slower than that loses only its log line.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A per-isolate table of parked values (a `thread_local!`).
pub(crate) type Table<T> = LocalKey<RefCell<Parked<T>>>;

/// Parks `value` in `table`; its number.
pub(crate) fn park<T>(table: &'static Table<T>, value: T) -> u32 {
    table.with(|parked| parked.borrow_mut().park(value))
}

/// The value parked in `table` under `id`, once.
pub(crate) fn take<T>(table: &'static Table<T>, id: u32) -> Option<T> {
    table.with(|parked| parked.borrow_mut().take(id))
}

/// Slots in the ring (grown on demand up to this).
const CAPACITY: usize = 16_384;

/// Values waiting for a callback, by number.
pub(crate) struct Parked<T> {
    next: u32,
    slots: Vec<Option<(u32, T)>>,
}

impl<T> Parked<T> {
    pub(crate) const fn new() -> Self {
        Self {
            next: 0,
            slots: Vec::new(),
        }
    }

    /// Keeps `value` and returns its number.
    pub(crate) fn park(&mut self, value: T) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let entry = Some((id, value));
        match self.slots.get_mut(slot(id)) {
            Some(slot) => *slot = entry,
            None => self.slots.push(entry),
        }
        id
    }

    /// The value parked under `id`, once.
    pub(crate) fn take(&mut self, id: u32) -> Option<T> {
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

/// Where `id` lives. (`CAPACITY` divides 2^32, so the ring stays in step when ids wrap, and
/// slots fill in order while the ring grows.)
fn slot(id: u32) -> usize {
    usize::try_from(id).unwrap_or(0) % CAPACITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_once_and_the_table_stays_bounded() {
        let mut parked = Parked::new();
        let first = parked.park("first");
        for _ in 0..CAPACITY {
            parked.park("later");
        }
        assert_eq!(parked.slots.len(), CAPACITY);
        assert_eq!(parked.take(first), None, "the oldest made room");
        let id = parked.park("mine");
        assert_eq!(parked.take(id), Some("mine"));
        assert_eq!(parked.take(id), None);
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
