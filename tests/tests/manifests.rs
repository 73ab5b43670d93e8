//! The Kubernetes manifests in `docker/kubernetes/` as the API server and
//! the feeder would take them:
//! - every object parses into k8s-openapi's type for its kind, and a field
//!   that type does not know (a typo, a field at the wrong level) is an
//!   error, where the API server would drop it silently or refuse it;
//! - every kustomization names files that exist, and every manifest is in a
//!   kustomization;
//! - every dsfeed container's command line and environment pass the
//!   feeder's own flag parser, and every path it names lies on a volume the
//!   container mounts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dsfeed_tests::feeder;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/kubernetes")
}

/// Every YAML file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the directory reads") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Deserializes `value` into `T`, refusing any field `T` does not have:
/// k8s-openapi's types skip unknown fields, so each one they skip is
/// collected and reported with its path.
fn strict<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(value, |path| {
        // serde_ignored writes `?` for every Option on the way.
        let path = path.to_string();
        let segments: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
        unknown.push(segments.join("."));
    });
    let parsed = parsed.map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("unknown fields: {}", unknown.join(", ")))
    }
}

/// A manifest object, typed.
enum Object {
    Deployment(Box<Deployment>),
    Other,
}

/// Parses one object strictly by its `apiVersion` and `kind`.
fn parse_object(value: Value) -> Result<Object, String> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => {
            strict::<Deployment>(value).map(|d| Object::Deployment(Box::new(d)))
        }
        ("v1", "Service") => strict::<Service>(value).map(|_| Object::Other),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(value).map(|_| Object::Other),
        ("policy/v1", "PodDisruptionBudget") => {
            strict::<PodDisruptionBudget>(value).map(|_| Object::Other)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            strict::<NetworkPolicy>(value).map(|_| Object::Other)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(value).map(|_| Object::Other),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            strict::<RoleBinding>(value).map(|_| Object::Other)
        }
        (api_version, kind) => Err(format!(
            "no type for apiVersion {api_version:?} kind {kind:?}"
        )),
    }
}

/// Every object of a multi-document YAML text, or the first error, naming
/// the document.
fn parse_manifest(text: &str) -> Result<Vec<Object>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    docs.into_iter()
        .filter(|doc| !doc.is_null())
        .enumerate()
        .map(|(i, doc)| parse_object(doc).map_err(|e| format!("document {}: {e}", i + 1)))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    #[allow(dead_code, reason = "checked by deny_unknown_fields")]
    api_version: String,
    #[allow(dead_code, reason = "checked by deny_unknown_fields")]
    kind: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<Image>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Image {
    name: String,
    new_name: String,
    new_tag: String,
}

fn manifests() -> Vec<PathBuf> {
    yaml_files(&kubernetes_dir())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect()
}

#[test]
fn every_manifest_parses_strictly() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let mut kinds = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let objects = parse_manifest(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        kinds += objects.len();
    }
    // RBAC (3), file sidecar, module sidecar, cluster service (4) and its
    // Kamailios.
    assert!(kinds >= 10, "{kinds} objects");
}

#[test]
fn a_misspelled_or_misplaced_field_is_an_error() {
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n        - name: a\n          image: dsfeed\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: 9090\n";
    parse_manifest(good).unwrap();
    for (from, to, reported) in [
        (
            "path: /readyz",
            "paht: /readyz",
            "readinessProbe.httpGet.paht",
        ),
        ("image: dsfeed", "imgae: dsfeed", "containers.0.imgae"),
        (
            "  selector: {}",
            "  selector: {}\n  replica: 2",
            "spec.replica",
        ),
    ] {
        let bad = good.replace(from, to);
        let err = match parse_manifest(&bad) {
            Ok(_) => panic!("accepted:\n{bad}"),
            Err(err) => err,
        };
        assert!(
            err.contains("unknown fields") && err.contains(reported),
            "{err}"
        );
    }
    let err = parse_manifest(&good.replace("kind: Deployment", "kind: Deploymnet"))
        .err()
        .unwrap();
    assert!(err.contains("Deploymnet"), "{err}");
}

#[test]
fn kustomizations_name_every_manifest_and_only_files_that_exist() {
    let dir = kubernetes_dir();
    let mut listed = Vec::new();
    let mut kustomizations = 0;
    for path in yaml_files(&dir)
        .into_iter()
        .filter(|p| p.ends_with("kustomization.yaml"))
    {
        kustomizations += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let k: Kustomization =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let base = path.parent().unwrap();
        for resource in &k.resources {
            let target = base.join(resource);
            if target.is_dir() {
                assert!(
                    target.join("kustomization.yaml").is_file(),
                    "{}: {resource} has no kustomization.yaml",
                    path.display()
                );
            } else {
                assert!(
                    target.is_file(),
                    "{}: {resource} does not exist",
                    path.display()
                );
                listed.push(target.canonicalize().unwrap());
            }
        }
        for image in &k.images {
            assert!(
                ["dsfeed", "dsfeed-kamailio"].contains(&image.name.as_str())
                    && !image.new_name.is_empty()
                    && !image.new_tag.is_empty(),
                "{}: {image:?}",
                path.display()
            );
        }
    }
    assert_eq!(kustomizations, 4, "rbac and three shapes");
    for manifest in manifests() {
        assert!(
            listed.contains(&manifest.canonicalize().unwrap()),
            "{} is in no kustomization",
            manifest.display()
        );
    }
}

/// The value a container would see for each variable of its `env`; values
/// taken from the Pod stand in as what Kubernetes would give.
fn container_env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from))
                    if from
                        .field_ref
                        .as_ref()
                        .is_some_and(|f| f.field_path == "metadata.namespace") =>
                {
                    "voice".to_owned()
                }
                (None, from) => panic!("{}: no stand-in for {from:?}", var.name),
            };
            (var.name.clone(), value)
        })
        .collect()
}

/// The dsfeed containers of every Deployment, with the file they are in.
fn dsfeed_containers() -> Vec<(String, Container)> {
    let mut found = Vec::new();
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        for object in parse_manifest(&text).unwrap() {
            let Object::Deployment(deployment) = object else {
                continue;
            };
            let spec: PodSpec = deployment.spec.unwrap().template.spec.unwrap();
            let containers = spec
                .init_containers
                .into_iter()
                .flatten()
                .chain(spec.containers);
            for container in containers {
                let image = container.image.clone().unwrap_or_default();
                if image.split(':').next() == Some("dsfeed") {
                    let name = format!("{} {}", path.display(), container.name);
                    found.push((name, container));
                }
            }
        }
    }
    found
}

#[test]
fn every_dsfeed_command_line_passes_the_feeders_parser() {
    let containers = dsfeed_containers();
    // Two per sidecar shape, the cluster service and its Kamailios' init.
    assert_eq!(
        containers.len(),
        6,
        "{:?}",
        containers.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for (name, container) in &containers {
        // CyCoreSystems/dispatchers' form, `command: [/app, ...]`, is the
        // same binary.
        let mut args: Vec<String> = match &container.command {
            Some(command) => {
                assert_eq!(command[0], "/app", "{name}");
                command[1..].to_vec()
            }
            None => Vec::new(),
        };
        args.extend(container.args.iter().flatten().cloned());
        let env = container_env(container);
        if args.first().is_some_and(|a| a == "watch") {
            assert!(env.is_empty(), "{name}");
            let config = dsfeed::config::Config::try_load(
                std::iter::once("dsfeed".to_owned()).chain(args.clone()),
            );
            assert!(config.is_ok(), "{name}: {args:?}: {}", config.unwrap_err());
        } else {
            assert_flags_check(name, &args, &env);
        }

        // Every path the flags name is on a volume this container mounts,
        // and so is the list a writing container writes.
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        let grpc_only = args.windows(2).any(|w| w[0] == "--mode" && w[1] == "grpc");
        let mut paths: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("unix:").or(Some(a.as_str())))
            .filter(|a| a.starts_with('/'))
            .collect();
        if !grpc_only && !args.iter().any(|a| a == "watch") {
            paths.push("/data/kamailio/dispatcher.list");
        }
        for path in paths {
            assert!(
                mounts.iter().any(|m| Path::new(path).starts_with(m)),
                "{name}: {path} is on no volume ({mounts:?})"
            );
        }
    }
}

/// The compose file of the Consul shape: its dsfeed services' commands and
/// environment pass the feeder's parser too.
#[test]
fn the_compose_files_dsfeed_services_pass_the_feeders_parser() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/compose/consul/compose.yaml");
    let compose: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let services = compose["services"].as_object().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        if !service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("dsfeed:"))
        {
            continue;
        }
        let args: Vec<&str> = service["command"]
            .as_array()
            .expect("a command list")
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let env: BTreeMap<&str, &str> = service["environment"]
            .as_object()
            .expect("an environment map")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_flags_check(name, &args, &env);
        checked += 1;
    }
    assert_eq!(checked, 2, "dsfeed-init and dsfeed");
}

/// Every example names the same dispatcher.list path, the feeder's
/// default: an operator copying from two places must not end with two.
#[test]
fn every_example_uses_one_list_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![
        root.join("README.md"),
        root.join("kamailio-module/README.md"),
    ];
    files.extend(yaml_files(&root.join("docker")));
    files.extend(
        [
            "docker/kamailio/kamailio.cfg",
            "packaging/deb/dsfeed.default",
            "packaging/deb/dsfeed.service",
        ]
        .map(|f| root.join(f)),
    );
    let mut seen = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("dispatcher.list") {
            let start = text[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c)))
                .map_or(0, |p| p + 1);
            let path = &text[start..i + "dispatcher.list".len()];
            if path.starts_with('/') {
                seen += 1;
                assert_eq!(
                    path,
                    "/data/kamailio/dispatcher.list",
                    "{} names another list path",
                    file.display()
                );
            }
        }
    }
    assert!(seen >= 10, "{seen}");
}

/// Runs `dsfeed ARGS --check=flags` with exactly `env`, as the container
/// `name` would, and fails naming it unless the flags are accepted.
fn assert_flags_check<A, K, V>(name: &str, args: &[A], env: &BTreeMap<K, V>)
where
    A: AsRef<std::ffi::OsStr> + std::fmt::Debug,
    K: AsRef<std::ffi::OsStr> + std::fmt::Debug,
    V: AsRef<std::ffi::OsStr> + std::fmt::Debug,
{
    let output = Command::new(feeder::binary())
        .args(args)
        .arg("--check=flags")
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name}: {args:?} {env:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
