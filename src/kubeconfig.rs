//! Kubeconfig files: write the harness's multi-context file, and build kube
//! clients from a context the way kubectl does (`--kubeconfig`, `KUBECONFIG`,
//! `--context`).
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

/// One context of a kubeconfig to write: a cluster reached with a client certificate.
pub struct CertContext {
    pub name: String,
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct File<'a> {
    api_version: &'a str,
    kind: &'a str,
    current_context: &'a str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry<'a>>>,
}
#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    inner: T,
}
#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterFields,
}
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterFields {
    server: String,
    certificate_authority_data: String,
}
#[derive(Serialize)]
struct UserEntry {
    user: UserFields,
}
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserFields {
    client_certificate_data: String,
    client_key_data: String,
}
#[derive(Serialize)]
struct ContextEntry<'a> {
    context: ContextFields<'a>,
}
#[derive(Serialize)]
struct ContextFields<'a> {
    cluster: &'a str,
    user: String,
}

/// Write a kubeconfig with one context (and cluster and user of the same name) per entry.
pub fn write_cert_kubeconfig(path: &Path, contexts: &[CertContext]) -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let file = File {
        api_version: "v1",
        kind: "Config",
        current_context: contexts.first().map(|c| c.name.as_str()).unwrap_or(""),
        clusters: contexts.iter().map(|c| Named {
            name: c.name.clone(),
            inner: ClusterEntry { cluster: ClusterFields { server: c.server.clone(), certificate_authority_data: b64(&c.ca_pem) } },
        }).collect(),
        users: contexts.iter().map(|c| Named {
            name: format!("{}-admin", c.name),
            inner: UserEntry { user: UserFields { client_certificate_data: b64(&c.client_cert_pem), client_key_data: b64(&c.client_key_pem) } },
        }).collect(),
        contexts: contexts.iter().map(|c| Named {
            name: c.name.clone(),
            inner: ContextEntry { context: ContextFields { cluster: &c.name, user: format!("{}-admin", c.name) } },
        }).collect(),
    };
    let yaml = serde_saphyr::to_string(&file)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(yaml.as_bytes())?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Where to find a kubeconfig, as kubectl resolves it.
pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(env) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&env).next();
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
}

/// A kube client for `context` of the kubeconfig at `path`.
pub async fn client_for(path: &Path, context: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let opts = kube::config::KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts).await.with_context(|| {
        format!("kubeconfig {}: context {context:?} is unusable (check `kubectl config get-contexts`)", path.display())
    })?;
    Ok(kube::Client::try_from(config)?)
}
