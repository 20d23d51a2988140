//! Every planner case, with the desired state loaded from real repository text.
use std::collections::BTreeMap;

use super::*;
use crate::model::{RepoFiles, load_valid};

const CLUSTERS: [&str; 3] = ["east", "west", "north"];

/// A repository placing each `(namespace, cluster, suspend)`.
fn desired(placements: &[(&str, &str, bool)]) -> Desired {
    let mut files = RepoFiles::default();
    for c in CLUSTERS {
        files.insert(
            format!("clusters/{c}.yaml"),
            format!("apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {c}\nspec:\n  access:\n    kubeconfigContext: {c}\n"),
        );
    }
    for (ns, cluster, suspend) in placements {
        files.insert(
            format!("namespaces/{ns}.yaml"),
            format!("apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {ns}\nspec:\n  cluster: {cluster}\n  suspend: {suspend}\n"),
        );
    }
    load_valid(&files).expect("test repository is valid")
}

fn ns(name: &str) -> ObservedNamespace {
    ObservedNamespace { name: name.into(), objects: 12, pvcs: 2, storage_bytes: 3 << 30, ..Default::default() }
}

fn retained(name: &str) -> ObservedNamespace {
    let mut n = ns(name);
    n.labels.insert(labels::RETAINED.into(), "true".into());
    n.labels.insert(labels::MIGRATION.into(), "m-1".into());
    n
}

fn ferry_made(name: &str) -> ObservedNamespace {
    let mut n = ns(name);
    n.labels.insert(labels::MIGRATION.into(), "m-1".into());
    n
}

/// All three clusters reachable, with the given namespaces.
fn observed(east: Vec<ObservedNamespace>, west: Vec<ObservedNamespace>, north: Vec<ObservedNamespace>) -> Observed {
    Observed {
        clusters: BTreeMap::from([
            ("east".to_string(), ObservedCluster::reachable(east)),
            ("west".to_string(), ObservedCluster::reachable(west)),
            ("north".to_string(), ObservedCluster::reachable(north)),
        ]),
    }
}

fn action(p: &Plan, ns: &str) -> Action {
    p.step(ns).unwrap_or_else(|| panic!("no step for {ns}: {p:#?}")).action.clone()
}

#[test]
fn placed_where_it_already_is_does_nothing() {
    let p = plan(&desired(&[("web", "east", false)]), &observed(vec![ns("web")], vec![], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Nothing { cluster: "east".into() });
    assert_eq!(p.migrations().count(), 0);
}

#[test]
fn moved_namespace_migrates_with_counts_and_bytes() {
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![ns("web")], vec![], vec![]), None);
    assert_eq!(
        action(&p, "web"),
        Action::Migrate {
            from: "east".into(),
            to: "west".into(),
            objects: 12,
            pvcs: 2,
            bytes: 3 << 30,
            strategy: Strategy::StopCopyStart,
            volumes: VolumeMode::Copy
        }
    );
    assert_eq!(p.summary.migrate_bytes, 3 << 30);
    assert_eq!(p.summary.actions.get("migrate"), Some(&1));
}

#[test]
fn removed_from_repo_is_reported_unmanaged_never_deleted() {
    let base = desired(&[("web", "east", false), ("db", "east", false)]);
    let now = desired(&[("db", "east", false)]);
    let obs = observed(vec![ns("web"), ns("db")], vec![], vec![]);
    let p = plan(&now, &obs, Some(&base));
    assert_eq!(action(&p, "web"), Action::Unmanaged { clusters: vec!["east".into()] });
    assert!(p.step("web").unwrap().notes[0].contains("never deletes"));
    assert!(p.step("db").is_none(), "unchanged placement is not planned in PR mode");
    // Without a base, a namespace Ferry once touched is still recognised as unmanaged…
    let p = plan(&now, &observed(vec![ferry_made("web"), ns("db")], vec![], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Unmanaged { clusters: vec!["east".into()] });
    // …but a namespace Ferry never managed is not its business.
    let p = plan(&now, &obs, None);
    assert!(p.step("web").is_none());
}

#[test]
fn system_namespaces_are_never_unmanaged() {
    let mut ks = ns("kube-system");
    ks.labels.insert(labels::MIGRATION.into(), "x".into());
    let p = plan(&desired(&[]), &observed(vec![ks, ns("default")], vec![], vec![]), None);
    assert!(p.steps.is_empty(), "{p:#?}");
}

#[test]
fn live_on_two_clusters_is_a_conflict() {
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![ns("web")], vec![ns("web")], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Conflict { clusters: vec!["east".into(), "west".into()] });
    assert_eq!(p.migrations().count(), 0);
}

#[test]
fn retained_source_is_not_a_conflict() {
    // Moved east → west earlier: east keeps a retained copy.
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![retained("web")], vec![ns("web")], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Nothing { cluster: "west".into() });
    assert!(p.step("web").unwrap().notes.iter().any(|n| n.contains("retained copy on east")));
}

#[test]
fn moving_back_onto_a_retained_copy_migrates_and_says_so() {
    let p = plan(&desired(&[("web", "east", false)]), &observed(vec![retained("web")], vec![ns("web")], vec![]), None);
    assert!(matches!(action(&p, "web"), Action::Migrate { ref from, ref to, .. } if from == "west" && to == "east"));
    assert!(p.step("web").unwrap().notes.iter().any(|n| n.contains("retained copy on east will be replaced")));
}

#[test]
fn unreachable_destination_waits() {
    let mut obs = observed(vec![ns("web")], vec![], vec![]);
    obs.clusters.insert("west".into(), ObservedCluster::unreachable("dial tcp 127.0.0.1:6443: connection refused"));
    let p = plan(&desired(&[("web", "west", false)]), &obs, None);
    assert_eq!(
        action(&p, "web"),
        Action::WaitUnreachable { clusters: vec!["west".into()], errors: vec!["dial tcp 127.0.0.1:6443: connection refused".into()] }
    );
}

#[test]
fn unreachable_third_cluster_blocks_a_move_but_not_in_sync() {
    let mut obs = observed(vec![ns("web"), ns("api")], vec![], vec![]);
    obs.clusters.insert("north".into(), ObservedCluster::unreachable("timeout"));
    let d = desired(&[("web", "west", false), ("api", "east", false)]);
    let p = plan(&d, &obs, None);
    assert_eq!(action(&p, "web"), Action::WaitUnreachable { clusters: vec!["north".into()], errors: vec!["timeout".into()] });
    assert_eq!(action(&p, "api"), Action::Nothing { cluster: "east".into() });
}

#[test]
fn unobserved_cluster_counts_as_unreachable() {
    let mut obs = observed(vec![], vec![], vec![]);
    obs.clusters.remove("north");
    let p = plan(&desired(&[("web", "north", false)]), &obs, None);
    assert_eq!(action(&p, "web"), Action::WaitUnreachable { clusters: vec!["north".into()], errors: vec!["not observed".into()] });
}

#[test]
fn suspended_does_nothing_even_when_moved_or_conflicting() {
    let d = desired(&[("web", "west", true)]);
    let p = plan(&d, &observed(vec![ns("web")], vec![], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Suspended { cluster: "west".into() });
    let p = plan(&d, &observed(vec![ns("web")], vec![ns("web")], vec![]), None);
    assert_eq!(action(&p, "web"), Action::Suspended { cluster: "west".into() });
}

#[test]
fn absent_everywhere_is_reported_and_waits_if_something_is_unreachable() {
    let d = desired(&[("web", "east", false)]);
    let p = plan(&d, &observed(vec![], vec![], vec![]), None);
    assert_eq!(action(&p, "web"), Action::AbsentEverywhere { cluster: "east".into() });
    let mut obs = observed(vec![], vec![], vec![]);
    obs.clusters.insert("west".into(), ObservedCluster::unreachable("x509: certificate expired"));
    let p = plan(&d, &obs, None);
    assert!(matches!(action(&p, "web"), Action::WaitUnreachable { ref clusters, .. } if clusters == &["west".to_string()]));
}

#[test]
fn pr_mode_plans_only_changed_placements() {
    let base = desired(&[("a", "east", false), ("b", "east", false), ("c", "east", false)]);
    let now = desired(&[("a", "east", false), ("b", "west", false), ("c", "east", true), ("d", "west", false)]);
    let obs = observed(vec![ns("a"), ns("b"), ns("c")], vec![], vec![]);
    let p = plan(&now, &obs, Some(&base));
    let planned: Vec<&str> = p.steps.iter().map(|s| s.namespace.as_str()).collect();
    assert_eq!(planned, ["b", "c", "d"]);
    assert!(matches!(action(&p, "b"), Action::Migrate { .. }));
    assert!(matches!(action(&p, "c"), Action::Suspended { .. }));
    assert!(matches!(action(&p, "d"), Action::AbsentEverywhere { .. }));
}

#[test]
fn pr_mode_ignores_moving_a_document_within_its_file() {
    let base = desired(&[("a", "east", false)]);
    let mut files = RepoFiles::default();
    for c in CLUSTERS {
        files.insert(format!("clusters/{c}.yaml"), format!("apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {c}\nspec:\n  access:\n    kubeconfigContext: {c}\n"));
    }
    files.insert("namespaces/all.yaml", "# moved\n\n\napiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: a\nspec:\n  cluster: east\n");
    let now = load_valid(&files).unwrap();
    let p = plan(&now, &observed(vec![ns("a")], vec![], vec![]), Some(&base));
    assert!(p.steps.is_empty(), "{p:#?}");
}

#[test]
fn plan_serializes_with_flat_action_tag_and_prints_a_table() {
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![ns("web")], vec![], vec![]), None);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["steps"][0]["action"], "migrate");
    assert_eq!(json["steps"][0]["from"], "east");
    assert_eq!(json["steps"][0]["bytes"], 3u64 << 30);
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
    let t = table(&p).to_string();
    assert!(t.contains("migrate") && t.contains("3.0 GiB"), "{t}");
}

#[test]
fn observed_file_format_parses_from_yaml() {
    let text = "clusters:\n  east:\n    namespaces:\n      - name: web\n        objects: 3\n        storageBytes: 10\n  west:\n    error: connection refused\n";
    let o: Observed = serde_saphyr::from_str(text).unwrap();
    assert_eq!(o.clusters["east"].namespaces[0].storage_bytes, 10);
    assert_eq!(o.clusters["west"].error.as_deref(), Some("connection refused"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the observation, the planner never migrates a namespace that is
        /// live on two clusters or suspended, and never plans a namespace twice.
        #[test]
        fn safety_invariants(
            placed in proptest::collection::vec((0usize..3, any::<bool>()), 1..6),
            live in proptest::collection::vec(proptest::collection::vec(0u8..3, 3), 6),
            down in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let names = ["a", "b", "c", "d", "e", "f"];
            let placements: Vec<(&str, &str, bool)> = placed.iter().enumerate().map(|(i, (c, s))| (names[i], CLUSTERS[*c], *s)).collect();
            let d = desired(&placements);
            let mut obs = Observed::default();
            for (ci, c) in CLUSTERS.iter().enumerate() {
                let oc = if down[ci] {
                    ObservedCluster::unreachable("down")
                } else {
                    // 0 = absent, 1 = live, 2 = retained
                    ObservedCluster::reachable(names.iter().enumerate().filter_map(|(ni, n)| match live[ni][ci] {
                        1 => Some(ns(n)),
                        2 => Some(retained(n)),
                        _ => None,
                    }).collect())
                };
                obs.clusters.insert(c.to_string(), oc);
            }
            let p = plan(&d, &obs, None);
            let mut seen = std::collections::BTreeSet::new();
            for s in &p.steps {
                prop_assert!(seen.insert(s.namespace.clone()), "planned twice: {}", s.namespace);
                if let Action::Migrate { from, to, .. } = &s.action {
                    let ni = names.iter().position(|n| *n == s.namespace).unwrap();
                    let live_count = (0..3).filter(|ci| !down[*ci] && live[ni][*ci] == 1).count();
                    prop_assert_eq!(live_count, 1);
                    prop_assert!(!down.iter().any(|x| *x), "migrated while a cluster was down");
                    prop_assert!(!placements[ni].2, "migrated a suspended namespace");
                    prop_assert_ne!(from, to);
                }
            }
        }
    }
}

#[test]
fn interrupted_migration_resumes_instead_of_conflicting() {
    // Killed mid-migration: the source is still live, the destination copy
    // was created by Ferry from that source.
    let mut partial = ferry_made("web");
    partial.labels.insert(labels::SOURCE_CLUSTER.into(), "east".into());
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![ns("web")], vec![partial.clone()], vec![]), None);
    assert!(matches!(action(&p, "web"), Action::Migrate { ref from, ref to, objects: 12, .. } if from == "east" && to == "west"), "{p:#?}");
    assert!(p.step("web").unwrap().notes.iter().any(|n| n.contains("in progress")));
    // A Ferry copy from a *different* source is still a conflict.
    partial.labels.insert(labels::SOURCE_CLUSTER.into(), "north".into());
    let p = plan(&desired(&[("web", "west", false)]), &observed(vec![ns("web")], vec![partial], vec![]), None);
    assert!(matches!(action(&p, "web"), Action::Conflict { .. }));
}
