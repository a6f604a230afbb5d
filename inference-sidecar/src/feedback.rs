//! Bounded memory of served decisions, so label feedback joins to the decision that was served.
//! Capacity and TTL bound it; the oldest predictions are evicted first (and counted).
//!
//! An entry is about 60 bytes whatever the request id: the id is kept as a 128-bit keyed hash, not
//! as a string (two copies of a 36-byte UUID string cost more than everything else together). Two
//! different ids share a key with probability about n²/2¹²⁹ — for a full memory of 200,000
//! predictions, about 10⁻²⁹ — so a label never joins to another request's decision in practice.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found { decision: bool },
    Unknown,
    Expired,
}

type Key = u128;

struct Entry {
    decision: bool,
    at: Instant,
    seq: u64,
}

struct Inner {
    map: HashMap<Key, Entry>,
    order: VecDeque<(u64, Key)>,
    seq: u64,
}

pub struct PredictionMemory {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
    /// Two independently keyed hashers make the 128-bit key (keys random per process).
    hashers: (RandomState, RandomState),
}

impl PredictionMemory {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner { map: HashMap::new(), order: VecDeque::new(), seq: 0 }),
            capacity: capacity.max(1),
            ttl,
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    fn key(&self, id: &str) -> Key {
        (u128::from(self.hashers.0.hash_one(id)) << 64) | u128::from(self.hashers.1.hash_one(id))
    }

    /// Remembers decisions; returns how many live predictions were evicted to make room.
    pub fn remember<S: AsRef<str>>(&self, items: impl IntoIterator<Item = (S, bool)>, now: Instant) -> u64 {
        // Hash outside the lock: it is the only per-item work that does not need it.
        let keyed: Vec<(Key, bool)> = items.into_iter().map(|(id, d)| (self.key(id.as_ref()), d)).collect();
        let mut evicted = 0;
        let mut inner = self.inner.lock().expect("prediction memory lock");
        for (key, decision) in keyed {
            inner.seq += 1;
            let seq = inner.seq;
            inner.map.insert(key, Entry { decision, at: now, seq });
            inner.order.push_back((seq, key));
            while inner.map.len() > self.capacity
                || inner.order.front().is_some_and(|(s, k)| {
                    inner.map.get(k).is_none_or(|e| e.seq != *s || now.duration_since(e.at) > self.ttl)
                })
            {
                let Some((s, k)) = inner.order.pop_front() else { break };
                if let Some(e) = inner.map.get(&k)
                    && e.seq == s
                {
                    if now.duration_since(e.at) <= self.ttl {
                        evicted += 1;
                    }
                    inner.map.remove(&k);
                }
            }
        }
        evicted
    }

    /// Takes the decision served under `id` (each label joins once).
    pub fn take(&self, id: &str, now: Instant) -> Lookup {
        let key = self.key(id);
        let mut inner = self.inner.lock().expect("prediction memory lock");
        match inner.map.remove(&key) {
            None => Lookup::Unknown,
            Some(e) if now.duration_since(e.at) > self.ttl => Lookup::Expired,
            Some(e) => Lookup::Found { decision: e.decision },
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
