//! Leader election on a coordination.k8s.io Lease, so several replicas can run and one acts.
//! The holder renews every `lease/3`; a candidate takes the lease once it has not been renewed
//! for `lease` (the holder died or lost the API server).

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
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, lease: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), lease }
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
        let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        let duration = spec.lease_duration_seconds.map(|s| s as u64).unwrap_or(self.lease.as_secs());
        let expired = now.duration_since(renewed).as_secs() >= duration as i64;
        if holder != self.identity && !expired {
            return Ok(false);
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
