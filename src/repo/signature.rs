//! Commit signature policy: with trusted keys configured, Ferry acts only on
//! placement commits signed by one of them.
//!
//! Git signs the commit object without its `gpgsig` header; SSH signatures
//! are sshsig blobs in namespace `git`, OpenPGP ones detached signatures.
use std::fmt;

use pgp::composed::{Deserializable as _, DetachedSignature, SignedPublicKey};
use pgp::types::{KeyDetails as _, PublicKeyTrait};

use super::{GitRepo, Oid, RepoError};

/// SSH signatures made by `git commit -S` use this sshsig namespace.
const GIT_SSHSIG_NAMESPACE: &str = "git";

/// Trusted signing keys as configured (public key text).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// OpenSSH public keys, one per entry: `ssh-ed25519 AAAA… comment`
    /// (an allowed_signers style `principal ssh-ed25519 AAAA…` also works).
    pub ssh: Vec<String>,
    /// ASCII-armored OpenPGP public keys (`gpg --armor --export`).
    pub openpgp: Vec<String>,
}

impl TrustedKeys {
    /// True when no key is configured: signatures are then not required.
    pub fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.openpgp.is_empty()
    }

    /// Parse every key once; errors name the key's position and format.
    pub fn load(&self) -> Result<KeyRing, RepoError> {
        let mut ring = KeyRing::default();
        for (index, line) in self.ssh.iter().enumerate() {
            let err = |detail: String| RepoError::TrustedKey {
                kind: "SSH",
                index: index + 1,
                detail,
                hint: "cat ~/.ssh/id_ed25519.pub",
            };
            // Skip an allowed_signers principal in front of the key.
            let start = ["ssh-", "ecdsa-", "sk-"]
                .iter()
                .filter_map(|p| line.find(p))
                .min()
                .ok_or_else(|| err("no `ssh-…`/`ecdsa-…` key type found".into()))?;
            let key = ssh_key::PublicKey::from_openssh(line[start..].trim())
                .map_err(|e| err(e.to_string()))?;
            ring.ssh.push(key);
        }
        for (index, armored) in self.openpgp.iter().enumerate() {
            let err = |detail: String| RepoError::TrustedKey {
                kind: "OpenPGP",
                index: index + 1,
                detail,
                hint: "gpg --armor --export KEYID",
            };
            let (key, _) = SignedPublicKey::from_string(armored).map_err(|e| err(e.to_string()))?;
            // A key whose self-signatures do not verify could have had a
            // foreign subkey grafted on.
            key.verify()
                .map_err(|e| err(format!("self-signature check failed: {e}")))?;
            ring.openpgp.push(key);
        }
        Ok(ring)
    }
}

/// Parsed trusted keys, ready for verification.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    ssh: Vec<ssh_key::PublicKey>,
    openpgp: Vec<SignedPublicKey>,
}

impl KeyRing {
    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.openpgp.is_empty()
    }
}

/// Signature formats Git supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// `gpg.format=ssh`.
    Ssh,
    /// `gpg.format=openpgp`.
    OpenPgp,
    /// X.509 (gpgsm) or anything else Ferry cannot verify.
    Other,
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureKind::Ssh => "SSH",
            SignatureKind::OpenPgp => "OpenPGP",
            SignatureKind::Other => "unsupported",
        })
    }
}

/// What Ferry concluded about a commit's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureVerdict {
    /// No trusted keys configured: any commit is acceptable.
    NotRequired,
    /// Signed by a trusted key and the signature verifies.
    Trusted {
        kind: SignatureKind,
        fingerprint: String,
    },
    /// The commit carries no signature.
    Unsigned,
    /// Validly formed signature by a key not in the trusted set.
    UntrustedKey {
        kind: SignatureKind,
        fingerprint: String,
    },
    /// Claims a trusted key but does not verify (tampered commit or bad signature).
    Invalid {
        kind: SignatureKind,
        fingerprint: String,
        reason: String,
    },
}

impl SignatureVerdict {
    /// Whether Ferry may act on the commit.
    pub fn is_acceptable(&self) -> bool {
        matches!(
            self,
            SignatureVerdict::NotRequired | SignatureVerdict::Trusted { .. }
        )
    }
}

impl fmt::Display for SignatureVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureVerdict::NotRequired => {
                write!(f, "signature not required (no trusted keys configured)")
            }
            SignatureVerdict::Trusted { kind, fingerprint } => {
                write!(f, "good {kind} signature by trusted key {fingerprint}")
            }
            SignatureVerdict::Unsigned => write!(
                f,
                "the commit is not signed but trusted keys are configured; sign it with `git commit -S` using a trusted key"
            ),
            SignatureVerdict::UntrustedKey { kind, fingerprint } => write!(
                f,
                "{kind} signature by key {fingerprint}, which is not trusted; re-sign with a trusted key or add this key to the trusted keys"
            ),
            SignatureVerdict::Invalid {
                kind,
                fingerprint,
                reason,
            } => write!(
                f,
                "{kind} signature claiming key {fingerprint} does not verify ({reason}); the commit may have been tampered with — do not trust it"
            ),
        }
    }
}

/// Check Git's detached signature over `signed` against the key ring.
pub fn verify_signature(signature: &[u8], signed: &[u8], ring: &KeyRing) -> SignatureVerdict {
    if ring.is_empty() {
        return SignatureVerdict::NotRequired;
    }
    let text = String::from_utf8_lossy(signature);
    if text.contains("-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(&text, signed, ring)
    } else if text.contains("-----BEGIN PGP SIGNATURE-----") {
        verify_openpgp(&text, signed, ring)
    } else {
        SignatureVerdict::UntrustedKey {
            kind: SignatureKind::Other,
            fingerprint: "unknown".into(),
        }
    }
}

fn verify_ssh(text: &str, signed: &[u8], ring: &KeyRing) -> SignatureVerdict {
    let kind = SignatureKind::Ssh;
    let sig = match ssh_key::SshSig::from_pem(text.trim()) {
        Ok(s) => s,
        Err(e) => {
            return SignatureVerdict::Invalid {
                kind,
                fingerprint: "unknown".into(),
                reason: format!("malformed sshsig: {e}"),
            };
        }
    };
    let fingerprint = sig
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let Some(key) = ring.ssh.iter().find(|k| k.key_data() == sig.public_key()) else {
        return SignatureVerdict::UntrustedKey { kind, fingerprint };
    };
    match key.verify(GIT_SSHSIG_NAMESPACE, signed, &sig) {
        Ok(()) => SignatureVerdict::Trusted { kind, fingerprint },
        Err(e) => SignatureVerdict::Invalid {
            kind,
            fingerprint,
            reason: e.to_string(),
        },
    }
}

fn verify_openpgp(text: &str, signed: &[u8], ring: &KeyRing) -> SignatureVerdict {
    let kind = SignatureKind::OpenPgp;
    let sig = match DetachedSignature::from_string(text) {
        Ok((s, _)) => s.signature,
        Err(e) => {
            return SignatureVerdict::Invalid {
                kind,
                fingerprint: "unknown".into(),
                reason: format!("malformed signature: {e}"),
            };
        }
    };
    let issuer_fps: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .collect();
    let issuer_ids: Vec<String> = sig
        .issuer()
        .iter()
        .map(|k| hex::encode_upper(k.as_ref()))
        .collect();
    let claimed = issuer_fps
        .first()
        .or(issuer_ids.first())
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    // Returns a verdict only for the key the signature names as issuer.
    fn try_key<K: PublicKeyTrait>(
        sig: &pgp::packet::Signature,
        key: &K,
        fps: &[String],
        ids: &[String],
        signed: &[u8],
        primary_fp: &str,
    ) -> Option<SignatureVerdict> {
        let kind = SignatureKind::OpenPgp;
        let named = fps.contains(&format!("{:X}", key.fingerprint()))
            || ids.contains(&hex::encode_upper(key.key_id().as_ref()));
        if !named {
            return None;
        }
        Some(match sig.verify(key, signed) {
            Ok(()) => SignatureVerdict::Trusted {
                kind,
                fingerprint: primary_fp.to_string(),
            },
            Err(e) => SignatureVerdict::Invalid {
                kind,
                fingerprint: primary_fp.to_string(),
                reason: e.to_string(),
            },
        })
    }
    for cert in &ring.openpgp {
        let primary_fp = format!("{:X}", cert.primary_key.fingerprint());
        if let Some(v) = try_key(
            &sig,
            &cert.primary_key,
            &issuer_fps,
            &issuer_ids,
            signed,
            &primary_fp,
        ) {
            return v;
        }
        // Only subkeys bound for signing may sign commits.
        for sub in cert
            .public_subkeys
            .iter()
            .filter(|s| s.signatures.iter().any(|b| b.key_flags().sign()))
        {
            if let Some(v) = try_key(
                &sig,
                &sub.key,
                &issuer_fps,
                &issuer_ids,
                signed,
                &primary_fp,
            ) {
                return v;
            }
        }
    }
    SignatureVerdict::UntrustedKey {
        kind,
        fingerprint: claimed,
    }
}

impl GitRepo {
    /// Verify the signature of commit `oid` against `ring`.
    pub fn verify_commit_signature(
        &self,
        oid: Oid,
        ring: &KeyRing,
    ) -> Result<SignatureVerdict, RepoError> {
        if ring.is_empty() {
            return Ok(SignatureVerdict::NotRequired);
        }
        match self.repo.extract_signature(&oid, None) {
            Ok((sig, signed)) => Ok(verify_signature(&sig, &signed, ring)),
            Err(e)
                if e.code() == git2::ErrorCode::NotFound && self.repo.find_commit(oid).is_ok() =>
            {
                Ok(SignatureVerdict::Unsigned)
            }
            Err(source) => Err(RepoError::Read {
                url: self.url_shown.clone(),
                commit: oid.to_string(),
                what: "signature".into(),
                source,
            }),
        }
    }

    /// Verify and turn anything but an acceptable verdict into
    /// [`RepoError::Untrusted`], whose message is fit for the status file.
    pub fn require_trusted(&self, oid: Oid, ring: &KeyRing) -> Result<SignatureVerdict, RepoError> {
        let verdict = self.verify_commit_signature(oid, ring)?;
        if verdict.is_acceptable() {
            Ok(verdict)
        } else {
            Err(RepoError::Untrusted {
                commit: oid.to_string(),
                verdict,
            })
        }
    }
}
