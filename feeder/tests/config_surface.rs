//! The surface an operator meets: every daemon flag can be set from the
//! environment (a systemd `EnvironmentFile`, a ConfigMap), and the README
//! documents every flag, every variable and every metric.

use std::time::Duration;

use clap::CommandFactory as _;
use dsfeed::config::Config;
use dsfeed::metrics::{ClientSample, Metrics};
use dsfeed_model::{Destination, SetMap, Snapshot};

/// Flags with no environment variable, each for the reason the README
/// gives: help and version are questions, not configuration; `-h`/`-p` are
/// CyCoreSystems/dispatchers' spelling of `--rpc` (`DSFEED_RPC`); `--check`
/// is an action on a configuration, not part of one.
const NO_ENV: &[&str] = &["help", "version", "rpc_host", "rpc_port", "check"];

/// Variables that are not `DSFEED_*`: the conventions of the platform they
/// come from.
const FOREIGN_ENV: &[&str] = &[
    "POD_NAMESPACE",
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_CACERT",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
];

fn daemon_args() -> Vec<clap::Arg> {
    let mut command = Config::command();
    command.build();
    command.get_arguments().cloned().collect()
}

#[test]
fn every_daemon_flag_has_an_environment_variable() {
    let mut missing = Vec::new();
    let mut names = Vec::new();
    for arg in daemon_args() {
        let id = arg.get_id().as_str().to_owned();
        match arg.get_env() {
            Some(env) => names.push(env.to_string_lossy().into_owned()),
            None if NO_ENV.contains(&id.as_str()) => {}
            None => missing.push(id),
        }
    }
    assert!(
        missing.is_empty(),
        "flags without an environment variable: {missing:?}; give each `env = \"DSFEED_...\"` or document why not in NO_ENV and the README"
    );
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "a variable serves two flags: {names:?}"
    );
    for name in &names {
        assert!(
            name.starts_with("DSFEED_") || FOREIGN_ENV.contains(&name.as_str()),
            "{name} is neither DSFEED_* nor a platform convention"
        );
    }
}

#[test]
fn the_readme_documents_every_flag_and_variable() {
    let readme = readme();
    let mut undocumented = Vec::new();
    for arg in daemon_args() {
        if let Some(long) = arg.get_long()
            && !readme.contains(&format!("`--{long}"))
        {
            undocumented.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            if !readme.contains(&format!("`{env}`")) {
                undocumented.push(env.into_owned());
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "not in README.md: {undocumented:?}"
    );
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md")
}

#[test]
fn the_readme_operate_section_documents_every_metric() {
    // Every family gets a sample: families without one are not exported.
    let metrics = Metrics::new();
    let snapshot = Snapshot::new(SetMap::from([(
        1,
        vec![Destination::parse_target("10.0.0.1").unwrap()],
    )]));
    metrics.count_ack("kam-1");
    metrics.count_nack("kam-1");
    metrics.count_retry("kam-1");
    metrics.source("static").error("read");
    let sink = metrics.file_sink("udp:127.0.0.1:9998");
    sink.reload("loaded");
    sink.loaded(snapshot.version());
    sink.withheld("no_answer");
    sink.error("write");
    metrics.table_reload("udp:127.0.0.1:9998", "rtpengine", "throttled");
    let client = ClientSample {
        node: "kam-1".into(),
        acked: Some(snapshot.version().to_owned()),
        retrying: Some("v2".into()),
        sent: Some("v2".into()),
        acked_at: Some(std::time::SystemTime::now()),
    };
    let text = metrics.render(Some((&snapshot, Duration::from_secs(1))), &[client]);
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap_or_default();
            // OpenMetrics names a counter's family without its _total.
            match words.next() {
                Some("counter") => format!("{name}_total"),
                _ => name.to_owned(),
            }
        })
        .collect();
    assert!(names.len() >= 17, "{names:?}");
    alerts_use_only(&names);
    let readme = readme();
    let operate = readme
        .split_once("\n## Operate")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("README.md has an Operate section");
    let undocumented: Vec<_> = names
        .iter()
        .filter(|name| !operate.contains(&format!("`{name}")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in README's Operate section: {undocumented:?}"
    );
}

/// The shipped alerting rules parse, and every `dsfeed_*` name in their
/// expressions is one the feeder exports (a renamed metric would leave an
/// alert that can never fire).
fn alerts_use_only(names: &[String]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker/prometheus/dsfeed-alerts.yaml"
    );
    let rules: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).expect("the rules parse");
    let rules = rules["groups"][0]["rules"]
        .as_array()
        .expect("groups[0].rules");
    assert!(rules.len() >= 6, "{rules:?}");
    for rule in rules {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{alert} has no summary"
        );
        // Label values ("dsfeed_module") are not metric names.
        let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let used = unquoted
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("dsfeed_"));
        for name in used {
            assert!(
                names.iter().any(|n| n == name),
                "{alert} uses {name}, which is not exported"
            );
        }
    }
}
