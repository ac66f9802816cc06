//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas only one reconciles and no restore is driven twice.
//!
//! It follows client-go's rules: the holder renews the Lease every third of its duration;
//! another replica takes it over only after the Lease record stayed unchanged for a whole
//! duration by its *own* clock (clocks of different machines are never compared); every
//! write carries the resourceVersion it read, so two candidates cannot both win; a leader
//! that cannot renew within two thirds of the duration stops leading; a leader shutting
//! down releases the Lease so a standby takes over at once.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::{debug, info, warn};

/// What a candidate should do with the Lease it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take the Lease: nobody holds it, or the holder stopped renewing.
    Acquire,
    /// Renew: this candidate holds it.
    Renew,
    /// Someone else holds it and renews it.
    Wait,
}

/// Decides from the Lease spec, this candidate's identity and how long the Lease record has
/// stayed unchanged as observed locally.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) => {
            let duration = spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(default_duration);
            if unchanged_for > duration {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The last Lease record seen (holder and renew time) and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    /// A candidate named `identity` for the Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: Mutex::new(None),
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn unchanged_for(&self, key: String) -> Duration {
        let mut observed = match self.observed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match observed.as_ref() {
            Some((seen, since)) if *seen == key => since.elapsed(),
            _ => {
                *observed = Some((key, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One election round: takes or renews the Lease if it may; returns whether this
    /// candidate leads now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let key = format!(
            "{}/{:?}",
            spec.holder_identity.as_deref().unwrap_or_default(),
            spec.renew_time.as_ref().map(|t| t.0)
        );
        let unchanged_for = self.unchanged_for(key);
        match decide(Some(spec), &self.identity, unchanged_for, self.duration) {
            Decision::Wait => return Ok(false),
            Decision::Renew => {
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(self.seconds());
            }
            Decision::Acquire => {
                info!(previous = ?spec.holder_identity, "taking over the leader Lease");
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(self.seconds());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        // The resourceVersion read above makes a concurrent writer's update fail.
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Waits until this candidate leads, retrying every third of the Lease duration.
    pub async fn acquire(&self) {
        let retry = self.duration / 3;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return;
                }
                Ok(false) => debug!("another replica leads; waiting"),
                Err(err) => warn!(error = %err, "leader election round failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease until a renewal fails for longer than two thirds of its duration;
    /// returns then (leadership is lost and the caller must stop acting as leader).
    pub async fn keep(&self) {
        let every = self.duration / 3;
        let deadline = self.duration * 2 / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    warn!("the leader Lease was taken by another replica");
                    return;
                }
                Err(err) => warn!(error = %err, "cannot renew the leader Lease"),
            }
            if last_ok.elapsed() > deadline {
                warn!("no Lease renewal within the renew deadline");
                return;
            }
        }
    }

    /// Gives the Lease up if this candidate holds it, so a standby need not wait for it to
    /// expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )?;
        info!("released the leader Lease");
        Ok(())
    }
}

/// Maps a 409 (another writer won) to `Ok(false)` and success to `Ok(true)`.
fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs;
        let cases = [
            ("no lease spec", None, d(0), Decision::Acquire),
            (
                "released",
                Some(spec(None, Some(1))),
                d(0),
                Decision::Acquire,
            ),
            (
                "empty holder",
                Some(spec(Some(""), Some(15))),
                d(0),
                Decision::Acquire,
            ),
            (
                "mine",
                Some(spec(Some("me"), Some(15))),
                d(100),
                Decision::Renew,
            ),
            (
                "theirs, fresh",
                Some(spec(Some("other"), Some(15))),
                d(10),
                Decision::Wait,
            ),
            (
                "theirs, stale",
                Some(spec(Some("other"), Some(15))),
                d(16),
                Decision::Acquire,
            ),
            (
                "theirs, default duration",
                Some(spec(Some("other"), None)),
                d(20),
                Decision::Wait,
            ),
            (
                "theirs, past default",
                Some(spec(Some("other"), None)),
                d(31),
                Decision::Acquire,
            ),
        ];
        for (case, spec, unchanged, want) in cases {
            assert_eq!(
                decide(spec.as_ref(), "me", unchanged, d(30)),
                want,
                "{case}"
            );
        }
    }
}
