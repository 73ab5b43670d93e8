//! What the real `dsfeed` process exposes, and to whom: `/status` behind
//! the feed's token or off on a public address, `/metrics` without URIs or
//! attrs, token files only their owner may read and that are read again
//! when rotated, the unix socket never present at its umask mode, a TLS
//! listener open to everyone named at start, node ids bounded and
//! forgotten, and `--max-clients`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::http::get as http_get;
use dsfeed_tests::sets::{Sets, SetsFile};
use dsfeed_tests::{PATIENCE, free_addr};
use tempfile::TempDir;

const SETS: Sets<'static> = &[(1, &["10.0.0.1", "10.0.0.2"])];

/// Attrs that must never show outside `/status`.
const ATTRS: &str = "duid=secret-duid";

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `--sets-file FILE --listen unix:SOCKET`, ready for more flags.
fn serving(file: &SetsFile, socket: &Path) -> Args {
    Args::default().sets_file(&file.path).listen_unix(socket)
}

/// A child process killed and reaped when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Retries `open` until it succeeds (the feeder may still be starting).
async fn eventually_ok<T, F, Fut>(mut open: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match open().await {
            Ok(value) => return value,
            Err(err) => assert!(std::time::Instant::now() < deadline, "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `path` until the server answers (a restarted feeder binds again).
async fn eventually_http(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    eventually_ok(|| async { http_get(addr, path).await.map_err(|e| e.to_string()) }).await
}

/// Polls `/metrics` until `check` accepts it.
async fn eventually_metrics(feeder: &Feeder, check: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = feeder.metrics().await;
        if check(&text) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secret_file(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One GET with an `authorization: Bearer` header.
async fn get_with_token(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

/// A sets file of [`SETS`] in a fresh directory (returned first: keep it
/// as long as the file).
fn sets_file() -> (TempDir, SetsFile) {
    let dir = TempDir::new().unwrap();
    let file = SetsFile::new(dir.path(), SETS);
    (dir, file)
}

/// A new directory `name` in `dir`.
fn subdir(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::create_dir(&path).unwrap();
    path
}

fn sets_with_attrs(dir: &Path) -> SetsFile {
    let file = SetsFile::new(dir, SETS);
    file.write_text(&format!(
        "sets:\n  1:\n    - uri: sip:10.0.0.1:5060\n      attrs: \"{ATTRS}\"\n    - 10.0.0.2\n"
    ));
    file
}

#[tokio::test]
async fn status_needs_the_feeds_token_and_metrics_carry_no_destination() {
    let dir = TempDir::new().unwrap();
    let file = sets_with_attrs(dir.path());
    let token = dir.path().join("token");
    secret_file(&token, "s3cret\n", 0o600);
    let socket = dir.path().join("feed.sock");
    let http = free_addr();
    let feeder = Feeder::serving(serving(&file, &socket).args(&[
        "--token-file",
        token.to_str().unwrap(),
        "--http",
        &http.to_string(),
    ]))
    .await;
    let (code, body) = http_get(http, "/status").await.unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("10.0.0.1"), "{body}");
    let (code, _) = get_with_token(http, "/status", "wrong").await;
    assert_eq!(code, 401);
    let (code, body) = get_with_token(http, "/status", "s3cret").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("sip:10.0.0.1:5060") && body.contains(ATTRS),
        "{body}"
    );
    let metrics = feeder.metrics().await;
    assert!(
        metrics.contains("dsfeed_set_destinations{set=\"1\"} 2"),
        "{metrics}"
    );
    for leak in ["10.0.0.1", "10.0.0.2", "sip:", "secret-duid"] {
        assert!(!metrics.contains(leak), "/metrics shows {leak}:\n{metrics}");
    }
}

#[tokio::test]
async fn status_on_a_public_address_without_a_token_needs_a_flag() {
    let dir = TempDir::new().unwrap();
    let file = sets_with_attrs(dir.path());
    let port = free_addr().port();
    let public = format!("0.0.0.0:{port}");
    let reach: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let socket = format!("unix:{}", dir.path().join("feed.sock").display());
    let base = [
        "--sets-file",
        file.path.to_str().unwrap(),
        "--listen",
        &socket,
        "--http",
        &public,
    ];
    let feeder = Feeder::serving(&args(&base)).await;
    let (code, body) = http_get(reach, "/status").await.unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("--public-status") && !body.contains("10.0.0.1"),
        "{body}"
    );
    assert_eq!(http_get(reach, "/metrics").await.unwrap().0, 200);
    assert_eq!(http_get(reach, "/readyz").await.unwrap().0, 200);
    drop(feeder);

    let mut open = base.to_vec();
    open.push("--public-status");
    let _feeder = Feeder::serving(&args(&open)).await;
    let (code, body) = eventually_http(reach, "/status").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(ATTRS), "{body}");
}

#[tokio::test]
async fn a_token_file_others_can_read_is_refused_saying_how_to_fix_it() {
    let (dir, file) = sets_file();
    let token = dir.path().join("token");
    secret_file(&token, "s3cret", 0o644);
    let output = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args(["--mode", "grpc", "--sets-file", file.path.to_str().unwrap()])
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("feed.sock").display()))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", token.display())) && stderr.contains("every user"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_rotated_token_takes_effect_without_a_restart() {
    let (dir, file) = sets_file();
    let token = dir.path().join("token");
    secret_file(&token, "first", 0o600);
    let socket = dir.path().join("feed.sock");
    let _feeder =
        Feeder::serving(serving(&file, &socket).args(&["--token-file", token.to_str().unwrap()]))
            .await;
    let endpoint = || feed_client::unix_endpoint(&socket);
    eventually_ok(|| Stream::open(endpoint(), Some("first"), hello("kam", &[], ""))).await;
    secret_file(&token, "second", 0o600);
    let err = Stream::open(endpoint(), Some("first"), hello("kam", &[], ""))
        .await
        .err()
        .expect("the old token is refused after the rotation");
    assert!(err.starts_with("Unauthenticated"), "{err}");
    let mut stream = Stream::open(endpoint(), Some("second"), hello("kam", &[], ""))
        .await
        .unwrap();
    stream.next().await;
}

#[tokio::test]
async fn the_socket_never_appears_at_its_umask_mode() {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let (dir, file) = sets_file();
    let run = subdir(&dir, "run");
    let socket = run.join("feed.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).unwrap();
    watcher.watch(&run, RecursiveMode::NonRecursive).unwrap();
    // A umask that would leave the socket open to everyone.
    let feeder = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_dsfeed"))
        .args(["--mode", "grpc", "--sets-file", file.path.to_str().unwrap()])
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .spawn()
        .unwrap();
    let _feeder = Reaped(feeder);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let event = rx
            .recv_timeout(deadline - std::time::Instant::now())
            .expect("the socket appears")
            .unwrap();
        let ours = event.paths.iter().any(|p| p == &socket);
        if ours {
            seen.push(event.kind);
        }
        if ours && socket.exists() {
            break;
        }
    }
    assert!(
        !seen.iter().any(|k| matches!(k, EventKind::Create(_))),
        "the socket was created in place, at the umask's mode first: {seen:?}"
    );
    let mode = std::fs::symlink_metadata(&socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[tokio::test]
async fn a_tls_listener_open_to_everyone_is_named_at_start() {
    let (dir, file) = sets_file();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tcp = free_addr();
    let http = free_addr();
    let feeder = Feeder::serving(&args(&[
        "--sets-file",
        file.path.to_str().unwrap(),
        "--listen",
        &format!("tcp://{tcp}"),
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--http",
        &http.to_string(),
    ]))
    .await;
    let log = feeder.log();
    assert!(
        log.contains("open to every client") && log.contains("--tls-client-ca"),
        "{log}"
    );
}

#[tokio::test]
async fn node_ids_are_bounded_and_forgotten_with_their_last_stream() {
    let (dir, file) = sets_file();
    let socket = dir.path().join("feed.sock");
    let http = free_addr();
    let feeder =
        Feeder::serving(serving(&file, &socket).args(&["--http", &http.to_string()])).await;
    let endpoint = || feed_client::unix_endpoint(&socket);
    for bad in ["x".repeat(60 * 1024), "kam 1".into(), "kam\"}\n".into()] {
        let mut stream = Stream::open(endpoint(), None, hello(&bad, &[], ""))
            .await
            .unwrap();
        let status = stream.next_result().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("node id"), "{status:?}");
    }
    let mut stream = Stream::open(endpoint(), None, hello("kam-9", &[], ""))
        .await
        .unwrap();
    let response = stream.next().await;
    stream.nack(&response, "", "bad").await;
    feeder
        .wait_metric("dsfeed_nacks_total{node=\"kam-9\"} 1")
        .await;
    drop(stream);
    eventually_metrics(&feeder, |text| !text.contains("kam-9")).await;
}

#[tokio::test]
async fn streams_beyond_max_clients_are_refused() {
    let (dir, file) = sets_file();
    let socket = dir.path().join("feed.sock");
    let _feeder = Feeder::serving(serving(&file, &socket).args(&["--max-clients", "2"])).await;
    let endpoint = || feed_client::unix_endpoint(&socket);
    let mut first = eventually_ok(|| Stream::open(endpoint(), None, hello("a", &[], ""))).await;
    first.next().await;
    let mut second = Stream::open(endpoint(), None, hello("b", &[], ""))
        .await
        .unwrap();
    second.next().await;
    let err = match Stream::open(endpoint(), None, hello("c", &[], "")).await {
        Err(err) => err,
        Ok(mut third) => feed_client::explain(&third.next_result().await.unwrap_err()),
    };
    assert!(
        err.starts_with("ResourceExhausted") && err.contains("--max-clients"),
        "{err}"
    );
    drop(first);
    // The slot frees when a stream ends.
    let mut again = eventually_ok(|| Stream::open(endpoint(), None, hello("c", &[], ""))).await;
    again.next().await;
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_at_start() {
    let (dir, file) = sets_file();
    let out = subdir(&dir, "out");
    let stale = out.join(".dispatcher.list.dsfeed-0123456789abcdef.tmp");
    std::fs::write(&stale, "1 sip:half-writ").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args(["--once", "--sets-file", file.path.to_str().unwrap(), "-o"])
        .arg(out.join("dispatcher.list"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(!stale.exists(), "the leftover is still there");
}
