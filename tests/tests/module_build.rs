//! Building dsfeed.so for the wrong Kamailio fails at build time, with a
//! message naming the culprit, rather than at Kamailio's start: kamailio-sys
//! is checked against the headers of a Kamailio whose `kamailio -v` says
//! 5.7.0, and against an empty source directory.
//!
//! Each case runs `cargo check -p kamailio-sys` in a target dir of its own
//! under a temp dir, so the workspace's target dir is never touched; the
//! first case compiles the build script (bindgen and its dependencies), the
//! second reuses it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The installed Kamailio's `version:` line, which the default headers match.
fn installed_version() -> String {
    let out = Command::new("kamailio")
        .arg("-v")
        .output()
        .expect("kamailio is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .expect("a version line in `kamailio -v`")
        .trim()
        .to_owned()
}

/// `cargo check -p kamailio-sys` with `envs`, in `target`.
fn check_kamailio_sys(target: &Path, envs: &[(&str, &Path)]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args(["check", "-p", "kamailio-sys", "--offline", "--locked"])
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target)
        .envs(envs.iter().copied())
        .output()
        .expect("cargo runs");
    eprintln!(
        "cargo check -p kamailio-sys with {envs:?}: {:.1?}",
        started.elapsed()
    );
    output
}

#[test]
fn the_wrong_kamailio_fails_the_build_naming_both_versions_and_no_source_names_the_fix() {
    let scratch = tempfile::Builder::new()
        .prefix("dsfeed-kamailio-sys-")
        .tempdir()
        .unwrap();
    let target = scratch.path().join("target");

    // A `kamailio` that reports 5.7.0, with the installed build's flags.
    let installed = installed_version();
    let other = "kamailio 5.7.0 (x86_64/linux)";
    assert_ne!(installed, other);
    let fake = scratch.path().join("kamailio");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nkamailio -v | sed 's|^version: .*|version: {other} |'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = check_kamailio_sys(&target, &[("KAMAILIO_BIN", &fake)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build succeeded:\n{stderr}");
    assert!(
        stderr.contains("the Kamailio source does not match the installed Kamailio"),
        "{stderr}"
    );
    for named in [
        format!("module_version {installed:?}"),
        format!("says {other:?}"),
        fake.display().to_string(),
        "fetch-kamailio-src.sh".to_owned(),
    ] {
        assert!(stderr.contains(&named), "no {named:?} in:\n{stderr}");
    }

    // No headers at all: the path, the variable, and how to get them.
    let empty = scratch.path().join("no-source");
    std::fs::create_dir(&empty).unwrap();
    let out = check_kamailio_sys(&target, &[("KAMAILIO_SRC", &empty)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build succeeded:\n{stderr}");
    for named in [
        format!("no Kamailio source at {} (KAMAILIO_SRC)", empty.display()),
        "fetch-kamailio-src.sh".to_owned(),
    ] {
        assert!(stderr.contains(&named), "no {named:?} in:\n{stderr}");
    }
}
