//! The example repository's overlays applied to the real workload fixtures,
//! through the same API the migration pipeline's transform stage uses.
use std::path::Path;

use ferry::model::{RepoFiles, load_valid};
use ferry::overlay::apply_overlays;
use serde_json::Value;

const FIXTURES: &str = "/work/shared/fixtures/workloads";

fn desired() -> ferry::model::Desired {
    load_valid(&RepoFiles::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/placement-repo")).unwrap()).unwrap()
}

fn fixture(dir: &str) -> Vec<Value> {
    let mut objects = ferry::model::cli::read_objects(Path::new(FIXTURES)).unwrap();
    objects.remove(dir).unwrap_or_else(|| panic!("no fixture {dir}"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn wordpress_gets_destination_specific_env_label_and_ingress() {
    let d = desired();
    let ctx = d.overlay_context("wordpress", Some("west")).unwrap();
    let input = fixture("wordpress");
    let n = input.len();
    let out = apply_overlays(&d.overlays["wordpress"], &ctx, input).unwrap();
    assert_eq!(out.len(), n + 1, "the Ingress is added");
    let wp = find(&out, "Deployment", "wordpress");
    assert_eq!(wp["metadata"]["labels"]["topology.example.com/region"], "us-east");
    let containers = wp["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "merged by name, not appended");
    let env = containers[0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "WORDPRESS_DB_HOST"), "existing env kept");
    let extra = env.iter().find(|e| e["name"] == "WORDPRESS_CONFIG_EXTRA").unwrap();
    assert_eq!(extra["value"], "define('WP_HOME', 'https://blog.east.apps.example.com');");
    let ing = find(&out, "Ingress", "wordpress");
    assert_eq!(ing["metadata"]["namespace"], "wordpress");
    assert_eq!(ing["spec"]["rules"][0]["host"], "blog.east.apps.example.com");
    assert_eq!(ing["metadata"]["annotations"]["ferry.example.com/placed-from"], "west");
}

#[test]
fn web_replicas_depend_on_destination_cluster() {
    let d = desired();
    let ctx = d.overlay_context("web", Some("west")).unwrap();
    let out = apply_overlays(&d.overlays["web"], &ctx, fixture("web-statefulset")).unwrap();
    let sts = find(&out, "StatefulSet", "web");
    assert_eq!(sts["spec"]["replicas"], 3, "east runs 3");
    assert_eq!(sts["spec"]["template"]["metadata"]["labels"]["placed-on"], "east");
    let cm = find(&out, "ConfigMap", "cluster-info");
    assert_eq!(cm["data"]["dnsZone"], "east.example.com");
    assert_eq!(cm["data"]["namespace"], "web");
}

#[test]
fn cassandra_seeds_point_at_the_namespace() {
    let d = desired();
    let ctx = d.overlay_context("cassandra", Some("west")).unwrap();
    let out = apply_overlays(&d.overlays["cassandra"], &ctx, fixture("cassandra")).unwrap();
    let env = find(&out, "StatefulSet", "cassandra")["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    let seeds = env.iter().find(|e| e["name"] == "CASSANDRA_SEEDS").unwrap();
    assert_eq!(seeds["value"], "cassandra-0.cassandra.cassandra.svc.cluster.local");
    assert_eq!(env.iter().filter(|e| e["name"] == "CASSANDRA_SEEDS").count(), 1, "replaced, not duplicated");
}

#[test]
fn overlay_on_objects_of_another_namespace_reports_unmatched_patch() {
    let d = desired();
    let ctx = d.overlay_context("cassandra", None).unwrap();
    let err = apply_overlays(&d.overlays["cassandra"], &ctx, fixture("zookeeper")).unwrap_err();
    assert!(err.to_string().contains("overlays/cassandra/seeds.yaml:2: patch matches no object (group=apps kind=StatefulSet name=cassandra)"), "{err}");
}
