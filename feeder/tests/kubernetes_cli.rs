//! The `dsfeed` binary with CyCoreSystems/dispatchers' Kubernetes flags,
//! against the fake API server: what a user running it sees in
//! dispatcher.list.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_kube::{FakeKube, endpoint_slice};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

fn slice(name: &str, port: u16, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    endpoint_slice("voice", "asterisk", name, "IPv4", port, endpoints)
}

/// Kills the feeder when the test ends, passed or not.
struct Feeder(Child);

impl Drop for Feeder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The destination lines of dispatcher.list once they equal `want`.
async fn wait_for_lines(path: &Path, want: &[&str]) {
    let what = format!("dispatcher.list to become {want:?}");
    dsfeed_tests::wait_until(&what, PATIENCE, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        if lines == want {
            Ok(())
        } else {
            Err(text.clone())
        }
    })
    .await;
}

#[tokio::test]
async fn dispatchers_command_line_follows_the_service() {
    let kube = FakeKube::start().await;
    kube.apply(slice("asterisk-a", 5080, &["10.0.0.1"]));
    kube.apply(slice("asterisk-b", 5080, &["10.0.0.2"]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let list = dir.path().join("dispatcher.list");

    let _feeder = Feeder(
        Command::new(env!("CARGO_BIN_EXE_dsfeed"))
            .args([
                "-set",
                "asterisk=1:sip",
                "-static",
                "2=10.1.1.1",
                "-kubecfg",
            ])
            .arg(&kubeconfig)
            .arg("-o")
            .arg(&list)
            .arg("--no-reload")
            // The namespace of a --set without one, as in a pod.
            .env("POD_NAMESPACE", "voice")
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_lines(
        &list,
        &[
            "1 sip:10.0.0.1:5080 0 0",
            "1 sip:10.0.0.2:5080 0 0",
            "2 sip:10.1.1.1:5060 0 0",
        ],
    )
    .await;
    kube.apply(slice("asterisk-b", 5080, &["10.0.0.3"]));
    assert!(kube.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "voice",
        "asterisk-a"
    ));
    wait_for_lines(
        &list,
        &["1 sip:10.0.0.3:5080 0 0", "2 sip:10.1.1.1:5060 0 0"],
    )
    .await;
}

/// The init container's command: the first list, then exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_the_first_list_and_exits() {
    let kube = FakeKube::start().await;
    kube.apply(slice("asterisk-a", 5060, &["10.0.0.1"]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dsfeed"))
            .args(["-set", "asterisk=1", "--once", "-o", "-", "-kubecfg"])
            .arg(&kubeconfig)
            .env("POD_NAMESPACE", "voice")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["1 sip:10.0.0.1:5060 0 0"]);
}

#[test]
fn an_unreadable_kubeconfig_is_named_and_fails() {
    let output = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args([
            "-set",
            "asterisk=1",
            "-kubecfg",
            "/nonexistent/kubeconfig",
            "--once",
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/kubeconfig"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_bad_set_flag_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args(["-set", "voice:asterisk=one"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set id 'one'"), "stderr: {stderr}");
}

/// The shipped file-mode sidecar: both dsfeed containers' arguments parse,
/// and the RBAC grants what the source asks for, namespaced only (every
/// shape is checked strictly in tests/tests/manifests.rs).
#[test]
fn the_kubernetes_examples_stay_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/kubernetes");
    let read = |name: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        serde_saphyr::from_multiple(&text).unwrap()
    };

    let deployment = &read("sidecar-file/kamailio.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    let containers = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["containers"].as_array().unwrap());
    let mut feeders = 0;
    let is_feeder =
        |c: &&serde_json::Value| c["image"].as_str().unwrap().split(':').next() == Some("dsfeed");
    for container in containers.filter(is_feeder) {
        feeders += 1;
        let args = container["args"].as_array().unwrap();
        let args = args.iter().map(|a| a.as_str().unwrap());
        let config = dsfeed::config::Config::try_load(std::iter::once("dsfeed").chain(args))
            .unwrap_or_else(|e| panic!("{}: {e}", container["name"].as_str().unwrap()));
        assert_eq!(config.services.len(), 1);
        assert_eq!(container["env"][0]["name"].as_str(), Some("POD_NAMESPACE"));
    }
    assert_eq!(feeders, 2, "an init container and the sidecar");
    assert_eq!(spec["serviceAccountName"].as_str(), Some("dsfeed"));

    let rbac = read("rbac/rbac.yaml");
    let kinds: Vec<&str> = rbac.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    let rules = rbac[1]["rules"].as_array().unwrap();
    let slices = rules
        .iter()
        .find(|r| r["resources"][0].as_str() == Some("endpointslices"))
        .unwrap();
    assert_eq!(slices["apiGroups"][0].as_str(), Some("discovery.k8s.io"));
    let verbs: Vec<&str> = slices["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(verbs, ["get", "list", "watch"]);
}
