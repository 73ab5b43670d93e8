//! `make deps` and the image builds run `tools/ensure-rust.sh`: a cargo
//! older than the workspace's `rust-version` (Debian 12 ships 1.65) is
//! replaced through rustup, a recent one is left alone. Run here with a
//! stand-in `cargo` and `rustup` on the PATH that record what they are
//! asked, so nothing is downloaded.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_version() -> String {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the workspace has a rust-version")
        .to_owned()
}

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake HOME whose PATH holds a `cargo` reporting `version` and a
/// `rustup` that logs its arguments and, on `default`, puts a cargo of
/// `installs` in ~/.cargo/bin, as the real one does.
fn machine(version: &str, installs: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    executable(
        &bin.join("cargo"),
        &format!("#!/bin/sh\necho 'cargo {version} (debian)'\n"),
    );
    executable(
        &bin.join("rustup"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> \"$HOME/rustup.log\"\n\
             if [ \"$1\" = default ]; then mkdir -p \"$HOME/.cargo/bin\" && \
             printf '#!/bin/sh\\necho \"cargo {installs} (rustup)\"\\n' > \"$HOME/.cargo/bin/cargo\" && \
             chmod +x \"$HOME/.cargo/bin/cargo\"; fi\n"
        ),
    );
    home
}

fn ensure_rust(home: &Path) -> Output {
    Command::new(workspace().join("tools/ensure-rust.sh"))
        .env("HOME", home)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", home.join("bin").display()),
        )
        .output()
        .unwrap()
}

fn rustup_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("rustup.log")).unwrap_or_default()
}

#[test]
fn an_old_cargo_is_replaced_through_rustup() {
    let want = rust_version();
    let home = machine("1.65.0", "1.95.0");
    let output = ensure_rust(home.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cargo 1.65.0 (")
            && stderr.contains(&format!("older than the workspace's rust-version {want}")),
        "{stderr}"
    );
    assert!(stderr.contains("ensure-rust: cargo 1.95.0"), "{stderr}");
    assert_eq!(
        rustup_log(home.path()),
        "toolchain install stable --profile minimal -c clippy,rustfmt\ndefault stable\n"
    );
}

#[test]
fn a_recent_cargo_is_left_alone() {
    let home = machine(&rust_version(), "9.9.9");
    let output = ensure_rust(home.path());
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    assert_eq!(rustup_log(home.path()), "");
    let newer = machine("1.200.0", "9.9.9");
    assert!(ensure_rust(newer.path()).status.success());
    assert_eq!(
        rustup_log(newer.path()),
        "",
        "1.200 is newer than 1.89, not older"
    );
}

#[test]
fn an_install_that_leaves_an_old_cargo_fails() {
    let home = machine("1.65.0", "1.70.0");
    let output = ensure_rust(home.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cargo is still 1.70.0"), "{stderr}");
}
