//! `deploy/` is accepted by a real API server: rendered with the harness's
//! kubectl, applied server-side to `east`, and then checked object by object,
//! including what the agent's ServiceAccount may and may not do.
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Harness;

const NS: &str = "ferry-system";
const CTX: &str = "east";
const SA: &str = "system:serviceaccount:ferry-system:ferry-agent";

/// Deletes everything the test applied, also when an assertion fails.
struct Cleanup(&'static Harness);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Namespaced objects go with the namespace; it is the only cluster-scoped object.
        let _ = self.0.kubectl(CTX, &["delete", "namespace", NS, "--ignore-not-found", "--wait=false"]);
    }
}

/// An earlier crashed run may have left the fixed namespace behind, possibly
/// still terminating: delete it and wait until it is gone.
fn remove_leftovers(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let _ = h.kubectl(CTX, &["delete", "namespace", NS, "--ignore-not-found", "--wait=false"]);
    while h.kubectl(CTX, &["get", "namespace", NS]).status.success() {
        assert!(Instant::now() < deadline, "namespace {NS} from an earlier run did not go away");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).expect("rendered manifests are YAML").into_iter().filter(|v| !v.is_null()).collect()
}

fn kind_name(o: &Value) -> (String, String) {
    (o["kind"].as_str().unwrap().to_owned(), o["metadata"]["name"].as_str().unwrap().to_owned())
}

/// `kubectl auth can-i` as the agent's ServiceAccount.
fn can_i(h: &Harness, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--as", SA]);
    let out = h.kubectl(CTX, &full);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // "no" may be followed by the authorizer's reason.
    assert!(answer == "yes" || answer.starts_with("no"), "can-i {args:?}: {answer} {}", String::from_utf8_lossy(&out.stderr));
    answer == "yes"
}

#[test]
fn deploy_manifests_are_accepted_by_a_real_api_server() {
    let h = support::harness();
    remove_leftovers(h);
    let _cleanup = Cleanup(h);
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rendered = h.kubectl_ok(CTX, &["kustomize", deploy.to_str().unwrap()]);
    let objs = objects(&rendered);

    // Shape of what is rendered, before anything is sent.
    let kinds: Vec<String> = objs.iter().map(|o| kind_name(o).0).collect();
    for k in ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(kinds.iter().any(|x| x == k), "deploy/ renders no {k}: {kinds:?}");
    }
    for k in ["ClusterRole", "ClusterRoleBinding", "Secret"] {
        assert!(!kinds.iter().any(|x| x == k), "deploy/ must not render a {k} (least privilege / no credentials in the base)");
    }
    for o in &objs {
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], NS, "{:?} is not in {NS}", kind_name(o));
        }
    }
    let role = objs.iter().find(|o| o["kind"] == "Role").unwrap();
    for rule in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!rule[field].as_array().unwrap().iter().any(|v| v == "*"), "wildcard in Role rule {rule}");
        }
        if rule["resources"].as_array().unwrap().iter().any(|r| r == "secrets") {
            assert!(rule["resourceNames"].is_array(), "Secrets must be granted by name: {rule}");
        }
    }

    // The agent config shipped in the ConfigMap parses into the code's webhook config type.
    let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let agent: Value = serde_saphyr::from_str(cm["data"]["agent.yaml"].as_str().unwrap()).expect("agent.yaml is YAML");
    let webhooks: ferry::webhook::WebhookSpec = serde_json::from_value(agent["webhooks"].clone()).expect("webhooks section matches WebhookSpec");
    assert!(!webhooks.receivers.is_empty());

    // Apply for real: the example Secrets first (the Deployment mounts them), then the kustomization.
    let rendered_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rendered_file.path(), &rendered).unwrap();
    h.kubectl_ok(CTX, &["apply", "--server-side", "--field-manager", "ferry-deploy-test", "-f", rendered_file.path().to_str().unwrap()]);
    let secrets = deploy.join("examples/secrets.yaml");
    h.kubectl_ok(CTX, &["apply", "--server-side", "--field-manager", "ferry-deploy-test", "-f", secrets.to_str().unwrap()]);

    // Every rendered object exists, as the server stored it.
    for o in &objs {
        let (kind, name) = kind_name(o);
        let stored: Value = serde_json::from_str(&h.kubectl_ok(CTX, &["get", &kind, &name, "-n", NS, "-o", "json"])).unwrap();
        assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/name"], "ferry", "{kind}/{name} lacks the common labels");
    }

    let dep: Value = serde_json::from_str(&h.kubectl_ok(CTX, &["get", "deployment", "ferry-agent", "-n", NS, "-o", "json"])).unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "ferry-agent");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    let command: Vec<&str> = c["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(&command[..4], ["ferry", "agent", "--config", "/etc/ferry/agent.yaml"]);
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["emptyDir"].is_object() && v["name"] == "git-cache"));
    // Every Secret the pod mounts exists (created from the examples) and the Role grants it by name.
    let granted: Vec<&Value> = role["rules"].as_array().unwrap().iter().filter_map(|r| r["resourceNames"].as_array()).flatten().collect();
    let mut mounted = 0;
    for v in volumes.iter().filter_map(|v| v["secret"]["secretName"].as_str()) {
        h.kubectl_ok(CTX, &["get", "secret", v, "-n", NS]);
        assert!(granted.iter().any(|g| *g == v), "Role does not grant Secret {v}");
        mounted += 1;
    }
    assert_eq!(mounted, 3, "member kubeconfigs, git credentials and webhook secrets");
    let svc: Value = serde_json::from_str(&h.kubectl_ok(CTX, &["get", "service", "ferry-agent", "-n", NS, "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["selector"], dep["spec"]["selector"]["matchLabels"], "the Service selects the agent pods");

    // The pod template passes the namespace's `restricted` Pod Security level:
    // the ReplicaSet controller can create both pods.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods: Value = serde_json::from_str(&h.kubectl_ok(
            CTX,
            &["get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=ferry,app.kubernetes.io/component=agent", "-o", "json"],
        ))
        .unwrap();
        if pods["items"].as_array().unwrap().len() == 2 {
            break;
        }
        if Instant::now() > deadline {
            let events = h.kubectl_ok(CTX, &["get", "events", "-n", NS]);
            panic!("the Deployment did not get 2 pods within 90 s; events:\n{events}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Least privilege, as the API server's authorizer sees it.
    assert!(can_i(h, &["get", "secrets/ferry-git-credentials", "-n", NS]));
    assert!(can_i(h, &["get", "configmaps/ferry-agent-config", "-n", NS]));
    assert!(can_i(h, &["create", "leases.coordination.k8s.io", "-n", NS]));
    assert!(can_i(h, &["update", "leases.coordination.k8s.io/ferry-agent-leader", "-n", NS]));
    assert!(can_i(h, &["create", "events", "-n", NS]));
    assert!(!can_i(h, &["list", "secrets", "-n", NS]), "listing all Secrets is not needed");
    assert!(!can_i(h, &["get", "secrets/some-other-secret", "-n", NS]));
    assert!(!can_i(h, &["update", "leases.coordination.k8s.io/other-lease", "-n", NS]));
    assert!(!can_i(h, &["get", "secrets", "-n", "default"]));
    assert!(!can_i(h, &["create", "namespaces"]));
    assert!(!can_i(h, &["create", "deployments.apps", "-n", NS]));
    assert!(!can_i(h, &["get", "nodes"]));
}
