//! The isolate's rate-limit states (and imported DPoP proof keys) by key, bounded. When the table is full and a new key
//! arrives, the least recently used eighth of the entries goes in one pass (amortised over
//! the inserts that refill it), never the whole table: clearing it would hand every client,
//! abusers first, a fresh budget at once.

use std::collections::HashMap;

/// Values by key, each with the tick of its last update.
pub(crate) struct LocalTable<V> {
    entries: HashMap<String, (u64, V)>,
    capacity: usize,
    tick: u64,
}

impl<V: Copy + Default> LocalTable<V> {
    /// An empty table of at most `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(8),
            tick: 0,
        }
    }

    /// The value under `key`, if any, which counts as a use: a client that keeps being
    /// refused from its entry keeps its entry (and its refusal) in the table.
    pub(crate) fn get(&mut self, key: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(used, value)| {
            *used = tick;
            *value
        })
    }

    /// Updates the value under `key` (a default one if absent), making it the most recently
    /// used; evicts the least recently used eighth first if a new key finds the table full.
    pub(crate) fn update<R>(&mut self, key: String, change: impl FnOnce(&mut V) -> R) -> R {
        self.update_evicting(key, change).0
    }

    /// [`LocalTable::update`], with the keys it evicted to make room.
    pub(crate) fn update_evicting<R>(
        &mut self,
        key: String,
        change: impl FnOnce(&mut V) -> R,
    ) -> (R, Vec<String>) {
        let mut evicted = Vec::new();
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            evicted = self.evict_least_recent();
        }
        self.tick += 1;
        let entry = self.entries.entry(key).or_default();
        entry.0 = self.tick;
        (change(&mut entry.1), evicted)
    }

    /// [`LocalTable::update`] by a borrowed key: no allocation when the key is there (the
    /// common case: a client's next request).
    pub(crate) fn update_key<R>(&mut self, key: &str, change: impl FnOnce(&mut V) -> R) -> R {
        self.tick += 1;
        let tick = self.tick;
        if let Some((used, value)) = self.entries.get_mut(key) {
            *used = tick;
            return change(value);
        }
        self.update(key.to_owned(), change)
    }

    /// Drops the entries last used in the oldest eighth of the span of use times (at least
    /// the oldest one). By the span rather than by rank: no sort or selection, which would
    /// cost the bundle several KiB, and under steady traffic the two agree closely.
    fn evict_least_recent(&mut self) -> Vec<String> {
        let ticks = self.entries.values().map(|(tick, _)| *tick);
        let (oldest, newest) = ticks.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let threshold = oldest + (newest.saturating_sub(oldest)) / 8;
        let mut evicted = Vec::new();
        self.entries.retain(|key, (tick, _)| {
            let keep = *tick > threshold;
            if !keep {
                evicted.push(key.clone());
            }
            keep
        });
        evicted
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_drops_its_least_recently_used_eighth_not_everything() {
        let mut table = LocalTable::<u32>::new(80);
        for n in 0..80 {
            table.update(format!("k{n}"), |v| *v = n);
        }
        // The oldest keys are used again: they are now the most recent.
        for n in 0..5 {
            table.update(format!("k{n}"), |v| *v += 100);
        }
        table.update("new".to_owned(), |v| *v = 1);
        assert!(table.len() < 80 && table.len() >= 70, "{}", table.len());
        assert_eq!(table.get("new"), Some(1));
        for n in 0..5 {
            assert_eq!(
                table.get(&format!("k{n}")),
                Some(n + 100),
                "recently used stays"
            );
        }
        assert_eq!(table.get("k5"), None, "least recently used went");
        assert_eq!(table.get("k79"), Some(79), "recent enough stays");
        // Reading an entry is a use too: a refused client's entry stays.
        assert_eq!(table.get("k20"), Some(20));
        for n in 0..20 {
            table.update(format!("fresh{n}"), |v| *v = n);
        }
        assert_eq!(table.get("k20"), Some(20), "read recently: kept");
        assert_eq!(table.get("k21"), None, "not read: gone");
    }
}
