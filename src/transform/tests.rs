//! Rule-by-rule tests of the namespace transform, plus property tests.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::requirements::{GroupKind, NO_CLASS, NodePortUse};
use super::rewrite::{JOB_GENERATED_LABELS, PVC_BIND_ANNOTATIONS, STRIPPED_METADATA};
use super::*;
use crate::labels;

fn ctx() -> TransformContext {
    TransformContext {
        migration_id: "m-42".into(),
        source_cluster: "east".into(),
        dest_cluster: "west".into(),
        placement_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        storage_class_map: BTreeMap::from([
            ("standard".into(), "west-ssd".into()),
            ("fast".into(), "west-fast".into()),
        ]),
        source_default_storage_class: None,
        dest_priority_classes: BTreeSet::from(["high".into()]),
        keep_load_balancer_ips: false,
        rename: None,
        volume_mode: VolumeMode::Copy,
    }
}

/// An object as an API server returns it: identity plus server-owned metadata.
fn served(api: &str, kind: &str, name: &str, rest: Value) -> Value {
    let mut o = json!({
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": format!("uid-{kind}-{name}"),
            "resourceVersion": "1234",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}]
        }
    });
    json_patch::merge(&mut o, &rest);
    o
}

fn run(objs: Vec<Value>) -> TransformOutput {
    transform_namespace(objs, &ctx()).expect("transform")
}

fn run_with(objs: Vec<Value>, c: &TransformContext) -> TransformOutput {
    transform_namespace(objs, c).expect("transform")
}

fn reason(out: &TransformOutput, kind: &str, name: &str) -> Option<Reason> {
    out.left_behind
        .iter()
        .find(|l| l.object.kind == kind && l.object.name == name)
        .map(|l| l.reason.clone())
}

fn kept<'a>(out: &'a TransformOutput, kind: &str, name: &str) -> &'a Value {
    out.apply
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not kept; left behind: {:?}", out.left_behind))
}

fn ann<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    object::annotation(o, key)
}

// ---------------------------------------------------------------- leave behind

#[test]
fn events_leases_and_cluster_machinery_are_left_behind() {
    let out = run(vec![
        served("v1", "Event", "e1", json!({})),
        served("events.k8s.io/v1", "Event", "e2", json!({})),
        served("coordination.k8s.io/v1", "Lease", "leader", json!({})),
        served("v1", "Node", "n1", json!({})),
        served("storage.k8s.io/v1", "CSINode", "n1", json!({})),
        served("storage.k8s.io/v1", "VolumeAttachment", "va", json!({})),
        served("metrics.k8s.io/v1beta1", "PodMetrics", "web-1", json!({})),
    ]);
    assert!(out.apply.is_empty(), "{:?}", out.apply);
    assert_eq!(reason(&out, "Event", "e1"), Some(Reason::Event));
    assert_eq!(reason(&out, "Event", "e2"), Some(Reason::Event));
    assert_eq!(reason(&out, "Lease", "leader"), Some(Reason::Lease));
    assert_eq!(
        reason(&out, "Node", "n1"),
        Some(Reason::ClusterInfrastructure)
    );
    assert_eq!(
        reason(&out, "CSINode", "n1"),
        Some(Reason::ClusterInfrastructure)
    );
    assert_eq!(
        reason(&out, "VolumeAttachment", "va"),
        Some(Reason::ClusterInfrastructure)
    );
    assert_eq!(
        reason(&out, "PodMetrics", "web-1"),
        Some(Reason::AggregatedApi {
            group: "metrics.k8s.io".into()
        })
    );
}

#[test]
fn ferry_own_objects_are_left_behind() {
    let out = run(vec![
        served(
            "v1",
            "Pod",
            "mover-0",
            json!({"metadata": {"labels": {"ferry.dev/component": "mover"}}}),
        ),
        served(
            "v1",
            "Secret",
            "mover-tls",
            json!({"metadata": {"labels": {"ferry.dev/component": "mover"}}}),
        ),
        served(
            "v1",
            "Service",
            "mover",
            json!({"metadata": {"labels": {"ferry.dev/component": "mover"}}}),
        ),
    ]);
    assert!(out.apply.is_empty());
    for (k, n) in [
        ("Pod", "mover-0"),
        ("Secret", "mover-tls"),
        ("Service", "mover"),
    ] {
        assert_eq!(
            reason(&out, k, n),
            Some(Reason::FerryOwn {
                component: "mover".into()
            })
        );
    }
}

#[test]
fn terminating_objects_are_left_behind() {
    let out = run(vec![served(
        "v1",
        "ConfigMap",
        "going",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    )]);
    assert_eq!(
        reason(&out, "ConfigMap", "going"),
        Some(Reason::Terminating)
    );
}

#[test]
fn controller_children_are_left_behind_but_claims_of_templates_are_kept() {
    let owner = |kind: &str, name: &str| {
        json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "x", "controller": true, "blockOwnerDeletion": true}
        ]}})
    };
    let out = run(vec![
        served(
            "apps/v1",
            "ReplicaSet",
            "web-5d4f",
            owner("Deployment", "web"),
        ),
        served(
            "v1",
            "Pod",
            "web-5d4f-abcde",
            owner("ReplicaSet", "web-5d4f"),
        ),
        served("v1", "Pod", "db-0", owner("StatefulSet", "db")),
        served(
            "apps/v1",
            "ControllerRevision",
            "db-7b9",
            owner("StatefulSet", "db"),
        ),
        served("batch/v1", "Job", "hello-2901", owner("CronJob", "hello")),
        served(
            "v1",
            "PersistentVolumeClaim",
            "data-db-0",
            owner("StatefulSet", "db"),
        ),
        // A non-controller owner does not make an object a child.
        served(
            "v1",
            "ConfigMap",
            "extra",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}]}}),
        ),
    ]);
    assert_eq!(
        reason(&out, "ReplicaSet", "web-5d4f"),
        Some(Reason::ControllerOwned {
            owner_kind: "Deployment".into(),
            owner_name: "web".into()
        })
    );
    assert_eq!(
        reason(&out, "Pod", "web-5d4f-abcde"),
        Some(Reason::ControllerOwned {
            owner_kind: "ReplicaSet".into(),
            owner_name: "web-5d4f".into()
        })
    );
    assert!(matches!(
        reason(&out, "Pod", "db-0"),
        Some(Reason::ControllerOwned { .. })
    ));
    assert!(matches!(
        reason(&out, "ControllerRevision", "db-7b9"),
        Some(Reason::ControllerOwned { .. })
    ));
    assert_eq!(
        reason(&out, "Job", "hello-2901"),
        Some(Reason::JobOfCronJob {
            cronjob: "hello".into()
        })
    );
    let pvc = kept(&out, "PersistentVolumeClaim", "data-db-0");
    assert!(
        pvc.pointer("/metadata/ownerReferences").is_none(),
        "owner refs of kept objects are stripped"
    );
    let cm = kept(&out, "ConfigMap", "extra");
    assert!(cm.pointer("/metadata/ownerReferences").is_none());
}

#[test]
fn completed_pods_and_finished_jobs_are_left_behind() {
    let cond = |t: &str, s: &str| json!({"status": {"conditions": [{"type": t, "status": s}]}});
    let out = run(vec![
        served(
            "v1",
            "Pod",
            "ok",
            json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}}),
        ),
        served(
            "v1",
            "Pod",
            "bad",
            json!({"spec": {"containers": []}, "status": {"phase": "Failed"}}),
        ),
        served(
            "v1",
            "Pod",
            "running",
            json!({"spec": {"containers": []}, "status": {"phase": "Running"}}),
        ),
        served("batch/v1", "Job", "done", cond("Complete", "True")),
        served("batch/v1", "Job", "failed", cond("Failed", "True")),
        served("batch/v1", "Job", "running", cond("Complete", "False")),
    ]);
    assert_eq!(
        reason(&out, "Pod", "ok"),
        Some(Reason::CompletedPod {
            phase: "Succeeded".into()
        })
    );
    assert_eq!(
        reason(&out, "Pod", "bad"),
        Some(Reason::CompletedPod {
            phase: "Failed".into()
        })
    );
    assert_eq!(
        reason(&out, "Job", "done"),
        Some(Reason::FinishedJob {
            condition: "Complete".into()
        })
    );
    assert_eq!(
        reason(&out, "Job", "failed"),
        Some(Reason::FinishedJob {
            condition: "Failed".into()
        })
    );
    kept(&out, "Pod", "running");
    kept(&out, "Job", "running");
}

#[test]
fn managed_endpoints_are_left_behind_hand_made_ones_kept() {
    let out = run(vec![
        served(
            "v1",
            "Service",
            "web",
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        served("v1", "Endpoints", "web", json!({"subsets": []})),
        served(
            "v1",
            "Service",
            "external-db",
            json!({"spec": {"ports": [{"port": 5432}]}}),
        ),
        served(
            "v1",
            "Endpoints",
            "external-db",
            json!({"subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 5432}]}]}),
        ),
        // Stamped by the endpoints controller although its Service was not exported.
        served(
            "v1",
            "Endpoints",
            "orphan",
            json!({"metadata": {"annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}}}),
        ),
        served(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "web-abc",
            json!({"metadata": {"labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}}}),
        ),
        served(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "external-db-xyz",
            json!({"metadata": {"labels": {"endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}}}),
        ),
        served(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "by-hand",
            json!({"addressType": "IPv4", "endpoints": []}),
        ),
    ]);
    assert_eq!(
        reason(&out, "Endpoints", "web"),
        Some(Reason::ManagedEndpoints {
            service: "web".into()
        })
    );
    assert_eq!(
        reason(&out, "Endpoints", "orphan"),
        Some(Reason::ManagedEndpoints {
            service: "orphan".into()
        })
    );
    let ep = kept(&out, "Endpoints", "external-db");
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.1.2.3");
    assert_eq!(
        reason(&out, "EndpointSlice", "web-abc"),
        Some(Reason::ManagedEndpointSlice {
            manager: "endpointslice-controller.k8s.io".into()
        })
    );
    assert!(matches!(
        reason(&out, "EndpointSlice", "external-db-xyz"),
        Some(Reason::ManagedEndpointSlice { .. })
    ));
    kept(&out, "EndpointSlice", "by-hand");
}

#[test]
fn auto_token_secrets_and_root_ca_are_left_behind_and_forgotten_by_their_account() {
    let token = |name: &str, sa: &str| {
        served(
            "v1",
            "Secret",
            name,
            json!({
                "type": "kubernetes.io/service-account-token",
                "metadata": {"annotations": {"kubernetes.io/service-account.name": sa, "kubernetes.io/service-account.uid": "sa-uid"}},
                "data": {"token": "dG9r", "ca.crt": "Y2E=", "namespace": "c2hvcA==", "extra": "eA=="}
            }),
        )
    };
    let out = run(vec![
        token("builder-token-x7k2p", "builder"),
        token("builder-ci", "builder"),
        served(
            "v1",
            "ServiceAccount",
            "builder",
            json!({"secrets": [{"name": "builder-token-x7k2p"}, {"name": "registry-creds"}]}),
        ),
        served(
            "v1",
            "ServiceAccount",
            "lonely",
            json!({"secrets": [{"name": "builder-token-x7k2p"}]}),
        ),
        served(
            "v1",
            "ConfigMap",
            "kube-root-ca.crt",
            json!({"data": {"ca.crt": "..."}}),
        ),
    ]);
    assert_eq!(
        reason(&out, "Secret", "builder-token-x7k2p"),
        Some(Reason::AutoTokenSecret {
            service_account: "builder".into()
        })
    );
    assert_eq!(
        reason(&out, "ConfigMap", "kube-root-ca.crt"),
        Some(Reason::KubeRootCa)
    );
    let sa = kept(&out, "ServiceAccount", "builder");
    assert_eq!(sa["secrets"], json!([{"name": "registry-creds"}]));
    assert!(
        kept(&out, "ServiceAccount", "lonely")
            .get("secrets")
            .is_none(),
        "emptied list is dropped"
    );
    // Hand-made token Secret: the destination's token controller refills it.
    let s = kept(&out, "Secret", "builder-ci");
    assert_eq!(ann(s, "kubernetes.io/service-account.uid"), None);
    assert_eq!(
        ann(s, "kubernetes.io/service-account.name"),
        Some("builder")
    );
    assert_eq!(s["data"], json!({"extra": "eA=="}));
}

#[test]
fn default_service_account_is_merged_not_created() {
    let mut c = ctx();
    c.rename = Some(("shop".into(), "shop-copy".into()));
    let out = run_with(
        vec![served(
            "v1",
            "ServiceAccount",
            "default",
            json!({
                "metadata": {"annotations": {"team": "payments", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "imagePullSecrets": [{"name": "registry"}],
                "secrets": [{"name": "default-token-abcde"}]
            }),
        )],
        &c,
    );
    assert_eq!(
        reason(&out, "ServiceAccount", "default"),
        Some(Reason::DefaultServiceAccountMerged)
    );
    assert!(out.apply.is_empty());
    assert_eq!(out.merge_patches.len(), 1);
    let mp = &out.merge_patches[0];
    assert_eq!(mp.target.namespace.as_deref(), Some("shop-copy"));
    assert_eq!(
        mp.patch,
        json!({"metadata": {"annotations": {"team": "payments"}}, "imagePullSecrets": [{"name": "registry"}]})
    );
    // Nothing set by a person: no patch at all.
    let out = run(vec![served(
        "v1",
        "ServiceAccount",
        "default",
        json!({"secrets": [{"name": "default-token-abcde"}]}),
    )]);
    assert!(out.merge_patches.is_empty());
}

#[test]
fn an_object_served_twice_is_copied_once_at_the_best_version() {
    let same = json!({"metadata": {"uid": "one-uid"}, "spec": {"replicas": 1}});
    let out = run(vec![
        served("extensions/v1beta1", "Deployment", "web", same.clone()),
        served("apps/v1", "Deployment", "web", same.clone()),
        served("apps/v1beta2", "Deployment", "web", same.clone()),
        served(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "web",
            json!({"metadata": {"uid": "hpa"}}),
        ),
        served(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            "web",
            json!({"metadata": {"uid": "hpa"}}),
        ),
        served(
            "autoscaling/v2beta2",
            "HorizontalPodAutoscaler",
            "web",
            json!({"metadata": {"uid": "hpa"}}),
        ),
    ]);
    assert_eq!(out.apply.len(), 2);
    assert_eq!(kept(&out, "Deployment", "web")["apiVersion"], "apps/v1");
    assert_eq!(
        kept(&out, "HorizontalPodAutoscaler", "web")["apiVersion"],
        "autoscaling/v2"
    );
    let dups: Vec<_> = out
        .left_behind
        .iter()
        .map(|l| (l.object.api_version.as_str(), l.reason.clone()))
        .collect();
    assert!(dups.contains(&(
        "extensions/v1beta1",
        Reason::DuplicateVersion {
            kept: "apps/v1".into()
        }
    )));
    assert!(dups.contains(&(
        "apps/v1beta2",
        Reason::DuplicateVersion {
            kept: "apps/v1".into()
        }
    )));
    assert!(dups.contains(&(
        "autoscaling/v1",
        Reason::DuplicateVersion {
            kept: "autoscaling/v2".into()
        }
    )));
    assert!(dups.contains(&(
        "autoscaling/v2beta2",
        Reason::DuplicateVersion {
            kept: "autoscaling/v2".into()
        }
    )));
}

#[test]
fn volumes_are_left_behind_when_copied_and_kept_when_reattached() {
    let pv = served(
        "v1",
        "PersistentVolume",
        "pvc-123",
        json!({"metadata": {"namespace": null}, "spec": {"persistentVolumeReclaimPolicy": "Delete"}}),
    );
    let out = run(vec![pv.clone()]);
    assert_eq!(
        reason(&out, "PersistentVolume", "pvc-123"),
        Some(Reason::VolumeNotReattached)
    );
    let mut c = ctx();
    c.volume_mode = VolumeMode::Reattach;
    let out = run_with(vec![pv], &c);
    kept(&out, "PersistentVolume", "pvc-123");
}

// ---------------------------------------------------------------- strip

#[test]
fn server_owned_metadata_status_and_last_applied_are_stripped() {
    let cm = served(
        "v1",
        "ConfigMap",
        "cfg",
        json!({
            "metadata": {
                "selfLink": "/api/v1/namespaces/shop/configmaps/cfg",
                "generation": 3,
                "deletionGracePeriodSeconds": 30,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Foo", "name": "f", "uid": "u"}],
                "finalizers": ["example.com/keep"],
                "labels": {"app": "shop"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"ConfigMap\"}", "note": "hi"}
            },
            "data": {"k": "v"},
            "status": {"whatever": true}
        }),
    );
    assert!(
        cm.pointer("/metadata/uid").is_some(),
        "fixture carries the fields"
    );
    let out = run(vec![cm]);
    let o = kept(&out, "ConfigMap", "cfg");
    for f in STRIPPED_METADATA {
        assert!(o["metadata"].get(*f).is_none(), "{f} not stripped: {o}");
    }
    assert!(o.get("status").is_none());
    assert_eq!(ann(o, rewrite::LAST_APPLIED), None);
    assert_eq!(ann(o, "note"), Some("hi"), "other annotations stay");
    assert_eq!(o["metadata"]["finalizers"], json!(["example.com/keep"]));
    assert_eq!(o["metadata"]["labels"]["app"], "shop");
    assert_eq!(o["data"], json!({"k": "v"}));
}

#[test]
fn provenance_is_on_every_object() {
    let out = run(vec![
        served("v1", "ConfigMap", "a", json!({})),
        served(
            "apps/v1",
            "Deployment",
            "d",
            json!({"spec": {"replicas": 2}}),
        ),
        served("example.com/v1", "Widget", "w", json!({"spec": {}})),
    ]);
    assert_eq!(out.apply.len(), 3);
    for o in &out.apply {
        assert_eq!(object::label(o, labels::MIGRATION), Some("m-42"), "{o}");
        assert_eq!(object::label(o, labels::SOURCE_CLUSTER), Some("east"));
        assert_eq!(
            ann(o, labels::PLACEMENT_COMMIT),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
    }
}

// ---------------------------------------------------------------- services

fn svc(name: &str, spec: Value, extra_meta: Value) -> Value {
    let mut s = served("v1", "Service", name, json!({"spec": spec}));
    json_patch::merge(&mut s, &json!({"metadata": extra_meta}));
    s
}

#[test]
fn service_cluster_ips_are_dropped_unless_headless() {
    let out = run(vec![
        svc(
            "web",
            json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 80}], "selector": {"a": "b"}}),
            json!({}),
        ),
        svc(
            "db",
            json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}], "selector": {"a": "b"}}),
            json!({}),
        ),
    ]);
    let web = kept(&out, "Service", "web");
    assert!(web["spec"].get("clusterIP").is_none() && web["spec"].get("clusterIPs").is_none());
    let db = kept(&out, "Service", "db");
    assert_eq!(db["spec"]["clusterIP"], "None");
    assert_eq!(db["spec"]["clusterIPs"], json!(["None"]));
}

#[test]
fn node_ports_chosen_in_last_applied_survive_allocated_ones_do_not() {
    let last_applied =
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "nodePort": 30080},
            {"name": "metrics", "port": 9090}
        ]}})
        .to_string();
    let out = run(vec![svc(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.3.3", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
            {"name": "metrics", "port": 9090, "protocol": "TCP", "nodePort": 31555}
        ]}),
        json!({"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}}),
    )]);
    let web = kept(&out, "Service", "web");
    assert_eq!(web["spec"]["ports"][0]["nodePort"], 30080);
    assert!(web["spec"]["ports"][1].get("nodePort").is_none(), "{web}");
    assert_eq!(
        out.requirements.node_ports,
        vec![NodePortUse {
            node_port: 30080,
            protocol: "TCP".into(),
            service: "web".into()
        }]
    );
}

#[test]
fn node_ports_owned_in_managed_fields_survive() {
    // Server-side apply and `kubectl create` leave no last-applied; managedFields tell.
    let managed = json!([{
        "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:ports": {
            "k:{\"port\":53,\"protocol\":\"UDP\"}": {".": {}, "f:nodePort": {}, "f:port": {}},
            "k:{\"port\":53,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}
        }}}
    }]);
    let out = run(vec![svc(
        "dns",
        json!({"type": "NodePort", "ports": [
            {"port": 53, "protocol": "UDP", "nodePort": 30053},
            {"port": 53, "protocol": "TCP", "nodePort": 32001}
        ]}),
        json!({"managedFields": managed}),
    )]);
    let dns = kept(&out, "Service", "dns");
    assert_eq!(dns["spec"]["ports"][0]["nodePort"], 30053);
    assert!(dns["spec"]["ports"][1].get("nodePort").is_none());
}

#[test]
fn node_ports_without_any_record_are_kept() {
    let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "shop"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}});
    let chosen = rewrite::chosen_node_ports(&s);
    assert_eq!(chosen, None);
    rewrite::rewrite_service(&mut s, chosen.as_ref(), false);
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 30001);
}

#[test]
fn load_balancer_addresses_are_dropped_unless_kept() {
    let lb = svc(
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1", "loadBalancerIP": "203.0.113.7", "externalIPs": ["198.51.100.1"],
               "externalTrafficPolicy": "Local", "healthCheckNodePort": 31999, "ports": [{"port": 443, "nodePort": 30443}]}),
        json!({}),
    );
    let out = run(vec![lb.clone()]);
    let s = &kept(&out, "Service", "lb")["spec"];
    for f in [
        "loadBalancerIP",
        "externalIPs",
        "healthCheckNodePort",
        "clusterIP",
    ] {
        assert!(s.get(f).is_none(), "{f} kept: {s}");
    }
    assert!(
        s["ports"][0].get("nodePort").is_none(),
        "allocated (managedFields name no owner)"
    );
    assert_eq!(s["externalTrafficPolicy"], "Local");
    let mut c = ctx();
    c.keep_load_balancer_ips = true;
    let out = run_with(vec![lb], &c);
    let s = &kept(&out, "Service", "lb")["spec"];
    assert_eq!(s["loadBalancerIP"], "203.0.113.7");
    assert_eq!(s["externalIPs"], json!(["198.51.100.1"]));
    assert!(s.get("healthCheckNodePort").is_none(), "always dropped");
}

#[test]
fn external_name_services_are_copied_as_they_are() {
    let spec = json!({"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]});
    let out = run(vec![svc("db", spec.clone(), json!({}))]);
    assert_eq!(kept(&out, "Service", "db")["spec"], spec);
}

// ---------------------------------------------------------------- volumes

fn pvc(name: &str, spec: Value) -> Value {
    served(
        "v1",
        "PersistentVolumeClaim",
        name,
        json!({
            "metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.kubernetes.io/storage-provisioner": "rancher.io/local-path",
                "volume.beta.kubernetes.io/storage-provisioner": "rancher.io/local-path",
                "volume.kubernetes.io/selected-node": "node-1",
                "backup": "daily"
            }},
            "spec": spec,
            "status": {"phase": "Bound"}
        }),
    )
}

#[test]
fn claims_are_unbound_and_their_class_mapped() {
    let mut c = ctx();
    c.source_default_storage_class = Some("standard".into());
    let out = run_with(
        vec![
            pvc(
                "mapped",
                json!({"storageClassName": "fast", "volumeName": "pvc-1", "resources": {"requests": {"storage": "1Gi"}}}),
            ),
            pvc(
                "unmapped",
                json!({"storageClassName": "gold", "volumeName": "pvc-2"}),
            ),
            pvc(
                "defaulted",
                json!({"volumeName": "pvc-3", "dataSource": {"kind": "VolumeSnapshot", "name": "s"}, "dataSourceRef": {"kind": "VolumeSnapshot", "name": "s"}}),
            ),
        ],
        &c,
    );
    for name in ["mapped", "unmapped", "defaulted"] {
        let p = kept(&out, "PersistentVolumeClaim", name);
        for a in PVC_BIND_ANNOTATIONS {
            assert_eq!(ann(p, a), None, "{a} on {name}");
        }
        assert_eq!(ann(p, "backup"), Some("daily"));
        assert!(p["spec"].get("volumeName").is_none());
        assert!(p.get("status").is_none());
    }
    assert_eq!(
        kept(&out, "PersistentVolumeClaim", "mapped")["spec"]["storageClassName"],
        "west-fast"
    );
    assert_eq!(
        kept(&out, "PersistentVolumeClaim", "unmapped")["spec"]["storageClassName"],
        "gold"
    );
    let d = &kept(&out, "PersistentVolumeClaim", "defaulted")["spec"];
    assert_eq!(
        d["storageClassName"], "west-ssd",
        "no class: the source default, mapped"
    );
    assert!(d.get("dataSource").is_none() && d.get("dataSourceRef").is_none());
    // Without a known source default a claim without class stays without one.
    let out = run(vec![pvc("plain", json!({"volumeName": "pvc-9"}))]);
    assert!(
        kept(&out, "PersistentVolumeClaim", "plain")["spec"]
            .get("storageClassName")
            .is_none()
    );
}

#[test]
fn reattached_claims_and_volumes_keep_their_binding_target() {
    let mut c = ctx();
    c.volume_mode = VolumeMode::Reattach;
    c.rename = Some(("shop".into(), "shop2".into()));
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-1", "uid": "u", "resourceVersion": "9",
            "annotations": {"pv.kubernetes.io/bound-by-controller": "yes", "pv.kubernetes.io/provisioned-by": "nfs.csi.k8s.io"}},
        "spec": {"persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast", "nfs": {"server": "nfs", "path": "/x"},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "claim-uid", "resourceVersion": "77", "apiVersion": "v1"}},
        "status": {"phase": "Bound"}
    });
    let out = run_with(
        vec![
            pv,
            pvc(
                "data",
                json!({"storageClassName": "fast", "volumeName": "pvc-1"}),
            ),
        ],
        &c,
    );
    let pv = kept(&out, "PersistentVolume", "pvc-1");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        pv["spec"]["claimRef"],
        json!({"kind": "PersistentVolumeClaim", "namespace": "shop2", "name": "data", "apiVersion": "v1"})
    );
    assert_eq!(ann(pv, "pv.kubernetes.io/bound-by-controller"), None);
    assert_eq!(
        ann(pv, "pv.kubernetes.io/provisioned-by"),
        Some("nfs.csi.k8s.io")
    );
    let claim = kept(&out, "PersistentVolumeClaim", "data");
    assert_eq!(claim["spec"]["volumeName"], "pvc-1");
    assert_eq!(
        claim["spec"]["storageClassName"], "fast",
        "class must match the volume, not the map"
    );
    assert_eq!(ann(claim, "pv.kubernetes.io/bind-completed"), None);
    assert_eq!(claim["metadata"]["namespace"], "shop2");
    // PVs come before PVCs.
    let kinds: Vec<_> = out
        .apply
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["PersistentVolume", "PersistentVolumeClaim"]);
}

// ---------------------------------------------------------------- pods and jobs

#[test]
fn bare_pods_are_rescheduled_and_priority_kept_only_if_the_class_exists() {
    let pod = |name: &str, class: &str| {
        served(
            "v1",
            "Pod",
            name,
            json!({
                "spec": {
                    "nodeName": "node-7", "priority": 1000, "preemptionPolicy": "PreemptLowerPriority", "priorityClassName": class,
                    "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                        {"name": "kube-api-access-x2x9q", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                        {"name": "data", "mountPath": "/data"}
                    ]}],
                    "volumes": [
                        {"name": "kube-api-access-x2x9q", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                        {"name": "data", "emptyDir": {}}
                    ]
                },
                "status": {"phase": "Running"}
            }),
        )
    };
    let out = run(vec![
        pod("has", "high"),
        pod("missing", "gone"),
        pod("builtin", "system-node-critical"),
    ]);
    for name in ["has", "missing", "builtin"] {
        let s = &kept(&out, "Pod", name)["spec"];
        for f in ["nodeName", "priority", "preemptionPolicy"] {
            assert!(s.get(f).is_none(), "{f} on {name}");
        }
        assert_eq!(s["volumes"], json!([{"name": "data", "emptyDir": {}}]));
        assert_eq!(
            s["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}])
        );
    }
    assert_eq!(
        kept(&out, "Pod", "has")["spec"]["priorityClassName"],
        "high"
    );
    assert!(
        kept(&out, "Pod", "missing")["spec"]
            .get("priorityClassName")
            .is_none()
    );
    assert_eq!(
        kept(&out, "Pod", "builtin")["spec"]["priorityClassName"],
        "system-node-critical"
    );
}

fn job_template_labels() -> Value {
    json!({"controller-uid": "u1", "batch.kubernetes.io/controller-uid": "u1", "job-name": "migrate", "batch.kubernetes.io/job-name": "migrate", "app": "db"})
}

#[test]
fn jobs_lose_the_generated_selector_and_start_suspended() {
    let out = run(vec![
        served(
            "batch/v1",
            "Job",
            "migrate",
            json!({"spec": {
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "template": {"metadata": {"labels": job_template_labels()}, "spec": {"containers": [], "restartPolicy": "Never"}}
            }}),
        ),
        served(
            "batch/v1",
            "Job",
            "manual",
            json!({"spec": {
                "manualSelector": true,
                "selector": {"matchLabels": {"job-name": "manual"}},
                "template": {"metadata": {"labels": {"job-name": "manual"}}, "spec": {"containers": []}}
            }}),
        ),
    ]);
    let j = kept(&out, "Job", "migrate");
    assert!(j["spec"].get("selector").is_none());
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"],
        json!({"app": "db"})
    );
    for l in JOB_GENERATED_LABELS {
        assert!(
            j["spec"]["template"]["metadata"]["labels"]
                .get(*l)
                .is_none()
        );
    }
    assert_eq!(j["spec"]["suspend"], true);
    assert_eq!(ann(j, labels::ORIGINAL_SUSPEND), Some("false"));
    let m = kept(&out, "Job", "manual");
    assert_eq!(
        m["spec"]["selector"],
        json!({"matchLabels": {"job-name": "manual"}}),
        "a person's selector stays"
    );
    assert_eq!(
        m["spec"]["template"]["metadata"]["labels"],
        json!({"job-name": "manual"})
    );
}

#[test]
fn cronjobs_are_suspended_with_their_original_recorded_and_upgraded_from_beta() {
    let mut hello = served(
        "batch/v1beta1",
        "CronJob",
        "hello",
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {
            "spec": {"template": {"metadata": {"labels": job_template_labels()}, "spec": {"containers": []}}}
        }}}),
    );
    // What older API servers serialize into embedded templates (merge patches cannot add nulls).
    hello["spec"]["jobTemplate"]["metadata"] = json!({"creationTimestamp": null});
    hello["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["creationTimestamp"] = Value::Null;
    let out = run(vec![
        hello,
        served(
            "batch/v1",
            "CronJob",
            "paused",
            json!({"spec": {"schedule": "@daily", "suspend": true, "jobTemplate": {"spec": {}}}}),
        ),
    ]);
    let c = kept(&out, "CronJob", "hello");
    assert_eq!(c["apiVersion"], "batch/v1");
    assert_eq!(c["spec"]["suspend"], true);
    assert_eq!(ann(c, labels::ORIGINAL_SUSPEND), Some("false"));
    assert_eq!(
        c["spec"]["jobTemplate"]["spec"]["template"]["metadata"],
        json!({"labels": {"app": "db"}})
    );
    assert!(c["spec"]["jobTemplate"].get("metadata").is_none());
    let p = kept(&out, "CronJob", "paused");
    assert_eq!(ann(p, labels::ORIGINAL_SUSPEND), Some("true"));
}

// ---------------------------------------------------------------- workloads

#[test]
fn workloads_start_at_zero_with_the_real_count_recorded() {
    let out = run(vec![
        served(
            "apps/v1",
            "Deployment",
            "web",
            json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "4"}},
            "spec": {"replicas": 3, "template": {"metadata": {"creationTimestamp": null, "labels": {"a": "b"}}, "spec": {"containers": []}}}}),
        ),
        served(
            "apps/v1",
            "StatefulSet",
            "db",
            json!({"spec": {"replicas": 2}}),
        ),
        served("apps/v1", "ReplicaSet", "bare", json!({"spec": {}})),
        // Exported after the source was quiesced: the count recorded then is the real one.
        served(
            "apps/v1",
            "Deployment",
            "quiesced",
            json!({"metadata": {"annotations": {"ferry.dev/original-replicas": "5"}}, "spec": {"replicas": 0}}),
        ),
    ]);
    for (kind, name, n) in [
        ("Deployment", "web", "3"),
        ("StatefulSet", "db", "2"),
        ("ReplicaSet", "bare", "1"),
        ("Deployment", "quiesced", "5"),
    ] {
        let o = kept(&out, kind, name);
        assert_eq!(o["spec"]["replicas"], 0, "{kind}/{name}");
        assert_eq!(ann(o, labels::ORIGINAL_REPLICAS), Some(n), "{kind}/{name}");
    }
    let web = kept(&out, "Deployment", "web");
    assert_eq!(ann(web, "deployment.kubernetes.io/revision"), None);
    assert_eq!(
        web["spec"]["template"]["metadata"],
        json!({"labels": {"a": "b"}})
    );
    // Cutover restores them.
    let mut restored = web.clone();
    let r = ObjectRef::of(&restored, 0).unwrap();
    json_patch::merge(
        &mut restored,
        &cutover::restore_patch(&r, web).unwrap().unwrap(),
    );
    assert_eq!(restored["spec"]["replicas"], 3);
    assert_eq!(ann(&restored, labels::ORIGINAL_REPLICAS), None);
}

#[test]
fn statefulset_claim_templates_keep_names_and_map_classes() {
    let mut c = ctx();
    c.source_default_storage_class = Some("standard".into());
    let out = run_with(
        vec![served(
            "apps/v1",
            "StatefulSet",
            "db",
            json!({"spec": {"replicas": 1, "volumeClaimTemplates": [
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "creationTimestamp": null},
                 "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}},
                {"metadata": {"name": "logs"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
            ]}}),
        )],
        &c,
    );
    let t = &kept(&out, "StatefulSet", "db")["spec"]["volumeClaimTemplates"];
    assert_eq!(t[0]["metadata"], json!({"name": "data"}));
    assert!(t[0].get("status").is_none());
    assert_eq!(t[0]["spec"]["storageClassName"], "west-fast");
    assert_eq!(t[1]["metadata"]["name"], "logs");
    assert_eq!(t[1]["spec"]["storageClassName"], "west-ssd");
}

// ---------------------------------------------------------------- rename

#[test]
fn cloning_under_a_new_name_remaps_namespace_references() {
    let mut c = ctx();
    c.rename = Some(("shop".into(), "shop-staging".into()));
    let out = run_with(
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop", "team": "a"}}}),
            served(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "rb",
                json!({
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "builder", "namespace": "shop"},
                        {"kind": "ServiceAccount", "name": "prom", "namespace": "monitoring"},
                        {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
                    ]
                }),
            ),
            served(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "np",
                json!({"spec": {
                    "podSelector": {},
                    "ingress": [{"from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}},
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                    ]}],
                    "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "db"]}
                    ]}}]}]
                }}),
            ),
        ],
        &c,
    );
    let ns = kept(&out, "Namespace", "shop-staging");
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "shop-staging", "team": "a", "ferry.dev/migration": "m-42", "ferry.dev/source-cluster": "east"})
    );
    let rb = kept(&out, "RoleBinding", "rb");
    assert_eq!(rb["metadata"]["namespace"], "shop-staging");
    assert_eq!(rb["subjects"][0]["namespace"], "shop-staging");
    assert_eq!(rb["subjects"][1]["namespace"], "monitoring");
    assert!(rb["subjects"][2].get("namespace").is_none());
    let np = kept(&out, "NetworkPolicy", "np");
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "shop-staging"
    );
    assert_eq!(
        np["spec"]["ingress"][0]["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(
        np["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["shop-staging", "db"])
    );
    assert_eq!(out.apply[0]["kind"], "Namespace", "namespace first");
}

// ---------------------------------------------------------------- context

#[test]
fn bad_context_is_rejected_naming_the_field() {
    let mut c = ctx();
    c.migration_id = "m 42!".into();
    let err = transform_namespace(vec![], &c).unwrap_err();
    assert!(
        matches!(
            &err,
            TransformError::InvalidContext {
                field: "migration_id",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("label value"), "{err}");
    let mut c = ctx();
    c.placement_commit.clear();
    assert!(matches!(
        transform_namespace(vec![], &c),
        Err(TransformError::InvalidContext {
            field: "placement_commit",
            ..
        })
    ));
    let mut c = ctx();
    c.rename = Some(("shop".into(), "Shop_2".into()));
    assert!(matches!(
        transform_namespace(vec![], &c),
        Err(TransformError::InvalidContext {
            field: "rename.new",
            ..
        })
    ));
    let mut c = ctx();
    c.source_cluster = "x".repeat(64);
    assert!(matches!(
        transform_namespace(vec![], &c),
        Err(TransformError::InvalidContext {
            field: "source_cluster",
            ..
        })
    ));
}

#[test]
fn malformed_export_names_the_object_and_field() {
    let err = transform_namespace(
        vec![
            served("v1", "ConfigMap", "a", json!({})),
            json!({"kind": "ConfigMap", "metadata": {"name": "b"}}),
        ],
        &ctx(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransformError::MalformedObject {
            index: 1,
            field: "apiVersion",
            problem: "is missing".into()
        }
    );
}

// ---------------------------------------------------------------- requirements

fn container(cpu: Option<&str>, mem: Option<&str>) -> Value {
    let mut requests = serde_json::Map::new();
    if let Some(c) = cpu {
        requests.insert("cpu".into(), json!(c));
    }
    if let Some(m) = mem {
        requests.insert("memory".into(), json!(m));
    }
    json!({"name": "c", "image": "i", "resources": {"requests": requests}})
}

#[test]
fn requirements_count_requests_times_real_replicas() {
    let mut c = ctx();
    c.source_default_storage_class = Some("standard".into());
    let out = run_with(
        vec![
            served(
                "apps/v1",
                "Deployment",
                "web",
                json!({"spec": {"replicas": 3, "template": {"spec": {
                    "priorityClassName": "high", "runtimeClassName": "gvisor",
                    "containers": [container(Some("100m"), Some("64Mi")), container(Some("0.25"), None)]
                }}}}),
            ),
            // Init steps run one at a time, before the main containers: the peak counts.
            served(
                "apps/v1",
                "StatefulSet",
                "db",
                json!({"spec": {"replicas": 2, "template": {"spec": {
                "initContainers": [container(Some("2"), Some("1Gi"))],
                "containers": [container(Some("500m"), Some("512Mi"))]
            }}, "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "10Gi"}}}}]}}),
            ),
            // One claim of the StatefulSet exists already: counted once, not twice.
            served(
                "v1",
                "PersistentVolumeClaim",
                "data-db-0",
                json!({"spec": {"resources": {"requests": {"storage": "10Gi"}}}}),
            ),
            served(
                "v1",
                "PersistentVolumeClaim",
                "fast-one",
                json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "500M"}}}}),
            ),
            served(
                "v1",
                "Pod",
                "solo",
                json!({"spec": {"overhead": {"cpu": "10m"}, "containers": [
                {"name": "l", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1G"}}}
            ]}, "status": {"phase": "Running"}}),
            ),
            served(
                "batch/v1",
                "Job",
                "batch",
                json!({"spec": {"parallelism": 4, "completions": 10, "template": {"spec": {
                "containers": [container(Some("1"), Some("1Gi"))]}}}, "status": {"succeeded": 8}}),
            ),
            served(
                "batch/v1",
                "CronJob",
                "nightly",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "priorityClassName": "batch-low", "containers": [container(Some("8"), None)]}}}}}}),
            ),
            served(
                "networking.k8s.io/v1",
                "Ingress",
                "a",
                json!({"spec": {"ingressClassName": "nginx"}}),
            ),
            served(
                "networking.k8s.io/v1",
                "Ingress",
                "b",
                json!({"metadata": {"annotations": {"kubernetes.io/ingress.class": "traefik"}}, "spec": {}}),
            ),
            served("example.com/v1", "Widget", "w", json!({"spec": {}})),
            served(
                "monitoring.coreos.com/v1",
                "ServiceMonitor",
                "sm",
                json!({"spec": {}}),
            ),
        ],
        &c,
    );
    let r = &out.requirements;
    // web: 3 × 350m; db: 2 × max(2000, 500); solo: 1000 + 10 overhead; cronjob: 0.
    // job: status does not travel, the destination's Job starts over: min(4, 10) = 4 pods.
    assert_eq!(r.cpu_millis, 3 * 350 + 2 * 2000 + 1010 + 4 * 1000);
    assert_eq!(
        r.memory_bytes,
        3 * (64 << 20) + 2 * (1 << 30) + 1_000_000_000 + 4 * (1 << 30)
    );
    assert_eq!(
        r.storage_classes,
        BTreeSet::from(["west-ssd".to_string(), "west-fast".to_string()])
    );
    assert_eq!(
        r.storage_bytes,
        BTreeMap::from([
            ("west-ssd".to_string(), 2 * (10i128 << 30)),
            ("west-fast".to_string(), 500_000_000)
        ])
    );
    assert_eq!(
        r.priority_classes,
        BTreeSet::from(["high".to_string(), "batch-low".to_string()])
    );
    assert_eq!(r.runtime_classes, BTreeSet::from(["gvisor".to_string()]));
    assert_eq!(
        r.ingress_classes,
        BTreeSet::from(["nginx".to_string(), "traefik".to_string()])
    );
    assert_eq!(
        r.custom_resources,
        BTreeSet::from([
            GroupKind {
                group: "example.com".into(),
                kind: "Widget".into()
            },
            GroupKind {
                group: "monitoring.coreos.com".into(),
                kind: "ServiceMonitor".into()
            }
        ])
    );
}

#[test]
fn sidecars_run_alongside_and_pod_level_requests_win() {
    let r = ObjectRef::of(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        0,
    )
    .unwrap();
    let mut sidecar = container(Some("200m"), None);
    sidecar["restartPolicy"] = json!("Always");
    let spec = json!({"initContainers": [sidecar, container(Some("300m"), None)], "containers": [container(Some("100m"), None)]});
    // max(running 200+100, init step 300 + sidecar 200 started before it) = 500.
    assert_eq!(
        requirements::effective_request(&r, &spec, "spec", "cpu", true).unwrap(),
        500
    );
    let pod_level = json!({"resources": {"requests": {"cpu": "2"}}, "containers": [container(Some("100m"), None)]});
    assert_eq!(
        requirements::effective_request(&r, &pod_level, "spec", "cpu", true).unwrap(),
        2000
    );
}

#[test]
fn finished_and_suspended_jobs_need_no_compute_but_their_classes_still_count() {
    let reqs = requirements::requirements(&[
        served("batch/v1", "Job", "done", json!({"spec": {"template": {"spec": {"containers": [container(Some("1"), None)]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
        served("batch/v1", "Job", "held", json!({"metadata": {"annotations": {"ferry.dev/original-suspend": "true"}},
            "spec": {"suspend": true, "template": {"spec": {"priorityClassName": "p", "containers": [container(Some("1"), None)]}}}})),
        served("batch/v1", "Job", "ran", json!({"metadata": {"annotations": {"ferry.dev/original-suspend": "false"}},
            "spec": {"suspend": true, "template": {"spec": {"containers": [container(Some("1"), None)]}}}})),
        // On the source, a Job 8/10 done with parallelism 4 runs only 2 more pods.
        served("batch/v1", "Job", "partial", json!({"spec": {"parallelism": 4, "completions": 10,
            "template": {"spec": {"containers": [container(Some("1"), None)]}}}, "status": {"succeeded": 8}})),
    ])
    .unwrap();
    assert_eq!(
        reqs.cpu_millis,
        1000 + 2 * 1000,
        "the Job running before quiesce, and 2 pods of the partial one"
    );
    assert!(reqs.priority_classes.contains("p"));
}

#[test]
fn a_bad_quantity_names_object_field_and_value() {
    let err = transform_namespace(
        vec![served(
            "apps/v1",
            "Deployment",
            "web",
            json!({"spec": {"template": {"spec": {"containers": [
                container(Some("100m"), None), container(Some("1.5 cores"), None)
            ]}}}}),
        )],
        &ctx(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("shop/web"), "{msg}");
    assert!(
        msg.contains("spec.template.spec.containers[1].resources.requests.cpu"),
        "{msg}"
    );
    assert!(msg.contains("\"1.5 cores\""), "{msg}");
    let err = requirements::requirements(&[served(
        "v1",
        "PersistentVolumeClaim",
        "p",
        json!({"spec": {"resources": {"requests": {"storage": "10GB"}}}}),
    )])
    .unwrap_err();
    assert!(
        err.to_string().contains("spec.resources.requests.storage"),
        "{err}"
    );
    assert!(err.to_string().contains("unknown suffix \"GB\""), "{err}");
    assert_eq!(NO_CLASS, "");
}

// ---------------------------------------------------------------- properties

/// Fields no applied object may carry.
fn forbidden(o: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for f in STRIPPED_METADATA {
        if o["metadata"].get(*f).is_some() {
            bad.push(format!("metadata.{f}"));
        }
    }
    if o.get("status").is_some() {
        bad.push("status".into());
    }
    if object::annotation(o, rewrite::LAST_APPLIED).is_some() {
        bad.push("last-applied".into());
    }
    match o["kind"].as_str() {
        Some("Service") => {
            let ip = o.pointer("/spec/clusterIP").and_then(Value::as_str);
            if ip.is_some_and(|ip| ip != "None") {
                bad.push("clusterIP".into());
            }
            if o.pointer("/spec/healthCheckNodePort").is_some() {
                bad.push("healthCheckNodePort".into());
            }
        }
        Some("PersistentVolumeClaim") => {
            if o.pointer("/spec/volumeName").is_some() {
                bad.push("volumeName".into());
            }
            for a in PVC_BIND_ANNOTATIONS {
                if object::annotation(o, a).is_some() {
                    bad.push((*a).into());
                }
            }
        }
        Some("Pod") if o.pointer("/spec/nodeName").is_some() => bad.push("nodeName".into()),
        Some("Deployment" | "StatefulSet") if o.pointer("/spec/replicas") != Some(&json!(0)) => {
            bad.push("replicas".into())
        }
        Some("Job") => {
            for l in JOB_GENERATED_LABELS {
                if o.pointer(&format!(
                    "/spec/template/metadata/labels/{}",
                    l.replace('/', "~1")
                ))
                .is_some()
                {
                    bad.push((*l).into());
                }
            }
        }
        _ => {}
    }
    bad
}

fn without_provenance(mut objs: Vec<Value>) -> Vec<Value> {
    for o in &mut objs {
        object::remove_at(o, &["metadata", "labels"], labels::MIGRATION);
        object::remove_at(o, &["metadata", "labels"], labels::SOURCE_CLUSTER);
        object::remove_annotation(o, labels::PLACEMENT_COMMIT);
    }
    objs
}

prop_compose! {
    fn server_meta()(uid in "[a-f0-9]{8}", rv in 1u32..99999, generation in proptest::option::of(1u32..9), owned in any::<bool>(),
                     last_applied in any::<bool>(), status in any::<bool>()) -> Value {
        let mut m = json!({"metadata": {"uid": uid, "resourceVersion": rv.to_string(), "creationTimestamp": "2026-01-01T00:00:00Z",
            "selfLink": "/x", "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {}}]}});
        if let Some(g) = generation { m["metadata"]["generation"] = json!(g); }
        if owned { m["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]); }
        if last_applied { m["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"}); }
        if status { m["status"] = json!({"phase": "Running"}); }
        m
    }
}

fn any_object() -> impl Strategy<Value = Value> {
    let service = (
        prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer")],
        any::<bool>(),
        proptest::collection::vec((1i64..65535, proptest::option::of(30000i64..32767)), 0..3),
    )
        .prop_map(|(ty, headless, ports)| {
            let ports: Vec<Value> = ports
                .iter()
                .enumerate()
                .map(|(i, (p, np))| {
                    let mut port = json!({"name": format!("p{i}"), "port": p + i as i64});
                    if let (Some(np), true) = (np, ty != "ClusterIP") {
                        port["nodePort"] = json!(np);
                    }
                    port
                })
                .collect();
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": ty, "clusterIP": if headless && ty == "ClusterIP" { "None" } else { "10.0.0.3" },
                "healthCheckNodePort": 31000, "ports": ports, "selector": {"a": "b"}}})
        });
    let pvc = (proptest::option::of(prop_oneof![Just("standard"), Just("fast"), Just("gold")]), any::<bool>()).prop_map(|(class, bound)| {
        let mut p = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(c) = class {
            p["spec"]["storageClassName"] = json!(c);
        }
        if bound {
            p["spec"]["volumeName"] = json!("pvc-1");
            p["metadata"] = json!({"annotations": {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/selected-node": "n"}});
        }
        p
    });
    let workload = (prop_oneof![Just("Deployment"), Just("StatefulSet")], proptest::option::of(0i64..10)).prop_map(|(kind, replicas)| {
        let mut w = json!({"apiVersion": "apps/v1", "kind": kind, "spec": {"template": {"spec": {"containers": [container(Some("100m"), Some("1Mi"))]}}}});
        if let Some(r) = replicas {
            w["spec"]["replicas"] = json!(r);
        }
        w
    });
    let job = any::<bool>().prop_map(|suspend| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"suspend": suspend, "selector": {"matchLabels": {"controller-uid": "u"}},
            "template": {"metadata": {"labels": job_template_labels()}, "spec": {"containers": []}}}})
    });
    let pod = Just(
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"nodeName": "n1", "priority": 5, "priorityClassName": "gone", "containers": []}}),
    );
    let cm = Just(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}));
    let cronjob = any::<bool>().prop_map(|s| json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"suspend": s, "jobTemplate": {"spec": {}}}}));
    (
        prop_oneof![service, pvc, workload, job, pod, cm, cronjob],
        server_meta(),
        "[a-z]{1,8}",
    )
        .prop_map(|(mut o, meta, name)| {
            json_patch::merge(&mut o, &meta);
            json_patch::merge(
                &mut o,
                &json!({"metadata": {"name": name, "namespace": "shop"}}),
            );
            o
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn output_never_carries_forbidden_fields_and_a_second_pass_changes_only_provenance(
        objs in proptest::collection::vec(any_object(), 0..12),
        default_class in proptest::option::of(Just("standard".to_string())),
    ) {
        // Unique names per kind, as in a real namespace.
        let mut seen = BTreeSet::new();
        let objs: Vec<Value> = objs.into_iter().filter(|o| seen.insert((o["kind"].to_string(), o["metadata"]["name"].to_string()))).collect();
        let mut c = ctx();
        c.source_default_storage_class = default_class;
        let first = transform_namespace(objs.clone(), &c).unwrap();
        prop_assert_eq!(first.apply.len() + first.left_behind.len(), objs.len());
        for o in &first.apply {
            let bad = forbidden(o);
            prop_assert!(bad.is_empty(), "{:?} in {}", bad, o);
            prop_assert_eq!(object::label(o, labels::MIGRATION), Some("m-42"));
        }
        let mut c2 = c.clone();
        c2.migration_id = "m-43".into();
        c2.placement_commit = "fedcba".into();
        let second = transform_namespace(first.apply.clone(), &c2).unwrap();
        prop_assert!(second.left_behind.is_empty());
        prop_assert_eq!(without_provenance(second.apply.clone()), without_provenance(first.apply.clone()));
        prop_assert_eq!(&second.requirements, &first.requirements);
        for o in &second.apply {
            prop_assert_eq!(object::label(o, labels::MIGRATION), Some("m-43"));
        }
    }
}

#[test]
fn bare_pods_lose_volumes_of_left_behind_token_secrets() {
    let out = run(vec![
        served(
            "v1",
            "Secret",
            "builder-token-x7k2p",
            json!({
                "type": "kubernetes.io/service-account-token",
                "metadata": {"annotations": {"kubernetes.io/service-account.name": "builder"}}
            }),
        ),
        served(
            "v1",
            "Pod",
            "old",
            json!({"spec": {
                "containers": [{"name": "c", "image": "i", "volumeMounts": [
                    {"name": "builder-token-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                    {"name": "creds", "mountPath": "/creds"}
                ]}],
                "volumes": [
                    {"name": "builder-token-x7k2p", "secret": {"secretName": "builder-token-x7k2p"}},
                    {"name": "creds", "secret": {"secretName": "registry-creds"}}
                ]
            }}),
        ),
    ]);
    assert!(matches!(
        reason(&out, "Secret", "builder-token-x7k2p"),
        Some(Reason::AutoTokenSecret { .. })
    ));
    let s = &kept(&out, "Pod", "old")["spec"];
    assert_eq!(
        s["volumes"],
        json!([{"name": "creds", "secret": {"secretName": "registry-creds"}}])
    );
    assert_eq!(
        s["containers"][0]["volumeMounts"],
        json!([{"name": "creds", "mountPath": "/creds"}])
    );
}

#[test]
fn report_serializes_in_kubernetes_style_camel_case() {
    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}]}});
    let out = run(vec![served("apps/v1", "ReplicaSet", "web-1", owner)]);
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(
        v["leftBehind"][0],
        json!({"object": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "namespace": "shop", "name": "web-1"},
               "reason": {"reason": "controllerOwned", "ownerKind": "Deployment", "ownerName": "web"}})
    );
    assert_eq!(v["requirements"]["cpuMillis"], 0);
    assert_eq!(v["mergePatches"], json!([]));
    let back: LeftBehind = serde_json::from_value(v["leftBehind"][0].clone()).unwrap();
    assert_eq!(back, out.left_behind[0]);
}

#[test]
fn retention_marks_of_an_earlier_migration_do_not_travel() {
    let out = run(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "shop", "uid": "u",
            "labels": {"ferry.dev/retained": "true", "ferry.dev/migration": "m-1", "team": "a"},
            "annotations": {"ferry.dev/retain-until": "2026-12-01T00:00:00Z"}
        }}),
    ]);
    let ns = kept(&out, "Namespace", "shop");
    assert_eq!(object::label(ns, labels::RETAINED), None);
    assert_eq!(ann(ns, labels::RETAIN_UNTIL), None);
    assert_eq!(
        object::label(ns, labels::MIGRATION),
        Some("m-42"),
        "the new migration's id replaces the old"
    );
    assert_eq!(object::label(ns, "team"), Some("a"));
}
