//! Bounded memory of served decisions, so label feedback joins to the decision that was served.
//! Capacity and TTL bound it; the oldest predictions are evicted first (and counted).
//!
//! An entry costs about 50 bytes whatever the request id, and nothing is reallocated once the memory
//! is full: the id is kept as a 128-bit keyed hash, not as a string; predictions sit in a ring in
//! arrival order (eviction is popping its front) and a hash map from key to ring slot finds them.
//! Two different ids share a key with probability about n²/2¹²⁹ — for a full memory of 200,000
//! predictions, about 10⁻²⁹ — so a label never joins to another request's decision in practice.
//! Times are kept in whole seconds since the memory was made, so expiry is exact to within 1 s.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found { decision: bool },
    Unknown,
    Expired,
}

/// A request id's 128-bit keyed hash (two u64 halves: 8-byte alignment keeps map buckets small).
type Key = [u64; 2];

/// The key is already a keyed random hash: the map uses its first half as is instead of hashing
/// it again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Hash for [u64; 2]` writes its length (ignored below), then both halves in one call.
        if let Some(first) = bytes.get(..8) {
            self.0 ^= u64::from_ne_bytes(first.try_into().expect("8 bytes"));
        }
    }
    fn write_usize(&mut self, _len: usize) {}
}

struct Slot {
    key: Key,
    /// Seconds since the memory was made.
    at: u32,
    decision: bool,
}

struct Inner {
    /// Key to ring index. A slot whose key maps elsewhere (the id was served again) or nowhere
    /// (its label arrived) is dead and skipped when the ring pops it.
    map: HashMap<Key, u32, BuildHasherDefault<KeyHasher>>,
    /// Arrival order; grows to `capacity` once, then wraps.
    ring: Vec<Slot>,
    /// Index of the oldest slot, and how many slots are in use from there.
    head: usize,
    len: usize,
}

pub struct PredictionMemory {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl_s: u64,
    base: Instant,
    /// Two independently keyed hashers make the 128-bit key (keys random per process).
    hashers: (RandomState, RandomState),
}

impl PredictionMemory {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            // Sized once: no rehash pause while serving (the pages are touched only as entries come).
            inner: Mutex::new(Inner {
                map: HashMap::with_capacity_and_hasher(capacity, Default::default()),
                ring: Vec::with_capacity(capacity),
                head: 0,
                len: 0,
            }),
            capacity,
            ttl_s: ttl.as_secs(),
            base: Instant::now(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    fn key(&self, id: &str) -> Key {
        [self.hashers.0.hash_one(id), self.hashers.1.hash_one(id)]
    }

    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.base).as_secs().min(u64::from(u32::MAX)) as u32
    }

    fn expired(&self, at: u32, now: u32) -> bool {
        u64::from(now.saturating_sub(at)) > self.ttl_s
    }

    /// Remembers decisions; returns how many live predictions were evicted to make room. The memory
    /// holds the last `capacity` predictions served (fewer once labels have taken some).
    pub fn remember<S: AsRef<str>>(&self, items: impl IntoIterator<Item = (S, bool)>, now: Instant) -> u64 {
        // Hash outside the lock: it is the only per-item work that does not need it.
        let keyed: Vec<(Key, bool)> = items.into_iter().map(|(id, d)| (self.key(id.as_ref()), d)).collect();
        let now = self.seconds(now);
        let mut evicted = 0;
        let mut inner = self.inner.lock().expect("prediction memory lock");
        let inner = &mut *inner;
        for (key, decision) in keyed {
            // Drop expired or dead slots at the front, then the oldest live one if still full.
            while inner.len > 0 {
                let slot = &inner.ring[inner.head];
                let live = inner.map.get(&slot.key) == Some(&(inner.head as u32));
                let stale = !live || self.expired(slot.at, now);
                if !stale && inner.len < self.capacity {
                    break;
                }
                if live {
                    inner.map.remove(&slot.key);
                    if !self.expired(slot.at, now) {
                        evicted += 1;
                    }
                }
                inner.head = (inner.head + 1) % self.capacity;
                inner.len -= 1;
            }
            let index = (inner.head + inner.len) % self.capacity;
            let slot = Slot { key, at: now, decision };
            if index == inner.ring.len() {
                inner.ring.push(slot);
            } else {
                inner.ring[index] = slot;
            }
            inner.len += 1;
            inner.map.insert(key, index as u32);
        }
        evicted
    }

    /// Takes the decision served under `id` (each label joins once).
    pub fn take(&self, id: &str, now: Instant) -> Lookup {
        let key = self.key(id);
        let now = self.seconds(now);
        let mut inner = self.inner.lock().expect("prediction memory lock");
        match inner.map.remove(&key) {
            None => Lookup::Unknown,
            Some(index) => {
                let slot = &inner.ring[index as usize];
                if self.expired(slot.at, now) { Lookup::Expired } else { Lookup::Found { decision: slot.decision } }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("prediction memory lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_once_and_evicts_the_oldest_beyond_capacity() {
        let m = PredictionMemory::new(2, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(m.remember([("a", true), ("b", false)], t), 0);
        assert_eq!(m.remember([("c", true)], t), 1);
        assert_eq!(m.take("a", t), Lookup::Unknown, "evicted");
        assert_eq!(m.take("b", t), Lookup::Found { decision: false });
        assert_eq!(m.take("b", t), Lookup::Unknown, "a label joins once");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn expired_predictions_are_reported_as_expired() {
        let m = PredictionMemory::new(10, Duration::from_secs(5));
        let t = Instant::now();
        m.remember([("a", true)], t);
        assert_eq!(m.take("a", t + Duration::from_secs(6)), Lookup::Expired);
        // Expired entries at the front are dropped on the next insert without counting as evictions.
        m.remember([("b", true)], t);
        assert_eq!(m.remember([("c", true)], t + Duration::from_secs(10)), 0);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn the_ring_wraps_keeping_the_last_capacity_predictions() {
        let m = PredictionMemory::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let mut evicted = 0;
        for i in 0..10 {
            evicted += m.remember([(format!("r{i}"), i % 2 == 0)], t);
        }
        assert_eq!(evicted, 7);
        assert_eq!(m.len(), 3);
        assert_eq!(m.take("r6", t), Lookup::Unknown);
        assert_eq!(m.take("r7", t), Lookup::Found { decision: false });
        // An id served again: the newer decision is the one joined, and popping the older slot
        // later does not drop the newer one.
        m.remember([("r8", false)], t);
        assert_eq!(m.remember([("x", true), ("y", true)], t), 1, "r9 goes; the older r8 slot was dead");
        assert_eq!(m.take("r8", t), Lookup::Found { decision: false });
        // Slots whose labels arrived are dead: they leave without counting as evictions.
        assert_eq!(m.remember([("z", true)], t), 0);
        assert_eq!(m.len(), 3, "x, y, z");
    }

    #[test]
    fn many_ids_each_join_to_their_own_decision() {
        let m = PredictionMemory::new(100_000, Duration::from_secs(60));
        let t = Instant::now();
        let ids: Vec<String> = (0..100_000).map(|i| format!("req-{i:08}")).collect();
        m.remember(ids.iter().enumerate().map(|(i, id)| (id.as_str(), i % 3 == 0)), t);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(m.take(id, t), Lookup::Found { decision: i % 3 == 0 }, "{id}");
        }
        assert!(m.is_empty());
    }
}
