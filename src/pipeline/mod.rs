//! The migration pipeline: moves one namespace from a source to a destination
//! cluster, stage by stage —
//! preflight → export → transform → apply → quiesce → volumes → cutover → verify → retire —
//! journaling after every stage ([`journal`]) so that a killed run resumes
//! where it stopped, and rolling back on any failure before the destination is
//! verified: the source is restored, what Ferry created on the destination is
//! removed. The source is never deleted before the destination is verified,
//! and at most one copy of a workload runs at a time: the destination starts
//! with zero replicas and is scaled up only after the source is stopped.
pub mod fault;
pub mod cli;
pub mod journal;
pub mod preflight;
pub mod progress;
pub mod volumes;
mod workloads;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterError, ObjectRef};
use crate::labels;
use crate::transform::{self, TransformContext, TransformOutput, VolumeMode};
use journal::{Failure, Journal, JournalError, Outcome, Stage, Stored};
use progress::Progress;

fn hooks(file: &str, field: &str, hs: &[crate::model::Hook]) -> anyhow::Result<Vec<HookSpec>> {
    hs.iter().enumerate().map(|(i, h)| {
        Ok(HookSpec {
            name: h.name.clone(),
            selector: h.selector.clone(),
            container: h.container.clone(),
            command: h.command.value.clone(),
            timeout: humantime::parse_duration(&h.timeout.value)
                .map_err(|e| anyhow::anyhow!("{file}: spec.hooks.{field}[{i}].timeout {:?}: {e}", h.timeout.value))?,
            required: h.required,
        })
    }).collect()
}

/// Server-side applies in flight at once within one kind.
const APPLY_CONCURRENCY: usize = 16;

/// What to migrate and how.
#[derive(Clone, Debug)]
pub struct Spec {
    pub namespace: String,
    /// Placement commit that asked for the move ("manual" from the CLI without a repo).
    pub placement_commit: String,
    /// Source storage class → destination storage class.
    pub storage_class_map: BTreeMap<String, String>,
    pub volume_mode: VolumeMode,
    /// How long the retired source is kept (scaled to 0) before it is deleted.
    pub retention: Duration,
    /// How long cutover waits for the destination's workloads to become Ready.
    pub ready_timeout: Duration,
    pub keep_load_balancer_ips: bool,
    /// Destination headroom the cluster definition keeps free: (cpu millicores, memory bytes).
    pub reserve: (i128, i128),
    /// The placement repository's overlay for this namespace, with its template context.
    pub overlay: Option<(crate::overlay::OverlaySource, crate::overlay::OverlayContext)>,
    /// Commands run in the source's pods before quiesce (e.g. `nodetool drain`).
    pub before_quiesce: Vec<HookSpec>,
    /// Commands run in the destination's pods once they are Ready.
    pub after_start: Vec<HookSpec>,
    /// stop-copy-start, or pre-copy (volume passes while the application runs).
    pub strategy: crate::model::Strategy,
    /// For pre-copy: keep making passes while one takes longer than this.
    pub max_final_sync: Option<Duration>,
    /// Mover pods and how the destination's receiver is reached.
    pub mover: volumes::MoverSettings,
}

/// A command run in the pods a label selector picks.
#[derive(Clone, Debug)]
pub struct HookSpec {
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub timeout: Duration,
    /// A failing required hook fails the stage (and rolls back); others are reported.
    pub required: bool,
}

impl Spec {
    /// A stop-copy-start move of `namespace` with no repository behind it:
    /// no storage-class map, reserve, overlay or hooks; 24h retention, 5m ready timeout.
    pub fn new(namespace: &str, placement_commit: &str) -> Spec {
        Spec {
            namespace: namespace.to_string(),
            placement_commit: placement_commit.to_string(),
            storage_class_map: BTreeMap::new(),
            volume_mode: VolumeMode::Copy,
            retention: Duration::from_secs(24 * 3600),
            ready_timeout: Duration::from_secs(300),
            keep_load_balancer_ips: false,
            reserve: (0, 0),
            overlay: None,
            before_quiesce: Vec::new(),
            after_start: Vec::new(),
            strategy: crate::model::Strategy::StopCopyStart,
            max_final_sync: None,
            mover: volumes::MoverSettings::default(),
        }
    }

    /// The migration a placement asks for: `namespace` from `source` to its placed cluster.
    pub fn from_placement(desired: &crate::model::Desired, namespace: &str, source: &str, placement_commit: &str) -> anyhow::Result<Spec> {
        let placement = desired.placements.get(namespace)
            .ok_or_else(|| anyhow::anyhow!("namespace {namespace} has no placement in the repository"))?;
        let dest = &placement.spec.cluster.value;
        let cluster = desired.clusters.get(dest)
            .ok_or_else(|| anyhow::anyhow!("{}: cluster {dest} is not defined", placement.file))?;
        let q = |v: &Option<serde_saphyr::Spanned<String>>, millis: bool| -> anyhow::Result<i128> {
            match v {
                None => Ok(0),
                Some(s) => {
                    let parsed = if millis { transform::quantity::millicores(&s.value) } else { transform::quantity::bytes(&s.value) };
                    parsed.ok_or_else(|| anyhow::anyhow!("{}: spec.reserve: {:?} is not a quantity", cluster.file, s.value))
                }
            }
        };
        let reserve = match &cluster.spec.reserve {
            Some(r) => (q(&r.cpu, true)?, q(&r.memory, false)?),
            None => (0, 0),
        };
        let retention = humantime::parse_duration(&placement.spec.retention.value)
            .map_err(|e| anyhow::anyhow!("{}: spec.retention {:?}: {e}", placement.file, placement.spec.retention.value))?;
        let overlay = match (desired.overlays.get(namespace), desired.overlay_context(namespace, Some(source))) {
            (Some(o), Some(ctx)) => Some((o.clone(), ctx)),
            _ => None,
        };
        let max_final_sync = match &placement.spec.max_final_sync {
            Some(s) => Some(humantime::parse_duration(&s.value).map_err(|e| anyhow::anyhow!("{}: spec.maxFinalSync {:?}: {e}", placement.file, s.value))?),
            None => None,
        };
        let mut mover = volumes::MoverSettings::default();
        if let Some(ms) = &cluster.spec.mover {
            if let Some(t) = ms.service_type {
                mover.service_type = t;
            }
            mover.address = ms.address.clone();
            if let Some(i) = &ms.image {
                mover.image = i.clone();
            }
            if let Some(s3) = &ms.s3 {
                volumes::check_s3(s3).map_err(|e| anyhow::anyhow!("{}: spec.mover.s3: {e}", cluster.file))?;
                mover.s3 = Some(s3.clone());
            }
        }
        Ok(Spec {
            strategy: placement.spec.strategy,
            max_final_sync,
            mover,
            storage_class_map: cluster.spec.storage_classes.clone(),
            volume_mode: match placement.spec.volumes {
                crate::model::VolumeMode::Copy => VolumeMode::Copy,
                crate::model::VolumeMode::Reattach => VolumeMode::Reattach,
            },
            retention,
            reserve,
            overlay,
            before_quiesce: hooks(&placement.file, "beforeQuiesce", &placement.spec.hooks.before_quiesce)?,
            after_start: hooks(&placement.file, "afterStart", &placement.spec.hooks.after_start)?,
            ..Spec::new(namespace, placement_commit)
        })
    }
}

/// Why a migration did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("preflight refused to migrate {namespace} to {dest}; nothing was changed:\n{}", .findings.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Preflight { namespace: String, dest: String, findings: Vec<preflight::Finding> },
    #[error("namespace {namespace} does not exist on {cluster}; check the name and the --from cluster")]
    NoSuchNamespace { namespace: String, cluster: String },
    #[error("a migration of {namespace} to {other} ({id}) is in progress; let it finish (re-run it with --to {other}) before starting another")]
    OtherInProgress { namespace: String, other: String, id: String },
    #[error("migration {id} failed at stage {stage}: {message}; rolled back: the source runs as before and the destination was cleaned up")]
    RolledBack { id: String, stage: Stage, message: String, journal: Box<Journal> },
    #[error("migration failed at stage {stage}: {source}")]
    Stage { stage: Stage, #[source] source: anyhow::Error },
    #[error("migration {id} stopped before stage {stage} because Ferry is shutting down; it resumes on the next run")]
    Interrupted { id: String, stage: Stage },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Objects prepared for the destination: exported and transformed.
struct Prepared {
    exported: usize,
    out: TransformOutput,
    skipped_types: Vec<String>,
}

/// One migration run.
pub struct Migration<'a> {
    pub spec: Spec,
    pub source: &'a Cluster,
    pub dest: &'a Cluster,
    pub progress: &'a dyn Progress,
    /// Set when the process is asked to stop: the run ends at the next stage
    /// boundary with everything journaled, and resumes on the next start.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

fn new_migration_id(namespace: &str) -> String {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let rnd: u32 = rand::random::<u32>() & 0xffff;
    let mut base: String = namespace.chars().take(40).collect();
    base = base.trim_end_matches('-').to_string();
    format!("{base}-{ts:x}-{rnd:04x}")
}

impl Migration<'_> {
    /// Run (or resume) the migration to its end. Returns the final journal.
    pub async fn run(&self) -> Result<Journal, MigrateError> {
        let ns = &self.spec.namespace;
        let source_ns = self.source.namespace(ns).await?;
        let stored = if source_ns.is_some() { journal::load(self.source, ns).await? } else { None };

        let mut stored = match stored {
            Some(s) if matches!(s.journal.outcome, Outcome::Running | Outcome::RollingBack) => {
                if s.journal.to != self.dest.name {
                    return Err(MigrateError::OtherInProgress { namespace: ns.clone(), other: s.journal.to.clone(), id: s.journal.migration_id.clone() });
                }
                tracing::info!(migration = %s.journal.migration_id, next = %s.journal.next, "resuming migration");
                s
            }
            Some(s) if s.journal.outcome == Outcome::Succeeded && s.journal.to == self.dest.name && s.journal.placement_commit == self.spec.placement_commit => {
                return Ok(s.journal);
            }
            other => {
                if source_ns.is_none() {
                    // Retired with zero retention: the destination keeps the record.
                    if let Some(d) = journal::load(self.dest, ns).await? {
                        if d.journal.outcome == Outcome::Succeeded && d.journal.from == self.source.name && d.journal.placement_commit == self.spec.placement_commit {
                            return Ok(d.journal);
                        }
                    }
                    return Err(MigrateError::NoSuchNamespace { namespace: ns.clone(), cluster: self.source.name.clone() });
                }
                let mut journal = Journal {
                    migration_id: new_migration_id(ns),
                    namespace: ns.clone(),
                    from: self.source.name.clone(),
                    to: self.dest.name.clone(),
                    placement_commit: self.spec.placement_commit.clone(),
                    started_at: journal::now(),
                    finished_at: None,
                    outcome: Outcome::Running,
                    next: Stage::Preflight,
                    stages: Vec::new(),
                    failure: None,
                    created_destination: false,
                    source_quiesced: false,
                    downtime_started_at: None,
                    downtime_ms: None,
                    expected: BTreeMap::new(),
                    bare_pods: Vec::new(),
                    left_behind: Vec::new(),
                    volume_passes: Vec::new(),
                    verification: Vec::new(),
                    volume_user: BTreeMap::new(),
                };
                // A finished journal of an earlier migration is replaced (it keeps its resourceVersion for the CAS).
                match other {
                    Some(mut old) => {
                        std::mem::swap(&mut old.journal, &mut journal);
                        old
                    }
                    None => Stored::new(journal),
                }
            }
        };

        if stored.journal.outcome == Outcome::RollingBack {
            let failure = stored.journal.failure.clone().unwrap_or(Failure { stage: stored.journal.next, message: "interrupted".into() });
            return Err(self.rollback(&mut stored, failure).await);
        }

        let mut prepared: Option<Prepared> = None;
        let mut first_write = stored.journal.next == Stage::Preflight;
        while stored.journal.next != Stage::Done {
            let stage = stored.journal.next;
            if !first_write && self.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
                return Err(MigrateError::Interrupted { id: stored.journal.migration_id.clone(), stage });
            }
            self.progress.started(stage);
            stored.journal.begin(stage);
            let result = self.stage(stage, &mut stored, &mut prepared).await;
            match result {
                Ok((counts, message)) => {
                    stored.journal.finish(stage, counts.clone(), message.clone());
                    if stage == Stage::Retire {
                        stored.journal.outcome = Outcome::Succeeded;
                        stored.journal.finished_at = Some(journal::now());
                    }
                    // Preflight changes nothing, not even the journal, until it passes.
                    if first_write {
                        first_write = false;
                    }
                    self.save(&mut stored).await?;
                    self.progress.finished(stage, &counts, message.as_deref());
                    fault::after_stage(stage);
                }
                Err(err) => {
                    let message = format!("{err:#}");
                    self.progress.failed(stage, &message);
                    if let Some(MigrateError::Preflight { .. }) = err.downcast_ref::<MigrateError>() {
                        return Err(err.downcast::<MigrateError>().expect("checked"));
                    }
                    if stage >= Stage::Retire {
                        // Destination verified: never roll back; a re-run retries retirement.
                        stored.journal.failure = Some(Failure { stage, message: message.clone() });
                        let _ = self.save(&mut stored).await;
                        return Err(MigrateError::Stage { stage, source: err });
                    }
                    if first_write {
                        return Err(MigrateError::Stage { stage, source: err });
                    }
                    return Err(self.rollback(&mut stored, Failure { stage, message }).await);
                }
            }
        }
        Ok(stored.journal)
    }

    async fn save(&self, stored: &mut Stored) -> Result<(), MigrateError> {
        let ns = &self.spec.namespace;
        if stored.journal.outcome == Outcome::Succeeded {
            // Keep the final record on the destination too: the source may be deleted at retirement.
            let mut copy = Stored::new(stored.journal.clone());
            if let Some(existing) = journal::load(self.dest, ns).await? {
                copy = existing;
                copy.journal = stored.journal.clone();
            }
            copy.save(self.dest, ns).await?;
            if self.source.namespace(ns).await?.is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_none()) {
                stored.save(self.source, ns).await?;
            }
        } else {
            stored.save(self.source, ns).await?;
        }
        self.progress.journal(&stored.journal);
        Ok(())
    }

    async fn prepare(&self, journal: &Journal) -> anyhow::Result<Prepared> {
        let ns = &self.spec.namespace;
        let (mut objects, skipped_types) = self.source.export_namespace(ns).await?;
        if let Some(nsobj) = self.source.namespace(ns).await? {
            objects.push(nsobj);
        }
        let default_class = self.source.list("storage.k8s.io/v1", "StorageClass", None, None).await?.into_iter()
            .find(|sc| sc.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class").and_then(Value::as_str) == Some("true"))
            .and_then(|sc| sc.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string));
        let ctx = TransformContext {
            migration_id: journal.migration_id.clone(),
            source_cluster: self.source.name.clone(),
            dest_cluster: self.dest.name.clone(),
            placement_commit: journal.placement_commit.clone(),
            storage_class_map: self.spec.storage_class_map.clone(),
            source_default_storage_class: default_class,
            dest_priority_classes: self.dest.names_of("scheduling.k8s.io/v1", "PriorityClass").await?.into_iter().collect(),
            keep_load_balancer_ips: self.spec.keep_load_balancer_ips,
            rename: None,
            volume_mode: self.spec.volume_mode,
        };
        let exported = objects.len();
        let mut out = transform::transform_namespace(objects, &ctx)?;
        if let Some((overlay, octx)) = &self.spec.overlay {
            // Overlays see (and may add to) the transformed objects; what they
            // add carries provenance too, and requirements cover it.
            let mut apply = crate::overlay::apply_overlays(overlay, octx, std::mem::take(&mut out.apply))
                .map_err(|e| anyhow::anyhow!("overlay of {}: {e}", self.spec.namespace))?;
            for o in &mut apply {
                transform::rewrite::add_provenance(o, &ctx);
            }
            transform::order::sort_for_apply(&mut apply);
            out.requirements = transform::requirements::requirements(&apply)?;
            out.apply = apply;
        }
        Ok(Prepared { exported, out, skipped_types })
    }

    async fn stage(&self, stage: Stage, stored: &mut Stored, prepared: &mut Option<Prepared>) -> anyhow::Result<(BTreeMap<String, u64>, Option<String>)> {
        let ns = self.spec.namespace.clone();
        if prepared.is_none() && stage < Stage::Retire {
            *prepared = Some(self.prepare(&stored.journal).await?);
        }
        let mut counts = BTreeMap::new();
        let mut message = None;
        match stage {
            Stage::Preflight => {
                let p = prepared.as_ref().expect("prepared");
                let facts = preflight::gather(self.dest, &ns, Some(&stored.journal.migration_id), &p.out.apply, &p.out.requirements, self.spec.reserve).await?;
                let findings = preflight::check(&facts);
                if !findings.is_empty() {
                    return Err(MigrateError::Preflight { namespace: ns, dest: self.dest.name.clone(), findings }.into());
                }
                counts.insert("checks passed".into(), 9);
            }
            Stage::Export => {
                let p = prepared.as_ref().expect("prepared");
                counts.insert("objects".into(), p.exported as u64);
                if !p.skipped_types.is_empty() {
                    message = Some(format!("not listable: {}", p.skipped_types.join("; ")));
                }
            }
            Stage::Transform => {
                let p = prepared.as_ref().expect("prepared");
                counts.insert("to apply".into(), p.out.apply.len() as u64);
                counts.insert("left behind".into(), p.out.left_behind.len() as u64);
                let j = &mut stored.journal;
                j.expected.clear();
                for o in p.out.apply.iter().filter(|o| o["kind"] != "Namespace") {
                    let key = format!("{}/{}", o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""));
                    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    j.expected.entry(key).or_default().push(name);
                }
                j.left_behind = p.out.left_behind.iter().map(|l| format!("{} {}: {}", l.object.kind, l.object.name, l.reason)).collect();
            }
            Stage::Apply => {
                let p = prepared.as_ref().expect("prepared");
                let n = self.apply(stored, p).await?;
                counts.insert("objects".into(), n as u64);
            }
            Stage::Quiesce => {
                let n = workloads::quiesce(self, stored).await?;
                counts.insert("workloads stopped".into(), n as u64);
            }
            Stage::PreCopy => {
                self.reattach_unsupported(prepared.as_ref().expect("prepared"))?;
                volumes::record_users(self, stored).await?;
                if self.spec.strategy == crate::model::Strategy::PreCopy {
                    counts = volumes::precopy(self, stored).await?;
                } else {
                    message = Some(format!("skipped: strategy {:?}", self.spec.strategy));
                }
            }
            Stage::Volumes => {
                self.reattach_unsupported(prepared.as_ref().expect("prepared"))?;
                counts = volumes::final_sync(self, stored).await?;
                let j = &stored.journal;
                if !j.verification.is_empty() {
                    message = Some(format!("{} volume(s) verified: tree hashes equal on both sides", j.verification.len()));
                }
            }
            Stage::Cutover => {
                let n = workloads::cutover(self, stored).await?;
                counts.insert("workloads ready".into(), n as u64);
                let j = &mut stored.journal;
                if let Some(start) = &j.downtime_started_at {
                    j.downtime_ms = journal::elapsed_ms(start, &journal::now());
                    message = j.downtime_ms.map(|ms| format!("downtime {:.1}s", ms as f64 / 1000.0));
                }
            }
            Stage::Verify => {
                counts = self.verify(stored).await?;
            }
            Stage::Retire => {
                message = Some(self.retire(stored).await?);
            }
            Stage::Done => {}
        }
        Ok((counts, message))
    }

    async fn apply(&self, stored: &mut Stored, p: &Prepared) -> anyhow::Result<usize> {
        let ns = &self.spec.namespace;
        let id = stored.journal.migration_id.clone();
        if let Some(existing) = self.dest.namespace(ns).await? {
            let ours = existing.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION)).and_then(Value::as_str) == Some(&id);
            let retained = existing.pointer("/metadata/labels").and_then(|l| l.get(labels::RETAINED)).and_then(Value::as_str) == Some("true");
            if !ours && retained {
                // A source Ferry retired earlier (the namespace is moving back): replace it.
                self.progress.detail("deleting the retained earlier copy on the destination");
                self.delete_namespace_and_wait(self.dest, ns).await?;
            } else if !ours {
                anyhow::bail!("namespace {ns} appeared on {} after preflight and was not created by Ferry; nothing was applied", self.dest.name);
            }
        }
        stored.journal.created_destination = true;
        self.save(stored).await?;
        // Kinds go in dependency order; objects of one kind go up to
        // APPLY_CONCURRENCY at a time (they do not depend on each other).
        // Bare Pods start at cutover, after the source copy is gone.
        let objects: Vec<&Value> = p.out.apply.iter().filter(|o| o["kind"] != "Pod").collect();
        let total = objects.len();
        let mut applied = 0;
        for group in objects.chunk_by(|a, b| a["apiVersion"] == b["apiVersion"] && a["kind"] == b["kind"]) {
            use futures::StreamExt;
            let mut results = futures::stream::iter(group.iter().map(|o| self.dest.apply(o))).buffer_unordered(APPLY_CONCURRENCY);
            while let Some(r) = results.next().await {
                r?;
                applied += 1;
                fault::in_apply(applied);
                if applied % 50 == 0 {
                    self.progress.detail(&format!("{applied}/{total} objects"));
                }
            }
        }
        for mp in &p.out.merge_patches {
            let r = &mp.target;
            // The destination creates its own default ServiceAccount; wait for it, then merge.
            for _ in 0..50 {
                if self.dest.get(r).await?.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            self.dest.merge_patch(r, &mp.patch).await?;
            applied += 1;
        }
        Ok(applied)
    }

    fn reattach_unsupported(&self, p: &Prepared) -> anyhow::Result<()> {
        let claims = p.out.apply.iter().filter(|o| o["kind"] == "PersistentVolumeClaim").count();
        if self.spec.volume_mode == VolumeMode::Reattach && claims > 0 {
            anyhow::bail!("volumes: reattach is not supported yet ({claims} claim(s) in {}); use `volumes: copy`", self.spec.namespace);
        }
        Ok(())
    }

    async fn verify(&self, stored: &Stored) -> anyhow::Result<BTreeMap<String, u64>> {
        let j = &stored.journal;
        let mut problems = Vec::new();
        let mut total = 0;
        for (key, names) in &j.expected {
            let (av, kind) = key.rsplit_once('/').unwrap_or(("", key));
            let present: std::collections::BTreeSet<String> = self.dest.list(av, kind, Some(&j.namespace), None).await?.iter()
                // Only copies this migration made count (controllers copy labels onto what they create).
                .filter(|o| o.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION)).and_then(Value::as_str) == Some(&j.migration_id))
                .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
                .collect();
            let missing: Vec<&String> = names.iter().filter(|n| !present.contains(*n)).collect();
            total += (names.len() - missing.len()) as u64;
            if !missing.is_empty() {
                problems.push(format!("{key} missing: {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
            }
        }
        let not_ready = workloads::not_ready(self.dest, &j.namespace).await?;
        if !not_ready.is_empty() {
            problems.push(format!("not Ready: {}", not_ready.join(", ")));
        }
        if !problems.is_empty() {
            anyhow::bail!("the destination does not match the export: {}", problems.join("; "));
        }
        Ok(BTreeMap::from([("objects verified".to_string(), total), ("kinds".to_string(), j.expected.len() as u64)]))
    }

    async fn retire(&self, stored: &mut Stored) -> anyhow::Result<String> {
        let ns = &self.spec.namespace;
        let j = &stored.journal;
        let nsref = ObjectRef { api_version: "v1".into(), kind: "Namespace".into(), namespace: None, name: ns.clone() };
        if self.spec.retention.is_zero() {
            if self.source.namespace(ns).await?.is_some() {
                self.progress.detail("deleting the source namespace");
                self.delete_namespace_and_wait(self.source, ns).await?;
            }
            return Ok(format!("source namespace deleted on {}", self.source.name));
        }
        let until = time::OffsetDateTime::now_utc() + self.spec.retention;
        let until = until.format(&time::format_description::well_known::Rfc3339)?;
        self.source.merge_patch(&nsref, &json!({"metadata": {
            "labels": {labels::RETAINED: "true", labels::MIGRATION: j.migration_id},
            "annotations": {labels::RETAIN_UNTIL: until},
        }})).await?;
        Ok(format!("source kept scaled to 0 on {} until {until}", self.source.name))
    }

    async fn delete_namespace_and_wait(&self, cluster: &Cluster, ns: &str) -> anyhow::Result<()> {
        let nsref = ObjectRef { api_version: "v1".into(), kind: "Namespace".into(), namespace: None, name: ns.to_string() };
        cluster.delete(&nsref).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while cluster.namespace(ns).await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("namespace {ns} on {} is still terminating after 180s", cluster.name);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Undo: restore the source, remove what Ferry created on the destination.
    async fn rollback(&self, stored: &mut Stored, failure: Failure) -> MigrateError {
        let stage = failure.stage;
        let message = failure.message.clone();
        stored.journal.outcome = Outcome::RollingBack;
        stored.journal.failure = Some(failure);
        if let Err(e) = self.save(stored).await {
            tracing::warn!(error = %e, "could not journal the rollback start");
        }
        self.progress.started(Stage::Done);
        let result: anyhow::Result<()> = async {
            volumes::cleanup(self, &stored.journal.migration_id).await?;
            if stored.journal.source_quiesced {
                workloads::restore_source(self, stored).await?;
            }
            if stored.journal.created_destination {
                let ns = &self.spec.namespace;
                let ours = self.dest.namespace(ns).await?
                    .and_then(|n| n.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION)).and_then(Value::as_str).map(str::to_string));
                if ours.as_deref() == Some(&stored.journal.migration_id) {
                    self.delete_namespace_and_wait(self.dest, ns).await?;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                stored.journal.outcome = Outcome::RolledBack;
                stored.journal.finished_at = Some(journal::now());
                if let Err(e) = self.save(stored).await {
                    tracing::warn!(error = %e, "could not journal the rollback end");
                }
                self.progress.finished(Stage::Done, &BTreeMap::new(), Some("rolled back"));
                MigrateError::RolledBack { id: stored.journal.migration_id.clone(), stage, message, journal: Box::new(stored.journal.clone()) }
            }
            Err(e) => {
                self.progress.failed(Stage::Done, &format!("rollback incomplete: {e:#}"));
                MigrateError::Stage { stage, source: e.context(format!("rollback after failing at {stage} is incomplete (re-run to finish it); first error: {message}")) }
            }
        }
    }
}
