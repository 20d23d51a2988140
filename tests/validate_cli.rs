//! `ferry validate` as a reviewer's CI runs it: the real binary on the
//! example repository (must pass) and on broken copies of it (each must fail
//! with the precise finding: code, file, line, column, field, message, hint).
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const FIXTURES: &str = "/work/shared/fixtures/workloads";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/placement-repo")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A writable copy of the example repository.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&example(), dir.path());
        Repo { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replace `from` (which must occur) by `to` in a file.
    fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let p = self.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
        self
    }

    fn write(&self, file: &str, text: &str) -> &Self {
        let p = self.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }
}

/// Object directory linking each example namespace to its fixture workloads.
fn objects_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (ns, fixture) in [
        ("wordpress", "wordpress"),
        ("mysql", "mysql-statefulset"),
        ("cassandra", "cassandra"),
        ("guestbook", "guestbook"),
        ("web", "web-statefulset"),
        ("zookeeper", "zookeeper"),
    ] {
        std::os::unix::fs::symlink(Path::new(FIXTURES).join(fixture), dir.path().join(ns)).unwrap();
    }
    dir
}

struct Run {
    code: i32,
    stdout: String,
    json: Value,
}

fn validate(repo: &Path, extra: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).arg("validate").arg(repo).args(["-o", "json"]).args(extra).output().expect("run ferry");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
    Run { code: out.status.code().unwrap_or(-1), stdout, json }
}

/// The single finding of a run, which must have failed.
fn only_error(run: &Run) -> &Value {
    assert_eq!(run.code, 1, "expected failure: {}", run.stdout);
    let errors: Vec<&Value> = run.json["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "error").collect();
    assert_eq!(errors.len(), 1, "expected exactly one error: {}", run.stdout);
    errors[0]
}

#[track_caller]
fn assert_finding(f: &Value, code: &str, file: &str, line: u64, column: u64, field: &str, message: &str) {
    assert_eq!(f["code"], code, "{f:#}");
    assert_eq!(f["file"], file, "{f:#}");
    assert_eq!((f["line"].as_u64().unwrap(), f["column"].as_u64().unwrap()), (line, column), "{f:#}");
    assert_eq!(f["field"], field, "{f:#}");
    let m = f["message"].as_str().unwrap();
    assert!(m.contains(message), "message {m:?} does not contain {message:?}");
    assert!(!f["hint"].as_str().unwrap().is_empty(), "no hint: {f:#}");
}

fn hint(f: &Value) -> &str {
    f["hint"].as_str().unwrap()
}

#[test]
fn example_repository_is_clean_with_and_without_objects() {
    let run = validate(&example(), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.json["errors"], 0);
    assert_eq!(run.json["warnings"], 0);
    let objects = objects_dir();
    let run = validate(&example(), &["--objects", objects.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.json["findings"], Value::Array(vec![]));
}

#[test]
fn table_output_is_compiler_style_with_hint() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  volumes: copy", "  volume: copy");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).arg("validate").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("namespaces/wordpress.yaml:8:3: error[unknown-field] spec.volume: unknown field `volume`\n    hint: remove `volume` or correct its spelling;"), "{stdout}");
    assert!(stdout.contains("FAILED: 1 error(s), 0 warning(s)"), "{stdout}");
}

#[test]
fn yaml_syntax_error() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  cluster: east", "  cluster: [east");
    let run = validate(repo.path(), &[]);
    let f = only_error(&run);
    assert_finding(f, "yaml-syntax", "namespaces/wordpress.yaml", 7, 11, "", "YAML syntax error");
}

#[test]
fn unknown_field() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  volumes: copy", "  volume: copy");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "unknown-field", "namespaces/wordpress.yaml", 8, 3, "spec.volume", "unknown field `volume`");
    assert!(hint(&f).contains("volumes"), "{}", hint(&f));
}

#[test]
fn unknown_field_in_second_document_of_a_file() {
    let repo = Repo::new();
    repo.edit("namespaces/stateless.yaml", "  cluster: east\n  volumes: copy", "  cluster: east\n  volumes: copy\n  suspended: true");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "unknown-field", "namespaces/stateless.yaml", 17, 3, "spec.suspended", "unknown field `suspended`");
    assert!(hint(&f).contains("suspend"), "{}", hint(&f));
}

#[test]
fn missing_field() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  cluster: east\n", "");
    let f = only_error(&validate(repo.path(), &[])).clone();
    // Points at `spec:`, the object that lacks the field.
    assert_finding(&f, "missing-field", "namespaces/wordpress.yaml", 5, 1, "spec.cluster", "missing required field `cluster`");
    assert_eq!(hint(&f), "add `cluster` to this object");
}

#[test]
fn value_not_allowed() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "strategy: stop-copy-start", "strategy: copy-everything");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "invalid-value", "namespaces/wordpress.yaml", 7, 13, "spec.strategy", "`copy-everything` is not an allowed value");
    assert!(hint(&f).contains("stop-copy-start") && hint(&f).contains("statefulset-ordinals"), "{}", hint(&f));
}

#[test]
fn wrong_kind_for_directory() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "kind: Placement", "kind: Cluster");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "wrong-kind", "namespaces/wordpress.yaml", 2, 7, "kind", "`kind: Cluster` found where `Placement` documents belong");
}

#[test]
fn name_not_dns1123() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "name: wordpress", "name: Word_Press");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "invalid-name", "namespaces/wordpress.yaml", 4, 9, "metadata.name", "namespace name `Word_Press` contains 'W'");
    assert!(hint(&f).contains("`word-press`"), "{}", hint(&f));
}

#[test]
fn namespace_placed_twice() {
    let repo = Repo::new();
    repo.write(
        "namespaces/more.yaml",
        "apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: mysql\nspec:\n  cluster: east\n",
    );
    // Files load in path order: mysql.yaml comes after more.yaml.
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "duplicate-placement", "namespaces/mysql.yaml", 4, 9, "metadata.name", "namespace `mysql` is already placed at namespaces/more.yaml:4");
}

#[test]
fn cluster_defined_twice() {
    let repo = Repo::new();
    repo.write("clusters/west2.yaml", "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: west\nspec:\n  access:\n    kubeconfigContext: w\n");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "duplicate-cluster", "clusters/west2.yaml", 4, 9, "metadata.name", "cluster `west` is already defined at clusters/west.yaml:4");
}

#[test]
fn placement_on_unknown_cluster() {
    let repo = Repo::new();
    repo.edit("namespaces/stateless.yaml", "  cluster: east", "  cluster: south");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "unknown-cluster", "namespaces/stateless.yaml", 15, 12, "spec.cluster", "namespace `web` is placed on cluster `south`, which is not defined");
    assert_eq!(hint(&f), "use one of: east, west; or add clusters/south.yaml");
}

#[test]
fn cluster_without_access() {
    let repo = Repo::new();
    repo.edit("clusters/east.yaml", "  access:\n    kubeconfigContext: east\n", "  access: {}\n");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "missing-field", "clusters/east.yaml", 9, 11, "spec.access", "no way to reach the cluster");
}

#[test]
fn invalid_duration() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "retention: 72h", "retention: 72 hourz");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "invalid-duration", "namespaces/wordpress.yaml", 9, 14, "spec.retention", "`72 hourz` is not a duration");
}

#[test]
fn invalid_hook_command() {
    let repo = Repo::new();
    repo.edit("namespaces/cassandra.yaml", "command: [nodetool, drain]", "command: []");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "invalid-value", "namespaces/cassandra.yaml", 16, 18, "spec.hooks.beforeQuiesce[0].command", "hook `drain` has an empty command");
}

#[test]
fn template_undefined_variable() {
    let repo = Repo::new();
    repo.edit("overlays/web/cluster-info.yaml", "cluster.vars.dnsZone", "cluster.vars.dnszone");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "template", "overlays/web/cluster-info.yaml", 9, 0, "resources[0]", "undefined value");
    assert!(hint(&f).contains("cluster.vars"), "{}", hint(&f));
}

#[test]
fn template_syntax_error_in_inline_patch() {
    let repo = Repo::new();
    repo.edit("overlays/web/overlay.yaml", "value: {{ cluster.name }}", "value: {{ cluster.name }");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "template", "overlays/web/overlay.yaml", 16, 0, "patches[0].patch", "syntax error");
}

#[test]
fn patch_matching_nothing_needs_objects_to_be_caught() {
    let repo = Repo::new();
    repo.edit("overlays/cassandra/seeds.yaml", "  name: cassandra", "  name: casandra");
    // Without the namespace's objects there is nothing to match against.
    let run = validate(repo.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let objects = objects_dir();
    let run = validate(repo.path(), &["--objects", objects.path().to_str().unwrap()]);
    let f = only_error(&run);
    assert_finding(f, "patch-matches-nothing", "overlays/cassandra/seeds.yaml", 2, 1, "patches[0].path", "patch matches no object (group=apps kind=StatefulSet name=casandra)");
}

#[test]
fn json6902_patch_without_target() {
    let repo = Repo::new();
    repo.edit("overlays/guestbook/overlay.yaml", "  - target:\n      kind: Service\n      name: frontend\n    patch: |", "  - patch: |");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "invalid-patch", "overlays/guestbook/overlay.yaml", 5, 1, "patches[0].patch", "a JSON6902 patch (a list of operations) needs `target`");
}

#[test]
fn json6902_patch_path_missing_in_object() {
    let repo = Repo::new();
    repo.edit("overlays/web/overlay.yaml", "/spec/template/metadata/labels/placed-on", "/spec/selector/nothing/placed-on");
    let objects = objects_dir();
    let f = only_error(&validate(repo.path(), &["--objects", objects.path().to_str().unwrap()])).clone();
    assert_finding(&f, "invalid-patch", "overlays/web/overlay.yaml", 11, 1, "patches[0].patch", "StatefulSet web: operation '/1' failed at path '/spec/selector/nothing/placed-on'");
    assert!(hint(&f).contains("paths must exist"), "{}", hint(&f));
}

#[test]
fn overlay_object_with_removed_api_version() {
    let repo = Repo::new();
    let cronjob = std::fs::read_to_string(Path::new(FIXTURES).join("cronjob-legacy/cronjob.yaml")).unwrap();
    repo.write("overlays/web/cronjob.yaml", &cronjob);
    repo.edit("overlays/web/overlay.yaml", "  - cluster-info.yaml", "  - cluster-info.yaml\n  - cronjob.yaml");
    let f = only_error(&validate(repo.path(), &[])).clone();
    let line = cronjob.lines().position(|l| l.starts_with("apiVersion:")).unwrap() as u64 + 1;
    assert_finding(&f, "removed-api-version", "overlays/web/cronjob.yaml", line, 13, "resources[1].apiVersion", "CronJob `batch/v1beta1` is no longer served (removed in Kubernetes 1.25)");
    assert_eq!(hint(&f), "use `apiVersion: batch/v1` and adapt the object to it");
}

#[test]
fn overlay_references_missing_file() {
    let repo = Repo::new();
    repo.edit("overlays/wordpress/overlay.yaml", "path: wordpress-env.yaml", "path: wordpress-env.yml");
    let f = only_error(&validate(repo.path(), &[])).clone();
    assert_finding(&f, "missing-file", "overlays/wordpress/overlay.yaml", 5, 11, "patches[0].path", "file `overlays/wordpress/wordpress-env.yml` does not exist");
}

#[test]
fn orphan_overlay_is_a_warning_only() {
    let repo = Repo::new();
    repo.write("overlays/ghost/overlay.yaml", "apiVersion: ferry.dev/v1alpha1\nkind: Overlay\n");
    let run = validate(repo.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.json["warnings"], 1);
    let f = &run.json["findings"][0];
    assert_eq!(f["code"], "orphan-overlay");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["message"], "overlay for namespace `ghost`, which no placement names");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  volumes: copy", "  volume: copy");
    repo.edit("namespaces/mysql.yaml", "cluster: west", "cluster: nowhere");
    repo.edit("clusters/east.yaml", "name: east", "name: East");
    let run = validate(repo.path(), &[]);
    assert_eq!(run.code, 1);
    let codes: Vec<&str> = run.json["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    // East is rejected, so placements on east also name an unknown cluster.
    assert!(codes.contains(&"unknown-field") && codes.contains(&"invalid-name") && codes.contains(&"unknown-cluster"), "{codes:?}");
}

#[test]
fn plan_runs_without_clusters_from_an_observed_file() {
    let dir = tempfile::tempdir().unwrap();
    let observed = dir.path().join("observed.yaml");
    std::fs::write(
        &observed,
        "clusters:\n  east:\n    namespaces:\n      - name: mysql\n        objects: 9\n        pvcs: 3\n        storageBytes: 3221225472\n      - name: web\n  west:\n    namespaces:\n      - name: guestbook\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["plan", "--repo"])
        .arg(example())
        .arg("--observed")
        .arg(&observed)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = |ns: &str| plan["steps"].as_array().unwrap().iter().find(|s| s["namespace"] == ns).cloned().unwrap();
    assert_eq!(step("mysql")["action"], "migrate");
    assert_eq!(step("mysql")["from"], "east");
    assert_eq!(step("mysql")["to"], "west");
    assert_eq!(step("mysql")["bytes"], 3221225472u64);
    assert_eq!(step("mysql")["strategy"], "pre-copy");
    assert_eq!(step("web")["action"], "nothing");
    assert_eq!(step("guestbook")["action"], "nothing");
    assert_eq!(step("zookeeper")["action"], "suspended");
    assert_eq!(step("wordpress")["action"], "absent-everywhere");
}

#[test]
fn plan_pr_mode_shows_only_changed_placements() {
    let repo = Repo::new();
    repo.edit("namespaces/mysql.yaml", "cluster: west", "cluster: east");
    let dir = tempfile::tempdir().unwrap();
    let observed = dir.path().join("observed.json");
    std::fs::write(&observed, r#"{"clusters": {"east": {"namespaces": [{"name": "web"}]}, "west": {"namespaces": [{"name": "mysql", "pvcs": 3}]}}}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["plan", "--repo"])
        .arg(repo.path())
        .arg("--base-dir")
        .arg(example())
        .arg("--observed")
        .arg(&observed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("mysql") && table.contains("migrate"), "{table}");
    for other in ["wordpress", "cassandra", "guestbook", "zookeeper", " web "] {
        assert!(!table.contains(other), "{other} is unchanged and must not be planned:\n{table}");
    }
    assert!(table.contains("migrate: 1"), "{table}");
}

#[test]
fn plan_refuses_an_invalid_repository() {
    let repo = Repo::new();
    repo.edit("namespaces/mysql.yaml", "cluster: west", "cluster: nowhere");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).args(["plan", "--repo"]).arg(repo.path()).args(["--observed", "/dev/null"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown-cluster") && err.contains("namespaces/mysql.yaml:6:12"), "{err}");
}

#[test]
fn duplicate_key_in_a_placement() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  cluster: east\n", "  cluster: east\n  cluster: west\n");
    let run = validate(repo.path(), &[]);
    // One error, and no orphan-overlay warning for wordpress's overlay on top of it.
    assert_eq!(run.json["findings"].as_array().unwrap().len(), 1, "{}", run.stdout);
    let f = only_error(&run);
    assert_finding(f, "yaml-syntax", "namespaces/wordpress.yaml", 7, 3, "", "duplicate key `cluster`");
}

#[test]
fn tab_indentation() {
    let repo = Repo::new();
    repo.edit("namespaces/wordpress.yaml", "  cluster: east", "\tcluster: east");
    let run = validate(repo.path(), &[]);
    assert_eq!(run.json["findings"].as_array().unwrap().len(), 1, "{}", run.stdout);
    assert_finding(only_error(&run), "yaml-syntax", "namespaces/wordpress.yaml", 6, 2, "", "tabs disallowed");
}
