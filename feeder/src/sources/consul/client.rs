//! A small client for Consul's health and agent endpoints: hyper 1 over the rustls
//! (ring) stack tonic already links, with Consul's token and TLS settings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::args::ConsulArgs;
use super::error::ConsulError;
use super::instances::ServiceEntry;
use super::spec::{Health, ServiceSpec};

/// Consul's header for the ACL token.
const TOKEN_HEADER: &str = "X-Consul-Token";

/// The blocking-query index of an answer.
const INDEX_HEADER: &str = "X-Consul-Index";

/// Set when ACLs hid part of the answer, as they do for a missing token.
const FILTERED_HEADER: &str = "X-Consul-Results-Filtered-By-ACLs";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed on top of the wait: Consul adds up to wait/16 of jitter,
/// and the answer still has to travel.
const REPLY_SLACK: Duration = Duration::from_secs(10);

/// A health answer for thousands of instances is a few megabytes; anything
/// far beyond that is not Consul.
const MAX_BODY: usize = 32 << 20;

/// How much of an error body goes into the error message.
const MAX_ERROR_BODY: usize = 200;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One connection pool to one Consul agent, shared by every watch.
#[derive(Clone)]
pub struct ConsulClient {
    http: HttpClient,
    /// `http://host:port` or `https://host:port`.
    base: String,
    token: Token,
}

/// Where the ACL token comes from.
#[derive(Debug, Clone)]
enum Token {
    None,
    Value(HeaderValue),
    /// Read before every query, so that a rotated token is picked up.
    File(PathBuf),
}

/// A 200 answer.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
}

/// One answer of `/v1/health/service/NAME`.
#[derive(Debug)]
pub struct Reply {
    /// `X-Consul-Index`, when present and a number.
    pub index: Option<u64>,
    /// Whether Consul's ACLs left instances out of the answer.
    pub filtered_by_acls: bool,
    pub entries: Vec<ServiceEntry>,
}

impl ConsulClient {
    /// Builds the client from the flags; every file named (token, CA,
    /// client certificate) is read now, so a typo stops the feeder at start.
    pub fn new(args: &ConsulArgs) -> Result<Self, ConsulError> {
        let token = match (&args.token_file, &args.env_token.0) {
            (Some(path), _) => {
                read_token(path)?;
                Token::File(path.clone())
            }
            (None, Some(token)) if !token.trim().is_empty() => {
                Token::Value(header_value(token.trim(), "CONSUL_HTTP_TOKEN")?)
            }
            (None, _) => Token::None,
        };
        let https = args.uses_https();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(args)?)
            .https_or_http();
        let builder = match &args.tls_server_name {
            Some(name) if https => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| ConsulError::ServerName(name.clone()))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            _ => builder,
        }
        .enable_http1();
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(builder.wrap_connector(http));
        let scheme = if https { "https" } else { "http" };
        Ok(ConsulClient {
            http,
            base: format!("{scheme}://{}", args.addr.authority),
            token,
        })
    }

    /// Asks for `spec`'s healthy instances; with `index` above 0 Consul
    /// holds the answer until the index moves past it or `wait` runs out.
    pub async fn health_service(
        &self,
        spec: &ServiceSpec,
        index: u64,
        wait: Duration,
    ) -> Result<Reply, ConsulError> {
        let limit = if index == 0 {
            REPLY_SLACK
        } else {
            wait + wait / 16 + REPLY_SLACK
        };
        let request = format!("GET {}", self.url(spec, index, wait));
        let answer = self
            .exchange(Method::GET, &request, Bytes::new(), limit)
            .await?;
        let index = answer
            .headers
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let filtered_by_acls = answer
            .headers
            .get(FILTERED_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let entries = match super::instances::decode(&answer.body) {
            Ok(entries) => entries,
            Err(super::instances::DecodeError::Json(source)) => {
                return Err(ConsulError::Json { request, source });
            }
            Err(super::instances::DecodeError::OverBudget(reason)) => {
                return Err(ConsulError::OverBudget { request, reason });
            }
        };
        Ok(Reply {
            index,
            filtered_by_acls,
            entries,
        })
    }

    /// `PUT`s `body` to `path` (such as `/v1/agent/service/register`) on
    /// the agent; anything but 200 is an error.
    pub async fn put(&self, path: &str, body: Bytes) -> Result<(), ConsulError> {
        let request = format!("PUT {}{path}", self.base);
        self.exchange(Method::PUT, &request, body, REPLY_SLACK)
            .await
            .map(drop)
    }

    /// One request (`request` is `METHOD URL`) with the token, answered
    /// 200 within `limit`.
    async fn exchange(
        &self,
        method: Method,
        request: &str,
        body: Bytes,
        limit: Duration,
    ) -> Result<Answer, ConsulError> {
        let url = request.split_once(' ').map_or(request, |(_, url)| url);
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("dsfeed/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = self.token().await? {
            builder = builder.header(TOKEN_HEADER, token);
        }
        let http_request = builder
            .body(Full::new(body))
            .expect("the URL is built from validated parts");
        let send =
            async {
                let response = self.http.request(http_request).await.map_err(|source| {
                    ConsulError::Request {
                        request: request.to_owned(),
                        source,
                    }
                })?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(|source| ConsulError::Body {
                        request: request.to_owned(),
                        source,
                    })?
                    .to_bytes();
                if parts.status != StatusCode::OK {
                    return Err(ConsulError::Status {
                        request: request.to_owned(),
                        status: parts.status,
                        body: error_body(&body),
                    });
                }
                Ok(Answer {
                    headers: parts.headers,
                    body,
                })
            };
        tokio::time::timeout(limit, send)
            .await
            .map_err(|_| ConsulError::Timeout {
                request: request.to_owned(),
                after: limit,
            })?
    }

    fn url(&self, spec: &ServiceSpec, index: u64, wait: Duration) -> String {
        let mut url = format!("{}/v1/health/service/{}", self.base, encode(&spec.name));
        let mut sep = '?';
        let mut param = |url: &mut String, key: &str, value: &str| {
            let _ = write!(url, "{sep}{key}={}", encode(value));
            sep = '&';
        };
        if let Some(dc) = &spec.datacenter {
            param(&mut url, "dc", dc);
        }
        for tag in &spec.tags {
            param(&mut url, "tag", tag);
        }
        if spec.health == Health::Passing {
            param(&mut url, "passing", "true");
        }
        if index > 0 {
            param(&mut url, "index", &index.to_string());
            let wait = if wait.subsec_millis() == 0 {
                format!("{}s", wait.as_secs())
            } else {
                format!("{}ms", wait.as_millis())
            };
            param(&mut url, "wait", &wait);
        }
        url
    }

    async fn token(&self) -> Result<Option<HeaderValue>, ConsulError> {
        match &self.token {
            Token::None => Ok(None),
            Token::Value(value) => Ok(Some(value.clone())),
            Token::File(path) => read_token(path),
        }
    }
}

/// Reads a token file, at start-up (to refuse a bad one before running) and
/// before every query (so a rotated token is picked up); only its owner
/// may read it.
fn read_token(path: &Path) -> Result<Option<HeaderValue>, ConsulError> {
    let text =
        dsfeed_model::secret::read_secret(path).map_err(|source| ConsulError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
    parse_token(&text, path)
}

/// The token in a token file's text; an empty file means no token, as in
/// Consul's tools.
fn parse_token(text: &str, path: &Path) -> Result<Option<HeaderValue>, ConsulError> {
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    header_value(token, &path.display().to_string()).map(Some)
}

fn header_value(token: &str, from: &str) -> Result<HeaderValue, ConsulError> {
    let mut value = HeaderValue::from_str(token).map_err(|_| ConsulError::BadToken {
        from: from.to_owned(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The rustls client settings: ring, Consul's CA (or the system roots) and
/// the optional client certificate. Over plain http none of it is used.
fn tls_config(args: &ConsulArgs) -> Result<ClientConfig, ConsulError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConsulError::Tls)?;
    if !args.uses_https() {
        return Ok(builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth());
    }
    let builder = match &args.cacert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, "CA file")? {
                roots.add(cert).map_err(ConsulError::Tls)?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(ConsulError::NoRoots);
            }
            builder.with_root_certificates(roots)
        }
    };
    match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|source| pem_error(key, "client key", source))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(ConsulError::Tls)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ConsulError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| pem_error(path, what, source))?;
    if certs.is_empty() {
        return Err(ConsulError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn pem_error(
    path: &Path,
    what: &'static str,
    source: rustls::pki_types::pem::Error,
) -> ConsulError {
    match source {
        rustls::pki_types::pem::Error::Io(source) => ConsulError::ReadFile {
            what,
            path: path.to_owned(),
            source,
        },
        source => ConsulError::Pem {
            what,
            path: path.to_owned(),
            source,
        },
    }
}

/// The start of an error body, on one line.
fn error_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(MAX_ERROR_BODY).collect();
    text.escape_debug().to_string()
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
pub(super) fn encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_follow_the_spec() {
        let args = crate::config::Config::try_load([
            "dsfeed",
            "--consul-service",
            "a=1",
            "--consul-addr",
            "http://127.0.0.1:8500",
        ])
        .unwrap()
        .consul;
        let client = ConsulClient::new(&args).unwrap();
        let spec: ServiceSpec = "asterisk=1,dc=euwest,tag=a&b,tag=c".parse().unwrap();
        assert_eq!(
            client.url(&spec, 0, Duration::from_secs(300)),
            "http://127.0.0.1:8500/v1/health/service/asterisk?dc=euwest&tag=a%26b&tag=c&passing=true"
        );
        let warning: ServiceSpec = "asterisk=1,health=warning".parse().unwrap();
        assert_eq!(
            client.url(&warning, 42, Duration::from_millis(1500)),
            "http://127.0.0.1:8500/v1/health/service/asterisk?index=42&wait=1500ms"
        );
    }
}
