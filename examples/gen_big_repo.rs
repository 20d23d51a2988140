//! Generate a placement repository with 1,000 namespaces on 20 clusters (every
//! namespace with an overlay: a strategic-merge patch, a JSON6902 patch and an
//! extra object) plus an observed-state file, then print how long validation
//! and planning take in-process. Figures, not assertions.
//!
//! `cargo run --example gen_big_repo [DIR]` — DIR defaults to a fresh temp
//! directory that is kept so the `ferry` binary can be timed on it too:
//! `ferry validate DIR/repo` and `ferry plan --repo DIR/repo --observed DIR/observed.yaml`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use ferry::model::{RepoFiles, load_valid, validate};
use ferry::plan::{Observed, ObservedCluster, ObservedNamespace, plan};

const CLUSTERS: usize = 20;
const NAMESPACES: usize = 1000;

fn main() -> anyhow::Result<()> {
    let out = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => tempfile::Builder::new().prefix("ferry-big-repo-").tempdir()?.keep(),
    };
    let repo = out.join("repo");
    let mut files = RepoFiles::default();
    files.insert("ferry.yaml", "apiVersion: ferry.dev/v1alpha1\nkind: Settings\nspec:\n  status:\n    branch: ferry-status\n");
    for c in 0..CLUSTERS {
        files.insert(
            format!("clusters/c{c:02}.yaml"),
            format!(
                "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c{c:02}\n  labels:\n    region: r{}\nspec:\n  access:\n    kubeconfigContext: c{c:02}\n  variables:\n    ingressDomain: c{c:02}.example.com\n  storageClasses:\n    standard: fast\n  reserve:\n    cpu: \"2\"\n    memory: 4Gi\n",
                c % 4
            ),
        );
    }
    let mut observed = Observed::default();
    for c in 0..CLUSTERS {
        observed.clusters.insert(format!("c{c:02}"), ObservedCluster::reachable(Vec::new()));
    }
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n:04}");
        let cluster = format!("c{:02}", n % CLUSTERS);
        let mut p = format!("apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {ns}\nspec:\n  cluster: {cluster}\n  retention: 72h\n");
        if n % 4 == 0 {
            p.push_str("  strategy: pre-copy\n  maxFinalSync: 30s\n  hooks:\n    beforeQuiesce:\n      - name: flush\n        selector:\n          app: db\n        command: [sync]\n        timeout: 1m\n");
        }
        files.insert(format!("namespaces/{ns}.yaml"), p);
        files.insert(
            format!("overlays/{ns}/overlay.yaml"),
            "apiVersion: ferry.dev/v1alpha1\nkind: Overlay\npatches:\n  - path: app.yaml\n  - target:\n      kind: ConfigMap\n      name: info\n    patch: |\n      - op: add\n        path: /data/source\n        value: \"{{ source.name if source else 'none' }}\"\nresources:\n  - info.yaml\n".to_string(),
        );
        files.insert(
            format!("overlays/{ns}/app.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: info\n  labels:\n    region: \"{{ cluster.labels.region }}\"\n".to_string(),
        );
        files.insert(
            format!("overlays/{ns}/info.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: info\ndata:\n  cluster: {{ cluster.name }}\n  host: app.{{ cluster.vars.ingressDomain }}\n  namespace: {{ namespace }}\n".to_string(),
        );
        // 10 % are observed elsewhere (will migrate), 2 % also have a retained copy.
        let live_on = if n % 10 == 3 { (n + 1) % CLUSTERS } else { n % CLUSTERS };
        let o = ObservedNamespace { name: ns.clone(), objects: 25, pvcs: (n % 3) as u64, storage_bytes: (n as u64 % 7) << 30, ..Default::default() };
        observed.clusters.get_mut(&format!("c{live_on:02}")).unwrap().namespaces.push(o.clone());
        if n % 50 == 0 {
            let mut r = o;
            r.labels = BTreeMap::from([(ferry::labels::RETAINED.to_string(), "true".to_string())]);
            observed.clusters.get_mut(&format!("c{:02}", (n + 5) % CLUSTERS)).unwrap().namespaces.push(r);
        }
    }
    for (path, text) in &files.0 {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(p, text)?;
    }
    std::fs::write(out.join("observed.yaml"), serde_saphyr::to_string(&observed)?)?;

    let mut report = String::new();
    let t = Instant::now();
    let read = RepoFiles::from_dir(&repo)?;
    let t_read = t.elapsed();
    let t = Instant::now();
    let (_, load_findings) = ferry::model::load(&read);
    let t_load = t.elapsed();
    anyhow::ensure!(load_findings.is_empty(), "{:?}", load_findings.first());
    let t = Instant::now();
    let (_, r) = validate(&read, None);
    let t_validate = t.elapsed();
    anyhow::ensure!(r.ok(), "generated repo does not validate: {:?}", r.findings.first());
    let t = Instant::now();
    let desired = load_valid(&read)?;
    let plan_result = plan(&desired, &observed, None);
    let t_plan = t.elapsed();
    writeln!(report, "repo: {} ({} files, {NAMESPACES} namespaces, {CLUSTERS} clusters)", repo.display(), read.0.len())?;
    writeln!(report, "read files:            {:>8.1} ms", t_read.as_secs_f64() * 1e3)?;
    writeln!(report, "load only (in-process):{:>8.1} ms", t_load.as_secs_f64() * 1e3)?;
    writeln!(report, "validate (in-process): {:>8.1} ms", t_validate.as_secs_f64() * 1e3)?;
    writeln!(report, "load+plan (in-process):{:>8.1} ms  ({} steps, {:?})", t_plan.as_secs_f64() * 1e3, plan_result.steps.len(), plan_result.summary.actions)?;
    writeln!(report, "observed: {}", out.join("observed.yaml").display())?;
    print!("{report}");
    Ok(())
}
