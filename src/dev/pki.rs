//! Certificates for one local cluster: a CA, the API server's serving cert,
//! client certs for the admin and the control-plane components, and the
//! service-account signing key. Generated once and kept in the state dir so
//! that a restarted cluster keeps its identity.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of the PEM files of one cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf { self.dir.join("ca.crt") }
    pub fn ca_key(&self) -> PathBuf { self.dir.join("ca.key") }
    pub fn serving_cert(&self) -> PathBuf { self.dir.join("serving.crt") }
    pub fn serving_key(&self) -> PathBuf { self.dir.join("serving.key") }
    pub fn admin_cert(&self) -> PathBuf { self.dir.join("admin.crt") }
    pub fn admin_key(&self) -> PathBuf { self.dir.join("admin.key") }
    pub fn sa_key(&self) -> PathBuf { self.dir.join("sa.key") }
    pub fn sa_pub(&self) -> PathBuf { self.dir.join("sa.pub") }

    /// Create the PKI under `dir` unless it already exists.
    pub fn ensure(dir: &Path) -> anyhow::Result<Pki> {
        let pki = Pki { dir: dir.to_path_buf() };
        if pki.sa_pub().exists() {
            return Ok(pki);
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = dn("ferry-dev-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);

        // The serving cert covers every name a client may use: loopback for
        // processes on this machine, the in-cluster service names and the
        // first IP of the service range for pods (kwok pods never dial it).
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])?;
        serving.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
        // The `kubernetes` Service's address in each harness cluster's range (10.96…, 10.97…).
        for second in 96..=(95 + super::NETWORK_SLOTS) {
            serving.subject_alt_names.push(SanType::IpAddress(format!("10.{second}.0.1").parse()?));
        }
        serving.distinguished_name = dn("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        // One system:masters client identity serves the admin kubeconfig and
        // the controller-manager/scheduler: RBAC is on for every other user.
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name = dn("ferry-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        write_private(&pki.ca_key(), &ca_key.serialize_pem())?;
        fs::write(pki.ca_cert(), ca_cert.pem())?;
        write_private(&pki.serving_key(), &serving_key.serialize_pem())?;
        fs::write(pki.serving_cert(), serving_cert.pem())?;
        write_private(&pki.admin_key(), &admin_key.serialize_pem())?;
        fs::write(pki.admin_cert(), admin_cert.pem())?;
        write_private(&pki.sa_key(), &sa_key.serialize_pem())?;
        // Written last: its presence marks a complete PKI.
        fs::write(pki.sa_pub(), sa_key.public_key_pem())?;
        Ok(pki)
    }
}

impl Pki {
    /// A client certificate `CN=cn, O=org` signed by this cluster's CA (PEM cert, PEM key),
    /// e.g. a kubelet's `system:node:<name>` in group `system:nodes`.
    pub fn issue_client(&self, cn: &str, org: &str) -> anyhow::Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&fs::read_to_string(self.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&fs::read_to_string(self.ca_cert())?, ca_key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn, Some(org));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}
