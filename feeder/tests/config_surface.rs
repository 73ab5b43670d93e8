//! The surface an operator meets: every daemon flag can be set from the
//! environment (a systemd `EnvironmentFile`, a ConfigMap), and the README
//! documents every flag and every variable. That it documents every metric
//! is checked beside the metrics (`src/metrics.rs`), where every family
//! gets a sample.

use clap::CommandFactory as _;
use dsfeed::config::Config;

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
