//! The transform run over the real workload manifests in `shared/fixtures/workloads`,
//! each directory exported as one namespace. The test plays the API server: it
//! adds what a real one adds on create (uids, managedFields, last-applied,
//! cluster IPs, allocated node ports, status, bound claims) and the objects its
//! controllers create (ReplicaSets, Pods, claims of claim templates, Endpoints,
//! EndpointSlices, Events, finished Jobs of CronJobs). Then it checks that what
//! would be applied is exactly the manifests, rewritten per the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferry::labels;
use ferry::transform::order::APPLY_ORDER;
use ferry::transform::rewrite::{PVC_BIND_ANNOTATIONS, STRIPPED_METADATA};
use ferry::transform::{
    Reason, TransformContext, TransformOutput, VolumeMode, transform_namespace,
};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/workloads");

fn load_dir(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

/// Plays the API server and controllers of a source cluster for one namespace.
struct Sim {
    ns: String,
    next: u32,
    out: Vec<Value>,
}

const DEFAULT_CLASS: &str = "standard";

impl Sim {
    fn uid(&mut self) -> String {
        self.next += 1;
        format!("00000000-0000-4000-8000-{:012}", self.next)
    }

    /// Metadata every stored object gets; `applied` adds what `kubectl apply` leaves.
    fn store(&mut self, mut o: Value, applied: Option<&Value>) -> Value {
        let uid = self.uid();
        let n = self.next;
        let api_version = o["apiVersion"].clone();
        let meta = o["metadata"].as_object_mut().unwrap();
        meta.insert("namespace".into(), json!(self.ns));
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(format!("{}", 1000 + n)));
        meta.insert("creationTimestamp".into(), json!("2026-11-01T10:00:00Z"));
        let mut fields = serde_json::Map::new();
        if let Some(src) = applied {
            let mut ann = src
                .pointer("/metadata/annotations")
                .cloned()
                .unwrap_or(json!({}));
            ann["kubectl.kubernetes.io/last-applied-configuration"] = json!(src.to_string());
            meta.insert("annotations".into(), ann);
            // Ownership of what the manifest set; for Service ports keyed like the API does.
            if let Some(ports) = src.pointer("/spec/ports").and_then(Value::as_array) {
                let mut fp = serde_json::Map::new();
                for p in ports {
                    let key = json!({"port": p["port"], "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))});
                    let mut owned = json!({".": {}, "f:port": {}});
                    if p.get("nodePort").is_some() {
                        owned["f:nodePort"] = json!({});
                    }
                    fp.insert(format!("k:{key}"), owned);
                }
                fields.insert("f:spec".into(), json!({"f:ports": fp}));
            }
        }
        meta.insert(
            "managedFields".into(),
            json!([{"manager": if applied.is_some() { "kubectl-client-side-apply" } else { "kube-controller-manager" },
                    "operation": "Update", "apiVersion": api_version, "time": "2026-11-01T10:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": fields}]),
        );
        o
    }

    fn owner(kind: &str, name: &str, uid: &str) -> Value {
        let api = if kind == "CronJob" || kind == "Job" {
            "batch/v1"
        } else {
            "apps/v1"
        };
        json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
    }

    fn pod(&mut self, name: &str, template: &Value, owner: Value, phase: &str) {
        let mut spec = template["spec"].clone();
        spec["nodeName"] = json!("node-1");
        spec["serviceAccountName"] = json!("default");
        if let Some(v) = spec["volumes"].as_array_mut() {
            v.push(json!({"name": "kube-api-access-7x2pk", "projected": {}}));
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"].clone(), "ownerReferences": owner},
            "spec": spec, "status": {"phase": phase, "podIP": "10.244.0.9"}});
        let pod = self.store(pod, None);
        self.out.push(pod);
        self.event(name);
    }

    fn event(&mut self, about: &str) {
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": format!("{about}.18a2b3c4")},
            "involvedObject": {"name": about}, "reason": "Scheduled"});
        let ev = self.store(ev, None);
        self.out.push(ev);
    }

    fn claim(&mut self, name: &str, spec: &Value, labels: Value, owner: Option<Value>) {
        let mut spec = spec.clone();
        if spec.get("storageClassName").is_none() {
            // DefaultStorageClass admission fills the class in.
            spec["storageClassName"] = json!(DEFAULT_CLASS);
        }
        spec["volumeName"] = json!(format!("pvc-{}", self.next + 1));
        spec["volumeMode"] = json!("Filesystem");
        let mut meta = json!({"name": name, "labels": labels, "annotations": {
            "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": "ferry.dev/hostpath",
            "volume.kubernetes.io/storage-provisioner": "ferry.dev/hostpath",
            "volume.kubernetes.io/selected-node": "node-1"}, "finalizers": ["kubernetes.io/pvc-protection"]});
        if let Some(o) = owner {
            meta["ownerReferences"] = o;
        }
        let c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec,
            "status": {"phase": "Bound", "capacity": spec["resources"]["requests"].clone()}});
        let c = self.store(c, None);
        self.out.push(c);
    }

    fn add(&mut self, manifest: &Value) {
        let kind = manifest["kind"].as_str().unwrap().to_owned();
        let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
        let mut o = manifest.clone();
        match kind.as_str() {
            "Secret" => {
                if let Some(sd) = o.as_object_mut().unwrap().remove("stringData") {
                    let data: serde_json::Map<String, Value> = sd
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                json!(
                                    base64::engine::general_purpose::STANDARD
                                        .encode(v.as_str().unwrap())
                                ),
                            )
                        })
                        .collect();
                    o["data"] = Value::Object(data);
                }
            }
            "Service" => {
                let ty = o["spec"]
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_owned();
                o["spec"]["type"] = json!(ty);
                if o["spec"].get("clusterIP").is_none() {
                    let ip = format!("10.96.0.{}", self.next + 10);
                    o["spec"]["clusterIP"] = json!(ip);
                }
                o["spec"]["clusterIPs"] = json!([o["spec"]["clusterIP"]]);
                o["spec"]["ipFamilies"] = json!(["IPv4"]);
                o["spec"]["ipFamilyPolicy"] = json!("SingleStack");
                o["spec"]["sessionAffinity"] = json!("None");
                let alloc = self.next;
                for (i, p) in o["spec"]["ports"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .enumerate()
                {
                    p["protocol"] = json!("TCP");
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p["port"].clone();
                    }
                    if ty != "ClusterIP" && p.get("nodePort").is_none() {
                        p["nodePort"] = json!(30000 + alloc * 10 + i as u32);
                    }
                }
                if ty == "LoadBalancer" {
                    o["spec"]["externalTrafficPolicy"] = json!("Cluster");
                    o["spec"]["allocateLoadBalancerNodePorts"] = json!(true);
                    o["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}});
                } else {
                    o["status"] = json!({"loadBalancer": {}});
                }
                if o["spec"].get("selector").is_some() {
                    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name,
                        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-01T10:00:01Z"}},
                        "subsets": [{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 1}]}]});
                    let ep = self.store(ep, None);
                    self.out.push(ep);
                    let svc_uid = format!("00000000-0000-4000-8000-{:012}", self.next + 2);
                    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("{name}-x8k2p"), "labels": {"kubernetes.io/service-name": name,
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc_uid, "controller": true}]},
                        "addressType": "IPv4", "endpoints": []});
                    let slice = self.store(slice, None);
                    self.out.push(slice);
                }
            }
            "Deployment" => {
                o["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
                o["metadata"]["generation"] = json!(1);
                o["spec"]["revisionHistoryLimit"] = json!(10);
                o["spec"]["progressDeadlineSeconds"] = json!(600);
                let replicas = o["spec"]
                    .get("replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                o["spec"]["replicas"] = json!(replicas);
                o["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1});
            }
            "StatefulSet" => {
                o["metadata"]["generation"] = json!(1);
                o["spec"]["podManagementPolicy"] = o["spec"]
                    .get("podManagementPolicy")
                    .cloned()
                    .unwrap_or(json!("OrderedReady"));
                for t in o["spec"]["volumeClaimTemplates"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    t["apiVersion"] = json!("v1");
                    t["kind"] = json!("PersistentVolumeClaim");
                    t["spec"]["volumeMode"] = json!("Filesystem");
                    t["status"] = json!({"phase": "Pending"});
                }
                let replicas = o["spec"]
                    .get("replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                o["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "currentRevision": format!("{name}-7c9d")});
            }
            "CronJob" => {
                // The API server serves CronJobs at batch/v1 only.
                o["apiVersion"] = json!("batch/v1");
                o["spec"]["suspend"] = json!(false);
                o["status"] = json!({"lastScheduleTime": "2026-11-01T10:05:00Z"});
            }
            "PodDisruptionBudget" => {
                o["status"] = json!({"currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3});
            }
            _ => {}
        }
        let stored = self.store(o, Some(manifest));
        let uid = stored["metadata"]["uid"].as_str().unwrap().to_owned();
        self.out.push(stored.clone());
        // The controllers' work.
        match kind.as_str() {
            "Deployment" => {
                let rs_name = format!("{name}-5d4f8b7c6");
                let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "ownerReferences": Self::owner("Deployment", &name, &uid)},
                    "spec": {"replicas": stored["spec"]["replicas"], "template": stored["spec"]["template"]}});
                rs = self.store(rs, None);
                let rs_uid = rs["metadata"]["uid"].as_str().unwrap().to_owned();
                self.out.push(rs);
                for i in 0..stored["spec"]["replicas"].as_i64().unwrap() {
                    self.pod(
                        &format!("{rs_name}-p{i}"),
                        &stored["spec"]["template"],
                        Self::owner("ReplicaSet", &rs_name, &rs_uid),
                        "Running",
                    );
                }
            }
            "StatefulSet" => {
                let replicas = stored["spec"]["replicas"].as_i64().unwrap_or(1);
                for i in 0..replicas {
                    self.pod(
                        &format!("{name}-{i}"),
                        &stored["spec"]["template"],
                        Self::owner("StatefulSet", &name, &uid),
                        "Running",
                    );
                    for t in manifest["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let tmpl = t["metadata"]["name"].as_str().unwrap();
                        // The first claim carries an owner (whenDeleted: Delete retention); it must be kept anyway.
                        let owner = (i == 0).then(|| Self::owner("StatefulSet", &name, &uid));
                        self.claim(
                            &format!("{tmpl}-{name}-{i}"),
                            &t["spec"],
                            manifest["spec"]["selector"]["matchLabels"].clone(),
                            owner,
                        );
                    }
                }
                let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": format!("{name}-7c9d"), "ownerReferences": Self::owner("StatefulSet", &name, &uid)}, "revision": 1});
                let rev = self.store(rev, None);
                self.out.push(rev);
            }
            "CronJob" => {
                let job_name = format!("{name}-29384756");
                let tmpl = &stored["spec"]["jobTemplate"]["spec"]["template"];
                let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": job_name, "ownerReferences": Self::owner("CronJob", &name, &uid)},
                    "spec": {"template": tmpl}, "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
                let job = self.store(job, None);
                let job_uid = job["metadata"]["uid"].as_str().unwrap().to_owned();
                self.out.push(job);
                self.pod(
                    &format!("{job_name}-q7w2x"),
                    tmpl,
                    Self::owner("Job", &job_name, &job_uid),
                    "Succeeded",
                );
            }
            "PersistentVolumeClaim" => {
                // Replace the stored claim by its bound form, keeping last-applied and managedFields.
                let mut bound = self.out.pop().unwrap();
                if bound["spec"].get("storageClassName").is_none() {
                    bound["spec"]["storageClassName"] = json!(DEFAULT_CLASS);
                }
                bound["spec"]["volumeName"] = json!("pvc-abc");
                bound["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
                bound["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] =
                    json!("node-1");
                bound["status"] = json!({"phase": "Bound"});
                self.out.push(bound);
            }
            _ => {}
        }
    }

    /// What every namespace has without anyone asking.
    fn namespace_defaults(&mut self) {
        for o in [
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}}),
        ] {
            let o = self.store(o, None);
            self.out.push(o);
        }
    }
}

fn ctx(ns: &str) -> TransformContext {
    TransformContext {
        migration_id: format!("mig-{ns}"),
        source_cluster: "east".into(),
        dest_cluster: "west".into(),
        placement_commit: "3f786850e387550fdab836ed7e6dc881de23001b".into(),
        storage_class_map: BTreeMap::from([
            ("standard".into(), "west-standard".into()),
            ("fast".into(), "west-fast".into()),
        ]),
        source_default_storage_class: Some(DEFAULT_CLASS.into()),
        dest_priority_classes: BTreeSet::new(),
        keep_load_balancer_ips: false,
        rename: None,
        volume_mode: VolumeMode::Copy,
    }
}

fn is_namespaced(doc: &Value) -> bool {
    !matches!(
        doc["kind"].as_str(),
        Some("StorageClass" | "PersistentVolume" | "ClusterRole" | "ClusterRoleBinding")
    )
}

struct Case {
    ns: String,
    manifests: Vec<Value>,
    export: Vec<Value>,
    out: TransformOutput,
}

fn run(dir: &str) -> Case {
    let path = Path::new(FIXTURES).join(dir);
    let manifests: Vec<Value> = load_dir(&path).into_iter().filter(is_namespaced).collect();
    assert!(!manifests.is_empty(), "no manifests in {}", path.display());
    let mut sim = Sim {
        ns: dir.to_owned(),
        next: 0,
        out: Vec::new(),
    };
    sim.namespace_defaults();
    for m in &manifests {
        sim.add(m);
    }
    let export = sim.out;
    let out =
        transform_namespace(export.clone(), &ctx(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    Case {
        ns: dir.to_owned(),
        manifests,
        export,
        out,
    }
}

fn find<'a>(out: &'a TransformOutput, kind: &str, name: &str) -> &'a Value {
    out.apply
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing from apply"))
}

fn rank(o: &Value) -> usize {
    let api = o["apiVersion"].as_str().unwrap();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    APPLY_ORDER
        .iter()
        .position(|(g, k)| *g == group && o["kind"] == *k)
        .unwrap_or(APPLY_ORDER.len())
}

/// Checks shared by every fixture; returns the kept objects that are not manifests (claims of templates).
fn check_common(c: &Case) -> Vec<&Value> {
    let ns = &c.ns;
    assert_eq!(
        c.out.apply.len() + c.out.left_behind.len(),
        c.export.len(),
        "{ns}: every object accounted for"
    );
    // Every manifest is applied exactly once.
    for m in &c.manifests {
        let n = c
            .out
            .apply
            .iter()
            .filter(|o| o["kind"] == m["kind"] && o["metadata"]["name"] == m["metadata"]["name"])
            .count();
        assert_eq!(
            n, 1,
            "{ns}: {} {} applied {n} times",
            m["kind"], m["metadata"]["name"]
        );
    }
    for o in &c.out.apply {
        let what = format!("{ns}: {} {}", o["kind"], o["metadata"]["name"]);
        for f in STRIPPED_METADATA {
            assert!(o["metadata"].get(*f).is_none(), "{what}: {f}");
        }
        assert!(o.get("status").is_none(), "{what}: status");
        assert!(
            o.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
                .is_none(),
            "{what}"
        );
        assert_eq!(o["metadata"]["namespace"], json!(ns), "{what}");
        assert_eq!(
            o["metadata"]["labels"][labels::MIGRATION],
            json!(format!("mig-{ns}")),
            "{what}"
        );
        assert_eq!(
            o["metadata"]["labels"][labels::SOURCE_CLUSTER],
            "east",
            "{what}"
        );
        assert_eq!(
            o["metadata"]["annotations"][labels::PLACEMENT_COMMIT],
            "3f786850e387550fdab836ed7e6dc881de23001b",
            "{what}"
        );
    }
    let ranks: Vec<usize> = c.out.apply.iter().map(rank).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "{ns}: apply order {ranks:?}"
    );
    // What the controllers and the API server made is left behind, with the right reason.
    for l in &c.out.left_behind {
        let expected = match l.object.kind.as_str() {
            "Event" => matches!(l.reason, Reason::Event),
            "ReplicaSet" | "ControllerRevision" => {
                matches!(l.reason, Reason::ControllerOwned { .. })
            }
            "Pod" => matches!(l.reason, Reason::ControllerOwned { .. }),
            "Endpoints" => matches!(l.reason, Reason::ManagedEndpoints { .. }),
            "EndpointSlice" => matches!(l.reason, Reason::ManagedEndpointSlice { .. }),
            "ConfigMap" => l.reason == Reason::KubeRootCa,
            "ServiceAccount" => l.reason == Reason::DefaultServiceAccountMerged,
            "Job" => matches!(l.reason, Reason::JobOfCronJob { .. }),
            _ => false,
        };
        assert!(expected, "{ns}: unexpected left behind {:?}", l);
    }
    assert!(
        c.out.merge_patches.is_empty(),
        "{ns}: the default SA had nothing a person set"
    );
    c.out
        .apply
        .iter()
        .filter(|o| {
            !c.manifests
                .iter()
                .any(|m| m["kind"] == o["kind"] && m["metadata"]["name"] == o["metadata"]["name"])
        })
        .collect()
}

fn check_claims(c: &Case, extra: &[&Value], expected: &[(&str, &str, &str)]) {
    let names: BTreeSet<&str> = extra
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = expected.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        names, want,
        "{}: only claims of templates are kept besides the manifests",
        c.ns
    );
    for (name, class, size) in expected {
        let p = find(&c.out, "PersistentVolumeClaim", name);
        assert_eq!(p["spec"]["storageClassName"], *class, "{name}");
        assert_eq!(
            p["spec"]["resources"]["requests"]["storage"], *size,
            "{name}"
        );
        assert!(p["spec"].get("volumeName").is_none(), "{name}");
        for a in PVC_BIND_ANNOTATIONS {
            assert!(
                p["metadata"]["annotations"].get(*a).is_none(),
                "{name}: {a}"
            );
        }
        assert_eq!(
            p["metadata"]["finalizers"],
            json!(["kubernetes.io/pvc-protection"])
        );
    }
}

fn check_workload(c: &Case, kind: &str, name: &str, replicas: &str) {
    let o = find(&c.out, kind, name);
    let m = c
        .manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap();
    assert_eq!(o["spec"]["replicas"], 0, "{name}");
    assert_eq!(
        o["metadata"]["annotations"][labels::ORIGINAL_REPLICAS],
        replicas,
        "{name}"
    );
    assert_eq!(
        o["spec"]["template"], m["spec"]["template"],
        "{name}: the pod template is the manifest's"
    );
    assert_eq!(o["spec"]["selector"], m["spec"]["selector"], "{name}");
    assert!(
        o["metadata"]["annotations"]
            .get("deployment.kubernetes.io/revision")
            .is_none()
    );
}

const MI: i128 = 1 << 20;
const GI: i128 = 1 << 30;

#[test]
fn guestbook() {
    let c = run("guestbook");
    assert!(check_common(&c).is_empty());
    for (d, n) in [
        ("frontend", "3"),
        ("redis-master", "1"),
        ("redis-replica", "2"),
    ] {
        check_workload(&c, "Deployment", d, n);
    }
    let fe = &find(&c.out, "Service", "frontend")["spec"];
    assert_eq!(fe["type"], "NodePort");
    assert!(fe.get("clusterIP").is_none() && fe.get("clusterIPs").is_none());
    assert!(
        fe["ports"][0].get("nodePort").is_none(),
        "allocated node port dropped: {fe}"
    );
    assert_eq!(fe["ports"][0]["port"], 80);
    let reasons: Vec<_> = c
        .out
        .left_behind
        .iter()
        .filter(|l| l.object.kind == "Pod")
        .collect();
    assert_eq!(reasons.len(), 6, "3 + 1 + 2 pods");
    let r = &c.out.requirements;
    assert_eq!(r.cpu_millis, 6 * 100);
    assert_eq!(r.memory_bytes, 6 * 100 * MI);
    assert!(r.node_ports.is_empty());
    assert!(r.storage_classes.is_empty() && r.storage_bytes.is_empty());
}

#[test]
fn guestbook_with_a_node_port_a_person_chose() {
    let path = Path::new(FIXTURES).join("guestbook/frontend-service.yaml");
    let mut svc = load_dir(path.parent().unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "frontend")
        .unwrap();
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    let mut sim = Sim {
        ns: "gb".into(),
        next: 0,
        out: Vec::new(),
    };
    sim.add(&svc);
    let out = transform_namespace(sim.out, &ctx("gb")).unwrap();
    let fe = find(&out, "Service", "frontend");
    assert_eq!(fe["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(out.requirements.node_ports.len(), 1);
    assert_eq!(out.requirements.node_ports[0].node_port, 30080);
    assert_eq!(out.requirements.node_ports[0].service, "frontend");
}

#[test]
fn cassandra() {
    let c = run("cassandra");
    let extra = check_common(&c);
    check_claims(
        &c,
        &extra,
        &[
            ("cassandra-data-cassandra-0", "west-fast", "1Gi"),
            ("cassandra-data-cassandra-1", "west-fast", "1Gi"),
            ("cassandra-data-cassandra-2", "west-fast", "1Gi"),
        ],
    );
    check_workload(&c, "StatefulSet", "cassandra", "3");
    let sts = find(&c.out, "StatefulSet", "cassandra");
    let t = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(t["metadata"]["name"], "cassandra-data");
    assert_eq!(t["spec"]["storageClassName"], "west-fast");
    assert!(t.get("status").is_none());
    assert_eq!(
        find(&c.out, "Service", "cassandra")["spec"]["clusterIP"],
        "None"
    );
    let r = &c.out.requirements;
    assert_eq!(r.cpu_millis, 3 * 500);
    assert_eq!(r.memory_bytes, 3 * GI);
    assert_eq!(r.storage_classes, BTreeSet::from(["west-fast".to_string()]));
    assert_eq!(
        r.storage_bytes,
        BTreeMap::from([("west-fast".to_string(), 3 * GI)]),
        "claims exist: templates add nothing"
    );
}

#[test]
fn mysql_statefulset() {
    let c = run("mysql-statefulset");
    let extra = check_common(&c);
    check_claims(
        &c,
        &extra,
        &[
            ("data-mysql-0", "west-standard", "10Gi"),
            ("data-mysql-1", "west-standard", "10Gi"),
            ("data-mysql-2", "west-standard", "10Gi"),
        ],
    );
    check_workload(&c, "StatefulSet", "mysql", "3");
    let t = &find(&c.out, "StatefulSet", "mysql")["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        t["spec"]["storageClassName"], "west-standard",
        "no class: the source default, mapped"
    );
    assert_eq!(
        find(&c.out, "ConfigMap", "mysql")["data"],
        c.manifests
            .iter()
            .find(|m| m["kind"] == "ConfigMap")
            .unwrap()["data"]
    );
    assert_eq!(
        find(&c.out, "Service", "mysql")["spec"]["clusterIP"],
        "None"
    );
    assert!(
        find(&c.out, "Service", "mysql-read")["spec"]
            .get("clusterIP")
            .is_none()
    );
    let r = &c.out.requirements;
    // Init containers request nothing; mysql 500m/1Gi + xtrabackup 100m/100Mi per pod.
    assert_eq!(r.cpu_millis, 3 * 600);
    assert_eq!(r.memory_bytes, 3 * (GI + 100 * MI));
    assert_eq!(
        r.storage_bytes,
        BTreeMap::from([("west-standard".to_string(), 30 * GI)])
    );
}

#[test]
fn web_statefulset() {
    let c = run("web-statefulset");
    let extra = check_common(&c);
    check_claims(
        &c,
        &extra,
        &[
            ("www-web-0", "west-standard", "1Gi"),
            ("www-web-1", "west-standard", "1Gi"),
        ],
    );
    check_workload(&c, "StatefulSet", "web", "2");
    assert_eq!(
        c.out.requirements.cpu_millis, 0,
        "no requests in the manifest"
    );
    assert_eq!(
        c.out.requirements.storage_bytes,
        BTreeMap::from([("west-standard".to_string(), 2 * GI)])
    );
}

#[test]
fn zookeeper() {
    let c = run("zookeeper");
    let extra = check_common(&c);
    check_claims(
        &c,
        &extra,
        &[
            ("datadir-zk-0", "west-standard", "10Gi"),
            ("datadir-zk-1", "west-standard", "10Gi"),
            ("datadir-zk-2", "west-standard", "10Gi"),
        ],
    );
    check_workload(&c, "StatefulSet", "zk", "3");
    let pdb = find(&c.out, "PodDisruptionBudget", "zk-pdb");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(c.out.requirements.cpu_millis, 3 * 500, "cpu: \"0.5\"");
    assert_eq!(c.out.requirements.memory_bytes, 3 * GI);
    // The PDB (policy group, not in the fixed order) comes after the Services.
    let pos = |k: &str| c.out.apply.iter().position(|o| o["kind"] == k).unwrap();
    assert!(
        pos("PersistentVolumeClaim") < pos("Service")
            && pos("Service") < pos("PodDisruptionBudget")
    );
}

#[test]
fn wordpress() {
    let c = run("wordpress");
    assert!(check_common(&c).is_empty());
    check_workload(&c, "Deployment", "wordpress", "1");
    check_workload(&c, "Deployment", "wordpress-mysql", "1");
    check_claims(&c, &[], &[]);
    for claim in ["mysql-pv-claim", "wp-pv-claim"] {
        let p = find(&c.out, "PersistentVolumeClaim", claim);
        assert_eq!(p["spec"]["storageClassName"], "west-standard");
        assert!(p["spec"].get("volumeName").is_none());
        assert!(
            p["metadata"]
                .get("annotations")
                .is_none_or(|a| a.get("pv.kubernetes.io/bind-completed").is_none())
        );
    }
    let secret = find(&c.out, "Secret", "mysql-pass");
    assert_eq!(
        secret["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode("change-me-wordpress")
    );
    let lb = &find(&c.out, "Service", "wordpress")["spec"];
    assert_eq!(lb["type"], "LoadBalancer");
    assert!(lb["ports"][0].get("nodePort").is_none());
    assert!(lb.get("clusterIP").is_none());
    assert_eq!(
        c.out.requirements.storage_bytes,
        BTreeMap::from([("west-standard".to_string(), 40 * GI)])
    );
    // Secrets and claims are applied before the Deployments that mount them.
    let pos = |k: &str| c.out.apply.iter().position(|o| o["kind"] == k).unwrap();
    assert!(pos("PersistentVolumeClaim") < pos("Secret") && pos("Secret") < pos("Deployment"));
}

#[test]
fn cronjob_legacy() {
    let c = run("cronjob-legacy");
    assert!(check_common(&c).is_empty());
    let cj = find(&c.out, "CronJob", "hello");
    assert_eq!(cj["apiVersion"], "batch/v1");
    assert_eq!(cj["spec"]["suspend"], true);
    assert_eq!(
        cj["metadata"]["annotations"][labels::ORIGINAL_SUSPEND],
        "false"
    );
    assert_eq!(cj["spec"]["schedule"], "* * * * *");
    assert!(c.out.left_behind.iter().any(|l| l.object.kind == "Job"
        && l.reason
            == Reason::JobOfCronJob {
                cronjob: "hello".into()
            }));
    assert!(c.out.left_behind.iter().any(|l| l.object.kind == "Pod"
        && matches!(&l.reason, Reason::ControllerOwned { owner_kind, .. } if owner_kind == "Job")));
    assert_eq!(c.out.requirements.cpu_millis, 0);
}

#[test]
fn every_fixture_directory_is_covered() {
    let mut dirs: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "cassandra",
            "cronjob-legacy",
            "guestbook",
            "mysql-statefulset",
            "web-statefulset",
            "wordpress",
            "zookeeper"
        ]
    );
}

#[test]
fn clone_under_a_new_name_moves_every_object() {
    let c = run("guestbook");
    let mut cx = ctx("guestbook");
    cx.rename = Some(("guestbook".into(), "guestbook-b".into()));
    let out = transform_namespace(c.export, &cx).unwrap();
    assert_eq!(out.apply.len(), c.out.apply.len());
    assert!(
        out.apply
            .iter()
            .all(|o| o["metadata"]["namespace"] == "guestbook-b")
    );
}

#[test]
fn transforming_the_output_again_changes_only_provenance() {
    for dir in [
        "guestbook",
        "cassandra",
        "mysql-statefulset",
        "wordpress",
        "zookeeper",
        "web-statefulset",
        "cronjob-legacy",
    ] {
        let c = run(dir);
        let mut cx = ctx(dir);
        cx.migration_id = "second".into();
        let again = transform_namespace(c.out.apply.clone(), &cx).unwrap();
        assert!(again.left_behind.is_empty(), "{dir}");
        assert_eq!(again.requirements, c.out.requirements, "{dir}");
        for (a, b) in again.apply.iter().zip(&c.out.apply) {
            let mut b = b.clone();
            b["metadata"]["labels"][labels::MIGRATION] = json!("second");
            assert_eq!(a, &b, "{dir}");
        }
    }
}
