//! The Consul flags and the syntax of their values.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::addr::ConsulAddr;
use super::attrs::AttrMapping;
use super::spec::{DomainSpec, RegisterSpec, RtpengineSpec, ServiceSpec};
use crate::flag;

/// Consul's own default wait for a blocking query.
pub const DEFAULT_WAIT: &str = "5m";

/// Consul caps a blocking query's wait at ten minutes.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// How long a set that Consul suddenly reports empty keeps its last
/// instances: long enough for a restarted agent to sync its services back.
pub const DEFAULT_EMPTY_GRACE: &str = "30s";

/// Where the feeder finds Consul and which services it turns into sets.
// The field docs are `--help` text, in the command line's own grammar
// ([OPTIONAL] parts), not rustdoc links.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Consul")]
pub struct ConsulArgs {
    /// A Consul service as a set: NAME=ID[:PORT][,OPTION...]. Healthy
    /// instances become destinations sip:ADDRESS:PORT, the address being the
    /// service's (or else its node's) and the port PORT or else the
    /// service's. Options: tag=TAG (repeatable; an instance must carry every
    /// tag), dc=DATACENTER, health=warning (keep instances whose checks
    /// warn too; critical ones are always left out). Repeatable.
    #[arg(
        id = "consul-service",
        long = "consul-service",
        env = "DSFEED_CONSUL_SERVICE"
    )]
    #[arg(value_name = "NAME=ID[:PORT][,OPTION...]", value_delimiter = ' ')]
    pub services: Vec<ServiceSpec>,

    /// A Consul service as an rtpengine set: NAME=ID[:PORT][,OPTION...].
    /// Healthy instances become relays udp:ADDRESS:PORT, PORT being the
    /// control port (default 22222); options tag=, dc=, health= as for
    /// --consul-service. Written with --rtpengine-table. Repeatable.
    #[arg(long = "consul-rtpengine", env = "DSFEED_CONSUL_RTPENGINE")]
    #[arg(value_name = "NAME=ID[:PORT][,OPTION...]", value_delimiter = ' ')]
    pub rtpengine: Vec<RtpengineSpec>,

    /// A Consul service as SIP domains: NAME[=DID][,OPTION...]. The address
    /// of each healthy instance becomes a domain of the domain module, under
    /// DID (default: none, the module uses the name); options tag=, dc=,
    /// health= as for --consul-service. Written with --domain-table.
    /// Repeatable.
    #[arg(long = "consul-domain", env = "DSFEED_CONSUL_DOMAIN")]
    #[arg(value_name = "NAME[=DID][,OPTION...]", value_delimiter = ' ')]
    pub domains: Vec<DomainSpec>,

    /// Consul's HTTP API: [http://|https://]HOST[:PORT]. Without a scheme
    /// the port defaults to 8500 and https is used only with
    /// CONSUL_HTTP_SSL=true; with one, to the scheme's port.
    #[arg(long = "consul-addr", value_name = "ADDR", env = "CONSUL_HTTP_ADDR")]
    #[arg(default_value = "127.0.0.1:8500")]
    pub addr: ConsulAddr,

    /// Speak https to a --consul-addr given without a scheme.
    #[arg(long = "consul-https", env = "CONSUL_HTTP_SSL")]
    #[arg(value_parser = clap::builder::BoolishValueParser::new())]
    pub https: bool,

    /// A file holding the ACL token sent as X-Consul-Token; it is read again
    /// before every query, so a rotated token is picked up. Without it the
    /// token comes from CONSUL_HTTP_TOKEN (never a flag: flags show in ps).
    #[arg(id = "consul-token-file", long = "consul-token-file")]
    #[arg(value_name = "PATH", env = "CONSUL_HTTP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// CONSUL_HTTP_TOKEN, which has no flag.
    #[arg(skip = EnvToken(std::env::var("CONSUL_HTTP_TOKEN").ok()))]
    pub env_token: EnvToken,

    /// PEM file of the CA certificates that sign Consul's certificate;
    /// default: the system's trusted roots.
    #[arg(long = "consul-cacert", value_name = "PATH", env = "CONSUL_CACERT")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate (chain) presented to Consul, for mutual TLS.
    #[arg(long = "consul-client-cert", value_name = "PATH")]
    #[arg(env = "CONSUL_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --consul-client-cert.
    #[arg(long = "consul-client-key", value_name = "PATH")]
    #[arg(env = "CONSUL_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// The name to verify in Consul's certificate instead of the host of
    /// --consul-addr.
    #[arg(long = "consul-tls-server-name", value_name = "NAME")]
    #[arg(env = "CONSUL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// A dispatcher attr taken from each instance: KEY=FIELD, FIELD one of
    /// ID (the service instance's ID), Node (the node's name),
    /// Weights.Passing, Weights.Warning, Meta.NAME (service meta) or
    /// NodeMeta.NAME. Values that could break dispatcher.list (whitespace,
    /// ';', ',', '#', '=', quotes, non-ASCII) or a weight/rweight outside
    /// 1..100 are rejected: the instance is kept without that attr and the
    /// value is logged. Repeatable, e.g. weight=Weights.Passing duid=ID.
    #[arg(
        long = "consul-attr",
        value_name = "KEY=FIELD",
        env = "DSFEED_CONSUL_ATTR"
    )]
    #[arg(value_delimiter = ' ')]
    pub attrs: Vec<AttrMapping>,

    /// Register this Kamailio in Consul as service NAME (port default 5060)
    /// with a TTL check that passes while Kamailio answers on --rpc, and
    /// deregister it on shutdown. Options: id=ID (default NAME-HOSTNAME),
    /// address=ADDR (default: the agent's node address), tag=TAG
    /// (repeatable), ttl=DURATION (default 30s). Off by default.
    #[arg(long = "consul-register", value_name = "NAME[:PORT][,OPTION...]")]
    #[arg(env = "DSFEED_CONSUL_REGISTER")]
    pub register: Option<RegisterSpec>,

    /// How long one blocking query may wait for a change (Consul caps it at
    /// 10m).
    #[arg(
        long = "consul-wait",
        value_name = "DURATION",
        env = "DSFEED_CONSUL_WAIT"
    )]
    #[arg(default_value = DEFAULT_WAIT, value_parser = parse_wait)]
    pub wait: Duration,

    /// How long a set whose instances all vanish at once keeps them before
    /// it is emptied, so that a restarting agent's brief empty answer does
    /// not blank it. 0 empties at once.
    #[arg(long = "consul-empty-grace", value_name = "DURATION")]
    #[arg(env = "DSFEED_CONSUL_EMPTY_GRACE")]
    #[arg(default_value = DEFAULT_EMPTY_GRACE, value_parser = flag::duration)]
    pub empty_grace: Duration,
}

/// The token from `CONSUL_HTTP_TOKEN`, kept out of `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvToken(pub Option<String>);

impl fmt::Debug for EnvToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        };
        write!(f, "EnvToken({shown})")
    }
}

impl ConsulArgs {
    /// Checks what clap cannot see one flag at a time.
    pub fn validate(&self) -> Result<(), String> {
        let mut keys = std::collections::HashSet::new();
        for attr in &self.attrs {
            if !keys.insert(attr.key.to_ascii_lowercase()) {
                return Err(format!("--consul-attr {} is given twice", attr.key));
            }
        }
        Ok(())
    }

    /// Whether any flag names a service to follow.
    pub fn follows_any(&self) -> bool {
        !(self.services.is_empty() && self.rtpengine.is_empty() && self.domains.is_empty())
    }

    /// Whether queries go over TLS.
    pub fn uses_https(&self) -> bool {
        self.addr.https.unwrap_or(self.https)
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let wait = flag::duration(s)?;
    if wait < Duration::from_secs(1) || wait > MAX_WAIT {
        return Err(format!("'{s}' is not between 1s and 10m"));
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn flags_reach_the_config() {
        let config = load(&[
            "-consul-service",
            "asterisk=1:5080,tag=a",
            "--consul-service=freeswitch=2",
            "--consul-addr",
            "https://consul:8501",
            "--consul-attr",
            "weight=Weights.Passing",
            "--consul-attr",
            "duid=ID",
            "--consul-wait",
            "30s",
            "--consul-empty-grace",
            "0",
        ])
        .unwrap();
        let consul = &config.consul;
        assert_eq!(consul.services.len(), 2);
        assert!(consul.uses_https());
        assert_eq!(consul.attrs.len(), 2);
        assert_eq!(consul.wait, Duration::from_secs(30));
        assert_eq!(consul.empty_grace, Duration::ZERO);
        let lists = load(&[
            "--consul-rtpengine",
            "rtpengine=1,tag=media",
            "--consul-domain",
            "sbc=edge,dc=dc2",
        ])
        .unwrap();
        assert_eq!(lists.consul.rtpengine[0].service.port, Some(22222));
        assert_eq!(lists.consul.domains[0].did, "edge");
        assert!(lists.consul.follows_any());
    }

    #[test]
    fn bad_consul_flags_exit_2() {
        for args in [
            &["--consul-service", "asterisk"][..],
            &["--consul-service", "a=1", "--consul-addr", "unix:///x"],
            &["--consul-service", "a=1", "--consul-attr", "w=Weights"],
            &[
                "--consul-service",
                "a=1",
                "--consul-attr",
                "w=ID",
                "--consul-attr",
                "W=Node",
            ],
            &["--consul-service", "a=1", "--consul-wait", "20m"],
            &["--consul-service", "a=1", "--consul-wait", "0"],
            &["--consul-service", "a=1", "--consul-empty-grace", "soon"],
            &["--consul-service", "a=1", "--consul-client-cert", "c.pem"],
            &["--consul-rtpengine", "rtp"],
            &["--consul-rtpengine", "rtp=1,flags=4"],
            &["--consul-domain", "sbc=a:b"],
            &["--consul-domain", "sbc,priority=3"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }
}
