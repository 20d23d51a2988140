//! Ferry moves Kubernetes namespaces — every object and the bytes in their
//! persistent volumes — between clusters, driven by a Git placement repository.
//!
//! Module map (pure decisions in the middle, side effects at the edges):
//!
//! | module      | what it does                                                   | IO |
//! |-------------|----------------------------------------------------------------|----|
//! | [`agent`]   | the long-running loop: trigger → fetch → validate → plan → migrate → status commits | all, via the edges |
//! | [`dev`]     | local multi-cluster harness: build/run etcd, apiserver, kcm, scheduler, kwok, a hostPath provisioner | processes, disk |
//! | [`kubeconfig`] | read/write kubeconfig files and build kube clients from contexts | disk |
//! | [`labels`]  | label/annotation keys shared by all modules                  | -  |
//! | [`cluster`] | the Kubernetes edge: discovery, export, server-side apply, headroom | kube |
//! | [`model`]   | placement repository: types, loading from a file map, validation, status files | -  |
//! | [`overlay`] | minijinja-rendered overlays: strategic-merge and JSON6902 patches, extra objects | -  |
//! | [`plan`]    | pure planner: desired × observed → one step per namespace     | -  |
//! | [`mover`]   | volume data plane: directory-to-directory sync over mutual TLS, delta blocks, tree-hash proof | disk, net |
//! | [`output`]  | shared CLI output helpers: tables, `-o json|yaml`               | stdout |
//! | [`pipeline`] | the migration: journal, preflight, stages, rollback, `ferry migrate` | via cluster |
//! | [`transform`] | pure object transforms of a migration: leave behind, strip, rewrite, order, cutover patches, preflight requirements | - |
//! | [`repo`]    | Git (only importer of git2): fetch, read at commit, status commits + push, signatures, watch | git, network, disk |
//! | [`metrics`] | Prometheus metrics of the agent, OpenMetrics text encoding     | -  |
//! | [`webhook`] | forge webhooks: per-provider verify + parse (pure) → coalesced sync trigger; axum server with /healthz, /readyz, /metrics | HTTP |
pub mod agent;
pub mod dev;
pub mod kubeconfig;
pub mod labels;
pub mod metrics;
pub mod mover;
pub mod output;
pub mod cluster;
pub mod transform;
pub mod pipeline;
pub mod repo;
pub mod webhook;
pub mod model;
pub mod overlay;
pub mod plan;
