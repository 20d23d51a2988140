//! Git over HTTPS with a token: a real TLS server on 127.0.0.1 (rustls,
//! certificate from a throwaway CA) in front of `git http-backend`, which
//! demands HTTP Basic auth with the token.
#[path = "support/git_fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry::repo::{Auth, GitRepo, Oid, RepoError, RepoSource, SecretSource, StatusWrite};
use fixture::Fixture;
use tokio::io::AsyncWriteExt as _;

const TOKEN: &str = "ghp_test_token_5f2c9a";

struct Backend {
    root: PathBuf,
    home: PathBuf,
    /// Basic-auth users seen on authenticated requests.
    users: Mutex<Vec<String>>,
}

/// TLS listener for axum: completes the handshake in `accept`.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // Failed handshakes (client refused our certificate) are expected in tests.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn git_cgi(
    State(backend): State<Arc<Backend>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .filter(|(_, pw)| *pw == TOKEN)
                .map(|(u, _)| u.to_string())
        });
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"ferry-test\"")],
            "token required",
        )
            .into_response();
    };
    backend.users.lock().unwrap().push(user.clone());
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &backend.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &backend.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env(
            "CONTENT_TYPE",
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    // CGI response: headers, blank line, body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let split = split.or_else(|| {
        out.stdout
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| (i, 2))
    });
    let Some((end, sep)) = split else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad CGI output").into_response();
    };
    let mut response = Response::new(axum::body::Body::from(out.stdout[end + sep..].to_vec()));
    for line in String::from_utf8_lossy(&out.stdout[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
        } else if let (Ok(n), Ok(v)) = (name.parse::<axum::http::HeaderName>(), value.parse()) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

struct Server {
    addr: SocketAddr,
    ca_file: PathBuf,
    backend: Arc<Backend>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Start the HTTPS git server for repositories under `fx.dir`.
async fn start(fx: &Fixture) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = fx.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let backend = Arc::new(Backend {
        root: fx.dir.path().to_path_buf(),
        home: fx.dir.path().to_path_buf(),
        users: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(git_cgi)
        .with_state(backend.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Server {
        addr,
        ca_file,
        backend,
        _shutdown: tx,
    }
}

fn source(fx: &Fixture, server: &Server, token: SecretSource, ca: bool, cache: &str) -> RepoSource {
    RepoSource {
        url: format!("https://{}/remote.git", server.addr),
        branch: "main".into(),
        auth: Auth::Token {
            token,
            username: None,
        },
        cache_dir: fx.cache(cache),
        tls_ca_file: ca.then(|| server.ca_file.clone()),
    }
}

/// Run blocking git2 work off the runtime threads serving HTTPS.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_push_over_https_with_a_token() {
    let fx = Fixture::new();
    fx.write("placements/shop.yaml", b"cluster: west\n");
    let sha = fx.commit_all("Merge pull request #3 from acme/shop");
    fx.push("main");
    let server = start(&fx).await;
    let token_file = fx.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let src = source(
        &fx,
        &server,
        SecretSource::File(token_file.clone()),
        true,
        "ok",
    );
    let bare = fx.bare.clone();
    let (head, status_commit) = blocking(move || {
        let repo = GitRepo::open_or_clone(&src).unwrap();
        let head = repo.fetch().unwrap();
        assert_eq!(
            repo.read_files_at(head, "placements").unwrap()["placements/shop.yaml"],
            "cluster: west\n"
        );
        let mut w = StatusWrite::new("ferry-status", head, "status over https");
        w.files
            .push(("status/shop.yaml".into(), b"phase: Done\n".to_vec()));
        (head, repo.write_status(&w).unwrap().commit)
    })
    .await;
    assert_eq!(head, Oid::from_str(&sha).unwrap());
    let remote =
        fixture::run(fixture::git_cmd(&bare, fx.home()).args(["rev-parse", "ferry-status"]));
    assert_eq!(
        remote,
        status_commit.to_string(),
        "status commit pushed through http-backend"
    );
    let users = server.backend.users.lock().unwrap().clone();
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "x-access-token"),
        "{users:?}"
    );

    // Wrong token: refused, and the token never shows in the error.
    std::fs::write(&token_file, "ghp_wrong_token_0000").unwrap();
    let src = source(
        &fx,
        &server,
        SecretSource::File(token_file.clone()),
        true,
        "wrong",
    );
    let err = blocking(move || GitRepo::open_or_clone(&src).unwrap_err()).await;
    assert!(matches!(err, RepoError::Credential { .. }), "{err}");
    assert!(!err.to_string().contains("ghp_wrong"), "{err}");

    // Token from an unset environment variable: says which variable.
    let src = source(
        &fx,
        &server,
        SecretSource::Env("FERRY_TEST_UNSET_TOKEN_VAR".into()),
        true,
        "env",
    );
    let err = blocking(move || GitRepo::open_or_clone(&src).unwrap_err()).await;
    assert!(
        err.to_string().contains("FERRY_TEST_UNSET_TOKEN_VAR"),
        "{err}"
    );

    // Without the CA the self-signed chain is refused: TLS is really checked.
    std::fs::write(&token_file, TOKEN).unwrap();
    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut other_ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_pem = fx.dir.path().join("other-ca.pem");
    std::fs::write(
        &other_pem,
        other_ca.self_signed(&other_ca_key).unwrap().pem(),
    )
    .unwrap();
    let mut src = source(
        &fx,
        &server,
        SecretSource::File(token_file.clone()),
        true,
        "otherca",
    );
    src.tls_ca_file = Some(other_pem);
    let err = blocking(move || GitRepo::open_or_clone(&src).unwrap_err()).await;
    assert!(matches!(err, RepoError::TlsCertificate { .. }), "{err}");

    let src = source(&fx, &server, SecretSource::File(token_file), false, "noca");
    let err = blocking(move || GitRepo::open_or_clone(&src).unwrap_err()).await;
    assert!(matches!(err, RepoError::Fetch { .. }), "{err}");
}
