//! Strategic merge patch on `serde_json::Value` Kubernetes objects.
//!
//! Covers what overlays need from the Kubernetes semantics: maps merge
//! recursively, `null` deletes a key, lists of the well-known
//! `patchMergeKey` fields (containers by `name`, volume mounts by
//! `mountPath`, ports by `containerPort`/`port`, …) merge element by element,
//! `$patch: delete` removes a list element or a map, `$patch: replace`
//! replaces instead of merging. Other lists are replaced, as in Kubernetes.
use serde_json::{Map, Value};

/// Merge key of a list field, by field name, following the Kubernetes API's
/// `patchMergeKey` tags. `None`: the list is replaced.
fn merge_key(field: &str, sample: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets"
        | "volumeClaimTemplates" | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        // Container ports merge by containerPort; Service ports by port.
        "ports" => {
            if sample.iter().any(|v| v.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Apply `patch` to `target` in place.
pub fn merge(target: &mut Value, patch: &Value) {
    merge_field(target, patch);
    strip_directives(target);
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn merge_field(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if directive(patch) == Some("replace") || !target.is_object() {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    let t = target.as_object_mut().expect("checked above");
    for (key, pv) in p {
        if key.starts_with('$') {
            continue;
        }
        if pv.is_null() || directive(pv) == Some("delete") {
            t.remove(key);
            continue;
        }
        match (t.get_mut(key), pv) {
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                let sample: Vec<Value> = tl.iter().chain(pl.iter()).cloned().collect();
                match merge_key(key, &sample) {
                    Some(mk) => merge_list(tl, pl, mk),
                    None => *tl = pl.iter().filter(|e| directive(e).is_none()).cloned().collect(),
                }
            }
            (Some(tv @ Value::Object(_)), Value::Object(_)) => merge_field(tv, pv),
            _ => {
                t.insert(key.clone(), pv.clone());
            }
        }
    }
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], key: &str) {
    if patch.iter().any(|e| directive(e) == Some("replace")) {
        *target = patch.iter().filter(|e| directive(e).is_none()).cloned().collect();
        return;
    }
    for pe in patch {
        let Some(kv) = pe.get(key) else {
            // Elements without the merge key cannot be matched; Kubernetes appends them.
            target.push(pe.clone());
            continue;
        };
        if directive(pe) == Some("delete") {
            target.retain(|te| te.get(key) != Some(kv));
            continue;
        }
        match target.iter_mut().find(|te| te.get(key) == Some(kv)) {
            Some(te) => merge_field(te, pe),
            None => target.push(pe.clone()),
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().filter(|k| k.starts_with('$')).cloned().collect();
            for k in keys {
                m.remove(&k);
            }
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Empty JSON object, for callers building patches.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 3, "template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "a", "operator": "Exists"}]
            }}}
        })
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let mut d = deployment();
        merge(&mut d, &json!({"metadata": {"labels": {"tier": null, "region": "eu"}}, "spec": {"replicas": 1}}));
        assert_eq!(d["metadata"]["labels"], json!({"app": "web", "region": "eu"}));
        assert_eq!(d["spec"]["replicas"], 1);
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut d = deployment();
        merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
                {"name": "new", "image": "new:1"}
            ]}}}}),
        );
        let cs = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "app:2");
        assert_eq!(cs[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}]));
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80}]), "untouched field kept");
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
    }

    #[test]
    fn patch_delete_removes_list_element() {
        let mut d = deployment();
        merge(&mut d, &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}));
        let cs = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "app");
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let mut d = deployment();
        merge(&mut d, &json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}}));
        assert_eq!(d["spec"]["template"]["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
    }

    #[test]
    fn patch_replace_replaces_map_and_is_stripped() {
        let mut d = deployment();
        merge(&mut d, &json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}));
        assert_eq!(d["metadata"]["labels"], json!({"only": "this"}));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        merge(&mut s, &json!({"spec": {"ports": [{"port": 443, "nodePort": 30443}]}}));
        assert_eq!(s["spec"]["ports"], json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "nodePort": 30443}]));
    }
}
