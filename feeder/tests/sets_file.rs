//! The sets-file source as the system sees it: a running feeder reads the
//! file when it changes, not in a loop.

use std::time::Duration;

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::free_addr;
use dsfeed_tests::sets::SetsFile;
use tempfile::TempDir;

/// Bytes the process has read through read(2)-like calls so far.
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

#[tokio::test]
async fn an_unchanged_sets_file_is_not_read_again() {
    let dir = TempDir::new().unwrap();
    // 40 KB, so that each needless read shows.
    let mut text = String::from("sets:\n  1:\n");
    for i in 0..2500 {
        text.push_str(&format!("    - 10.0.{}.{}\n", i / 250, i % 250 + 1));
    }
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&text);
    let args = Args::default().sets_file(&file.path);
    let args = args.listen_unix(&dir.path().join("feed.sock"));
    let feeder = Feeder::serving(args.http(free_addr())).await;
    let before = bytes_read(feeder.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = bytes_read(feeder.pid()) - before;
    // One periodic re-read (every 5 s, for file systems without inotify)
    // may fall in the window; a read loop makes many.
    assert!(
        read < 2 * text.len() as u64,
        "the idle feeder read {read} bytes in 2 s; the file is {} bytes",
        text.len()
    );
}
