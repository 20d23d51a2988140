//! `ferry demo`: the embedded default. Two local clusters, the guestbook
//! deployed on one of them, and a full migration to the other, with live
//! progress. Each run moves the guestbook to the cluster it is not on.
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::labels;
use crate::output::OutputFormat;
use crate::pipeline::{Migration, Spec, progress::Console};

const GUESTBOOK: &str = include_str!("../../examples/demo/guestbook.yaml");
const NAMESPACE: &str = "guestbook";

/// Run the demo against the harness in `state_dir`.
pub async fn run(state_dir: &Path) -> anyhow::Result<()> {
    let report = super::up(state_dir, &super::UpOptions::default()).await?;
    super::print_status(&report, OutputFormat::Table)?;
    let kubeconfig = report.kubeconfig.clone();
    let east = Cluster::connect("east", &kubeconfig, "east").await?;
    let west = Cluster::connect("west", &kubeconfig, "west").await?;

    // Where does the guestbook live now (a retained copy does not count)?
    let live = |ns: Option<Value>| ns.is_some_and(|n| n.pointer(&format!("/metadata/labels/{}", labels::RETAINED.replace('/', "~1"))).is_none());
    let (from, to) = match (live(east.namespace(NAMESPACE).await?), live(west.namespace(NAMESPACE).await?)) {
        (_, true) => (&west, &east),
        (true, false) => (&east, &west),
        (false, false) => {
            println!("\ndeploying the guestbook on east…");
            deploy(&east).await?;
            (&east, &west)
        }
    };
    println!("\nmoving namespace {NAMESPACE}: {} → {}", from.name, to.name);
    let spec = Spec { retention: Duration::ZERO, ready_timeout: Duration::from_secs(120), ..Spec::new(NAMESPACE, "demo") };
    let console = Console::default();
    let journal = Migration { spec, source: from, dest: to, progress: &console, stop: None }.run().await?;
    println!(
        "\nmigration {} done: {} stages, downtime {:.1}s; {} objects verified on {}",
        journal.migration_id,
        journal.stages.len(),
        journal.downtime_ms.unwrap_or(0) as f64 / 1000.0,
        journal.expected.values().map(Vec::len).sum::<usize>(),
        to.name
    );
    println!("\nexport KUBECONFIG={}", kubeconfig.display());
    println!("kubectl --context {} -n {NAMESPACE} get deploy,svc    # run `ferry demo` again to move it back", to.name);
    println!("ferry dev down --state {}                           # stop the clusters", report.state_dir.display());
    Ok(())
}

async fn deploy(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})).await?;
    for doc in serde_saphyr::from_multiple::<Value>(GUESTBOOK).context("parsing the embedded guestbook")? {
        if doc.is_null() {
            continue;
        }
        let mut obj = doc;
        obj["metadata"]["namespace"] = json!(NAMESPACE);
        cluster.apply(&obj).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let deps = cluster.list("apps/v1", "Deployment", Some(NAMESPACE), None).await?;
        let ready = deps.iter().all(|d| d.pointer("/status/availableReplicas").and_then(Value::as_i64) == d.pointer("/spec/replicas").and_then(Value::as_i64));
        if ready && deps.len() == 3 {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the guestbook did not become Ready on {} within 120s", cluster.name);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
