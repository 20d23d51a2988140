//! Pure patches for quiesce (stop the source) and cutover (start the destination).
//!
//! Quiesce scales workloads to 0 and suspends CronJobs/Jobs, writing the value
//! it replaced into an annotation; restore puts that value back and removes the
//! annotation. Both are JSON merge patches (RFC 7386) so the adapter can send
//! them as-is, and both are idempotent: a crash between patch and record, or a
//! retried stage, never turns the recorded original into 0.

use serde_json::{Value, json};

use super::error::TransformError;
use super::object::{ObjectRef, annotation};
use crate::labels;

/// What a workload kind pauses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Replicas,
    Suspend,
}

fn pause_of(r: &ObjectRef) -> Option<Pause> {
    match (r.group(), r.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => Some(Pause::Replicas),
        ("batch", "CronJob" | "Job") => Some(Pause::Suspend),
        _ => None,
    }
}

/// `spec.replicas`, defaulting to 1 as the API server does.
fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn suspended(obj: &Value) -> bool {
    obj.pointer("/spec/suspend")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The replica count recorded by a quiesce, if any.
pub fn recorded_replicas(r: &ObjectRef, obj: &Value) -> Result<Option<i64>, TransformError> {
    annotation(obj, labels::ORIGINAL_REPLICAS)
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                TransformError::InvalidAnnotation {
                    object: Box::new(r.clone()),
                    key: labels::ORIGINAL_REPLICAS,
                    value: v.to_owned(),
                    problem: "is not a replica count (a whole number >= 0)",
                }
            })
        })
        .transpose()
}

/// The suspend flag recorded by a quiesce, if any.
pub fn recorded_suspend(r: &ObjectRef, obj: &Value) -> Result<Option<bool>, TransformError> {
    annotation(obj, labels::ORIGINAL_SUSPEND)
        .map(|v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(TransformError::InvalidAnnotation {
                object: Box::new(r.clone()),
                key: labels::ORIGINAL_SUSPEND,
                value: v.to_owned(),
                problem: "is not \"true\" or \"false\"",
            }),
        })
        .transpose()
}

/// Merge patch that stops a workload, recording what it replaces; `None` when
/// the object is not a workload or is already stopped with its original recorded.
///
/// When the object is already quiesced the recorded value is kept. If someone
/// scaled it up (or resumed it) by hand since, that newer value is what gets
/// recorded: it is never the 0 / `true` that quiesce itself wrote.
pub fn quiesce_patch(r: &ObjectRef, obj: &Value) -> Result<Option<Value>, TransformError> {
    match pause_of(r) {
        Some(Pause::Replicas) => {
            let recorded = recorded_replicas(r, obj)?;
            let current = replicas(obj);
            Ok(match recorded {
                Some(_) if current == 0 => None,
                _ => Some(json!({
                    "metadata": {"annotations": {labels::ORIGINAL_REPLICAS: current.to_string()}},
                    "spec": {"replicas": 0}
                })),
            })
        }
        Some(Pause::Suspend) => {
            let recorded = recorded_suspend(r, obj)?;
            let current = suspended(obj);
            Ok(match recorded {
                Some(_) if current => None,
                _ => Some(json!({
                    "metadata": {"annotations": {labels::ORIGINAL_SUSPEND: current.to_string()}},
                    "spec": {"suspend": true}
                })),
            })
        }
        None => Ok(None),
    }
}

/// Merge patch that restarts a workload from its recorded original and removes
/// the record; `None` when nothing was recorded.
pub fn restore_patch(r: &ObjectRef, obj: &Value) -> Result<Option<Value>, TransformError> {
    match pause_of(r) {
        Some(Pause::Replicas) => Ok(recorded_replicas(r, obj)?.map(|n| {
            json!({"metadata": {"annotations": {labels::ORIGINAL_REPLICAS: null}}, "spec": {"replicas": n}})
        })),
        Some(Pause::Suspend) => Ok(recorded_suspend(r, obj)?.map(|s| {
            json!({"metadata": {"annotations": {labels::ORIGINAL_SUSPEND: null}}, "spec": {"suspend": s}})
        })),
        None => Ok(None),
    }
}

/// Merge patch for a source PersistentVolume that must outlive its claim:
/// reclaim policy `Retain`, to be applied before anything is deleted.
/// `None` when it already retains.
pub fn retain_volume_patch(pv: &Value) -> Option<Value> {
    let policy = pv
        .pointer("/spec/persistentVolumeReclaimPolicy")
        .and_then(Value::as_str);
    (policy != Some("Retain")).then(|| json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}))
}

/// Patches for moving a StatefulSet ordinal by ordinal (KEP-3335, `spec.ordinals`
/// GA since Kubernetes 1.31): the source keeps `{start..start+k-1}`, the
/// destination runs `{start+k..start+N-1}`, so no identity ever runs twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdinalSplit {
    /// For the live source StatefulSet: scale to `k` (it stops its highest ordinals first).
    pub source_patch: Value,
    /// For the transformed destination StatefulSet: start at `start + k`, and
    /// restore `N - k` replicas at cutover.
    pub dest_patch: Value,
}

/// Splits a StatefulSet of `N` replicas (the recorded count if quiesced) so the
/// source keeps `source_keeps` ordinals.
pub fn split_ordinals(
    r: &ObjectRef,
    sts: &Value,
    source_keeps: i64,
) -> Result<OrdinalSplit, TransformError> {
    let total = recorded_replicas(r, sts)?.unwrap_or_else(|| replicas(sts));
    if !(0..=total).contains(&source_keeps) {
        return Err(TransformError::InvalidSplit {
            object: Box::new(r.clone()),
            replicas: total,
            requested: source_keeps,
        });
    }
    let start = sts
        .pointer("/spec/ordinals/start")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    Ok(OrdinalSplit {
        source_patch: json!({"spec": {"replicas": source_keeps}}),
        dest_patch: json!({
            "metadata": {"annotations": {labels::ORIGINAL_REPLICAS: (total - source_keeps).to_string()}},
            "spec": {"ordinals": {"start": start + source_keeps}}
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(obj: &mut Value, patch: Option<Value>) {
        if let Some(p) = patch {
            json_patch::merge(obj, &p);
        }
    }
    fn quiesce(obj: &mut Value) {
        let p = quiesce_patch(&rf(obj), obj).unwrap();
        apply(obj, p);
    }
    fn restore(obj: &mut Value) {
        let p = restore_patch(&rf(obj), obj).unwrap();
        apply(obj, p);
    }
    fn rf(obj: &Value) -> ObjectRef {
        ObjectRef::of(obj, 0).unwrap()
    }

    #[test]
    fn quiesce_then_restore_deployment_round_trips() {
        let mut d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":3}});
        let r = rf(&d);
        quiesce(&mut d);
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(annotation(&d, labels::ORIGINAL_REPLICAS), Some("3"));
        restore(&mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(annotation(&d, labels::ORIGINAL_REPLICAS), None);
        assert_eq!(
            restore_patch(&r, &d).unwrap(),
            None,
            "nothing left to restore"
        );
    }

    #[test]
    fn quiesce_is_idempotent_and_never_records_zero() {
        let mut s = json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},"spec":{"replicas":5}});
        let r = rf(&s);
        quiesce(&mut s);
        assert_eq!(
            quiesce_patch(&r, &s).unwrap(),
            None,
            "second quiesce is a no-op"
        );
        // Even a patch computed from a stale read (before the first applied) keeps 5.
        let stale = json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},"spec":{"replicas":5}});
        apply(&mut s, quiesce_patch(&r, &stale).unwrap());
        assert_eq!(annotation(&s, labels::ORIGINAL_REPLICAS), Some("5"));
        assert_eq!(s["spec"]["replicas"], 0);
    }

    #[test]
    fn quiesce_records_a_hand_made_scale_up_while_quiesced() {
        let mut d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","annotations":{"ferry.dev/original-replicas":"3"}},"spec":{"replicas":2}});
        quiesce(&mut d);
        assert_eq!(annotation(&d, labels::ORIGINAL_REPLICAS), Some("2"));
        assert_eq!(d["spec"]["replicas"], 0);
    }

    #[test]
    fn replicas_default_to_one() {
        let d =
            json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"rs"},"spec":{}});
        let p = quiesce_patch(&rf(&d), &d).unwrap().unwrap();
        assert_eq!(p["metadata"]["annotations"][labels::ORIGINAL_REPLICAS], "1");
    }

    #[test]
    fn cronjob_suspend_round_trips_and_keeps_an_original_suspend() {
        let mut c = json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"hello"},"spec":{"schedule":"* * * * *"}});
        let r = rf(&c);
        quiesce(&mut c);
        assert_eq!(c["spec"]["suspend"], true);
        assert_eq!(annotation(&c, labels::ORIGINAL_SUSPEND), Some("false"));
        assert_eq!(quiesce_patch(&r, &c).unwrap(), None);
        restore(&mut c);
        assert_eq!(c["spec"]["suspend"], false);
        assert_eq!(annotation(&c, labels::ORIGINAL_SUSPEND), None);

        let mut already = json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"off"},"spec":{"suspend":true}});
        quiesce(&mut already);
        assert_eq!(annotation(&already, labels::ORIGINAL_SUSPEND), Some("true"));
        restore(&mut already);
        assert_eq!(
            already["spec"]["suspend"], true,
            "a CronJob suspended before stays suspended"
        );
    }

    #[test]
    fn other_kinds_get_no_patch() {
        let cm = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}});
        assert_eq!(quiesce_patch(&rf(&cm), &cm).unwrap(), None);
        assert_eq!(restore_patch(&rf(&cm), &cm).unwrap(), None);
    }

    #[test]
    fn garbage_annotation_is_a_clear_error() {
        let d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop","annotations":{"ferry.dev/original-replicas":"three"}},"spec":{"replicas":0}});
        let err = restore_patch(&rf(&d), &d).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("shop/web")
                && msg.contains("ferry.dev/original-replicas")
                && msg.contains("\"three\""),
            "{msg}"
        );
        let c = json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"c","annotations":{"ferry.dev/original-suspend":"yes"}}});
        assert!(matches!(
            quiesce_patch(&rf(&c), &c),
            Err(TransformError::InvalidAnnotation {
                key: labels::ORIGINAL_SUSPEND,
                ..
            })
        ));
    }

    #[test]
    fn retain_patch_only_when_needed() {
        let pv = json!({"spec":{"persistentVolumeReclaimPolicy":"Delete"}});
        assert_eq!(
            retain_volume_patch(&pv),
            Some(json!({"spec":{"persistentVolumeReclaimPolicy":"Retain"}}))
        );
        assert_eq!(
            retain_volume_patch(&json!({"spec":{"persistentVolumeReclaimPolicy":"Retain"}})),
            None
        );
    }

    fn ordinals(sts: &Value) -> std::collections::BTreeSet<i64> {
        let start = sts
            .pointer("/spec/ordinals/start")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        (start..start + replicas(sts)).collect()
    }

    proptest::proptest! {
        #[test]
        fn ordinal_split_never_runs_an_identity_twice(n in 0i64..20, k in 0i64..20, start in 0i64..3) {
            let src = json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},
                "spec":{"replicas": n, "ordinals": {"start": start}}});
            let r = rf(&src);
            let split = split_ordinals(&r, &src, k);
            if k > n {
                let rejected = matches!(split, Err(TransformError::InvalidSplit { .. }));
                proptest::prop_assert!(rejected, "k > n must be rejected");
                return Ok(());
            }
            let split = split.unwrap();
            let mut source = src.clone();
            json_patch::merge(&mut source, &split.source_patch);
            // The destination copy is created quiesced, then restored at cutover.
            let mut dest = src.clone();
            quiesce(&mut dest);
            json_patch::merge(&mut dest, &split.dest_patch);
            proptest::prop_assert_eq!(&dest["spec"]["replicas"], &json!(0));
            restore(&mut dest);
            let (a, b) = (ordinals(&source), ordinals(&dest));
            proptest::prop_assert!(a.is_disjoint(&b));
            proptest::prop_assert_eq!(a.union(&b).copied().collect::<Vec<_>>(), (start..start + n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn ordinal_split_of_five_keeping_two() {
        let sts = json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db","namespace":"shop"},"spec":{"replicas":5}});
        let split = split_ordinals(&rf(&sts), &sts, 2).unwrap();
        assert_eq!(split.source_patch, json!({"spec":{"replicas":2}}));
        assert_eq!(split.dest_patch["spec"]["ordinals"]["start"], 2);
        assert_eq!(
            split.dest_patch["metadata"]["annotations"][labels::ORIGINAL_REPLICAS],
            "3"
        );
        let err = split_ordinals(&rf(&sts), &sts, 6).unwrap_err();
        assert!(
            err.to_string().contains("shop/db") && err.to_string().contains("0..=5"),
            "{err}"
        );
    }
}
