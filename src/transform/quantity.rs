//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2k`, `1e3`), parsed exactly.
//!
//! k8s-openapi's `Quantity` is only the string; the arithmetic lives in Go's
//! `resource.Quantity`. We keep the value as an exact `mantissa × 10^exp10 × 2^exp2`
//! so that `0.1` CPU is 100 millicores, not 99.999…, and round up like Go's
//! `MilliValue()`/`Value()` do, so preflight never under-counts.

use serde_json::Value;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing to parse.
    #[error("it is empty")]
    Empty,
    /// No digits before the suffix.
    #[error("it has no digits")]
    NoDigits,
    /// The part after the number is not a known suffix.
    #[error("unknown suffix {0:?} (known: n u m k M G T P E Ki Mi Gi Ti Pi Ei e<exp> E<exp>)")]
    UnknownSuffix(String),
    /// Too many digits or too large an exponent to count in 128 bits.
    #[error("it is too large to count")]
    Overflow,
    /// A JSON value of the wrong type.
    #[error("it is {0}, not a string or number")]
    NotAString(&'static str),
}

/// An exact, parsed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Exponents beyond this cannot be represented in the sums we do; Go caps
/// similarly (its inf.Dec is unbounded, but such values never pass validation).
const MAX_EXP10: i32 = 1000;

impl Quantity {
    /// Parses the Kubernetes quantity grammar: `[+-]digits[.digits][suffix]`.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) if !f.contains('.') => (i, f),
            Some(_) => return Err(QuantityError::UnknownSuffix(number.to_owned())),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(QuantityError::NoDigits);
        }
        // Trailing fraction zeros carry no value and would only eat mantissa digits.
        let frac_part = frac_part.trim_end_matches('0');
        let mut mantissa: u128 = 0;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(d - b'0')))
                .ok_or(QuantityError::Overflow)?;
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| QuantityError::Overflow)?;
        let (suffix_exp10, exp2) = parse_suffix(suffix)?;
        Ok(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10: suffix_exp10 - frac_len,
            exp2,
        })
    }

    /// Parses a JSON quantity: a string, or a number (YAML `cpu: 0.5` arrives as one).
    pub fn from_json(v: &Value) -> Result<Self, QuantityError> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            Value::Null => Err(QuantityError::NotAString("null")),
            Value::Bool(_) => Err(QuantityError::NotAString("a boolean")),
            Value::Array(_) => Err(QuantityError::NotAString("an array")),
            Value::Object(_) => Err(QuantityError::NotAString("an object")),
        }
    }

    /// Value × 10^scale, rounded up (towards +∞), as Go's `ScaledValue` does.
    pub fn scaled_ceil(&self, scale: i32) -> Result<i128, QuantityError> {
        let base = self
            .mantissa
            .checked_mul(
                1u128
                    .checked_shl(self.exp2)
                    .ok_or(QuantityError::Overflow)?,
            )
            .ok_or(QuantityError::Overflow)?;
        let e = self.exp10 + scale;
        let magnitude = if e >= 0 {
            let factor = 10u128.checked_pow(e as u32).ok_or(QuantityError::Overflow);
            if base == 0 {
                0
            } else {
                base.checked_mul(factor?).ok_or(QuantityError::Overflow)?
            }
        } else {
            let (q, r) = match 10u128.checked_pow((-e) as u32) {
                Some(d) => (base / d, base % d),
                None => (0, base),
            };
            // Rounding up for positives; for negatives truncation is the ceiling.
            if r != 0 && !self.negative { q + 1 } else { q }
        };
        let signed = i128::try_from(magnitude).map_err(|_| QuantityError::Overflow)?;
        Ok(if self.negative { -signed } else { signed })
    }

    /// Millicores (or milli-units), rounded up — `MilliValue()`.
    pub fn millis(&self) -> Result<i128, QuantityError> {
        self.scaled_ceil(3)
    }

    /// Whole units (bytes for memory and storage), rounded up — `Value()`.
    pub fn value(&self) -> Result<i128, QuantityError> {
        self.scaled_ceil(0)
    }
}

fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::UnknownSuffix(s.to_owned()));
            }
            let n: i32 = exp.parse().map_err(|_| QuantityError::Overflow)?;
            if !(-MAX_EXP10..=MAX_EXP10).contains(&n) {
                return Err(QuantityError::Overflow);
            }
            (n, 0)
        }
        other => return Err(QuantityError::UnknownSuffix(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(s: &str) -> i128 {
        Quantity::parse(s).unwrap().millis().unwrap()
    }
    fn bytes(s: &str) -> i128 {
        Quantity::parse(s).unwrap().value().unwrap()
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis(".5"), 500);
        assert_eq!(millis("1"), 1000);
        assert_eq!(millis("2."), 2000);
        assert_eq!(millis("0.1"), 100);
        assert_eq!(millis("100"), 100_000);
        assert_eq!(millis("1e3"), 1_000_000);
        assert_eq!(millis("1E3"), 1_000_000);
        assert_eq!(millis("5e-1"), 500);
        assert_eq!(millis("+250m"), 250);
        assert_eq!(millis("1.250"), 1250);
    }

    #[test]
    fn sub_milli_rounds_up_like_go() {
        assert_eq!(millis("1u"), 1);
        assert_eq!(millis("100n"), 1);
        assert_eq!(millis("0.0001"), 1);
        assert_eq!(millis("1001u"), 2);
        assert_eq!(millis("0"), 0);
        assert_eq!(millis("0m"), 0);
        assert_eq!(bytes("1m"), 1, "a milli-byte is still one byte to reserve");
        assert_eq!(millis("-1u"), 0, "negatives round towards +inf");
        assert_eq!(millis("-1500m"), -1500);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(bytes("128974848"), 128_974_848);
        assert_eq!(bytes("129e6"), 129_000_000);
        assert_eq!(bytes("129M"), 129_000_000);
        assert_eq!(bytes("123Mi"), 123 * 1024 * 1024);
        assert_eq!(bytes("1Ki"), 1024);
        assert_eq!(bytes("1k"), 1000);
        assert_eq!(bytes("1Gi"), 1 << 30);
        assert_eq!(bytes("1.5Gi"), 3 << 29);
        assert_eq!(bytes("0.5Ki"), 512);
        assert_eq!(bytes("0.3Ki"), 308, "307.2 rounds up");
        assert_eq!(bytes("1G"), 1_000_000_000);
        assert_eq!(bytes("2Ti"), 2 << 40);
        assert_eq!(bytes("1Ei"), 1 << 60);
        assert_eq!(
            bytes("1E"),
            1_000_000_000_000_000_000,
            "bare E is exa, not an exponent"
        );
        assert_eq!(bytes("1e0"), 1);
        assert_eq!(bytes("12e+2"), 1200);
    }

    #[test]
    fn json_numbers_are_quantities() {
        assert_eq!(
            Quantity::from_json(&serde_json::json!(0.5))
                .unwrap()
                .millis()
                .unwrap(),
            500
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(2))
                .unwrap()
                .value()
                .unwrap(),
            2
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(null)),
            Err(QuantityError::NotAString("null"))
        );
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        assert_eq!(Quantity::parse("Gi"), Err(QuantityError::NoDigits));
        assert_eq!(Quantity::parse("."), Err(QuantityError::NoDigits));
        assert_eq!(
            Quantity::parse("1K"),
            Err(QuantityError::UnknownSuffix("K".into())),
            "kilo is lowercase k"
        );
        assert_eq!(
            Quantity::parse("1KiB"),
            Err(QuantityError::UnknownSuffix("KiB".into()))
        );
        assert_eq!(
            Quantity::parse("1 Gi"),
            Err(QuantityError::UnknownSuffix(" Gi".into()))
        );
        assert_eq!(
            Quantity::parse("1e"),
            Err(QuantityError::UnknownSuffix("e".into()))
        );
        assert_eq!(
            Quantity::parse("1e+"),
            Err(QuantityError::UnknownSuffix("e+".into()))
        );
        assert_eq!(
            Quantity::parse("1.2.3"),
            Err(QuantityError::UnknownSuffix("1.2.3".into()))
        );
        assert_eq!(Quantity::parse("1e5000"), Err(QuantityError::Overflow));
        assert_eq!(
            Quantity::parse("1e40").unwrap().value(),
            Err(QuantityError::Overflow)
        );
        assert_eq!(
            Quantity::parse("999999999999999999999999999999999999999999"),
            Err(QuantityError::Overflow)
        );
    }

    #[test]
    fn tiny_exponents_round_up_without_overflow() {
        assert_eq!(bytes("1e-900"), 1);
        assert_eq!(bytes("0e-900"), 0);
        assert_eq!(millis("0.000000000000000000000000000000000000000000001"), 1);
    }
}

/// Millicores of a quantity string ("500m" → 500), None if it does not parse.
pub fn millicores(s: &str) -> Option<i128> {
    Quantity::parse(s).ok()?.millis().ok()
}

/// Whole units (bytes) of a quantity string ("1Gi" → 1073741824), None if it does not parse.
pub fn bytes(s: &str) -> Option<i128> {
    Quantity::parse(s).ok()?.value().ok()
}
