//! `make deb`'s packages, installed the way an operator installs them, in
//! Debian 12 and Debian 13 roots with each release's real kamailio
//! package (`packaging/deb/try-in-root.sh` does the installing and checks,
//! in a throwaway overlay of the cached root):
//! - both packages install; the `dsfeed` user exists and Kamailio is in its
//!   group; `systemd-analyze verify` finds nothing to say about the unit;
//!   the shipped `/etc/default/dsfeed` plus a source passes `--check`; the
//!   feeder writes the list as its own user;
//! - the root's Kamailio loads the packaged `dsfeed.so` by name;
//! - the module package of the other Kamailio is refused by dpkg, since its
//!   `Depends: kamailio (= VERSION)` pins the release it was built for.
//!
//! The packages are built here with the script `make deb` uses, from this
//! build's binaries (the debug feeder and host module `cargo build`
//! leaves, the release module for Debian 13 that `make test` builds), so
//! the test needs no release build of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsfeed_tests::feeder;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a workspace script and returns its standard output's last line
/// (the path these scripts print), failing with what it said otherwise.
fn script(path: &str, args: &[&Path]) -> PathBuf {
    let mut command = Command::new(workspace().join(path));
    // What `cargo test` adds to a test's environment (CARGO_*, the library
    // path) would make build-module.sh's cargo see a changed build and
    // redo a release build that `make test` has just made.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO") || name == "LD_LIBRARY_PATH" {
            command.env_remove(&*name);
        }
    }
    let output = command
        .args(args)
        // Packages thrown away after the test need no compression.
        .env("DSFEED_DEB_COMPRESSION", "none")
        .output()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        output.status.success(),
        "{path} {args:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap_or_default())
}

/// The cached Debian root of `suite` (made once, ~2 minutes, 250 MB).
fn root(suite: &str) -> PathBuf {
    script("kamailio-module/make-kamailio-root.sh", &[Path::new(suite)])
}

fn build_deb(what: &str, input: &Path, out: &Path, root: &Path) -> PathBuf {
    script(
        "packaging/deb/build-deb.sh",
        &[Path::new(what), input, out, root],
    )
}

#[test]
fn packages_install_and_work_on_debian_12_and_13() {
    let out = tempfile::tempdir().unwrap();
    let bookworm = root("bookworm");
    let trixie = root("trixie");
    // The host is Debian 12: cargo's own build of the module is for 5.6.3;
    // the one for 6.0.1 is built against the Debian 13 root.
    let host_module = feeder::binary().with_file_name("libdsfeed.so");
    assert!(
        host_module.exists(),
        "{} is missing: cargo build --workspace",
        host_module.display()
    );
    let trixie_module = script(
        "kamailio-module/build-module.sh",
        &[Path::new("--root"), &trixie],
    );

    let feeder_deb = build_deb("feeder", &feeder::binary(), out.path(), &bookworm);
    let module_56 = build_deb("module", &host_module, out.path(), &bookworm);
    let module_60 = build_deb("module", &trixie_module, out.path(), &trixie);
    for (deb, name) in [
        (&feeder_deb, "dsfeed_0.1.0-1_amd64.deb"),
        (
            &module_56,
            "kamailio-dsfeed_0.1.0-1+kamailio5.6.3_amd64.deb",
        ),
        (
            &module_60,
            "kamailio-dsfeed_0.1.0-1+kamailio6.0.1_amd64.deb",
        ),
    ] {
        assert_eq!(deb.file_name().unwrap(), name);
    }
    // A module that was built for another Kamailio is not packaged for this one.
    let wrong = Command::new(workspace().join("packaging/deb/build-deb.sh"))
        .args([Path::new("module"), &trixie_module, out.path(), &bookworm])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("was not built for kamailio 5.6.3"),
        "{wrong:?}"
    );

    for (root, module, foreign, kamailio) in [
        (
            &bookworm,
            &module_56,
            &module_60,
            [
                "5.6.3-2",
                "kamailio 5.6.3 (x86_64/linux)",
                "6.0.1-1+deb13u1",
            ],
        ),
        (
            &trixie,
            &module_60,
            &module_56,
            [
                "6.0.1-1+deb13u1",
                "kamailio 6.0.1 (x86_64/linux)",
                "5.6.3-2",
            ],
        ),
    ] {
        let output = Command::new(workspace().join("packaging/deb/try-in-root.sh"))
            .args([root, &feeder_deb, module, foreign])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}:\n{said}{}",
            root.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{}:\n{said}", root.display());
        for line in [
            format!("ok: installed dsfeed=0.1.0-1 kamailio={}", kamailio[0]),
            "ok: user dsfeed; kamailio in its group".to_owned(),
            "ok: systemd-analyze verify dsfeed.service".to_owned(),
            "ok: dsfeed --check with /etc/default/dsfeed".to_owned(),
            "ok: dsfeed --once as user dsfeed wrote /data/kamailio/dispatcher.list".to_owned(),
            format!("ok: {} loads dsfeed.so", kamailio[1]),
            format!(
                "ok: refused {}",
                foreign.file_name().unwrap().to_string_lossy()
            ),
        ] {
            assert!(said.contains(&line), "{line:?} missing:\n{said}");
        }
        // The other module's pin is what dpkg names.
        assert!(
            said.contains(&format!("depends on kamailio (= {})", kamailio[2])),
            "{said}"
        );
    }
}

/// The unit check has teeth: a line systemd cannot parse fails it.
#[test]
fn a_broken_unit_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(workspace().join("packaging/deb/dsfeed.service")).unwrap();
    let broken = unit.replace("ProtectSystem=strict", "ProtectSystem=strikt");
    assert_ne!(unit, broken);
    let path = dir.path().join("dsfeed.service");
    std::fs::write(&path, broken).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("strikt"), "{said}");
}
