//! What the reconciler remembers between reconciles, per rollout: the splits, Services and
//! Deployments it last applied (to skip applying what has not changed) and its last status write
//! (so it never decides on a watch cache that has not seen it).

use super::*;

/// A small memo per rollout (keyed by namespace and name), forgotten when the rollout goes.
pub struct PerRollout<T>(std::sync::Mutex<std::collections::HashMap<(String, String), T>>);

impl<T> Default for PerRollout<T> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<T> PerRollout<T> {
    pub(super) fn key(mr: &ModelRollout) -> (String, String) {
        (mr.namespace().unwrap_or_default(), mr.name_any())
    }

    pub(super) fn with<R>(&self, mr: &ModelRollout, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.0.lock().expect("not poisoned").get(&Self::key(mr)))
    }

    pub(super) fn set(&self, mr: &ModelRollout, value: T) {
        self.0.lock().expect("not poisoned").insert(Self::key(mr), value);
    }

    pub(super) fn update(&self, mr: &ModelRollout, f: impl FnOnce(&mut T))
    where
        T: Default,
    {
        f(self.0.lock().expect("not poisoned").entry(Self::key(mr)).or_default());
    }

    /// Reads and may change or clear the memo of `mr` (`None` when it has none).
    pub(super) fn with_entry<R>(&self, mr: &ModelRollout, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        let mut memo = self.0.lock().expect("not poisoned");
        let key = Self::key(mr);
        let mut entry = memo.remove(&key);
        let result = f(&mut entry);
        if let Some(value) = entry {
            memo.insert(key, value);
        }
        result
    }

    pub(super) fn forget(&self, mr: &ModelRollout) {
        self.0.lock().expect("not poisoned").remove(&Self::key(mr));
    }
}

/// Services and routes change only when the split does, yet every reconcile (each Deployment status
/// change, each requeue) would re-apply all of them. The split last applied is remembered and the
/// apply skipped while it is unchanged and recent; a changed split (a stage, a rollback) is applied
/// at once, and an unchanged one again after `--reapply-after`, which repairs a hand-edited route.
/// The Services are remembered on their own, one by one: they select versions and do not change
/// with a weight, so a stage change re-applies the route (or, with replica ratios, nothing) but no
/// Service, and a new candidate only the canary Service — while rollouts start, re-applied Services
/// were a third of all writes to the apiserver. An unchanged Service past `--reapply-after` is read
/// and applied only if it drifted (see `act::ensure_services`).
pub type AppliedTraffic = PerRollout<AppliedSplit>;

#[derive(Default)]
pub struct AppliedSplit {
    /// The split's fingerprint, when it was applied, and each route's generation that write left
    /// (`route_watch::routes_of`'s order; a later one seen by the route watch means someone else
    /// wrote that route since).
    pub(super) split: Option<(String, Instant, crate::routers::Generations)>,
    /// A hash of each Service (stable, canary, root) as last applied, and when.
    pub(super) services: [Option<(u64, Instant)>; 3],
}

/// A Deployment as last applied: what was applied (a hash of the object), the role label it got
/// and the generation the apiserver gave it.
#[derive(Clone)]
pub struct AppliedWorkload {
    pub(super) fingerprint: u64,
    pub(super) role: modelrollout_contract::launch::Role,
    pub(super) generation: Option<i64>,
}

/// Every reconcile of an active rollout ensures both Deployments; applying an unchanged object is
/// an apiserver round trip for nothing. An apply is skipped while the object we would send is the
/// one we last sent and the cached Deployment (watched) still has the generation our apply
/// produced (nobody changed its spec since) and our labels and owner reference. A controller that
/// restarts remembers nothing, and applies each once.
pub type AppliedWorkloads = PerRollout<std::collections::HashMap<String, AppliedWorkload>>;

pub(super) fn fingerprint(object: &impl serde::Serialize) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

/// A reconcile must never decide on a copy older than our own last status write (it would repeat
/// or undo a transition), but the watch delivers that write some milliseconds after the write
/// returns, and meanwhile other changes (a Deployment's status, a spec edit) trigger reconciles.
/// Reading the object first each time is a round trip to a busy apiserver in the reconciles that
/// are already the slowest (a start, a stage change). So the object our write returned is kept until
/// the watch has caught up with it, and a reconcile decides on whichever copy is newer. Entries live
/// only between a write and its watch event, so this holds few objects even at 10,000 rollouts.
pub type LastWrites = PerRollout<LastWrite>;

pub struct LastWrite {
    object: Arc<ModelRollout>,
    /// A hash of the status we wrote: a cached copy with this status has seen our write even when a
    /// later spec change gave it a newer resourceVersion.
    status: u64,
    at: Instant,
}

impl LastWrite {
    pub(super) fn of(written: ModelRollout) -> Self {
        Self { status: fingerprint(&written.status), object: Arc::new(written), at: Instant::now() }
    }
}

/// A watch delivers a write within milliseconds, seconds on an overloaded apiserver. A cache still
/// behind our write after this long more likely holds someone else's later status (a replica that
/// led meanwhile, a hand edit): the reconcile reads the object instead.
const WATCH_CATCH_UP: Duration = Duration::from_secs(10);

/// The newest copy of a rollout this controller knows: the cached one, unless our last status
/// write is newer than it. `None`: neither can be trusted; read the object.
pub(super) fn newest_copy(last_writes: &LastWrites, cached: &ModelRollout) -> Option<ModelRollout> {
    last_writes.with_entry(cached, |entry| {
        let Some(last) = entry else { return Some(cached.clone()) };
        let caught_up =
            cached.resource_version() == last.object.resource_version() || fingerprint(&cached.status) == last.status;
        if !caught_up && last.at.elapsed() < WATCH_CATCH_UP {
            return Some((*last.object).clone());
        }
        *entry = None;
        caught_up.then(|| cached.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(resource_version: &str, candidate: Option<&str>) -> ModelRollout {
        let status = ModelRolloutStatus {
            stable_version: Some("v1".into()),
            candidate_version: candidate.map(Into::into),
            ..Default::default()
        };
        let mut mr = crate::fixtures::rollout_with_status("v2", status);
        mr.metadata.resource_version = Some(resource_version.into());
        mr
    }

    #[test]
    fn a_cache_behind_our_status_write_gives_way_to_the_written_object_until_it_catches_up() {
        let memo = LastWrites::default();
        let before = rollout("10", None);
        assert_eq!(newest_copy(&memo, &before).unwrap().resource_version().as_deref(), Some("10"), "no write yet");

        let written = rollout("11", Some("v2"));
        memo.set(&written, LastWrite::of(written.clone()));
        let decided_on = newest_copy(&memo, &before).expect("trusted");
        assert_eq!(decided_on.resource_version().as_deref(), Some("11"), "the cache has not seen our write");

        // A spec edit on top of our write: newer resourceVersion, our status.
        let edited = rollout("12", Some("v2"));
        assert_eq!(newest_copy(&memo, &edited).unwrap().resource_version().as_deref(), Some("12"));
        // Caught up: the memo is gone, the cache is trusted from now on.
        assert!(memo.with(&edited, |m| m.is_none()));
        assert_eq!(newest_copy(&memo, &before).unwrap().resource_version().as_deref(), Some("10"));
    }

    #[test]
    fn a_cache_that_never_shows_our_write_is_read_again_after_a_while() {
        let memo = LastWrites::default();
        let written = rollout("11", Some("v2"));
        let mut last = LastWrite::of(written.clone());
        last.at -= WATCH_CATCH_UP;
        memo.set(&written, last);
        // Someone else's status (another replica, a hand edit): neither copy can be trusted.
        assert!(newest_copy(&memo, &rollout("13", Some("v3"))).is_none());
        assert!(memo.with(&written, |m| m.is_none()), "forgotten once read");
    }
}
