//! TLS material made for each test run: a throwaway CA, a server
//! certificate and a client certificate it signed, as PEM files, and the
//! rustls and tonic configurations the fakes and clients build from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// One CA with its server and client certificates; the files live as long
/// as the value.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// A new CA, a server certificate for `server_names` (DNS names or IP
    /// addresses) and a client certificate, all signed by the CA. Every
    /// call makes a CA of its own, which trusts nothing the others signed.
    pub fn new(server_names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("a writable temporary directory");
            path
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // A name of its own: a client that meets a certificate of another
        // test CA then finds no issuer at all, as it would in production.
        static CAS: AtomicU64 = AtomicU64::new(0);
        let name = format!("dsfeed test CA {}", CAS.fetch_add(1, Ordering::Relaxed));
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("valid names");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("a key");
            let cert = params.signed_by(&key, &issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let names = server_names.iter().map(|n| n.to_string()).collect();
        let (server_cert, server_key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(
            vec!["kamailio-0.example".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            _dir: dir,
        }
    }

    /// A rustls server configuration with the server certificate,
    /// demanding a client certificate signed by the CA when `mutual`.
    pub fn rustls_server(&self, mutual: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions");
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&self.ca).expect("the CA file") {
                roots.add(cert.expect("CA PEM")).expect("a CA certificate");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("the server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("the server key");
        builder
            .with_single_cert(chain, key)
            .expect("a usable server certificate")
    }

    /// A tonic server configuration with the server certificate, demanding
    /// a client certificate signed by the CA when `mutual`.
    pub fn tonic_server(&self, mutual: bool) -> ServerTlsConfig {
        let identity = Identity::from_pem(read(&self.server_cert), read(&self.server_key));
        let tls = ServerTlsConfig::new().identity(identity);
        if mutual {
            tls.client_ca_root(Certificate::from_pem(read(&self.ca)))
        } else {
            tls
        }
    }

    /// A tonic client configuration trusting the CA for `localhost`, with
    /// the client certificate when `client_cert`.
    pub fn tonic_client(&self, client_cert: bool) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .domain_name("localhost");
        if client_cert {
            tls.identity(Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ))
        } else {
            tls
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("the PKI's files are readable")
}
