//! Generic receiver for CI systems and scripts: `X-Ferry-Signature: sha256=<hex>`
//! over a JSON object whose fields `repository`, `branch` and `after` are all
//! optional (absent ones match the receiver's repository and branch).
//!
//! ```text
//! body='{"branch":"main"}'
//! sig=$(printf %s "$body" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
//! curl -H "X-Ferry-Signature: sha256=$sig" -d "$body" https://ferry.example/hooks/<path-token>
//! ```
use http::HeaderMap;
use serde::Deserialize;

use super::{Event, Reject, json, payload, signature};

/// Header carrying the signature.
pub const SIGNATURE: &str = "x-ferry-signature";

/// Verify `X-Ferry-Signature`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Reject> {
    signature::verify_hmac(headers, SIGNATURE, Some("sha256="), body, secret)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    repository: Option<String>,
    branch: Option<String>,
    after: Option<String>,
}

/// Parse a verified delivery; an empty body means "sync now".
pub fn parse(_headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Event::Generic { repo_url: None, branch: None, after: None });
    }
    let b: Body = payload("generic", json(body)?)?;
    let branch = b.branch.map(|s| s.strip_prefix("refs/heads/").map(str::to_owned).unwrap_or(s));
    Ok(Event::Generic { repo_url: b.repository, branch, after: b.after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_optional_but_typos_are_not() {
        assert_eq!(parse(&HeaderMap::new(), b""), Ok(Event::Generic { repo_url: None, branch: None, after: None }));
        assert_eq!(
            parse(&HeaderMap::new(), br#"{"branch":"refs/heads/main","after":"abc"}"#),
            Ok(Event::Generic { repo_url: None, branch: Some("main".into()), after: Some("abc".into()) })
        );
        assert!(matches!(parse(&HeaderMap::new(), br#"{"brnch":"main"}"#), Err(Reject::InvalidPayload { message, .. }) if message.contains("brnch")));
    }
}
