//! Health probes for the components: a plain HTTP GET for etcd and kwok, and
//! an HTTPS GET (trusting the cluster CA) for the controller-manager and
//! scheduler, whose `/healthz` is open to anonymous callers.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` on 127.0.0.1:port; returns (status code, body). `ca` switches to TLS.
pub async fn get(port: u16, path: &str, ca: Option<&Path>) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        match ca {
            None => {
                let mut s = tcp;
                s.write_all(req.as_bytes()).await?;
                s.read_to_end(&mut buf).await?;
            }
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let pem = std::fs::read(ca)?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(cert?)?;
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
                let mut s = connector.connect(name, tcp).await?;
                s.write_all(req.as_bytes()).await?;
                // Servers may close without close_notify; keep what we read.
                let _ = s.read_to_end(&mut buf).await;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(3), fut).await?
}

/// Whether GET returns 200.
pub async fn ok(port: u16, path: &str, ca: Option<&Path>) -> bool {
    matches!(get(port, path, ca).await, Ok((200, _)))
}
