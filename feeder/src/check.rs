//! `--check`: is this configuration usable, before it is deployed?
//!
//! The flags and the environment were already parsed and validated when
//! [`Config`] was built (a bad one never gets here: it exits 2). With
//! [`Check::All`] every file the configuration names is then read the way
//! the running feeder would read it, so a ConfigMap, a Secret mount or an
//! `EnvironmentFile` can be tried on the machine it is meant for. Nothing is
//! contacted: no API server, no Consul, no Kamailio.

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{Check, Config, Mode};
use crate::feed::token::read_token;
use crate::sources::consul::ConsulClient;
use crate::sources::sets_file::parse_sets;

/// Every problem with the files `config` names (empty when there is none),
/// each naming the flag and the file.
pub async fn problems(config: &Config, what: Check) -> Vec<String> {
    if what == Check::Flags {
        return Vec::new();
    }
    let mut problems = Vec::new();
    if let Some(path) = &config.sets_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Err(reason) = parse_sets(&text) {
                    problems.push(format!("--sets-file {}: {reason}", path.display()));
                }
            }
            Err(err) => problems.push(format!("--sets-file {}: {err}", path.display())),
        }
    }
    if config.writes_file() && !config.writes_stdout() {
        directory_exists(&mut problems, "-o", &config.output);
    }
    if let Some(path) = &config.rtpengine_table {
        directory_exists(&mut problems, "--rtpengine-table", path);
    }
    if let Some(path) = &config.domain_table {
        directory_exists(&mut problems, "--domain-table", path);
    }
    for listen in &config.serve.listen {
        if let dsfeed_model::Endpoint::Unix(path) = listen {
            directory_exists(&mut problems, "--listen", path);
        }
    }
    problems.extend(tls_problems(config));
    if let Some(path) = &config.serve.token_file
        && let Err(err) = read_token(path)
    {
        problems.push(format!("--token-file: {}", dsfeed_model::error_chain(&err)));
    }
    if let Some(path) = &config.kubecfg
        && let Err(err) = kube::config::Kubeconfig::read_from(path)
    {
        problems.push(format!("--kubecfg {}: {err}", path.display()));
    }
    if (!config.consul.services.is_empty() || config.consul.register.is_some())
        && let Err(err) = ConsulClient::new(&config.consul)
    {
        problems.push(format!("Consul: {}", dsfeed_model::error_chain(&err)));
    }
    if !config.dns.services.is_empty()
        && let Err(err) = config.dns.resolver()
    {
        problems.push(format!("--dns-srv: {}", dsfeed_model::error_chain(&err)));
    }
    problems
}

/// What the configuration will do, in a few lines for the person who
/// asked.
pub fn summary(config: &Config) -> String {
    let mut sources = Vec::new();
    for set in &config.statics {
        sources.push(format!("static set {}", set.id));
    }
    for set in &config.static_rtpengine {
        sources.push(format!("static rtpengine set {}", set.id));
    }
    for group in &config.static_domains {
        sources.push(format!("static domains {:?}", group.names));
    }
    if let Some(path) = &config.sets_file {
        sources.push(format!("sets file {}", path.display()));
    }
    for set in &config.rtpengine_services {
        let set = &set.0;
        let namespace = set.namespace_or(&config.namespace);
        sources.push(format!(
            "Kubernetes Service {namespace}/{} as rtpengine set {}",
            set.service, set.id
        ));
    }
    for set in &config.domain_services {
        let namespace = set.service.namespace_or(&config.namespace);
        sources.push(format!(
            "Kubernetes Service {namespace}/{} as SIP domains",
            set.service.service
        ));
    }
    for spec in &config.consul.rtpengine {
        sources.push(format!(
            "Consul service {} as rtpengine set {}",
            spec.service, spec.service.set
        ));
    }
    for spec in &config.consul.domains {
        sources.push(format!("Consul service {} as SIP domains", spec.service));
    }
    for set in &config.services {
        let namespace = set.namespace_or(&config.namespace);
        sources.push(format!(
            "Kubernetes Service {namespace}/{} as set {}",
            set.service, set.id
        ));
    }
    for spec in &config.consul.services {
        sources.push(format!(
            "Consul service {spec} as set {} (Consul at {})",
            spec.set, config.consul.addr.authority
        ));
    }
    if !config.dns.services.is_empty() {
        let server = match config.dns.server {
            Some(addr) => format!("name server {addr}"),
            None => format!(
                "the name servers of {}",
                crate::sources::dns_srv::resolver::RESOLV_CONF
            ),
        };
        for spec in &config.dns.services {
            sources.push(format!("DNS SRV {spec} as set {} ({server})", spec.set));
        }
    }
    let mut lines = vec![format!("sources: {}", sources.join(", "))];
    let delivery = match (config.mode, config.writes_stdout()) {
        (_, true) => "dispatcher.list to standard output".to_owned(),
        (Mode::Grpc, false) => "the feed only (dsfeed.so applies it)".to_owned(),
        (mode, false) => {
            let reload = match config.reload_addr() {
                Some(addr) if mode == Mode::Auto => {
                    format!("reloaded over {addr} unless dsfeed.so answers there")
                }
                Some(addr) => format!("reloaded over {addr}"),
                None => "not reloaded".to_owned(),
            };
            format!("dispatcher.list at {}, {reload}", config.output.display())
        }
    };
    lines.push(format!("delivery: {delivery}"));
    for (what, path, rpc) in [
        ("rtpengine", &config.rtpengine_table, "rtpengine.reload"),
        ("domain", &config.domain_table, "domain.reload"),
    ] {
        if let Some(path) = path {
            let reload = match config.reload_addr() {
                Some(addr) => format!("{rpc} over {addr}"),
                None => "not reloaded".to_owned(),
            };
            lines.push(format!(
                "{what} table: db_text {}, {reload}",
                path.display()
            ));
        }
    }
    if !config.serve.listen.is_empty() {
        let listen: Vec<String> = config
            .serve
            .listen
            .iter()
            .map(ToString::to_string)
            .collect();
        lines.push(format!("feed: {}", listen.join(", ")));
    }
    if let Some(http) = config.serve.http {
        lines.push(format!(
            "http: {http} (/healthz, /readyz, /metrics, /status, /sets, /check)"
        ));
    }
    if config.once {
        lines.push(format!(
            "--once: exit after the first snapshot, or after {:?} without one",
            config.once_timeout
        ));
    }
    lines.join("\n")
}

fn directory_exists(problems: &mut Vec<String>, flag: &str, path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        problems.push(format!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
}

/// Reads the feed's TLS files and has the TLS stack parse them, as the
/// feeder does at start.
fn tls_problems(config: &Config) -> Vec<String> {
    let serve = &config.serve;
    let (Some(cert), Some(key)) = (&serve.tls_cert, &serve.tls_key) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut read = |flag: &str, path: &Path| match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            problems.push(format!("{flag} {}: {err}", path.display()));
            None
        }
    };
    let cert_pem = read("--tls-cert", cert);
    let key_pem = read("--tls-key", key);
    let ca_pem = serve
        .tls_client_ca
        .as_ref()
        .and_then(|ca| read("--tls-client-ca", ca));
    if let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        if let Some(ca_pem) = ca_pem {
            tls = tls.client_ca_root(Certificate::from_pem(ca_pem));
        }
        if let Err(err) = tonic::transport::Server::builder().tls_config(tls) {
            problems.push(format!(
                "--tls-cert {} / --tls-key {}: unusable: {}",
                cert.display(),
                key.display(),
                dsfeed_model::error_chain(&err)
            ));
        }
    }
    problems
}
