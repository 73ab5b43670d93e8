//! TLS on the feed's TCP listeners, with and without client certificates,
//! against certificates made for each run.

mod common;

use std::path::{Path, PathBuf};

use common::{Feeder, SetsFile, Stream, free_addr, hello, snapshot, watch};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const SETS: common::Sets<'static> = &[(1, &["10.0.0.1"]), (2, &["10.0.0.2"])];

/// PEM files of a throwaway CA, a server certificate for localhost and
/// 127.0.0.1, and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path, ca_name: &str) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf = |names: &[&str], usage: ExtendedKeyUsagePurpose, stem: &str| {
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .unwrap();
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(DnType::CommonName, stem);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            let cert_path = dir.join(format!("{stem}.pem"));
            let key_path = dir.join(format!("{stem}-key.pem"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        };
        let (server_cert, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &format!("{ca_name}-server"),
        );
        let (client_cert, client_key) = leaf(
            &["kam-1.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &format!("{ca_name}-client"),
        );
        let ca_path = dir.join(format!("{ca_name}.pem"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    fn endpoint(&self, addr: std::net::SocketAddr, client_cert: bool) -> Endpoint {
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .domain_name("localhost");
        if client_cert {
            tls = tls.identity(Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    }
}

async fn tls_feeder(
    dir: &Path,
    pki: &Pki,
    client_ca: Option<&Path>,
) -> (Feeder, std::net::SocketAddr) {
    let file = SetsFile::new(dir, SETS);
    let tcp = free_addr();
    let http = free_addr();
    let mut args: Vec<String> = [
        "--sets-file",
        file.path.to_str().unwrap(),
        "--listen",
        &format!("tcp://{tcp}"),
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
        "--http",
        &http.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(ca) = client_ca {
        args.extend([
            "--tls-client-ca".to_owned(),
            ca.to_str().unwrap().to_owned(),
        ]);
    }
    (Feeder::start(&args).await, tcp)
}

#[tokio::test]
async fn tls_without_client_certificates() {
    let dir = TempDir::new().unwrap();
    let pki = Pki::new(dir.path(), "feed-ca");
    let (_feeder, tcp) = tls_feeder(dir.path(), &pki, None).await;

    let mut client = Stream::connect(pki.endpoint(tcp, false), hello("kam-tls", &[2], "")).await;
    let response = client.next_acked().await;
    assert_eq!(response.version_info, snapshot(SETS, Some(&[2])).version());

    // Clear text is not spoken on a TLS listener.
    let plain = Stream::open(common::tcp_endpoint(tcp), None, hello("kam-plain", &[], "")).await;
    assert!(plain.is_err(), "clear text was served on a TLS listener");

    // A certificate from another CA is not trusted.
    let other = Pki::new(dir.path(), "other-ca");
    let untrusted = Stream::open(other.endpoint(tcp, false), None, hello("kam", &[], ""))
        .await
        .err()
        .expect("the client trusted a foreign CA");
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");

    // dsfeed watch over TLS prints the snapshot.
    let output = watch(&[
        &format!("https://localhost:{}", tcp.port()),
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "--once",
        "--sets",
        "1",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "# dispatcher.list generated by dsfeed, version {}\n1 sip:10.0.0.1:5060 0 0\n",
            snapshot(SETS, Some(&[1])).version()
        )
    );
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let dir = TempDir::new().unwrap();
    let pki = Pki::new(dir.path(), "feed-ca");
    let (feeder, tcp) = tls_feeder(dir.path(), &pki, Some(&pki.ca)).await;

    // Without a client certificate the handshake fails, at connect or at
    // the first read depending on the TLS version.
    let anonymous = match Stream::open(pki.endpoint(tcp, false), None, hello("anon", &[], "")).await
    {
        Err(err) => err,
        Ok(mut stream) => common::explain(
            &stream
                .next_result()
                .await
                .expect_err("no certificate, no feed"),
        ),
    };
    // The server's alert (CertificateRequired) may lose the race with the
    // closed connection (broken pipe): either way the transport failed.
    assert!(anonymous.contains("transport error"), "{anonymous}");

    let mut client = Stream::connect(pki.endpoint(tcp, true), hello("kam-mtls", &[], "")).await;
    assert_eq!(
        client.next_acked().await.version_info,
        snapshot(SETS, None).version()
    );
    feeder
        .wait_status("the certified client only", |s| {
            let clients = s["clients"].as_array().unwrap();
            clients.len() == 1 && clients[0]["node"] == "kam-mtls"
        })
        .await;

    let refused = watch(&[
        &format!("https://127.0.0.1:{}", tcp.port()),
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "--once",
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("transport error"), "{stderr}");
    let output = watch(&[
        &format!("https://127.0.0.1:{}", tcp.port()),
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "--tls-cert",
        pki.client_cert.to_str().unwrap(),
        "--tls-key",
        pki.client_key.to_str().unwrap(),
        "--once",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 sip:10.0.0.2:5060 0 0"));
}

#[tokio::test]
async fn an_unusable_certificate_stops_the_feeder_at_start() {
    let dir = TempDir::new().unwrap();
    let pki = Pki::new(dir.path(), "feed-ca");
    let file = SetsFile::new(dir.path(), SETS);
    let mut feeder = Feeder::spawn(&[
        "--sets-file".to_owned(),
        file.path.display().to_string(),
        "--listen".to_owned(),
        format!("tcp://{}", free_addr()),
        "--tls-cert".to_owned(),
        pki.server_key.display().to_string(),
        "--tls-key".to_owned(),
        pki.server_key.display().to_string(),
    ]);
    let exit = feeder.exited().await;
    assert_eq!(exit.code(), Some(1), "{}", feeder.log());
    let log = feeder.log();
    assert!(
        log.contains(&format!("certificate {}", pki.server_key.display())),
        "{log}"
    );
}
