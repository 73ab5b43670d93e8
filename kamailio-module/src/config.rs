//! Module parameters: collected as Kamailio parses `modparam("dsfeed", ...)`
//! lines, then checked together in `mod_init`, where a bad value stops
//! Kamailio's start with a message naming the parameter.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::ConfigError;
use dsfeed_model::{Backoff, Endpoint, MAX_INT, SetId};

/// The shortest interval accepted between two swaps. Swaps 0 and 1 ms apart
/// crashed Kamailio 5.6 (a list freed under a SIP worker still reading
/// it); reader windows of up to ~107 ms were measured on a loaded 2-core
/// machine, and a probing round over 10,000 destinations takes ~350 ms, so
/// the floor leaves a margin above both.
pub const MIN_SWAP_INTERVAL: Duration = Duration::from_millis(500);

/// Default pacing: about three times the longest measured reader window
/// (a ping round over 10,000 destinations took ~350 ms).
pub const DEFAULT_SWAP_INTERVAL: Duration = Duration::from_millis(1000);

/// The parameters as set so far, in the main process before `mod_init`.
pub static PARAMS: Mutex<Params> = Mutex::new(Params::new());

/// A modparam value as Kamailio hands it over.
#[derive(Debug, Clone, Copy)]
pub enum ParamValue<'a> {
    Str(&'a str),
    Int(i64),
}

/// What `modparam` lines said, unchecked except for each value's type.
#[derive(Debug, Default)]
pub struct Params {
    feeder: Option<String>,
    node_id: Option<String>,
    sets: Option<String>,
    tls_ca: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_domain: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    insecure: Option<i64>,
    min_swap_interval_ms: Option<i64>,
    list_file_sync: Option<i64>,
    reconnect_min_ms: Option<i64>,
    reconnect_max_ms: Option<i64>,
    reconnect_jitter_pct: Option<i64>,
}

impl Params {
    pub const fn new() -> Self {
        Params {
            feeder: None,
            node_id: None,
            sets: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_domain: None,
            token: None,
            token_file: None,
            insecure: None,
            min_swap_interval_ms: None,
            list_file_sync: None,
            reconnect_min_ms: None,
            reconnect_max_ms: None,
            reconnect_jitter_pct: None,
        }
    }

    /// Records one `modparam` line; the last one for a name wins, as with
    /// Kamailio's own variables.
    pub fn set(&mut self, name: &str, value: ParamValue<'_>) -> Result<(), ConfigError> {
        let string = |slot: &mut Option<String>| match value {
            ParamValue::Str(s) => {
                *slot = Some(s.to_owned());
                Ok(())
            }
            ParamValue::Int(_) => Err(ConfigError::Type(name.to_owned(), "a string")),
        };
        let int = |slot: &mut Option<i64>| match value {
            ParamValue::Int(i) => {
                *slot = Some(i);
                Ok(())
            }
            ParamValue::Str(_) => Err(ConfigError::Type(name.to_owned(), "an integer")),
        };
        match name {
            "feeder" => string(&mut self.feeder),
            "node_id" => string(&mut self.node_id),
            "sets" => string(&mut self.sets),
            "tls_ca" => string(&mut self.tls_ca),
            "tls_cert" => string(&mut self.tls_cert),
            "tls_key" => string(&mut self.tls_key),
            "tls_domain" => string(&mut self.tls_domain),
            "token" => string(&mut self.token),
            "token_file" => string(&mut self.token_file),
            "insecure" => int(&mut self.insecure),
            "min_swap_interval_ms" => int(&mut self.min_swap_interval_ms),
            "list_file_sync" => int(&mut self.list_file_sync),
            "reconnect_min_ms" => int(&mut self.reconnect_min_ms),
            "reconnect_max_ms" => int(&mut self.reconnect_max_ms),
            "reconnect_jitter_pct" => int(&mut self.reconnect_jitter_pct),
            _ => Err(ConfigError::Unknown(name.to_owned())),
        }
    }

    /// Checks every parameter and builds the configuration; `hostname` is
    /// asked only when `node_id` is not set.
    pub fn build(&self, hostname: impl FnOnce() -> String) -> Result<Config, ConfigError> {
        let feeders = match self.feeder.as_deref().map(str::trim) {
            None | Some("") => return Err(ConfigError::Missing("feeder")),
            Some(feeders) => parse_feeders(feeders)?,
        };
        let node_id = match self.node_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => hostname(),
        };
        dsfeed_model::pb::check_node_id(&node_id).map_err(ConfigError::NodeId)?;
        let sets = parse_sets(self.sets.as_deref().unwrap_or(""))?;

        let tls = self.tls_files(&feeders)?;
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => return Err(ConfigError::Conflict("token", "token_file")),
            (Some(token), None) => Some(Token::Literal(check_token(token)?)),
            (None, Some(path)) => Some(Token::File(secret_file(path)?)),
            (None, None) => None,
        };
        let insecure = match self.insecure {
            None | Some(0) => false,
            Some(1) => true,
            Some(other) => return Err(ConfigError::Bool("insecure", other)),
        };
        if let Some(token) = &token
            && let Some(open) = feeders.iter().find(|f| !f.tls() && !f.is_local())
            && !insecure
        {
            let name = match token {
                Token::Literal(_) => "token",
                Token::File(_) => "token_file",
            };
            return Err(ConfigError::ClearTextToken(name, open.to_string()));
        }

        let min_swap_interval = match self.min_swap_interval_ms {
            None => DEFAULT_SWAP_INTERVAL,
            Some(ms) => {
                let interval = millis("min_swap_interval_ms", ms)?;
                if interval < MIN_SWAP_INTERVAL {
                    return Err(ConfigError::SwapInterval(ms));
                }
                interval
            }
        };
        let list_file_sync = match self.list_file_sync {
            None | Some(0) => false,
            Some(1) => true,
            Some(other) => return Err(ConfigError::Bool("list_file_sync", other)),
        };

        let min = millis("reconnect_min_ms", self.reconnect_min_ms.unwrap_or(500))?;
        let max = millis("reconnect_max_ms", self.reconnect_max_ms.unwrap_or(30_000))?;
        let jitter = self.reconnect_jitter_pct.unwrap_or(20);
        let jitter = u8::try_from(jitter)
            .ok()
            .filter(|pct| *pct <= 100)
            .ok_or(ConfigError::Jitter(jitter))?;
        let backoff = Backoff::new(min, max, f64::from(jitter) / 100.0)?;

        Ok(Config {
            feeders,
            node_id,
            sets,
            tls,
            token,
            min_swap_interval,
            list_file_sync,
            backoff,
        })
    }

    /// The TLS files, which every feeder of the list shares: TLS settings
    /// need every feeder to be `https://`.
    fn tls_files(&self, feeders: &[Endpoint]) -> Result<Option<TlsFiles>, ConfigError> {
        let given = [
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_domain", &self.tls_domain),
        ];
        if let Some(clear) = feeders.iter().find(|f| !f.tls()) {
            if let Some((name, _)) = given.iter().find(|(_, v)| v.is_some()) {
                return Err(ConfigError::TlsWithoutHttps(name, clear.to_string()));
            }
            return Ok(None);
        }
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some((readable("tls_cert", cert)?, readable("tls_key", key)?))
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("tls_key (tls_cert is set)")),
            (None, Some(_)) => return Err(ConfigError::Missing("tls_cert (tls_key is set)")),
        };
        Ok(Some(TlsFiles {
            ca: self
                .tls_ca
                .as_deref()
                .map(|ca| readable("tls_ca", ca))
                .transpose()?,
            identity,
            domain: self.tls_domain.clone(),
        }))
    }
}

/// The checked configuration every process of the module shares (it is
/// built in the main process before Kamailio forks).
#[derive(Debug, Clone)]
pub struct Config {
    /// The feeders to use, in order: the module streams from one at a time
    /// and fails over to the next when it loses it. Never empty.
    pub feeders: Vec<Endpoint>,
    pub node_id: String,
    /// The set ids to ask the feeder for; empty asks for every set.
    pub sets: Vec<SetId>,
    pub tls: Option<TlsFiles>,
    pub token: Option<Token>,
    pub min_swap_interval: Duration,
    pub list_file_sync: bool,
    pub backoff: Backoff,
}

impl Config {
    /// The `feeder` parameter as understood: every address, comma-separated,
    /// for the log at start, `dsfeed.status`'s `feeders` and errors that
    /// name no single feeder.
    pub fn feeder_list(&self) -> String {
        let all: Vec<String> = self.feeders.iter().map(ToString::to_string).collect();
        all.join(",")
    }
}

/// Parses the `feeder` parameter: one address or several separated by
/// commas (replicas of one feeder service, tried in that order), each
/// listed once.
fn parse_feeders(list: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let mut feeders: Vec<Endpoint> = Vec::new();
    for part in list.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(ConfigError::Feeder(dsfeed_model::InvalidEndpoint {
                endpoint: list.to_owned(),
                reason: "an empty address in the comma-separated list".into(),
            }));
        }
        let feeder = parse_feeder(part)?;
        if feeders.contains(&feeder) {
            return Err(ConfigError::Feeder(dsfeed_model::InvalidEndpoint {
                endpoint: part.to_owned(),
                reason: "listed twice".into(),
            }));
        }
        feeders.push(feeder);
    }
    Ok(feeders)
}

/// Parses one feeder address: the feed's [`Endpoint`] grammar, with an
/// absolute socket path (Kamailio's working directory is not the operator's).
fn parse_feeder(addr: &str) -> Result<Endpoint, ConfigError> {
    let endpoint: Endpoint = addr.parse().map_err(ConfigError::Feeder)?;
    if let Endpoint::Unix(path) = &endpoint
        && !path.is_absolute()
    {
        return Err(ConfigError::Feeder(dsfeed_model::InvalidEndpoint {
            endpoint: addr.to_owned(),
            reason: "a unix socket path must be absolute".into(),
        }));
    }
    Ok(endpoint)
}

/// TLS material, read again at every connect so rotated files take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle; without it the system roots are used.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for feeders that require mTLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify instead of the feeder address's host.
    pub domain: Option<String>,
}

/// The bearer token sent as `authorization: Bearer ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Literal(String),
    /// Read at every connect, so a rotated token takes effect.
    File(PathBuf),
}

fn parse_sets(text: &str) -> Result<Vec<SetId>, ConfigError> {
    let mut ids = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = part
            .parse::<u64>()
            .ok()
            .and_then(|id| SetId::try_from(id).ok())
            .filter(|id| *id <= MAX_INT)
            .ok_or_else(|| ConfigError::Sets(part.to_owned()))?;
        ids.insert(id);
    }
    Ok(ids.into_iter().collect())
}

fn millis(name: &'static str, ms: i64) -> Result<Duration, ConfigError> {
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| ConfigError::Negative(name, ms))
}

/// Checks that the token file exists, is readable by its owner only and
/// holds a usable token; it is read again at every connect.
fn secret_file(path: &str) -> Result<PathBuf, ConfigError> {
    let text = dsfeed_model::secret::read_secret(path.as_ref()).map_err(ConfigError::Secret)?;
    check_token(&text)?;
    Ok(PathBuf::from(path))
}

fn readable(name: &'static str, path: &str) -> Result<PathBuf, ConfigError> {
    std::fs::File::open(path).map_err(|source| ConfigError::File {
        name,
        path: path.to_owned(),
        source,
    })?;
    Ok(PathBuf::from(path))
}

/// A token goes into an HTTP header, so it must be visible ASCII.
pub fn check_token(token: &str) -> Result<String, ConfigError> {
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Token);
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue<'_>)]) -> Params {
        let mut params = Params::new();
        for (name, value) in pairs {
            params.set(name, *value).unwrap();
        }
        params
    }

    fn build(pairs: &[(&str, ParamValue<'_>)]) -> Result<Config, ConfigError> {
        params(pairs).build(|| "host-a".to_owned())
    }

    /// [`build`] with `feeder` set to a unix socket, and `pairs`.
    fn fed(pairs: &[(&str, ParamValue<'_>)]) -> Result<Config, ConfigError> {
        let mut all = vec![("feeder", ParamValue::Str("unix:/f"))];
        all.extend_from_slice(pairs);
        build(&all)
    }

    #[test]
    fn minimal_config_uses_safe_defaults() {
        let config = build(&[("feeder", ParamValue::Str("unix:/run/dsfeed/feed.sock"))]).unwrap();
        assert_eq!(
            config.feeders,
            [Endpoint::Unix("/run/dsfeed/feed.sock".into())]
        );
        assert_eq!(config.node_id, "host-a");
        assert!(config.sets.is_empty());
        assert_eq!(config.min_swap_interval, DEFAULT_SWAP_INTERVAL);
        assert!(!config.list_file_sync);
        assert!(config.tls.is_none() && config.token.is_none());
    }

    #[test]
    fn feeder_addresses() {
        assert_eq!(
            parse_feeder("unix:///run/f.sock").unwrap(),
            Endpoint::Unix("/run/f.sock".into())
        );
        let https = parse_feeder("https://feeder.dsfeed.svc:8443").unwrap();
        assert!(https.tls());
        let v6 = parse_feeder("http://[2001:db8::1]:50051/").unwrap();
        assert_eq!(v6.to_string(), "http://[2001:db8::1]:50051");
        for bad in [
            "unix:relative.sock",
            "feeder:50051",
            "http://feeder",
            "http://feeder:0",
            "http://:50051",
            "http://[nope]:1",
            "grpc://feeder:1",
        ] {
            let err = parse_feeder(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn several_feeders_in_order() {
        let feeders = parse_feeders("https://a:7000, https://b:7000,unix:/run/f.sock").unwrap();
        let shown: Vec<String> = feeders.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["https://a:7000", "https://b:7000", "unix:/run/f.sock"]
        );
        for (bad, named) in [
            ("https://a:7000,,https://b:7000", "empty address"),
            ("https://a:7000,https://a:7000", "listed twice"),
            ("https://a:7000,feeder:1", "feeder:1"),
            ("https://a:7000,", "empty address"),
        ] {
            let err = parse_feeders(bad).unwrap_err().to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
        // TLS settings need every feeder to be https://, naming the other.
        let err = build(&[
            ("feeder", ParamValue::Str("https://a:1,http://b:1")),
            ("tls_domain", ParamValue::Str("feeder")),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tls_domain") && err.contains("http://b:1"),
            "{err}"
        );
        // A token in clear text to any other host needs insecure.
        let err = build(&[
            (
                "feeder",
                ParamValue::Str("http://127.0.0.1:1,http://10.0.0.2:1"),
            ),
            ("token", ParamValue::Str("s3cret")),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("10.0.0.2"), "{err}");
    }

    #[test]
    fn missing_feeder_is_named() {
        let err = build(&[]).unwrap_err();
        assert!(err.to_string().contains("feeder"), "{err}");
    }

    #[test]
    fn sets_filter_is_sorted_and_deduplicated() {
        let config = fed(&[("sets", ParamValue::Str(" 2,1, 2 ,"))]).unwrap();
        assert_eq!(config.sets, vec![1, 2]);
        let err = fed(&[("sets", ParamValue::Str("1,x"))]).unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        assert!(fed(&[("sets", ParamValue::Str("2147483648"))]).is_err());
    }

    #[test]
    fn swap_interval_below_reader_windows_is_refused() {
        for refused in [5, 100, 200, 499] {
            let err = fed(&[("min_swap_interval_ms", ParamValue::Int(refused))])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("min_swap_interval_ms {refused} is below 500"))
                    && err.contains("107 ms")
                    && err.contains("350 ms"),
                "{err}"
            );
        }
        let ok = fed(&[("min_swap_interval_ms", ParamValue::Int(500))]).unwrap();
        assert_eq!(ok.min_swap_interval, Duration::from_millis(500));
    }

    #[test]
    fn tls_needs_https_and_a_full_identity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "x").unwrap();
        let file = file.to_str().unwrap();
        // The feeder, a TLS parameter, its value, what the refusal names.
        for (feeder, name, value, named) in [
            ("http://f:1", "tls_ca", file, "tls_ca"),
            ("https://f:1", "tls_cert", file, "tls_key"),
            (
                "https://f:1",
                "tls_ca",
                "/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
        ] {
            let feeder = ("feeder", ParamValue::Str(feeder));
            let err = build(&[feeder, (name, ParamValue::Str(value))]).unwrap_err();
            assert!(err.to_string().contains(named), "{err}");
        }
        let config = build(&[
            ("feeder", ParamValue::Str("https://f:1")),
            ("tls_ca", ParamValue::Str(file)),
        ])
        .unwrap();
        assert_eq!(config.tls.unwrap().ca.unwrap().to_str(), Some(file));
    }

    #[test]
    fn token_sources_are_exclusive_and_header_safe() {
        let err = fed(&[
            ("token", ParamValue::Str("a")),
            ("token_file", ParamValue::Str("/etc/hostname")),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(fed(&[("token", ParamValue::Str("has space"))]).is_err());
    }

    #[test]
    fn a_token_in_clear_text_to_another_host_needs_insecure() {
        for (feeder, token) in [
            (
                "http://feeder.example:7000",
                ("token", ParamValue::Str("s3cret")),
            ),
            ("tcp://10.0.0.9:7000", ("token", ParamValue::Str("s3cret"))),
        ] {
            let err = build(&[("feeder", ParamValue::Str(feeder)), token])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("modparam dsfeed token")
                    && err.contains("insecure")
                    && err.contains(feeder),
                "{err}"
            );
            assert!(
                build(&[
                    ("feeder", ParamValue::Str(feeder)),
                    token,
                    ("insecure", ParamValue::Int(1)),
                ])
                .is_ok()
            );
        }
        for local in [
            "http://127.0.0.1:7000",
            "http://localhost:7000",
            "http://[::1]:7000",
            "unix:/run/f.sock",
        ] {
            assert!(
                build(&[
                    ("feeder", ParamValue::Str(local)),
                    ("token", ParamValue::Str("s3cret"))
                ])
                .is_ok(),
                "{local}"
            );
        }
        assert!(fed(&[("insecure", ParamValue::Int(2))]).is_err());
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let file = path.to_str().unwrap();
        let err = fed(&[("token_file", ParamValue::Str(file))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token_file") && err.contains(&format!("chmod 600 {file}")),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(fed(&[("token_file", ParamValue::Str(file))]).is_ok());
    }

    #[test]
    fn node_ids_must_be_plain() {
        let err = fed(&[("node_id", ParamValue::Str("kam 1"))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_id"), "{err}");
    }

    #[test]
    fn wrong_types_and_unknown_names_are_refused() {
        let mut params = Params::new();
        assert!(params.set("feeder", ParamValue::Int(1)).is_err());
        assert!(
            params
                .set("min_swap_interval_ms", ParamValue::Str("1"))
                .is_err()
        );
        let err = params.set("feedr", ParamValue::Str("x")).unwrap_err();
        assert!(err.to_string().contains("feedr"), "{err}");
    }

    #[test]
    fn backoff_and_bool_params_are_checked() {
        for (name, value) in [
            ("reconnect_jitter_pct", 101),
            ("reconnect_min_ms", 0),
            ("reconnect_min_ms", -1),
            ("list_file_sync", 2),
        ] {
            let err = fed(&[(name, ParamValue::Int(value))]).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        let err = fed(&[
            ("reconnect_min_ms", ParamValue::Int(5000)),
            ("reconnect_max_ms", ParamValue::Int(1000)),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("max"), "{err}");
    }
}
