//! Kubernetes name, label and quantity syntax, checked before the API server would.

/// Why `name` is not a DNS-1123 label (namespace and cluster names), or `None` when it is.
pub fn dns1123_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 63 {
        return Some(format!("is {} characters long; at most 63 are allowed", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Some(format!("contains '{c}'; only lowercase letters, digits and '-' are allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must start and end with a lowercase letter or digit".into());
    }
    None
}

/// A DNS-1123 label correction suggestion: lowercase, invalid characters to `-`.
pub fn suggest_label(name: &str) -> String {
    let s: String = name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let s = s.trim_matches('-');
    s.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|p| dns1123_label_problem(p).is_none())
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `key` is not a valid label key (`[prefix/]name`), if it is not.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(format!("prefix '{p}' is not a DNS subdomain"));
    }
    if !is_label_name(name) {
        return Some(format!("name part '{name}' must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"));
    }
    None
}

/// Why `value` is not a valid label value, if it is not.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || is_label_name(value) {
        None
    } else {
        Some(format!("value '{value}' must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"))
    }
}

/// Whether `q` is a Kubernetes quantity such as `500m`, `4Gi`, `1.5`, `2e3`.
pub fn is_quantity(q: &str) -> bool {
    const SUFFIXES: [&str; 14] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P"];
    let body = SUFFIXES.iter().find_map(|s| q.strip_suffix(s)).or_else(|| q.strip_suffix('E')).unwrap_or(q);
    let body = match body.split_once(['e', 'E']) {
        Some((m, e)) if !e.is_empty() && e.trim_start_matches(['+', '-']).chars().all(|c| c.is_ascii_digit()) => m,
        Some(_) => return false,
        None => body,
    };
    let body = body.strip_prefix(['+', '-']).unwrap_or(body);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !(int.is_empty() && frac.is_none_or(str::is_empty))
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert_eq!(dns1123_label_problem("mysql"), None);
        assert_eq!(dns1123_label_problem("a-1"), None);
        assert!(dns1123_label_problem("My_App").unwrap().contains("'M'"));
        assert!(dns1123_label_problem("-x").unwrap().contains("start and end"));
        assert!(dns1123_label_problem(&"a".repeat(64)).unwrap().contains("64 characters"));
        assert_eq!(suggest_label("My_App"), "my-app");
    }

    #[test]
    fn labels() {
        assert_eq!(label_key_problem("topology.kubernetes.io/region"), None);
        assert_eq!(label_key_problem("tier"), None);
        assert!(label_key_problem("Bad Key").is_some());
        assert!(label_key_problem("UPPER.example/x").is_some());
        assert_eq!(label_value_problem(""), None);
        assert!(label_value_problem("has space").is_some());
    }

    #[test]
    fn quantities() {
        for q in ["1", "500m", "4Gi", "1.5", "100Ki", "2e3", "0.5Gi"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Gi", "4 Gi", "four", "1.2.3", "4GB"] {
            assert!(!is_quantity(q), "{q}");
        }
    }
}
