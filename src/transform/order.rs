//! Apply order (Velero's default): what others depend on goes first, so a Pod
//! never waits for its ServiceAccount, a claim never for its volume. Deletion
//! and rollback go the other way round.

use serde_json::Value;

use super::object::group_of;

/// Kinds in apply order; everything else comes after, grouped by kind.
pub const APPLY_ORDER: &[(&str, &str)] = &[
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("", "Namespace"),
    ("storage.k8s.io", "StorageClass"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "Role"),
    ("", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("", "LimitRange"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("", "Pod"),
    ("", "Service"),
];

/// Sort key: rank of the kind, then (for "the rest") group and kind, then namespace and name.
fn key(o: &Value) -> (usize, String, String, String, String) {
    let s = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("");
    let group = group_of(s("/apiVersion"));
    let kind = s("/kind");
    let rank = APPLY_ORDER
        .iter()
        .position(|(g, k)| *g == group && *k == kind)
        .unwrap_or(APPLY_ORDER.len());
    let (g, k) = if rank == APPLY_ORDER.len() {
        (group, kind)
    } else {
        ("", "")
    };
    let owned = |s: &str| s.to_owned();
    (
        rank,
        owned(g),
        owned(k),
        owned(s("/metadata/namespace")),
        owned(s("/metadata/name")),
    )
}

/// Sorts by keys computed once per object: reading them through JSON pointers
/// on every comparison made sorting the slowest step of a transform.
fn sort_with(objects: &mut [Value], reverse: bool) {
    let mut keyed: Vec<_> = objects
        .iter_mut()
        .map(|o| (key(o), std::mem::take(o)))
        .collect();
    if reverse {
        keyed.sort_by(|a, b| b.0.cmp(&a.0));
    } else {
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
    }
    for (slot, (_, o)) in objects.iter_mut().zip(keyed) {
        *slot = o;
    }
}

/// Sorts objects into apply order (stable: equal keys keep their order).
pub fn sort_for_apply(objects: &mut [Value]) {
    sort_with(objects, false);
}

/// Sorts objects into deletion order: the reverse of apply order.
pub fn sort_for_delete(objects: &mut [Value]) {
    sort_with(objects, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ns"}})
    }
    fn names(v: &[Value]) -> Vec<String> {
        v.iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn applies_in_velero_order_and_by_name_within_a_kind() {
        let mut v = vec![
            obj("apps/v1", "Deployment", "web"),
            obj("v1", "Service", "web"),
            obj("example.com/v1", "Widget", "w"),
            obj("v1", "Pod", "solo"),
            obj("scheduling.k8s.io/v1", "PriorityClass", "high"),
            obj("v1", "LimitRange", "lr"),
            obj("v1", "ConfigMap", "b"),
            obj("v1", "ConfigMap", "a"),
            obj("v1", "Secret", "s"),
            obj("rbac.authorization.k8s.io/v1", "RoleBinding", "rb"),
            obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "crb"),
            obj("v1", "ServiceAccount", "sa"),
            obj("rbac.authorization.k8s.io/v1", "Role", "r"),
            obj("rbac.authorization.k8s.io/v1", "ClusterRole", "cr"),
            obj("v1", "PersistentVolumeClaim", "data"),
            obj("v1", "PersistentVolume", "pv"),
            obj("storage.k8s.io/v1", "StorageClass", "fast"),
            obj("v1", "Namespace", "ns"),
            obj(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "widgets.example.com",
            ),
            obj("apps/v1", "Deployment", "api"),
        ];
        sort_for_apply(&mut v);
        assert_eq!(
            names(&v),
            [
                "CustomResourceDefinition/widgets.example.com",
                "Namespace/ns",
                "StorageClass/fast",
                "PersistentVolume/pv",
                "PersistentVolumeClaim/data",
                "ClusterRole/cr",
                "Role/r",
                "ServiceAccount/sa",
                "ClusterRoleBinding/crb",
                "RoleBinding/rb",
                "Secret/s",
                "ConfigMap/a",
                "ConfigMap/b",
                "LimitRange/lr",
                "PriorityClass/high",
                "Pod/solo",
                "Service/web",
                "Deployment/api",
                "Deployment/web",
                "Widget/w",
            ]
        );
        let forward = names(&v);
        sort_for_delete(&mut v);
        let mut back = names(&v);
        back.reverse();
        assert_eq!(back, forward, "deletion is the reverse of apply");
    }

    #[test]
    fn kind_matches_need_the_right_group() {
        // A CRD-defined `Service` kind is not the core Service.
        let mut v = vec![obj("example.com/v1", "Service", "x"), obj("v1", "Pod", "p")];
        sort_for_apply(&mut v);
        assert_eq!(names(&v), ["Pod/p", "Service/x"]);
    }
}
