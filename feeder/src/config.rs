//! Command-line and environment configuration.
//!
//! Precedence: flags, then `DSFEED_*` environment variables, then defaults.
//! Every long flag also works with a single dash (`-static`, `-set`,
//! `-kubecfg`), as Go's flag package reads them, so the command lines of
//! CyCoreSystems/dispatchers run unchanged; `-h HOST` and `-p PORT` keep that
//! tool's meaning (binrpc over UDP), so help is `--help` only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand, error::ErrorKind};

use crate::feed::{ServeArgs, watch::WatchArgs};
use crate::sinks::file::MIN_RELOAD_INTERVAL_FLOOR;
use crate::sources::consul::ConsulArgs;
use crate::sources::dns_srv::DnsArgs;
use crate::sources::kubernetes::{DEFAULT_NAMESPACE, DomainSet, RtpengineSet, ServiceSet};
use crate::sources::static_sets::{StaticDomains, StaticRelays, StaticSet};
use dsfeed_binrpc as binrpc;

/// Where `--mode grpc` serves the feed when no --listen is given; the
/// module's examples read it there.
pub const DEFAULT_LISTEN: &str = "unix:/run/dsfeed/feed.sock";

/// How the daemon delivers snapshots to Kamailio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// dsfeed.so if Kamailio runs it, else dispatcher.list and reload.
    Auto,
    /// The feed only: dsfeed.so applies it.
    Grpc,
    /// dispatcher.list and a binrpc reload, for stock Kamailio.
    File,
}

/// The binrpc address CyCoreSystems/dispatchers reloads by default.
pub const DEFAULT_RPC: &str = "udp:127.0.0.1:9998";

/// The default `--once-timeout`: long enough for an API server or Consul
/// agent that is still starting, short enough that a refused init container
/// says why within a minute.
pub const DEFAULT_ONCE_TIMEOUT: &str = "60s";

/// What `--check` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Check {
    /// Flags, environment and every file they name.
    All,
    /// Flags and environment only.
    Flags,
}

/// Keeps Kamailio's dispatcher sets equal to the truth in Kubernetes, Consul,
/// static flags and a sets file.
// The field docs are `--help` text, in the command line's own grammar
// ([OPTIONAL] parts), not rustdoc links.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Parser)]
#[command(
    name = "dsfeed",
    version,
    disable_help_flag = true,
    args_conflicts_with_subcommands = true,
    after_help = "Single-dash long flags (-static, -set, -kubecfg, -o, -h, -p) are accepted, as in CyCoreSystems/dispatchers."
)]
pub struct Config {
    /// A static set: ID=HOST[:PORT][,HOST[:PORT]...]. HOST may be an IPv4
    /// address, a name, an IPv6 address in brackets ([2001:db8::1]:5060) or a
    /// full sip:/sips: URI with parameters. The port defaults to 5060.
    /// Repeatable.
    #[arg(long = "static", value_name = "ID=HOSTS")]
    #[arg(env = "DSFEED_STATIC", value_delimiter = ' ')]
    pub statics: Vec<StaticSet>,

    /// A static rtpengine set: ID=HOST[:PORT][,HOST[:PORT]...], each relay
    /// HOST[:PORT] (control port, default 22222), [IPv6][:PORT], or a
    /// control URL udp:HOST:PORT / udp6:[ADDR]:PORT. Written with
    /// --rtpengine-table. Repeatable.
    #[arg(long = "static-rtpengine", value_name = "ID=HOSTS")]
    #[arg(env = "DSFEED_STATIC_RTPENGINE", value_delimiter = ' ')]
    pub static_rtpengine: Vec<StaticRelays>,

    /// Static SIP domains: [DID=]NAME[,NAME...], under DID or none (the
    /// domain module then uses the name). Written with --domain-table.
    /// Repeatable.
    #[arg(long = "static-domain", value_name = "[DID=]NAMES")]
    #[arg(env = "DSFEED_STATIC_DOMAIN", value_delimiter = ' ')]
    pub static_domains: Vec<StaticDomains>,

    /// Where to write the rtpengine module's table as a db_text file (the
    /// directory is its db_url text:///DIR, the file name its table_name,
    /// default rtpengine), atomically and only on change; then
    /// rtpengine.reload is sent over --rpc, paced and retried. The
    /// directory's version table gets the row the module checks. Works
    /// whether or not Kamailio runs dsfeed.so.
    #[arg(long, value_name = "PATH", env = "DSFEED_RTPENGINE_TABLE")]
    pub rtpengine_table: Option<PathBuf>,

    /// Where to write the domain module's domain table as a db_text file
    /// (file name domain unless the module's domain_table says otherwise),
    /// as --rtpengine-table, reloaded with domain.reload; an empty
    /// domain_attrs table and the version rows are created when missing.
    #[arg(long, value_name = "PATH", env = "DSFEED_DOMAIN_TABLE")]
    pub domain_table: Option<PathBuf>,

    /// A YAML file of sets, watched for changes. An invalid edit is logged
    /// and ignored: the last good sets stay published.
    #[arg(long, value_name = "PATH", env = "DSFEED_SETS_FILE")]
    pub sets_file: Option<PathBuf>,

    /// Where to write dispatcher.list (atomically, only when it changes).
    /// `-` writes to standard output, with --once.
    #[arg(short = 'o', long, value_name = "PATH", env = "DSFEED_OUTPUT")]
    #[arg(default_value = "/data/kamailio/dispatcher.list")]
    pub output: PathBuf,

    /// Kamailio's ctl (binrpc) address to send dispatcher.reload to (and, in
    /// --mode auto, to ask dsfeed.status): unix:PATH, tcp:HOST:PORT or
    /// udp:HOST:PORT. Default: udp:127.0.0.1:9998, as
    /// CyCoreSystems/dispatchers; with --once, no reload unless given.
    #[arg(long, value_name = "ADDR", env = "DSFEED_RPC", conflicts_with_all = ["rpc_host", "rpc_port"])]
    pub rpc: Option<binrpc::Addr>,

    /// binrpc host, reached over UDP (with -p). CyCoreSystems/dispatchers' flag.
    #[arg(short = 'h', value_name = "HOST")]
    pub rpc_host: Option<String>,

    /// binrpc UDP port (with -h; default 9998). CyCoreSystems/dispatchers' flag.
    #[arg(short = 'p', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub rpc_port: Option<u16>,

    /// Write dispatcher.list but never ask Kamailio to reload it (nor, in
    /// --mode auto, whether it runs dsfeed.so: the file is always written).
    #[arg(long, env = "DSFEED_NO_RELOAD", conflicts_with_all = ["rpc", "rpc_host", "rpc_port"])]
    pub no_reload: bool,

    /// A Kubernetes Service as a set: [NAMESPACE:]SERVICE=ID[:PORT], then
    /// optionally ,flags=N ,priority=N ,attrs=K=V;K=V (these win over the
    /// Service's dsfeed.io/* annotations). PORT is a number or a port name
    /// looked up in each EndpointSlice; default 5060. Repeatable.
    #[arg(long = "set", value_name = "[NS:]SERVICE=ID[:PORT]")]
    #[arg(env = "DSFEED_SET", value_delimiter = ' ')]
    pub services: Vec<ServiceSet>,

    /// A Kubernetes Service as an rtpengine set: [NAMESPACE:]SERVICE=ID[:PORT],
    /// PORT the control port (number or name; default 22222). Ready
    /// endpoints become relays, terminating ones disabled relays. Written
    /// with --rtpengine-table. Repeatable.
    #[arg(long = "rtpengine-set", value_name = "[NS:]SERVICE=ID[:PORT]")]
    #[arg(env = "DSFEED_RTPENGINE_SET", value_delimiter = ' ')]
    pub rtpengine_services: Vec<RtpengineSet>,

    /// A Kubernetes Service as SIP domains: [NAMESPACE:]SERVICE[=DID]. The
    /// address of each ready or draining endpoint is a domain, under DID
    /// (default none). Written with --domain-table. Repeatable.
    #[arg(long = "domain-set", value_name = "[NS:]SERVICE[=DID]")]
    #[arg(env = "DSFEED_DOMAIN_SET", value_delimiter = ' ')]
    pub domain_services: Vec<DomainSet>,

    /// The namespace of a --set that names none.
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Path to a kubeconfig; default: in-cluster, then KUBECONFIG.
    #[arg(long, value_name = "PATH", env = "DSFEED_KUBECFG")]
    pub kubecfg: Option<PathBuf>,

    /// Keep a Kubernetes set's last view while its Service has fewer than N
    /// endpoints, once it has had N (0: off; the set follows the truth).
    #[arg(long, value_name = "N", env = "DSFEED_MIN_ENDPOINTS")]
    #[arg(default_value_t = 0)]
    pub min_endpoints: usize,

    /// The shortest time between two dispatcher.reload calls to Kamailio,
    /// counted from the end of the previous one; changes meanwhile are
    /// coalesced into the newest. At least 500ms: a reload frees the list
    /// the previous one retired, while SIP workers may still read it.
    #[arg(long, value_name = "DURATION", env = "DSFEED_MIN_RELOAD_INTERVAL")]
    #[arg(default_value = "1s", value_parser = parse_min_reload_interval)]
    pub min_reload_interval: Duration,

    /// Build the snapshot from every source, write it, reload if an RPC
    /// address is given, and exit.
    #[arg(long, env = "DSFEED_ONCE")]
    pub once: bool,

    /// With --once: how long to wait for every source's first answer. An
    /// init container that waits forever on an API server refusing it (403)
    /// or out of reach keeps Kamailio from starting with no word why; past
    /// this deadline dsfeed exits non-zero naming each source still waiting
    /// and its last error, and the kubelet restarts it with a backoff.
    #[arg(
        long,
        value_name = "DURATION",
        env = "DSFEED_ONCE_TIMEOUT",
        default_value = DEFAULT_ONCE_TIMEOUT,
        value_parser = parse_once_timeout
    )]
    pub once_timeout: Duration,

    /// Check the configuration and exit: 0 when it is usable, 2 with every
    /// problem otherwise. `--check` (or `--check=all`) also reads every file
    /// the flags name (sets file, TLS files, token files, kubeconfig, Consul
    /// CA and client certificate) and looks for the output directory;
    /// `--check=flags` checks flags and environment only, for a
    /// configuration meant for another machine.
    #[arg(
        long,
        value_enum,
        value_name = "WHAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "all"
    )]
    pub check: Option<Check>,

    /// CyCoreSystems/dispatchers' switch to the v1 Endpoints API. Accepted
    /// so that its command lines run unchanged, and ignored with a warning:
    /// dsfeed always reads EndpointSlices (discovery.k8s.io/v1), so its
    /// ServiceAccount needs get, list and watch on endpointslices.
    #[arg(
        long = "legacy-endpoints",
        env = "DSFEED_LEGACY_ENDPOINTS",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub legacy_endpoints: bool,

    /// How to deliver to Kamailio. auto: serve the feed (--listen, if given)
    /// and write dispatcher.list and reload it, unless Kamailio's
    /// dsfeed.status answers on --rpc (dsfeed.so is loaded and applies the
    /// feed). grpc: serve the feed only, never write or reload (default
    /// --listen unix:/run/dsfeed/feed.sock). file: write and reload; refused
    /// with an error while Kamailio runs dsfeed.so. In every mode no reload is
    /// sent while Kamailio's ctl does not answer.
    #[arg(long, value_enum, env = "DSFEED_MODE", default_value_t = Mode::Auto)]
    pub mode: Mode,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Whether -o was given rather than defaulted.
    #[arg(skip)]
    output_given: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Last, so that its help heading does not spill over other flags.
    #[command(flatten)]
    pub consul: ConsulArgs,

    /// After Consul's, under a heading of its own.
    #[command(flatten)]
    pub dns: DnsArgs,
}

/// Commands other than the feeder itself, which runs when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the snapshots a feeder streams, as dispatcher.list lines, and
    /// ACK each one.
    Watch(WatchArgs),
    /// Exit 0 when a feeder's /healthz answers 200, 1 otherwise: the
    /// image's HEALTHCHECK, which has no curl to run.
    Healthcheck(HealthcheckArgs),
}

/// The arguments of `dsfeed healthcheck`.
// The field docs are `--help` text, in the command line's own grammar
// ([OPTIONAL] parts), not rustdoc links.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The feeder's --http address; 0.0.0.0 and [::] are asked on loopback.
    #[arg(long, value_name = "HOST:PORT", env = "DSFEED_HTTP", value_parser = crate::feed::parse_socket_addr)]
    pub http: std::net::SocketAddr,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

impl Config {
    /// Parses the process's arguments and environment; exits with status 2
    /// and a message naming the culprit when they are unusable.
    pub fn load() -> Self {
        Self::try_load(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Like [`Config::load`], but returns the error instead of exiting.
    pub fn try_load<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(single_dash_to_double(args, &command))?;
        let mut config = Self::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        config.output_given = matches.value_source("output") != Some(ValueSource::DefaultValue);
        if config.mode == Mode::Grpc && config.serve.listen.is_empty() {
            config.serve.listen.push(
                DEFAULT_LISTEN
                    .parse()
                    .expect("the default listen address parses"),
            );
        }
        config
            .validate()
            .map_err(|msg| command.error(ErrorKind::ArgumentConflict, msg))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        match &self.command {
            Some(Command::Watch(watch)) => return watch.validate(),
            Some(Command::Healthcheck(_)) => return Ok(()),
            None => {}
        }
        self.serve.validate()?;
        if self.statics.is_empty()
            && self.static_rtpengine.is_empty()
            && self.static_domains.is_empty()
            && self.sets_file.is_none()
            && self.services.is_empty()
            && self.rtpengine_services.is_empty()
            && self.domain_services.is_empty()
            && !self.consul.follows_any()
            && self.dns.services.is_empty()
        {
            return Err(
                "no source given: use --static, --sets-file, --set, --consul-service or --dns-srv (or, for rtpengine relays and SIP domains, --static-rtpengine, --static-domain, --rtpengine-set, --domain-set, --consul-rtpengine, --consul-domain)"
                    .into(),
            );
        }
        for (flag, path) in [
            ("--rtpengine-table", &self.rtpengine_table),
            ("--domain-table", &self.domain_table),
        ] {
            if let Some(path) = path
                && (path.file_name().is_none() || path.as_os_str() == "-")
            {
                return Err(format!(
                    "{flag} {}: give the table's file path (DIR/TABLE)",
                    path.display()
                ));
            }
        }
        self.consul.validate()?;
        if self.mode == Mode::Grpc && self.output_given && !self.once {
            return Err("--mode grpc never writes dispatcher.list (dsfeed.so applies the feed; its list_file_sync keeps the file): drop -o or use --mode auto".into());
        }
        if self.writes_stdout() && !self.once {
            return Err("'-o -' (standard output) works only with --once".into());
        }
        Ok(())
    }

    /// Whether the daemon writes dispatcher.list (and reloads it): in every
    /// mode but grpc, where dsfeed.so is the dispatcher's only writer.
    pub fn writes_file(&self) -> bool {
        self.mode != Mode::Grpc
    }

    /// Whether any source feeds dispatcher sets: a configuration with
    /// only rtpengine relays and SIP domains leaves dispatcher.list alone.
    pub fn feeds_dispatcher(&self) -> bool {
        !(self.statics.is_empty()
            && self.sets_file.is_none()
            && self.services.is_empty()
            && self.consul.services.is_empty()
            && self.dns.services.is_empty())
    }

    /// Whether dispatcher.list goes to standard output.
    pub fn writes_stdout(&self) -> bool {
        self.output.as_os_str() == "-"
    }

    /// Where to send `dispatcher.reload`, if anywhere.
    pub fn reload_addr(&self) -> Option<binrpc::Addr> {
        if self.no_reload {
            return None;
        }
        if let Some(addr) = &self.rpc {
            return Some(addr.clone());
        }
        if self.rpc_host.is_some() || self.rpc_port.is_some() {
            let host = self.rpc_host.as_deref().unwrap_or("127.0.0.1");
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            return Some(binrpc::Addr::Udp(format!(
                "{host}:{}",
                self.rpc_port.unwrap_or(9998)
            )));
        }
        (!self.once).then(|| DEFAULT_RPC.parse().expect("the default RPC address parses"))
    }
}

fn parse_once_timeout(s: &str) -> Result<Duration, String> {
    let timeout = crate::flag::duration(s)?;
    if timeout.is_zero() {
        return Err("--once-timeout must be longer than 0 (give a long one, such as 24h, to wait that long)".into());
    }
    Ok(timeout)
}

fn parse_min_reload_interval(s: &str) -> Result<Duration, String> {
    let interval = crate::flag::duration(s)?;
    if interval < MIN_RELOAD_INTERVAL_FLOOR {
        return Err(format!(
            "{s} is below {MIN_RELOAD_INTERVAL_FLOOR:?}: a reload frees the list the previous one retired while SIP workers may still read it (read windows of ~100 ms were measured under load, a probing round over 10,000 destinations takes ~350 ms)"
        ));
    }
    Ok(interval)
}

/// Rewrites `-name` to `--name` for every long flag `name`, as Go's flag
/// package treats one and two dashes alike. Single-letter flags and values
/// (`-o -`, `-h host`) are left alone.
fn single_dash_to_double<I, T>(args: I, command: &clap::Command) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let longs: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    let mut after_separator = false;
    args.into_iter()
        .map(Into::into)
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            if after_separator || text == "--" {
                after_separator = true;
                return arg;
            }
            let name = text
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .map(|rest| rest.split_once('=').map_or(rest, |(n, _)| n));
            match name {
                Some(name) if name.len() > 1 && longs.contains(&name) => format!("-{text}").into(),
                _ => arg,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The configuration of `dsfeed ARGS`.
    pub(crate) fn load(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_load(std::iter::once("dsfeed").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn dispatchers_flags_work_with_one_dash() {
        let config = load(&[
            "-static",
            "1=10.0.0.1",
            "-static=2=10.0.0.2:5080",
            "-o",
            "/tmp/d.list",
            "-h",
            "10.1.1.1",
            "-p",
            "9000",
        ])
        .unwrap();
        assert_eq!(config.statics.len(), 2);
        assert_eq!(config.output, PathBuf::from("/tmp/d.list"));
        assert_eq!(
            config.reload_addr(),
            Some(binrpc::Addr::Udp("10.1.1.1:9000".into()))
        );
    }

    #[test]
    fn reload_defaults_follow_dispatchers_but_not_for_once() {
        let daemon = load(&["--static", "1=a"]).unwrap();
        assert_eq!(daemon.reload_addr(), Some(DEFAULT_RPC.parse().unwrap()));
        assert_eq!(
            load(&["--static", "1=a", "--once"]).unwrap().reload_addr(),
            None
        );
        assert_eq!(
            load(&["--static", "1=a", "--no-reload"])
                .unwrap()
                .reload_addr(),
            None
        );
        let v6 = load(&["--static", "1=a", "-h", "::1"]).unwrap();
        assert_eq!(
            v6.reload_addr(),
            Some(binrpc::Addr::Udp("[::1]:9998".into()))
        );
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["--static", "1=10.0.0.1:99999"][..],
            &["--static", "nope"],
            &["--rpc", "localhost:9998", "--static", "1=a"],
            &[],
            &["--sets-file", "x", "-o", "-"],
            &["-set", "asterisk"],
            &["-set", "Voice:asterisk=1"],
            &["--set", "asterisk=1:SIP"],
            &["--set", "asterisk=1", "--min-endpoints", "-1"],
            &["--bogus"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn list_flags_reach_the_config() {
        let config = load(&[
            "--static-rtpengine",
            "1=10.0.0.1,10.0.0.2:2223",
            "--static-domain",
            "t1=a.example.com",
            "--rtpengine-set",
            "media:rtpengine=1",
            "--domain-set",
            "edge:sbc",
            "--rtpengine-table",
            "/var/lib/kamailio/db/rtpengine",
            "--domain-table",
            "/var/lib/kamailio/db/domain",
        ])
        .unwrap();
        assert_eq!(config.static_rtpengine[0].relays.len(), 2);
        assert_eq!(config.static_domains[0].did, "t1");
        assert_eq!(config.rtpengine_services.len(), 1);
        assert_eq!(config.domain_services[0].service.service, "sbc");
        assert!(config.rtpengine_table.is_some() && config.domain_table.is_some());
        for args in [
            &["--static-rtpengine", "1=tcp:a:1"][..],
            &["--static-domain", "a;b"],
            &["--rtpengine-set", "rtpengine"],
            &["--static", "1=a", "--rtpengine-table", "/"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = load(&["--static-rtpengine", "1=10.0.0.1,udp:x"]).unwrap_err();
        assert!(err.to_string().contains("udp:x"), "{err}");
    }

    #[test]
    fn serving_flags_are_checked() {
        let sidecar = load(&["--static", "1=a", "--listen", "unix:/run/dsfeed.sock"]).unwrap();
        assert!(sidecar.writes_file() && sidecar.mode == Mode::Auto);
        let grpc = load(&["--static", "1=a", "--mode", "grpc"]).unwrap();
        assert!(!grpc.writes_file());
        assert_eq!(grpc.serve.listen, [DEFAULT_LISTEN.parse().unwrap()]);
        let file = load(&[
            "--static",
            "1=a",
            "-listen",
            "tcp://127.0.0.1:7000",
            "-mode",
            "file",
        ])
        .unwrap();
        assert!(file.writes_file() && file.mode == Mode::File);
        let err = load(&["--static", "1=a", "--mode", "grpc", "-o", "/x"]).unwrap_err();
        assert!(err.to_string().contains("list_file_sync"), "{err}");
        assert!(load(&["--static", "1=a"]).unwrap().writes_file());
        for args in [
            &["--static", "1=a", "--listen", "tcp://0.0.0.0:7000"][..],
            &["--static", "1=a", "--listen", "tcp://h.example:7000"],
            &[
                "--static",
                "1=a",
                "--listen",
                "unix:/x",
                "--tls-cert",
                "c.pem",
            ],
            &["--static", "1=a", "--http", "nohost"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = load(&["--static", "1=a", "--listen", "tcp://0.0.0.0:7000"]).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(
            load(&[
                "--static",
                "1=a",
                "--listen",
                "tcp://0.0.0.0:7000",
                "--insecure"
            ])
            .is_ok()
        );
    }

    #[test]
    fn reloads_are_paced_no_closer_than_half_a_second() {
        let default = load(&["--static", "1=a"]).unwrap();
        assert_eq!(default.min_reload_interval, Duration::from_secs(1));
        let slow = load(&["--static", "1=a", "--min-reload-interval", "2s500ms"]).unwrap();
        assert_eq!(slow.min_reload_interval, Duration::from_millis(2500));
        let err = load(&["--static", "1=a", "--min-reload-interval", "200ms"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("below 500ms"), "{err}");
    }

    #[test]
    fn watch_has_help() {
        let err = load(&["watch", "--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        assert!(err.to_string().contains("--sets <IDS>"), "{err}");
    }

    #[test]
    fn watch_is_a_subcommand_needing_no_source() {
        let config = load(&["watch", "unix:/run/dsfeed.sock", "--sets", "1,2"]).unwrap();
        let Some(Command::Watch(watch)) = config.command else {
            panic!("not watch");
        };
        assert_eq!(watch.sets, [1, 2]);
        for args in [
            &["watch"][..],
            &["watch", "https://f:7443"],
            &["watch", "unix:/x", "--tls-ca", "ca.pem"],
            &["--static", "1=a", "watch", "unix:/x"],
            &["watch", "unix:/x", "--sets", "one"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn dispatchers_kubernetes_flags_work_with_one_dash() {
        let config = load(&[
            "-set",
            "voice:asterisk=1:sip",
            "-set=kamailio=2",
            "-kubecfg",
            "/etc/kube.conf",
            "--namespace",
            "edge",
            "--min-endpoints",
            "2",
        ])
        .unwrap();
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].namespace.as_deref(), Some("voice"));
        assert_eq!(config.services[1].namespace, None);
        assert_eq!(config.namespace, "edge");
        assert_eq!(config.kubecfg, Some(PathBuf::from("/etc/kube.conf")));
        assert_eq!(config.min_endpoints, 2);
    }

    #[test]
    fn once_has_a_deadline() {
        let config = load(&["--static", "1=a", "--once"]).unwrap();
        assert_eq!(config.once_timeout, Duration::from_secs(60));
        let config = load(&["--static", "1=a", "--once", "-once-timeout", "2s"]).unwrap();
        assert_eq!(config.once_timeout, Duration::from_secs(2));
        for bad in ["0", "soon", "-1s"] {
            let flag = format!("--once-timeout={bad}");
            let err = load(&["--static", "1=a", "--once", &flag]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
            assert!(err.to_string().contains("--once-timeout"), "{err}");
        }
    }

    #[test]
    fn dispatchers_legacy_endpoints_switch_is_accepted() {
        assert!(!load(&["-set", "asterisk=1"]).unwrap().legacy_endpoints);
        for args in [
            &["-set", "asterisk=1", "-legacy-endpoints"][..],
            &["-legacy-endpoints=true", "-set", "asterisk=1"],
            &["--legacy-endpoints", "-set", "asterisk=1"],
        ] {
            let config = load(args).unwrap();
            assert!(config.legacy_endpoints, "{args:?}");
            assert_eq!(config.services.len(), 1, "{args:?}");
        }
        let off = load(&["-set", "asterisk=1", "-legacy-endpoints=false"]).unwrap();
        assert!(!off.legacy_endpoints);
        let err = load(&["-set", "asterisk=1", "-legacy-endpoints=maybe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn check_takes_an_optional_level() {
        assert_eq!(load(&["--static", "1=a"]).unwrap().check, None);
        assert_eq!(
            load(&["--static", "1=a", "--check"]).unwrap().check,
            Some(Check::All)
        );
        assert_eq!(
            load(&["-check=flags", "--static", "1=a"]).unwrap().check,
            Some(Check::Flags)
        );
        // A value needs '=': the next word stays a flag of its own.
        let config = load(&["--check", "--static", "1=a"]).unwrap();
        assert_eq!(config.check, Some(Check::All));
        assert_eq!(load(&["--check"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn healthcheck_needs_the_http_address() {
        let config = load(&["healthcheck", "--http", "0.0.0.0:9090"]).unwrap();
        let Some(Command::Healthcheck(args)) = config.command else {
            panic!("not healthcheck");
        };
        assert_eq!(args.http.port(), 9090);
    }

    #[test]
    fn help_is_long_only() {
        assert_eq!(
            load(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert_eq!(load(&["-help"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
    }
}
