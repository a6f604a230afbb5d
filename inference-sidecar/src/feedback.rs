//! Bounded memory of served decisions, so label feedback joins to the decision that was served.
//! Capacity and TTL bound it; the oldest predictions are evicted first (and counted).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found { decision: bool },
    Unknown,
    Expired,
}

struct Entry {
    decision: bool,
    at: Instant,
    seq: u64,
}

struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<(u64, String)>,
    seq: u64,
}

pub struct PredictionMemory {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

impl PredictionMemory {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner { map: HashMap::new(), order: VecDeque::new(), seq: 0 }),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Remembers decisions; returns how many live predictions were evicted to make room.
    pub fn remember(&self, items: impl IntoIterator<Item = (String, bool)>, now: Instant) -> u64 {
        let mut evicted = 0;
        let mut inner = self.inner.lock().expect("prediction memory lock");
        for (id, decision) in items {
            inner.seq += 1;
            let seq = inner.seq;
            inner.map.insert(id.clone(), Entry { decision, at: now, seq });
            inner.order.push_back((seq, id));
            while inner.map.len() > self.capacity
                || inner.order.front().is_some_and(|(s, id)| {
                    inner.map.get(id).is_none_or(|e| e.seq != *s || now.duration_since(e.at) > self.ttl)
                })
            {
                let Some((s, id)) = inner.order.pop_front() else { break };
                if let Some(e) = inner.map.get(&id)
                    && e.seq == s
                {
                    if now.duration_since(e.at) <= self.ttl {
                        evicted += 1;
                    }
                    inner.map.remove(&id);
                }
            }
        }
        evicted
    }

    /// Takes the decision served under `id` (each label joins once).
    pub fn take(&self, id: &str, now: Instant) -> Lookup {
        let mut inner = self.inner.lock().expect("prediction memory lock");
        match inner.map.remove(id) {
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
        assert_eq!(m.remember([("a".into(), true), ("b".into(), false)], t), 0);
        assert_eq!(m.remember([("c".into(), true)], t), 1);
        assert_eq!(m.take("a", t), Lookup::Unknown, "evicted");
        assert_eq!(m.take("b", t), Lookup::Found { decision: false });
        assert_eq!(m.take("b", t), Lookup::Unknown, "a label joins once");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn expired_predictions_are_reported_as_expired() {
        let m = PredictionMemory::new(10, Duration::from_secs(5));
        let t = Instant::now();
        m.remember([("a".into(), true)], t);
        assert_eq!(m.take("a", t + Duration::from_secs(6)), Lookup::Expired);
        // Expired entries at the front are dropped on the next insert without counting as evictions.
        m.remember([("b".into(), true)], t);
        assert_eq!(m.remember([("c".into(), true)], t + Duration::from_secs(10)), 0);
        assert_eq!(m.len(), 1);
    }
}
