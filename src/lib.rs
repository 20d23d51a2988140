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
//! | [`mover`]   | volume data plane: directory-to-directory sync over mutual TLS, delta blocks, tree-hash proof | disk, net |
//! | [`output`]  | shared CLI output helpers: tables, `-o json|yaml`               | stdout |
pub mod dev;
pub mod kubeconfig;
pub mod labels;
pub mod mover;
pub mod output;
