//! Leader election on a coordination.k8s.io Lease, so several replicas can run and one acts.
//! The holder renews every `lease/3`; a candidate takes the lease once it has seen the same
//! record (holder and renew time) unchanged for the lease duration by its own clock — client-go's
//! rule (`observedTime`). Comparing the holder's `renewTime` with the local clock instead would
//! take a live leader's lease from a replica whose clock runs ahead, and never take a dead one's
//! from a replica whose clock runs behind.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease: Duration,
    observed: std::sync::Mutex<Option<Observed>>,
}

/// The other holder's lease record as last seen, and when (by our monotonic clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub record: LeaseRecord,
    pub at: std::time::Instant,
}

/// What identifies one renewal of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub renew_time: Option<Timestamp>,
    pub duration_seconds: u64,
}

/// Whether another holder's lease has expired: its record has not changed for its duration, as
/// measured by our own clock since we first saw that record. Returns what to remember.
pub fn expired(previous: Option<&Observed>, seen: LeaseRecord, now: std::time::Instant) -> (bool, Observed) {
    let observed = match previous {
        Some(p) if p.record == seen => p.clone(),
        _ => Observed { record: seen, at: now },
    };
    let lease = Duration::from_secs(observed.record.duration_seconds);
    let released = observed.record.holder.is_empty() || observed.record.renew_time == Some(Timestamp::UNIX_EPOCH);
    (released || now.duration_since(observed.at) >= lease, observed)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, lease: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease,
            observed: std::sync::Mutex::new(None),
        }
    }

    /// One attempt to acquire or renew. Ok(true) while we hold the lease.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => {
                let l: Lease = serde_json::from_value(json!({
                    "metadata": {"name": self.name},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease.as_secs(),
                             "acquireTime": MicroTime(now), "renewTime": MicroTime(now), "leaseTransitions": 0}
                }))
                .expect("a valid Lease");
                return match self.api.create(&PostParams::default(), &l).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = LeaseRecord {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            duration_seconds: spec.lease_duration_seconds.map_or(self.lease.as_secs(), |s| s.max(0) as u64),
        };
        if holder != self.identity {
            let mut memo = self.observed.lock().expect("not poisoned");
            let (gone, observed) = expired(memo.as_ref(), record, std::time::Instant::now());
            *memo = Some(observed);
            if !gone {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        let acquire =
            if holder == self.identity { spec.acquire_time.clone().unwrap_or(MicroTime(now)) } else { MicroTime(now) };
        // A merge patch guarded by resourceVersion: two candidates cannot both take an expired lease.
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease.as_secs(),
                     "acquireTime": acquire, "renewTime": MicroTime(now), "leaseTransitions": transitions}
        });
        match self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Blocks until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.lease / 5).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease; then returns (leadership lost).
    pub async fn hold(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    if last_ok.elapsed() >= self.lease {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown so another replica takes over at once.
    pub async fn release(&self) {
        let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::UNIX_EPOCH)}});
        if let Ok(Some(l)) = self.api.get_opt(&self.name).await
            && l.spec.and_then(|s| s.holder_identity).as_deref() == Some(self.identity.as_str())
        {
            let _ = self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn record(holder: &str, renewed: &str) -> LeaseRecord {
        LeaseRecord { holder: holder.into(), renew_time: Some(renewed.parse().unwrap()), duration_seconds: 15 }
    }

    /// A holder whose clock is an hour behind ours renews with renew times an hour in the past: it
    /// is alive as long as its record keeps changing.
    #[test]
    fn a_live_leader_with_a_skewed_clock_keeps_its_lease() {
        let t0 = Instant::now();
        let (gone, seen) = expired(None, record("a", "2026-12-04T17:00:00Z"), t0);
        assert!(!gone, "first sight is never expired, whatever the renew time says");
        let (gone, seen) = expired(Some(&seen), record("a", "2026-12-04T17:00:05Z"), t0 + Duration::from_secs(20));
        assert!(!gone, "renewed since: alive");
        let (gone, _) = expired(Some(&seen), record("a", "2026-12-04T17:00:05Z"), t0 + Duration::from_secs(34));
        assert!(!gone, "14 s unchanged by our clock: not yet");
    }

    /// A holder whose clock is an hour ahead writes renew times in our future: a dead one is still
    /// taken over once its record stops changing for the lease duration.
    #[test]
    fn a_dead_leader_with_a_clock_ahead_is_replaced_after_one_lease_duration() {
        let t0 = Instant::now();
        let (_, seen) = expired(None, record("a", "2026-12-04T20:00:00Z"), t0);
        let (gone, seen) = expired(Some(&seen), record("a", "2026-12-04T20:00:00Z"), t0 + Duration::from_secs(14));
        assert!(!gone);
        let (gone, _) = expired(Some(&seen), record("a", "2026-12-04T20:00:00Z"), t0 + Duration::from_secs(15));
        assert!(gone, "unchanged for the lease duration by our clock");
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let (gone, _) = expired(None, record("a", "1970-01-01T00:00:00Z"), Instant::now());
        assert!(gone);
    }
}
