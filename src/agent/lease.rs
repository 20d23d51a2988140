//! Leader election with a Kubernetes Lease (coordination.k8s.io/v1), the way
//! kube-controller-manager does it: the holder renews the lease every third of
//! its duration; a standby takes it over once it has not been renewed for a
//! whole duration. Every write is a compare-and-swap on the resourceVersion,
//! so two agents can never both believe they hold it. A leader that cannot
//! renew in time exits the process: a stale leader must not keep writing, and
//! its migration's journal lets the new leader resume it.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{PostParams, ObjectMeta};
use tokio::sync::watch;

/// Who competes for which lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This agent's identity (pod name, or host+pid).
    pub identity: String,
    pub duration: Duration,
}

fn now_ts() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// One acquire-or-renew attempt. Ok(true) when we hold the lease afterwards.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = now_ts();
    let secs = cfg.duration.as_secs().max(1) as i32;
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.name.clone()), namespace: Some(cfg.namespace.clone()), ..Default::default() },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let dur = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(1) as u64);
            let expired = match &spec.renew_time {
                Some(t) => now.duration_since(t.0).as_secs_f64() > dur.as_secs_f64(),
                None => true,
            };
            if holder != cfg.identity && !holder.is_empty() && !expired {
                return Ok(false);
            }
            if holder != cfg.identity {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
            // replace() sends the resourceVersion we read: 409 if someone else wrote meanwhile.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Compete for the lease forever; `leader` says whether we hold it.
pub async fn run(client: kube::Client, cfg: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let period = cfg.duration / 3;
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let held = match try_acquire(&api, &cfg).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "lease request failed");
                false
            }
        };
        if held {
            if last_renewed.is_none() {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
            }
            last_renewed = Some(tokio::time::Instant::now());
            let _ = leader.send(true);
        } else if let Some(t) = last_renewed {
            if t.elapsed() >= cfg.duration {
                tracing::error!(lease = %cfg.name, "lost the lease; exiting so that only one agent acts");
                std::process::exit(1);
            }
        } else {
            let _ = leader.send(false);
        }
        tokio::time::sleep(period).await;
    }
}

