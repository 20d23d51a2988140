//! Loading and validating a placement repository. Every check produces a
//! [`Finding`] with file, line, column, field and a hint; nothing stops at the
//! first problem, so one run shows a reviewer everything.
use std::collections::BTreeMap;

use serde_json::Value;

use super::finding::{Code, Finding, Pos, Report};
use super::names::{dns1123_label_problem, is_quantity, label_key_problem, label_value_problem, suggest_label};
use super::types::*;
use super::yaml::{self, Doc, split_documents};
use super::{Cluster, Desired, Placement, RepoFiles};
use crate::overlay::{self, OverlayError, OverlaySource, PatchSource, TemplateFile};

/// Settings file at the repository root.
pub const SETTINGS_FILE: &str = "ferry.yaml";
/// Overlay entry file inside `overlays/<namespace>/`.
pub const OVERLAY_FILE: &str = "overlay.yaml";

/// API versions current Kubernetes (1.32+) no longer serves: (group/version,
/// kind or `*`, removed in, replacement).
const REMOVED_APIS: &[(&str, &str, &str, &str)] = &[
    ("batch/v1beta1", "CronJob", "1.25", "batch/v1"),
    ("extensions/v1beta1", "Ingress", "1.22", "networking.k8s.io/v1"),
    ("extensions/v1beta1", "NetworkPolicy", "1.16", "networking.k8s.io/v1"),
    ("extensions/v1beta1", "*", "1.16", "apps/v1"),
    ("apps/v1beta1", "*", "1.16", "apps/v1"),
    ("apps/v1beta2", "*", "1.16", "apps/v1"),
    ("networking.k8s.io/v1beta1", "*", "1.22", "networking.k8s.io/v1"),
    ("policy/v1beta1", "PodDisruptionBudget", "1.25", "policy/v1"),
    ("policy/v1beta1", "PodSecurityPolicy", "1.25", "Pod Security Admission (no replacement object)"),
    ("autoscaling/v2beta1", "*", "1.25", "autoscaling/v2"),
    ("autoscaling/v2beta2", "*", "1.26", "autoscaling/v2"),
    ("rbac.authorization.k8s.io/v1beta1", "*", "1.22", "rbac.authorization.k8s.io/v1"),
    ("rbac.authorization.k8s.io/v1alpha1", "*", "1.22", "rbac.authorization.k8s.io/v1"),
    ("apiextensions.k8s.io/v1beta1", "*", "1.22", "apiextensions.k8s.io/v1"),
    ("admissionregistration.k8s.io/v1beta1", "*", "1.22", "admissionregistration.k8s.io/v1"),
    ("scheduling.k8s.io/v1beta1", "*", "1.22", "scheduling.k8s.io/v1"),
    ("scheduling.k8s.io/v1alpha1", "*", "1.22", "scheduling.k8s.io/v1"),
    ("storage.k8s.io/v1beta1", "CSIStorageCapacity", "1.27", "storage.k8s.io/v1"),
    ("storage.k8s.io/v1beta1", "*", "1.22", "storage.k8s.io/v1"),
    ("coordination.k8s.io/v1beta1", "*", "1.22", "coordination.k8s.io/v1"),
    ("certificates.k8s.io/v1beta1", "*", "1.22", "certificates.k8s.io/v1"),
    ("discovery.k8s.io/v1beta1", "*", "1.25", "discovery.k8s.io/v1"),
    ("events.k8s.io/v1beta1", "*", "1.25", "events.k8s.io/v1"),
    ("node.k8s.io/v1beta1", "*", "1.25", "node.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "*", "1.26", "flowcontrol.apiserver.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta2", "*", "1.29", "flowcontrol.apiserver.k8s.io/v1"),
    ("flowcontrol.apiserver.k8s.io/v1beta3", "*", "1.32", "flowcontrol.apiserver.k8s.io/v1"),
    ("authentication.k8s.io/v1beta1", "*", "1.22", "authentication.k8s.io/v1"),
    ("authorization.k8s.io/v1beta1", "*", "1.22", "authorization.k8s.io/v1"),
    ("apiregistration.k8s.io/v1beta1", "*", "1.22", "apiregistration.k8s.io/v1"),
];

/// If `api_version`/`kind` is no longer served: (removed in, replacement).
pub fn removed_api(api_version: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    REMOVED_APIS.iter().find(|(gv, k, _, _)| *gv == api_version && (*k == "*" || *k == kind)).map(|(_, _, removed, repl)| (*removed, *repl))
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Parse a typed document and check its `apiVersion` and `kind`. When the
/// typed parse fails, a wrong `kind` is reported instead if there is one: it
/// explains the unknown fields better than the fields do.
fn parse_kind<T: serde::de::DeserializeOwned + Kinded>(doc: &Doc<'_>, kind: &str, dir_hint: &str) -> Result<T, Finding> {
    match yaml::parse::<T>(doc) {
        Ok(t) => {
            check_header(doc, Some(t.api_version()), Some(t.kind()), kind, dir_hint)?;
            Ok(t)
        }
        Err(f) => {
            if f.code != Code::YamlSyntax
                && let Ok(h) = serde_saphyr::from_str::<Header>(doc.text)
            {
                check_header(doc, h.api_version.as_ref(), h.kind.as_ref(), kind, dir_hint)?;
            }
            Err(f)
        }
    }
}

fn check_header(
    doc: &Doc<'_>,
    api_version: Option<&serde_saphyr::Spanned<String>>,
    found_kind: Option<&serde_saphyr::Spanned<String>>,
    kind: &str,
    dir_hint: &str,
) -> Result<(), Finding> {
    match api_version {
        None => return Err(doc.start().error(Code::MissingField, "apiVersion", "missing `apiVersion`", format!("add `apiVersion: {API_VERSION}`"))),
        Some(a) if a.value != API_VERSION => {
            return Err(doc.at(a).error(
                Code::WrongKind,
                "apiVersion",
                format!("unsupported apiVersion `{}`", a.value),
                format!("use `apiVersion: {API_VERSION}`"),
            ));
        }
        Some(_) => {}
    }
    match found_kind {
        None => Err(doc.start().error(Code::MissingField, "kind", "missing `kind`", format!("add `kind: {kind}`"))),
        Some(k) if k.value != kind => Err(doc.at(k).error(
            Code::WrongKind,
            "kind",
            format!("`kind: {}` found where `{kind}` documents belong", k.value),
            format!("{dir_hint} hold only `kind: {kind}` documents; move this document or fix `kind`"),
        )),
        Some(_) => Ok(()),
    }
}

fn check_name(doc: &Doc<'_>, name: &serde_saphyr::Spanned<String>, what: &str, out: &mut Vec<Finding>) -> bool {
    match dns1123_label_problem(&name.value) {
        None => true,
        Some(problem) => {
            let suggestion = suggest_label(&name.value);
            let hint = if suggestion.is_empty() {
                format!("a {what} must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters")
            } else {
                format!("a {what} must be a DNS-1123 label (lowercase letters, digits, '-', at most 63); e.g. `{suggestion}`")
            };
            out.push(doc.at(name).error(Code::InvalidName, "metadata.name", format!("{what} name `{}` {problem}", name.value), hint));
            false
        }
    }
}

fn check_duration(doc: &Doc<'_>, value: &serde_saphyr::Spanned<String>, field: &str, out: &mut Vec<Finding>) {
    if let Err(e) = humantime::parse_duration(&value.value) {
        out.push(doc.at(value).error(
            Code::InvalidDuration,
            field,
            format!("`{}` is not a duration: {e}", value.value),
            "write a duration such as `30s`, `5m`, `72h` or `7days`",
        ));
    }
}

fn check_labels(doc: &Doc<'_>, pos: Pos, labels: &BTreeMap<String, String>, field: &str, out: &mut Vec<Finding>) {
    for (k, v) in labels {
        if let Some(p) = label_key_problem(k) {
            out.push(pos.error(Code::InvalidLabel, format!("{field}.{k}"), format!("label key `{k}`: {p}"), "use a valid Kubernetes label key, e.g. `region` or `example.com/tier`"));
        }
        if let Some(p) = label_value_problem(v) {
            out.push(pos.error(Code::InvalidLabel, format!("{field}.{k}"), format!("label `{k}`: {p}"), "shorten the value or replace invalid characters with '-'"));
        }
    }
    let _ = doc;
}

fn load_settings(files: &RepoFiles, d: &mut Desired, out: &mut Vec<Finding>) {
    let Some(text) = files.get(SETTINGS_FILE) else { return };
    let docs = split_documents(SETTINGS_FILE, text);
    let Some(doc) = docs.first() else { return };
    if docs.len() > 1 {
        out.push(docs[1].start().error(Code::InvalidValue, "", "ferry.yaml holds more than one document", "keep a single Settings document in ferry.yaml"));
    }
    let parsed: SettingsDoc = match parse_kind(doc, "Settings", "ferry.yaml must") {
        Ok(s) => s,
        Err(f) => return out.push(f),
    };
    let s = parsed.spec;
    let path = s.status.path.value.trim_end_matches('/');
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
        out.push(doc.at(&s.status.path).error(
            Code::InvalidValue,
            "spec.status.path",
            format!("status path `{}` must be a relative directory inside the repository", s.status.path.value),
            "use e.g. `status`",
        ));
    }
    let b = &s.status.branch.value;
    if b.is_empty() || b.contains(['~', '^', ':', ' ', '\\', '?', '*', '[']) || b.contains("..") || b.starts_with('/') || b.ends_with('/') || b.ends_with(".lock") {
        out.push(doc.at(&s.status.branch).error(Code::InvalidValue, "spec.status.branch", format!("`{b}` is not a valid git branch name"), "use e.g. `ferry-status`"));
    }
    if !s.commit_identity.email.value.contains('@') {
        out.push(doc.at(&s.commit_identity.email).error(
            Code::InvalidValue,
            "spec.commitIdentity.email",
            format!("`{}` is not an e-mail address", s.commit_identity.email.value),
            "use e.g. `ferry@example.com`",
        ));
    }
    for (i, k) in s.trusted_signing_keys.iter().enumerate() {
        let key = k.public_key.value.trim();
        let ssh = ["ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-", "sk-ssh-ed25519@openssh.com ", "sk-ecdsa-sha2-"].iter().any(|p| key.starts_with(p));
        let pgp = key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----");
        if !ssh && !pgp {
            out.push(doc.at(&k.public_key).error(
                Code::InvalidValue,
                format!("spec.trustedSigningKeys[{i}].publicKey"),
                format!("key `{}` is neither an OpenSSH public key nor an armored OpenPGP key", k.name),
                "paste the `ssh-ed25519 AAAA…` line of the .pub file, or `gpg --armor --export KEYID`",
            ));
        }
    }
    d.settings = s;
}

fn load_cluster(doc: &Doc<'_>, d: &mut Desired, first_seen: &mut BTreeMap<String, Pos>, out: &mut Vec<Finding>) {
    let c: ClusterDoc = match parse_kind(doc, "Cluster", "files in clusters/") {
        Ok(c) => c,
        Err(f) => return out.push(f),
    };
    let name_ok = check_name(doc, &c.metadata.name, "cluster", out);
    let name_pos = doc.at(&c.metadata.name);
    check_labels(doc, name_pos.clone(), &c.metadata.labels, "metadata.labels", out);
    let access = &c.spec.access;
    match (&access.value.kubeconfig_context, &access.value.kubeconfig_secret) {
        (None, None) => out.push(doc.at(access).error(
            Code::MissingField,
            "spec.access",
            "no way to reach the cluster",
            "set `kubeconfigContext` (agent outside the clusters) or `kubeconfigSecret` (agent in a cluster)",
        )),
        (Some(_), Some(_)) => out.push(doc.at(access).error(
            Code::InvalidValue,
            "spec.access",
            "both `kubeconfigContext` and `kubeconfigSecret` are set",
            "keep exactly one of them",
        )),
        _ => {}
    }
    for (src, dst) in &c.spec.storage_classes {
        if dns1123_label_problem(src).is_some() && !src.contains('.') || dst.is_empty() {
            out.push(name_pos.error(
                Code::InvalidValue,
                format!("spec.storageClasses.{src}"),
                format!("storage class mapping `{src}` → `{dst}` is not valid"),
                "map an existing source StorageClass name to a destination StorageClass name",
            ));
        }
    }
    if let Some(r) = &c.spec.reserve {
        for (field, q) in [("cpu", &r.cpu), ("memory", &r.memory), ("storage", &r.storage)] {
            if let Some(q) = q
                && !is_quantity(&q.value)
            {
                out.push(doc.at(q).error(
                    Code::InvalidValue,
                    format!("spec.reserve.{field}"),
                    format!("`{}` is not a Kubernetes quantity", q.value),
                    "write e.g. `2`, `500m`, `4Gi`",
                ));
            }
        }
    }
    if !name_ok {
        return;
    }
    let name = c.metadata.name.value.clone();
    if let Some(first) = first_seen.get(&name) {
        return out.push(name_pos.error(
            Code::DuplicateCluster,
            "metadata.name",
            format!("cluster `{name}` is already defined at {}:{}", first.file, first.line),
            "remove one of the two definitions or rename this cluster",
        ));
    }
    first_seen.insert(name.clone(), name_pos);
    d.clusters.insert(name.clone(), Cluster { name, labels: c.metadata.labels, spec: c.spec, file: doc.file.to_string() });
}

/// Returns the namespace named, or `None` when the document could not be parsed.
fn load_placement(doc: &Doc<'_>, d: &mut Desired, first_seen: &mut BTreeMap<String, Pos>, out: &mut Vec<Finding>) -> Option<String> {
    let p: PlacementDoc = match parse_kind(doc, "Placement", "files in namespaces/") {
        Ok(p) => p,
        Err(f) => {
            out.push(f);
            return None;
        }
    };
    let name_ok = check_name(doc, &p.metadata.name, "namespace", out);
    let name_pos = doc.at(&p.metadata.name);
    if !p.metadata.labels.is_empty() {
        out.push(name_pos.error(Code::UnknownField, "metadata.labels", "placements take no labels", "remove `metadata.labels`; cluster labels belong in clusters/"));
    }
    let s = &p.spec;
    check_duration(doc, &s.retention, "spec.retention", out);
    if let Some(m) = &s.max_final_sync {
        check_duration(doc, m, "spec.maxFinalSync", out);
        if s.strategy != Strategy::PreCopy {
            out.push(doc.at(m).warning(
                Code::InvalidValue,
                "spec.maxFinalSync",
                "`maxFinalSync` only applies to `strategy: pre-copy`",
                "remove it or set `strategy: pre-copy`",
            ));
        }
    }
    for (phase, hooks) in [("beforeQuiesce", &s.hooks.before_quiesce), ("afterStart", &s.hooks.after_start)] {
        for (i, h) in hooks.iter().enumerate() {
            let field = format!("spec.hooks.{phase}[{i}]");
            check_duration(doc, &h.timeout, &format!("{field}.timeout"), out);
            if h.command.value.is_empty() || h.command.value[0].trim().is_empty() {
                out.push(doc.at(&h.command).error(
                    Code::InvalidValue,
                    format!("{field}.command"),
                    format!("hook `{}` has an empty command", h.name),
                    "give the argv, e.g. `[nodetool, drain]`",
                ));
            }
            if h.selector.is_empty() {
                out.push(doc.at(&h.command).error(
                    Code::MissingField,
                    format!("{field}.selector"),
                    format!("hook `{}` selects no pods", h.name),
                    "add a pod label selector, e.g. `selector: {app: cassandra}`",
                ));
            }
            check_labels(doc, doc.at(&h.command), &h.selector, &format!("{field}.selector"), out);
        }
    }
    let ns = p.metadata.name.value.clone();
    if !name_ok {
        return Some(ns);
    }
    if let Some(first) = first_seen.get(&ns) {
        out.push(name_pos.error(
            Code::DuplicatePlacement,
            "metadata.name",
            format!("namespace `{ns}` is already placed at {}:{}", first.file, first.line),
            "a namespace runs on one cluster: delete one of the two placements",
        ));
        return Some(ns);
    }
    first_seen.insert(ns.clone(), name_pos);
    d.placements.insert(ns.clone(), Placement { namespace: ns.clone(), spec: p.spec, file: doc.file.to_string() });
    Some(ns)
}

/// Resolve `rel` inside `dir`, refusing to leave it.
fn join(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(format!("{dir}/{}", rel.trim_start_matches("./")))
}

fn load_overlay(files: &RepoFiles, ns: &str, doc: &Doc<'_>, d: &mut Desired, out: &mut Vec<Finding>) {
    let o: OverlayDoc = match parse_kind(doc, "Overlay", "overlay.yaml files must") {
        Ok(o) => o,
        Err(f) => return out.push(f),
    };
    let dir = format!("overlays/{ns}");
    let mut src = OverlaySource::default();
    let file_template = |rel: &serde_saphyr::Spanned<String>, field: String, out: &mut Vec<Finding>| -> Option<TemplateFile> {
        let Some(path) = join(&dir, &rel.value) else {
            out.push(doc.at(rel).error(Code::InvalidValue, field, format!("`{}` leaves the overlay directory", rel.value), format!("name a file inside {dir}/")));
            return None;
        };
        match files.get(&path) {
            Some(text) => Some(TemplateFile { file: path, line_offset: 0, text: text.to_string(), field }),
            None => {
                out.push(doc.at(rel).error(Code::MissingFile, field, format!("file `{path}` does not exist"), format!("create it or fix the path (relative to {dir}/)")));
                None
            }
        }
    };
    for (i, p) in o.patches.iter().enumerate() {
        let field = format!("patches[{i}]");
        let template = match (&p.path, &p.patch) {
            (Some(path), None) => file_template(path, format!("{field}.path"), out),
            (None, Some(inline)) => Some(TemplateFile {
                file: doc.file.to_string(),
                // The span starts at the scalar's first content line, which is template line 1.
                line_offset: doc.at(inline).line.saturating_sub(1),
                text: inline.value.clone(),
                field: format!("{field}.patch"),
            }),
            _ => {
                out.push(doc.start().error(Code::InvalidValue, field, "a patch needs exactly one of `path` and `patch`", "reference a file with `path` or write the patch inline with `patch: |`"));
                None
            }
        };
        if let Some(template) = template {
            src.patches.push(PatchSource { template, target: p.target.clone() });
        }
    }
    for (i, r) in o.resources.iter().enumerate() {
        if let Some(t) = file_template(r, format!("resources[{i}]"), out) {
            src.resources.push(t);
        }
    }
    d.overlays.insert(ns.to_string(), src);
}

/// Names a broken placement document probably meant: its `metadata.name` if
/// the YAML parses, else every `name:` value and the file stem. Only used to
/// avoid piling "orphan overlay" warnings on top of the real error.
fn guess_names(path: &str, text: &str) -> Vec<String> {
    if let Some(name) = serde_saphyr::from_str::<NameOnly>(text).ok().and_then(|n| n.metadata).and_then(|m| m.name) {
        return vec![name];
    }
    let stem = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".yaml").trim_end_matches(".yml").to_string();
    let names = text.lines().filter_map(|l| l.trim().strip_prefix("name:")).map(|v| v.trim().trim_matches(['"', '\'']).to_string());
    std::iter::once(stem).chain(names).collect()
}

/// Just the name of a document, read leniently.
#[derive(serde::Deserialize)]
struct NameOnly {
    metadata: Option<NameOnlyMeta>,
}
#[derive(serde::Deserialize)]
struct NameOnlyMeta {
    name: Option<String>,
}

/// Parse every document; report what is malformed, duplicated or dangling.
pub fn load(files: &RepoFiles) -> (Desired, Vec<Finding>) {
    let mut out = Vec::new();
    let mut d = Desired::default();
    load_settings(files, &mut d, &mut out);
    let status_prefix = format!("{}/", d.settings.status.path.value.trim_end_matches('/'));
    let mut clusters_seen = BTreeMap::new();
    let mut placements_seen = BTreeMap::new();
    let mut overlay_files = Vec::new();
    // Namespaces named by any placement document, even a broken one: an
    // overlay of a placement with a typo is not an orphan.
    let mut mentioned = std::collections::BTreeSet::new();
    for (path, text) in &files.0 {
        if path.starts_with(&status_prefix) {
            continue;
        }
        let ignored = |out: &mut Vec<Finding>, what: &str| {
            out.push(Pos::file(path).warning(Code::IgnoredFile, "", format!("Ferry does not read this file ({what})"), "rename it to `*.yaml` at the top of its directory, or move it out"));
        };
        if let Some(rest) = path.strip_prefix("clusters/") {
            if !is_yaml(rest) || rest.contains('/') {
                ignored(&mut out, "clusters/ holds `<name>.yaml` files");
                continue;
            }
            for doc in split_documents(path, text) {
                load_cluster(&doc, &mut d, &mut clusters_seen, &mut out);
            }
        } else if let Some(rest) = path.strip_prefix("namespaces/") {
            if !is_yaml(rest) || rest.contains('/') {
                ignored(&mut out, "namespaces/ holds `<namespace>.yaml` files");
                continue;
            }
            for doc in split_documents(path, text) {
                match load_placement(&doc, &mut d, &mut placements_seen, &mut out) {
                    Some(name) => {
                        mentioned.insert(name);
                    }
                    None => mentioned.extend(guess_names(path, doc.text)),
                }
            }
        } else if let Some((ns, file)) = path.strip_prefix("overlays/").and_then(|r| r.split_once('/'))
            && file == OVERLAY_FILE
        {
            overlay_files.push((ns.to_string(), path, text));
        }
    }
    for (ns, path, text) in overlay_files {
        let docs = split_documents(path, text);
        if let Some(doc) = docs.first() {
            load_overlay(files, &ns, doc, &mut d, &mut out);
        }
        if !mentioned.contains(&ns) {
            out.push(Pos::file(path).warning(
                Code::OrphanOverlay,
                "",
                format!("overlay for namespace `{ns}`, which no placement names"),
                format!("add namespaces/{ns}.yaml or delete overlays/{ns}/"),
            ));
        }
    }
    // Cross references last: clusters may be defined after the placements naming them.
    for (ns, p) in &d.placements {
        let c = &p.spec.cluster;
        if !d.clusters.contains_key(&c.value) {
            let known = d.clusters.keys().cloned().collect::<Vec<_>>().join(", ");
            let text = files.get(&p.file).unwrap_or("");
            let docs = split_documents(&p.file, text);
            // Spans are relative to the document; find the one that placed `ns`.
            let pos = docs
                .iter()
                .find(|doc| yaml::parse::<PlacementDoc>(doc).is_ok_and(|pd| pd.metadata.name.value == *ns))
                .map(|doc| doc.at(c))
                .unwrap_or_else(|| Pos::file(&p.file));
            out.push(pos.error(
                Code::UnknownCluster,
                "spec.cluster",
                format!("namespace `{ns}` is placed on cluster `{}`, which is not defined", c.value),
                if known.is_empty() { "add a clusters/<name>.yaml file".to_string() } else { format!("use one of: {known}; or add clusters/{}.yaml", c.value) },
            ));
        }
    }
    (d, out)
}

fn overlay_finding(e: OverlayError) -> Finding {
    match e {
        OverlayError::Template { file, field, line, message } => Pos { file, line, column: 0 }.error(
            Code::Template,
            field,
            message,
            "templates see `namespace`, `cluster.name`, `cluster.labels.*`, `cluster.vars.*` and `source` (none for a first placement); check spelling and braces",
        ),
        OverlayError::Yaml { file, field, line, column, message } => {
            Pos { file, line, column }.error(Code::YamlSyntax, field, format!("rendered template is not valid: {message}"), "fix the YAML in the template; positions refer to the rendered text")
        }
        OverlayError::PatchMatchesNothing { file, field, line, target } => Pos { file, line, column: 1 }.error(
            Code::PatchMatchesNothing,
            field,
            format!("patch matches no object ({target})"),
            "check kind and name against the namespace's objects, or set `target` explicitly",
        ),
        OverlayError::InvalidPatch { file, field, line, message } => {
            {
            let hint = if message.contains("failed at path") {
                "JSON6902 paths must exist in the target object (an `add` needs its parent): compare the path with the object"
            } else {
                "a strategic-merge patch is a partial object naming apiVersion/kind/metadata.name; a JSON6902 patch is a list of {op, path, value} with a `target`"
            };
            Pos { file, line, column: 1 }.error(Code::InvalidPatch, field, message, hint)
        }
        }
    }
}

/// Load, then render every overlay for its placement and check the result.
/// With `objects` (namespace → its objects), patches are applied to them and
/// one that matches nothing is an error; without, only overlay-internal
/// consistency is checked.
pub fn validate(files: &RepoFiles, objects: Option<&BTreeMap<String, Vec<Value>>>) -> (Desired, Report) {
    let (d, mut out) = load(files);
    for (ns, overlay) in &d.overlays {
        let Some(p) = d.placements.get(ns) else { continue };
        // Render as a move from another cluster so templates using `source` are exercised.
        let source = d.clusters.keys().find(|c| **c != p.spec.cluster.value).cloned();
        let Some(ctx) = d.overlay_context(ns, source.as_deref()) else { continue };
        let checked = overlay::check_overlay(overlay, &ctx, objects.and_then(|o| o.get(ns)).cloned());
        out.extend(checked.errors.into_iter().map(overlay_finding));
        for r in checked.resources {
            let api = r.object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let kind = r.object.get("kind").and_then(Value::as_str).unwrap_or("");
            if let Some((removed, replacement)) = removed_api(api, kind) {
                let field = overlay.resources.iter().find(|t| t.file == r.file).map(|t| t.field.clone()).unwrap_or_default();
                out.push(Pos { file: r.file, line: r.line, column: r.column }.error(
                    Code::RemovedApiVersion,
                    if field.is_empty() { "apiVersion".to_string() } else { format!("{field}.apiVersion") },
                    format!("{kind} `{api}` is no longer served (removed in Kubernetes {removed})"),
                    format!("use `apiVersion: {replacement}` and adapt the object to it"),
                ));
            }
        }
    }
    (d, Report::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: east\nspec:\n  access:\n    kubeconfigContext: east\n";
    const PLACEMENT: &str = "apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: web\nspec:\n  cluster: east\n";

    fn repo(extra: &[(&str, &str)]) -> RepoFiles {
        let mut f = RepoFiles::default();
        f.insert("clusters/east.yaml", CLUSTER);
        f.insert("namespaces/web.yaml", PLACEMENT);
        for (p, t) in extra {
            f.insert(*p, *t);
        }
        f
    }

    fn findings(files: &RepoFiles) -> Vec<Finding> {
        validate(files, None).1.findings
    }

    #[track_caller]
    fn one(files: &RepoFiles, code: Code) -> Finding {
        let fs = findings(files);
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert_eq!(fs[0].code, code, "{fs:#?}");
        fs[0].clone()
    }

    #[test]
    fn minimal_repo_is_valid_with_default_settings() {
        let (d, report) = validate(&repo(&[]), None);
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(d.settings.status.branch.value, "ferry-status");
        assert_eq!(d.settings.status.path.value, "status");
        assert_eq!(d.placements["web"].spec.retention.value, "168h");
        assert_eq!(d.placements["web"].spec.strategy, Strategy::StopCopyStart);
    }

    #[test]
    fn status_files_are_not_read_as_repository_documents() {
        let files = repo(&[("status/web.yaml", "kind: PlacementStatus\nnot: [valid for us"), ("README.md", "# hi")]);
        assert!(findings(&files).is_empty());
    }

    #[test]
    fn wrong_api_version() {
        let files = repo(&[("namespaces/web.yaml", &PLACEMENT.replace("ferry.dev/v1alpha1", "ferry.dev/v1"))]);
        let f = one(&files, Code::WrongKind);
        assert_eq!((f.line, f.column, f.field.as_str()), (1, 13, "apiVersion"));
        assert_eq!(f.message, "unsupported apiVersion `ferry.dev/v1`");
    }

    #[test]
    fn wrong_kind_reported_instead_of_unknown_fields() {
        // A Cluster document dropped into namespaces/: its fields are unknown to
        // Placement, but the useful message is about the kind.
        let files = repo(&[("namespaces/east.yaml", CLUSTER)]);
        let fs = findings(&files);
        assert!(fs.iter().any(|f| f.code == Code::WrongKind && f.file == "namespaces/east.yaml" && f.line == 2), "{fs:#?}");
        assert!(!fs.iter().any(|f| f.code == Code::UnknownField), "{fs:#?}");
    }

    #[test]
    fn invalid_cluster_label() {
        let files = repo(&[("clusters/east.yaml", &CLUSTER.replace("  name: east\n", "  name: east\n  labels:\n    bad key: x\n"))]);
        let f = one(&files, Code::InvalidLabel);
        assert_eq!(f.field, "metadata.labels.bad key");
        assert!(f.message.contains("label key `bad key`"), "{}", f.message);
    }

    #[test]
    fn access_both_set() {
        let files = repo(&[("clusters/east.yaml", &CLUSTER.replace("    kubeconfigContext: east\n", "    kubeconfigContext: east\n    kubeconfigSecret: {namespace: ferry, name: east}\n"))]);
        let f = one(&files, Code::InvalidValue);
        assert_eq!((f.line, f.column, f.field.as_str()), (7, 5, "spec.access"));
        assert_eq!(f.message, "both `kubeconfigContext` and `kubeconfigSecret` are set");
    }

    #[test]
    fn reserve_quantity() {
        let files = repo(&[("clusters/east.yaml", &format!("{CLUSTER}  reserve:\n    memory: 4 GB\n"))]);
        let f = one(&files, Code::InvalidValue);
        assert_eq!((f.line, f.column, f.field.as_str()), (9, 13, "spec.reserve.memory"));
        assert_eq!(f.message, "`4 GB` is not a Kubernetes quantity");
    }

    #[test]
    fn settings_checks() {
        let settings = "apiVersion: ferry.dev/v1alpha1\nkind: Settings\nspec:\n  status:\n    branch: \"my branch\"\n    path: ../outside\n  commitIdentity:\n    email: nobody\n  trustedSigningKeys:\n    - name: alice\n      publicKey: not-a-key\n";
        let fs = findings(&repo(&[("ferry.yaml", settings)]));
        let fields: Vec<&str> = fs.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["spec.status.branch", "spec.status.path", "spec.commitIdentity.email", "spec.trustedSigningKeys[0].publicKey"], "{fs:#?}");
        let lines: Vec<u64> = fs.iter().map(|f| f.line).collect();
        assert_eq!(lines, [5, 6, 8, 11]);
        let key = fs.iter().find(|f| f.field.ends_with("publicKey")).unwrap();
        assert_eq!((key.line, key.column), (11, 18));
    }

    #[test]
    fn settings_unknown_field() {
        let f = one(&repo(&[("ferry.yaml", "apiVersion: ferry.dev/v1alpha1\nkind: Settings\nspec:\n  status:\n    brnach: x\n")]), Code::UnknownField);
        assert_eq!((f.file.as_str(), f.line, f.column, f.field.as_str()), ("ferry.yaml", 5, 5, "spec.status.brnach"));
        assert!(f.hint.contains("branch"), "{}", f.hint);
    }

    #[test]
    fn max_final_sync_without_pre_copy_is_a_warning() {
        let files = repo(&[("namespaces/web.yaml", &format!("{PLACEMENT}  maxFinalSync: 30s\n"))]);
        let (_, report) = validate(&files, None);
        assert!(report.ok());
        assert_eq!(report.warnings, 1);
        assert_eq!(report.findings[0].field, "spec.maxFinalSync");
    }

    #[test]
    fn hook_without_selector() {
        let p = format!("{PLACEMENT}  hooks:\n    afterStart:\n      - name: check\n        selector: {{}}\n        command: [true]\n");
        let f = one(&repo(&[("namespaces/web.yaml", &p)]), Code::MissingField);
        assert_eq!(f.field, "spec.hooks.afterStart[0].selector");
    }

    #[test]
    fn overlay_path_escaping_its_directory() {
        let o = "apiVersion: ferry.dev/v1alpha1\nkind: Overlay\nresources:\n  - ../../clusters/east.yaml\n";
        let f = one(&repo(&[("overlays/web/overlay.yaml", o)]), Code::InvalidValue);
        assert_eq!((f.line, f.column, f.field.as_str()), (4, 5, "resources[0]"));
        assert!(f.message.contains("leaves the overlay directory"));
    }

    #[test]
    fn patch_with_both_path_and_inline() {
        let o = "apiVersion: ferry.dev/v1alpha1\nkind: Overlay\npatches:\n  - path: a.yaml\n    patch: \"[]\"\n";
        let f = one(&repo(&[("overlays/web/overlay.yaml", o), ("overlays/web/a.yaml", "[]")]), Code::InvalidValue);
        assert_eq!(f.field, "patches[0]");
    }

    #[test]
    fn file_in_wrong_place_is_a_warning() {
        let f = one(&repo(&[("clusters/notes.txt", "hello")]), Code::IgnoredFile);
        assert_eq!(f.severity, crate::model::Severity::Warning);
    }

    #[test]
    fn removed_api_table() {
        assert_eq!(removed_api("batch/v1beta1", "CronJob"), Some(("1.25", "batch/v1")));
        assert_eq!(removed_api("extensions/v1beta1", "Ingress"), Some(("1.22", "networking.k8s.io/v1")));
        assert_eq!(removed_api("apps/v1beta2", "Deployment"), Some(("1.16", "apps/v1")));
        assert_eq!(removed_api("batch/v1", "CronJob"), None);
        assert_eq!(removed_api("policy/v1", "PodDisruptionBudget"), None);
    }

    #[test]
    fn templates_handle_a_first_placement_without_source() {
        let o = OverlaySource {
            resources: vec![TemplateFile {
                file: "r.yaml".into(),
                line_offset: 0,
                text: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  from: \"{{ source.name if source else 'none' }}\"\n".into(),
                field: "resources[0]".into(),
            }],
            ..Default::default()
        };
        let d = load(&repo(&[])).0;
        let ctx = d.overlay_context("web", None).unwrap();
        let out = overlay::apply_overlays(&o, &ctx, vec![]).unwrap();
        assert_eq!(out[0]["data"]["from"], "none");
    }
}
