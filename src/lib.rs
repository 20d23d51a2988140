//! Ferry moves Kubernetes namespaces — every object and the bytes in their
//! persistent volumes — between clusters, driven by a Git placement repository.
//!
//! Module map (pure decisions in the middle, side effects at the edges):
//!
//! | module      | what it does                                                   | IO |
//! |-------------|----------------------------------------------------------------|----|
//! | [`dev`]     | local multi-cluster harness: build/run etcd, apiserver, kcm, scheduler, kwok, a hostPath provisioner | processes, disk |
//! | [`kubeconfig`] | read/write kubeconfig files and build kube clients from contexts | disk |
//! | [`labels`]  | label/annotation keys shared by all modules                  | -  |
//! | [`model`]   | placement repository: types, loading from a file map, validation, status files | -  |
//! | [`overlay`] | minijinja-rendered overlays: strategic-merge and JSON6902 patches, extra objects | -  |
//! | [`plan`]    | pure planner: desired × observed → one step per namespace     | -  |
//! | [`output`]  | shared CLI output helpers: tables, `-o json|yaml`               | stdout |
pub mod dev;
pub mod kubeconfig;
pub mod labels;
pub mod model;
pub mod output;
pub mod overlay;
pub mod plan;
