//! Identity of exported objects and small helpers to read and edit them as
//! `serde_json::Value` (the pipeline exports every resource the API serves,
//! including custom ones, so typed structs would not cover them all).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::TransformError;

/// Names one exported object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `group/version`, or `version` for the core group.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// Reads the identity of an object; `index` is its position in the export, for errors.
    pub fn of(obj: &Value, index: usize) -> Result<Self, TransformError> {
        let field_str =
            |field: &'static str, v: Option<&Value>| -> Result<String, TransformError> {
                match v {
                    Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    Some(other) => Err(TransformError::MalformedObject {
                        index,
                        field,
                        problem: format!("must be a non-empty string, found {other}"),
                    }),
                    None => Err(TransformError::MalformedObject {
                        index,
                        field,
                        problem: "is missing".into(),
                    }),
                }
            };
        if !obj.is_object() {
            return Err(TransformError::MalformedObject {
                index,
                field: ".",
                problem: format!("must be a JSON object, found {}", type_name(obj)),
            });
        }
        Ok(ObjectRef {
            api_version: field_str("apiVersion", obj.get("apiVersion"))?,
            kind: field_str("kind", obj.get("kind"))?,
            namespace: obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            name: field_str("metadata.name", obj.pointer("/metadata/name"))?,
        })
    }

    /// API group (`""` for core).
    pub fn group(&self) -> &str {
        group_of(&self.api_version)
    }

    /// Whether this is `kind` in `group`, whatever the version.
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group() == group && self.kind == kind
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {}/{}", self.api_version, self.kind, ns, self.name),
            None => write!(f, "{} {} {}", self.api_version, self.kind, self.name),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Group part of an apiVersion (`""` for `v1`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Version part of an apiVersion.
pub fn version_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or(api_version, |(_, v)| v)
}

/// `metadata.labels[key]`.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// `metadata.annotations[key]`.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// The object at `path` below `v`, created (as empty objects) where missing or not an object.
pub fn ensure_object<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for key in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("just made an object")
            .entry(*key)
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("just made an object")
}

/// Mutable object at `path`, if every step exists and is an object.
pub fn object_at_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for key in path {
        cur = cur.get_mut(*key)?;
    }
    cur.as_object_mut()
}

/// Removes `key` from the object at `path`; drops the parent map if it became empty
/// (an empty `annotations: {}` is noise in diffs and in server-side apply ownership).
pub fn remove_at(v: &mut Value, path: &[&str], key: &str) -> Option<Value> {
    let parent = object_at_mut(v, path)?;
    let removed = parent.remove(key);
    if removed.is_some() && parent.is_empty() && !path.is_empty() {
        let (last, up) = path.split_last().expect("non-empty");
        if let Some(grand) = object_at_mut(v, up) {
            grand.remove(*last);
        }
    }
    removed
}

/// Sets a label.
pub fn set_label(obj: &mut Value, key: &str, value: &str) {
    ensure_object(obj, &["metadata", "labels"])
        .insert(key.to_owned(), Value::String(value.to_owned()));
}

/// Sets an annotation.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    ensure_object(obj, &["metadata", "annotations"])
        .insert(key.to_owned(), Value::String(value.to_owned()));
}

/// Removes an annotation (and an emptied annotations map).
pub fn remove_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    remove_at(obj, &["metadata", "annotations"], key)
}

/// `ownerReferences` entry that is the object's controller, if any.
pub fn controller_owner(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_ref_reads_identity_and_group() {
        let o = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop"}});
        let r = ObjectRef::of(&o, 0).unwrap();
        assert_eq!(r.group(), "apps");
        assert!(r.is("apps", "Deployment"));
        assert_eq!(r.to_string(), "apps/v1 Deployment shop/web");
        let core = ObjectRef::of(
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}),
            0,
        )
        .unwrap();
        assert_eq!(core.group(), "");
        assert_eq!(core.namespace, None);
    }

    #[test]
    fn object_ref_names_the_missing_field() {
        let err =
            ObjectRef::of(&json!({"apiVersion":"v1","kind":"Pod","metadata":{}}), 7).unwrap_err();
        assert_eq!(
            err,
            TransformError::MalformedObject {
                index: 7,
                field: "metadata.name",
                problem: "is missing".into()
            }
        );
        assert!(err.to_string().contains("#7"), "{err}");
        let err = ObjectRef::of(
            &json!({"apiVersion":"v1","kind":3,"metadata":{"name":"a"}}),
            0,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TransformError::MalformedObject { field: "kind", .. }
        ));
        let err = ObjectRef::of(&json!([1]), 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be a JSON object, found an array"),
            "{err}"
        );
    }

    #[test]
    fn remove_at_drops_emptied_parent() {
        let mut o = json!({"metadata":{"name":"a","annotations":{"x":"1"}}});
        assert_eq!(remove_annotation(&mut o, "x"), Some(json!("1")));
        assert_eq!(o, json!({"metadata":{"name":"a"}}));
        assert_eq!(remove_annotation(&mut o, "x"), None);
    }

    #[test]
    fn ensure_object_creates_path() {
        let mut o = json!({"metadata":{"name":"a"}});
        set_label(&mut o, "k", "v");
        assert_eq!(label(&o, "k"), Some("v"));
    }
}
