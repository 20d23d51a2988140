//! Kubernetes resource quantities ("500m", "1Gi", "1.5", "2e3") as integers,
//! and a pod's effective requests (max of init containers vs sum of containers,
//! plus overhead), as the scheduler counts them.
use serde_json::Value;

/// Parse a quantity into its value times `scale` (1000 for millicores, 1 for bytes), rounded up.
fn parse_scaled(q: &str, scale: i128) -> Option<i128> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    // Exponent forms ("1e3", "1E-3") are a suffix starting with e/E followed by an integer.
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            if exp >= 0 { (10i128.checked_pow(exp as u32)?, 1) } else { (1, 10i128.checked_pow((-exp) as u32)?) }
        }
        _ => return None,
    };
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let frac_den = 10i128.checked_pow(frac.len() as u32)?;
    let numer = mantissa.checked_mul(mult_num)?.checked_mul(scale)?;
    let denom = frac_den.checked_mul(mult_den)?;
    let v = (numer + denom - 1) / denom;
    Some(if neg { -((numer) / denom) } else { v })
}

/// CPU quantity in millicores ("500m" → 500, "2" → 2000).
pub fn millicores(q: &str) -> Option<i128> {
    parse_scaled(q, 1000)
}

/// Memory/storage quantity in bytes ("1Gi" → 1073741824, "1k" → 1000).
pub fn bytes(q: &str) -> Option<i128> {
    parse_scaled(q, 1)
}

fn container_requests(c: &Value) -> (i128, i128) {
    let req = |k: &str| c.pointer(&format!("/resources/requests/{k}")).and_then(Value::as_str)
        // A limit without a request defaults the request to the limit.
        .or_else(|| c.pointer(&format!("/resources/limits/{k}")).and_then(Value::as_str));
    (req("cpu").and_then(millicores).unwrap_or(0), req("memory").and_then(bytes).unwrap_or(0))
}

/// Effective (cpu millicores, memory bytes) requests of a pod spec.
pub fn pod_requests(spec: &Value) -> (i128, i128) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in spec.get("containers").and_then(Value::as_array).into_iter().flatten() {
        let (c1, m1) = container_requests(c);
        cpu += c1;
        mem += m1;
    }
    // Init containers run one at a time before the others; sidecars
    // (restartPolicy Always) keep running and add up.
    let mut sidecars = (0, 0);
    for c in spec.get("initContainers").and_then(Value::as_array).into_iter().flatten() {
        let (c1, m1) = container_requests(c);
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sidecars.0 += c1;
            sidecars.1 += m1;
        } else {
            cpu = cpu.max(c1 + sidecars.0);
            mem = mem.max(m1 + sidecars.1);
        }
    }
    cpu += sidecars.0;
    mem += sidecars.1;
    if let Some(o) = spec.get("overhead") {
        cpu += o.get("cpu").and_then(Value::as_str).and_then(millicores).unwrap_or(0);
        mem += o.get("memory").and_then(Value::as_str).and_then(bytes).unwrap_or(0);
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_quantities() {
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("100u"), Some(1), "rounded up like the scheduler");
        assert_eq!(millicores("1e3"), Some(1_000_000));
        assert_eq!(millicores("abc"), None);
        assert_eq!(millicores("1Xi"), None);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("100Mi"), Some(100 << 20));
        assert_eq!(bytes("1k"), Some(1000));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes(""), None);
    }

    #[test]
    fn pod_requests_follow_scheduler_rules() {
        let spec = json!({
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                {"resources": {"limits": {"cpu": "200m", "memory": "1Gi"}}}
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}}],
            "overhead": {"cpu": "10m"}
        });
        assert_eq!(pod_requests(&spec), (2010, (100 << 20) + (1 << 30)));
    }
}
