//! Overlays: per-namespace changes applied to objects on their way to the
//! destination cluster. Patch and resource files are minijinja templates that
//! see the destination cluster (`cluster.name`, `cluster.labels`,
//! `cluster.vars`), the source cluster (`source`, absent for a first
//! placement) and `namespace`. Patches are strategic-merge (a YAML mapping) or
//! JSON6902 (a YAML list of operations, `target` required).
//!
//! Used by `ferry validate` and by the migration pipeline's transform stage
//! ([`apply_overlays`]).
pub mod smp;

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::types::Target;
use crate::model::yaml::split_documents;

/// What templates know about a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// Cluster labels.
    pub labels: BTreeMap<String, String>,
    /// Cluster variables.
    pub vars: BTreeMap<String, String>,
}

/// Template context of one namespace moving to one cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OverlayContext {
    /// The namespace.
    pub namespace: String,
    /// Destination cluster.
    pub cluster: ClusterInfo,
    /// Source cluster; `None` when the namespace is created for the first time.
    pub source: Option<ClusterInfo>,
}

/// A template file of an overlay.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateFile {
    /// Repo-relative path (for messages).
    pub file: String,
    /// Lines before the template in `file` (inline patches live inside overlay.yaml).
    pub line_offset: u64,
    /// Template text.
    pub text: String,
    /// Where the overlay refers to it, e.g. `patches[0]` (for messages).
    pub field: String,
}

/// A patch of an overlay, before rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchSource {
    /// Template text and where it came from.
    pub template: TemplateFile,
    /// Objects to patch; required for JSON6902.
    pub target: Option<Target>,
}

/// An overlay of one namespace, loaded from the repository but not rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OverlaySource {
    /// Patches in the order they are applied.
    pub patches: Vec<PatchSource>,
    /// Extra objects.
    pub resources: Vec<TemplateFile>,
}

/// One object rendered from a resource file, with where its `apiVersion` is.
#[derive(Clone, Debug)]
pub struct RenderedObject {
    /// Repo-relative file.
    pub file: String,
    /// Line of `apiVersion` (or of the document start).
    pub line: u64,
    /// Column of `apiVersion`.
    pub column: u64,
    /// The object.
    pub object: Value,
}

/// Why an overlay could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverlayError {
    /// Template syntax error or undefined variable.
    #[error("{file}:{line}: template error: {message}")]
    Template {
        /// File.
        file: String,
        /// Overlay field referring to the file.
        field: String,
        /// Line in the file.
        line: u64,
        /// minijinja's description.
        message: String,
    },
    /// The rendered text is not valid YAML or not an object.
    #[error("{file}:{line}:{column}: rendered YAML is invalid: {message}")]
    Yaml {
        /// File.
        file: String,
        /// Overlay field referring to the file.
        field: String,
        /// Line in the rendered text.
        line: u64,
        /// Column in the rendered text.
        column: u64,
        /// Parser message.
        message: String,
    },
    /// A patch selected no object.
    #[error("{file}:{line}: patch matches no object ({target})")]
    PatchMatchesNothing {
        /// File of the patch.
        file: String,
        /// Overlay field referring to the patch.
        field: String,
        /// Line of the patch document.
        line: u64,
        /// What it was looking for.
        target: String,
    },
    /// A patch is malformed or failed to apply.
    #[error("{file}:{line}: invalid patch: {message}")]
    InvalidPatch {
        /// File of the patch.
        file: String,
        /// Overlay field referring to the patch.
        field: String,
        /// Line of the patch document.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Every error of one overlay application (validation wants all, not the first).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct OverlayErrors(pub Vec<OverlayError>);

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A typo in a variable name must fail, not render as an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Render one template file.
pub fn render(env: &Environment<'_>, t: &TemplateFile, ctx: &OverlayContext) -> Result<String, OverlayError> {
    let value = minijinja::Value::from(minijinja::value::Serde(ctx));
    env.template_from_named_str(&t.file, &t.text).and_then(|tpl| tpl.render(value)).map_err(|e| {
        let mut message = e.to_string();
        // minijinja appends "(in file:line)"; the finding carries that itself.
        if let Some(i) = message.rfind(" (in ") {
            message.truncate(i);
        }
        if let Some(d) = e.detail()
            && !message.contains(d)
        {
            message = format!("{message}: {d}");
        }
        OverlayError::Template { file: t.file.clone(), field: t.field.clone(), line: t.line_offset + e.line().unwrap_or(1) as u64, message }
    })
}

/// Parse every YAML document of rendered text.
fn parse_rendered(t: &TemplateFile, rendered: &str) -> Result<Vec<(u64, u64, Value)>, OverlayError> {
    let mut out = Vec::new();
    for doc in split_documents(&t.file, rendered) {
        let value: Value = serde_saphyr::from_str(doc.text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 0));
            let text = e.without_snippet().to_string();
            let message = text.rfind(" at line ").map(|i| text[..i].to_string()).unwrap_or(text);
            OverlayError::Yaml { file: t.file.clone(), field: t.field.clone(), line: t.line_offset + doc.line_offset + line, column, message }
        })?;
        // Position of a top-level apiVersion, for reporting removed API versions;
        // a line scan is enough for that and avoids parsing every document twice.
        let (line, column) = doc
            .text
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.strip_prefix("apiVersion:").map(|rest| (i as u64 + 1, (l.len() - rest.trim_start().len()) as u64 + 1)))
            .unwrap_or((1, 1));
        out.push((t.line_offset + doc.line_offset + line, column, value));
    }
    Ok(out)
}

/// Render the overlay's extra objects.
pub fn render_resources(overlay: &OverlaySource, ctx: &OverlayContext) -> Result<Vec<RenderedObject>, OverlayErrors> {
    let env = environment();
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    for t in &overlay.resources {
        match render(&env, t, ctx).and_then(|r| parse_rendered(t, &r)) {
            Ok(docs) => {
                for (line, column, object) in docs {
                    if !object.is_object() || object.get("kind").is_none() || object.get("apiVersion").is_none() {
                        errors.push(OverlayError::Yaml {
                            file: t.file.clone(),
                            field: t.field.clone(),
                            line,
                            column,
                            message: "a resource must be a Kubernetes object with apiVersion, kind and metadata.name".into(),
                        });
                        continue;
                    }
                    objects.push(RenderedObject { file: t.file.clone(), line, column, object });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(objects) } else { Err(OverlayErrors(errors)) }
}

/// Apply an overlay to a namespace's objects: add its resources (set to the
/// namespace), then apply every patch in order. Each patch must match at
/// least one object — a patch that silently does nothing is a bug in the
/// overlay, so it is an error.
pub fn apply_overlays(overlay: &OverlaySource, ctx: &OverlayContext, objects: Vec<Value>) -> Result<Vec<Value>, OverlayErrors> {
    let checked = check_overlay(overlay, ctx, Some(objects));
    if checked.errors.is_empty() { Ok(checked.objects) } else { Err(OverlayErrors(checked.errors)) }
}

/// Everything learned from applying an overlay once.
#[derive(Debug, Default)]
pub struct Checked {
    /// The objects after the overlay.
    pub objects: Vec<Value>,
    /// The overlay's own resources as rendered (before patches), with positions.
    pub resources: Vec<RenderedObject>,
    /// Every error.
    pub errors: Vec<OverlayError>,
}

/// Apply an overlay and report everything. With `objects: None` (the
/// namespace's live objects are unknown) a patch that matches none of the
/// overlay's own resources is not an error: it presumably targets a live object.
pub fn check_overlay(overlay: &OverlaySource, ctx: &OverlayContext, objects: Option<Vec<Value>>) -> Checked {
    let require_match = objects.is_some();
    let mut out = Checked { objects: objects.unwrap_or_default(), ..Default::default() };
    match render_resources(overlay, ctx) {
        Ok(extra) => {
            for r in extra {
                let mut object = r.object.clone();
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.entry("namespace").or_insert_with(|| Value::String(ctx.namespace.clone()));
                }
                out.objects.push(object);
                out.resources.push(r);
            }
        }
        Err(OverlayErrors(e)) => out.errors.extend(e),
    }
    let env = environment();
    for p in &overlay.patches {
        if let Err(e) = apply_patch(&env, p, ctx, &mut out.objects, require_match) {
            out.errors.push(e);
        }
    }
    out
}

fn apply_patch(env: &Environment<'_>, p: &PatchSource, ctx: &OverlayContext, objects: &mut [Value], require_match: bool) -> Result<(), OverlayError> {
    let t = &p.template;
    let rendered = render(env, t, ctx)?;
    let docs = parse_rendered(t, &rendered)?;
    for (line, _, doc) in docs {
        let invalid = |message: String| OverlayError::InvalidPatch { file: t.file.clone(), field: t.field.clone(), line, message };
        match &doc {
            Value::Array(_) => {
                let target = p.target.as_ref().ok_or_else(|| invalid("a JSON6902 patch (a list of operations) needs `target`".into()))?;
                let ops: json_patch::Patch = serde_json::from_value(doc.clone()).map_err(|e| invalid(format!("not a JSON6902 operation list: {e}")))?;
                let mut matched = 0;
                for obj in objects.iter_mut().filter(|o| target_matches(target, o)) {
                    matched += 1;
                    json_patch::patch(obj, &ops).map_err(|e| invalid(format!("{} {}: {e}", kind_of(obj), name_of(obj))))?;
                }
                if matched == 0 && require_match {
                    return Err(OverlayError::PatchMatchesNothing { file: t.file.clone(), field: t.field.clone(), line, target: describe(target) });
                }
            }
            Value::Object(_) => {
                let target = match &p.target {
                    Some(t) => t.clone(),
                    None => target_of_patch(&doc).ok_or_else(|| {
                        invalid("a strategic-merge patch needs `apiVersion`, `kind` and `metadata.name`, or a `target`".into())
                    })?,
                };
                let mut matched = 0;
                for obj in objects.iter_mut().filter(|o| target_matches(&target, o)) {
                    matched += 1;
                    smp::merge(obj, &doc);
                }
                if matched == 0 && require_match {
                    return Err(OverlayError::PatchMatchesNothing { file: t.file.clone(), field: t.field.clone(), line, target: describe(&target) });
                }
            }
            _ => return Err(invalid("a patch must be a mapping (strategic merge) or a list (JSON6902)".into())),
        }
    }
    Ok(())
}

/// Target named by a strategic-merge patch itself. The version is left out on
/// purpose: the live object may be served at another version of the same group.
fn target_of_patch(doc: &Value) -> Option<Target> {
    let api = doc.get("apiVersion")?.as_str()?;
    let (group, _) = split_api_version(api);
    Some(Target {
        group: Some(group.to_string()),
        version: None,
        kind: Some(doc.get("kind")?.as_str()?.to_string()),
        name: Some(doc.get("metadata")?.get("name")?.as_str()?.to_string()),
        label_selector: None,
    })
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api: &str) -> (&str, &str) {
    api.rsplit_once('/').unwrap_or(("", api))
}

fn kind_of(o: &Value) -> &str {
    o.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// Whether an object is selected by a target.
pub fn target_matches(t: &Target, o: &Value) -> bool {
    let (group, version) = split_api_version(o.get("apiVersion").and_then(Value::as_str).unwrap_or(""));
    if t.group.as_deref().is_some_and(|g| g != group)
        || t.version.as_deref().is_some_and(|v| v != version)
        || t.kind.as_deref().is_some_and(|k| k != kind_of(o))
        || t.name.as_deref().is_some_and(|n| n != name_of(o))
    {
        return false;
    }
    match &t.label_selector {
        None => true,
        Some(sel) => parse_selector(sel).iter().all(|(k, v)| o.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v)),
    }
}

/// Parse `k=v,k2=v2` (also `k==v`).
pub fn parse_selector(sel: &str) -> Vec<(String, String)> {
    sel.split(',')
        .filter(|s| !s.trim().is_empty())
        .filter_map(|s| s.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim_start_matches('=').trim().to_string())))
        .collect()
}

fn describe(t: &Target) -> String {
    let mut parts = Vec::new();
    if let Some(g) = &t.group {
        parts.push(format!("group={}", if g.is_empty() { "\"\"" } else { g }));
    }
    for (k, v) in [("version", &t.version), ("kind", &t.kind), ("name", &t.name), ("labelSelector", &t.label_selector)] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> OverlayContext {
        OverlayContext {
            namespace: "web".into(),
            cluster: ClusterInfo {
                name: "west".into(),
                labels: BTreeMap::from([("region".into(), "eu-west".into())]),
                vars: BTreeMap::from([("ingressDomain".into(), "west.example.test".into())]),
            },
            source: Some(ClusterInfo { name: "east".into(), ..Default::default() }),
        }
    }

    fn tf(file: &str, text: &str) -> TemplateFile {
        TemplateFile { file: file.into(), line_offset: 0, text: text.into(), field: "patches[0]".into() }
    }

    fn sts() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "labels": {"app": "nginx"}},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}}})
    }

    #[test]
    fn templates_see_destination_source_and_namespace() {
        let o = OverlaySource {
            resources: vec![tf(
                "overlays/web/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: placement\ndata:\n  host: web.{{ cluster.vars.ingressDomain }}\n  region: {{ cluster.labels.region }}\n  from: {{ source.name }}\n  ns: {{ namespace }}\n",
            )],
            ..Default::default()
        };
        let out = apply_overlays(&o, &ctx(), vec![]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["data"], json!({"host": "web.west.example.test", "region": "eu-west", "from": "east", "ns": "web"}));
        assert_eq!(out[0]["metadata"]["namespace"], "web");
    }

    #[test]
    fn undefined_variable_is_a_template_error_with_line() {
        let o = OverlaySource { resources: vec![tf("overlays/web/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ cluster.varz.x }}\n")], ..Default::default() };
        let err = apply_overlays(&o, &ctx(), vec![]).unwrap_err();
        match &err.0[0] {
            OverlayError::Template { file, line, message, .. } => {
                assert_eq!(file, "overlays/web/cm.yaml");
                assert_eq!(*line, 4);
                assert!(message.contains("undefined"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn strategic_merge_patch_targets_the_object_it_names() {
        let o = OverlaySource {
            patches: vec![PatchSource {
                template: tf("p.yaml", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: web\n  labels:\n    placed-on: {{ cluster.name }}\n"),
                target: None,
            }],
            ..Default::default()
        };
        let other = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}});
        let out = apply_overlays(&o, &ctx(), vec![sts(), other.clone()]).unwrap();
        assert_eq!(out[0]["metadata"]["labels"], json!({"app": "nginx", "placed-on": "west"}));
        assert_eq!(out[1], other, "object not named by the patch is untouched");
    }

    #[test]
    fn json6902_patch_with_target() {
        let o = OverlaySource {
            patches: vec![PatchSource {
                template: tf("p.yaml", "- op: replace\n  path: /spec/replicas\n  value: 5\n- op: add\n  path: /metadata/annotations\n  value: {cluster: \"{{ cluster.name }}\"}\n"),
                target: Some(Target { kind: Some("StatefulSet".into()), label_selector: Some("app=nginx".into()), ..Default::default() }),
            }],
            ..Default::default()
        };
        let out = apply_overlays(&o, &ctx(), vec![sts()]).unwrap();
        assert_eq!(out[0]["spec"]["replicas"], 5);
        assert_eq!(out[0]["metadata"]["annotations"]["cluster"], "west");
    }

    #[test]
    fn patch_matching_nothing_is_an_error() {
        let o = OverlaySource {
            patches: vec![PatchSource { template: tf("p.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n"), target: None }],
            ..Default::default()
        };
        let err = apply_overlays(&o, &ctx(), vec![sts()]).unwrap_err();
        assert_eq!(err.0, vec![OverlayError::PatchMatchesNothing { file: "p.yaml".into(), field: "patches[0]".into(), line: 1, target: "group=apps kind=Deployment name=web".into() }]);
    }

    #[test]
    fn json6902_without_target_or_failing_op_is_invalid() {
        let no_target = OverlaySource { patches: vec![PatchSource { template: tf("p.yaml", "- op: remove\n  path: /spec/x\n"), target: None }], ..Default::default() };
        let err = apply_overlays(&no_target, &ctx(), vec![sts()]).unwrap_err();
        assert!(matches!(&err.0[0], OverlayError::InvalidPatch { message, .. } if message.contains("needs `target`")), "{err}");
        let bad_path = OverlaySource {
            patches: vec![PatchSource {
                template: tf("p.yaml", "- op: remove\n  path: /spec/nothere\n"),
                target: Some(Target { kind: Some("StatefulSet".into()), ..Default::default() }),
            }],
            ..Default::default()
        };
        let err = apply_overlays(&bad_path, &ctx(), vec![sts()]).unwrap_err();
        assert!(matches!(&err.0[0], OverlayError::InvalidPatch { message, .. } if message.contains("StatefulSet web")), "{err}");
    }

    #[test]
    fn selector_parsing() {
        assert_eq!(parse_selector("a=b, c==d"), vec![("a".into(), "b".into()), ("c".into(), "d".into())]);
    }
}
