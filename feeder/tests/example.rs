//! The library example runs, in CI as in `cargo run --example`: a custom
//! source and a custom sink plugged into the hub, in under 100 lines.

use std::path::PathBuf;
use std::time::Duration;

const EXAMPLE: &str = "custom_components";

/// The example's binary, built beside the tests (`cargo test` and
/// `cargo build --all-targets` build every example).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile.join("examples").join(EXAMPLE);
    assert!(
        bin.exists(),
        "{} is missing: build the examples first",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_custom_source_and_sink_example_runs_to_the_end() {
    let run = tokio::process::Command::new(binary())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the example ends by itself")
        .unwrap();
    let stdout = dsfeed_tests::feeder::succeeded(&output);
    // The last snapshot printed holds every backend of the custom source
    // and the built-in static set beside them.
    let last = stdout.rsplit("# dispatcher.list").next().unwrap();
    let lines: Vec<&str> = last.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "1 sip:10.0.0.1:5060 0 0 duid=inv",
            "1 sip:10.0.0.2:5060 0 0 duid=inv",
            "1 sip:10.0.0.3:5060 0 0 duid=inv",
            "2 sip:10.0.0.9:5060 0 0",
        ],
        "{stdout}"
    );
}

#[test]
fn the_example_stays_under_a_hundred_lines() {
    let path = format!("{}/examples/{EXAMPLE}.rs", env!("CARGO_MANIFEST_DIR"));
    let lines = std::fs::read_to_string(path).unwrap().lines().count();
    assert!(lines < 100, "{EXAMPLE}.rs has {lines} lines");
}
