//! For the tests of dsfeed.so: the harness's real Kamailio with the module
//! loaded, readers for what the module and the dispatcher report over
//! binrpc, and the process facts the module's tests look at. The scripted
//! feeder they talk to is [`crate::scripted`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Kamailio, KamailioBuilder, ParamValue, eventually};
use dsfeed_binrpc::Value;
use dsfeed_binrpc::dispatcher::{self, ListedSets};

/// Generous: the machine is shared and loaded.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where `dsfeed.so` is: `DSFEED_MODULE`, else the workspace's target dir
/// (the newer of debug and release).
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("DSFEED_MODULE") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let candidates = [
        target.join("debug/libdsfeed.so"),
        target.join("release/libdsfeed.so"),
    ];
    candidates
        .iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "dsfeed.so not found at {candidates:?}: build it first with \
                 `cargo build -p dsfeed-module` (or `make module`), or set DSFEED_MODULE"
            )
        })
}

/// A harness Kamailio with `list` and dsfeed.so loaded.
pub fn kamailio(list: &str) -> KamailioBuilder {
    Kamailio::builder(list).loadmodule(module_path().display().to_string())
}

/// A harness Kamailio with `list` and dsfeed.so fed from `feeder` (its
/// `feeder` parameter: `unix:PATH`, `http://…`, `https://…`), reconnecting
/// within a test's patience when the feeder goes away.
pub fn fed_by(list: &str, feeder: impl Into<ParamValue>) -> KamailioBuilder {
    kamailio(list)
        .modparam("dsfeed", "feeder", feeder)
        .modparam("dsfeed", "reconnect_min_ms", 100)
        .modparam("dsfeed", "reconnect_max_ms", 500)
}

/// Calls an RPC; a fault is `Err` with its text. Arguments that look like
/// integers are sent as integers, as kamcmd does.
pub async fn rpc(kamailio: &Kamailio, method: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let params: Vec<Value> = args
        .iter()
        .map(|a| {
            a.parse()
                .map_or_else(|_| Value::Str((*a).to_owned()), Value::Int)
        })
        .collect();
    kamailio
        .client()
        .call(method, &params)
        .await
        .map_err(|e| e.to_string())
}

/// `dsfeed.status`.
pub async fn status(kamailio: &Kamailio) -> Status {
    let mut reply = rpc(kamailio, "dsfeed.status", &[])
        .await
        .expect("dsfeed.status answers");
    assert_eq!(reply.len(), 1, "{reply:?}");
    Status(reply.remove(0))
}

/// The `dsfeed.status` struct.
#[derive(Debug)]
pub struct Status(pub Value);

impl Status {
    pub fn text(&self, key: &str) -> &str {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string {key} in {}", self.0))
    }

    pub fn int(&self, key: &str) -> i64 {
        self.0
            .get(key)
            .and_then(Value::as_int)
            .map(i64::from)
            .unwrap_or_else(|| panic!("no int {key} in {}", self.0))
    }

    /// The `sets` member as (set id, destination count).
    pub fn sets(&self) -> Vec<(u32, i64)> {
        self.0
            .get("sets")
            .and_then(Value::members)
            .unwrap_or_default()
            .iter()
            .map(|(id, count)| (id.parse().unwrap(), i64::from(count.as_int().unwrap())))
            .collect()
    }
}

/// The dispatcher's in-memory sets.
pub async fn sets(kamailio: &Kamailio) -> ListedSets {
    dispatcher::list(&kamailio.client())
        .await
        .expect("dispatcher.list answers")
}

/// The URIs of `set`, in the dispatcher's order.
pub async fn uris(kamailio: &Kamailio, set: u32) -> Vec<String> {
    sets(kamailio)
        .await
        .get(&set)
        .map(|dests| dests.iter().map(|d| d.uri.clone()).collect())
        .unwrap_or_default()
}

/// The state letters of `uri` in `set` (`AX`, `IP`, `DX`, ...).
pub async fn flags(kamailio: &Kamailio, set: u32, uri: &str) -> String {
    sets(kamailio)
        .await
        .get(&set)
        .and_then(|dests| dests.iter().find(|d| d.uri == uri))
        .map(|d| d.flags.clone())
        .unwrap_or_else(|| panic!("{uri} is not in set {set}"))
}

/// The pid of the "dsfeed feed" process, from `core.psx`.
pub async fn feed_pid(kamailio: &Kamailio) -> u32 {
    let processes = rpc(kamailio, "core.psx", &[]).await.unwrap();
    processes
        .iter()
        .find(|p| p.get("DSC").and_then(Value::as_str) == Some("dsfeed feed"))
        .and_then(|p| p.get("PID").and_then(Value::as_int))
        .expect("a dsfeed feed process in core.psx") as u32
}

/// Threads of process `pid`.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// Runs Kamailio's own RPC client, `kamcmd`, on the unix ctl socket, and
/// returns what it printed. Unlike the tests' binrpc client it sends and
/// prints bytes as they are, which is how a test puts bytes that are not
/// UTF-8 into the dispatcher (`dispatcher.add`) and reads them back.
pub fn kamcmd(kamailio: &Kamailio, args: &[&[u8]]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    let socket = kamailio.dir().join("ctl.sock");
    let output = Command::new("kamcmd")
        .arg("-s")
        .arg(format!("unixs:{}", socket.display()))
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .output()
        .expect("kamcmd runs");
    assert!(
        output.status.success() && !output.stdout.starts_with(b"error"),
        "kamcmd {:?}: {}{}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Waits until the URIs of `set` in Kamailio's `dispatcher.list` equal
/// `want`, and returns when it saw them: the moment a swap became visible
/// from Kamailio's side, within a poll (25 ms) and an RPC of its end.
pub async fn seen(kamailio: &Kamailio, set: u32, want: &[&str]) -> Instant {
    eventually(&format!("set {set} to become {want:?}"), WAIT, || async {
        (uris(kamailio, set).await == want).then(Instant::now)
    })
    .await
}

/// The kernel's soft and hard limits on open files of process `pid`, as
/// `/proc/PID/limits` prints them.
pub fn fd_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_owned(), fields[1].to_owned())
}

/// Sets the soft limit on open files of process `pid`, from outside
/// (`prlimit`), keeping its hard limit.
pub fn set_fd_limit(pid: u32, soft: &str, hard: &str) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

/// The lowest file descriptor number process `pid` does not use: where
/// its next open lands.
pub fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap()
}

/// Seconds since boot when process `pid` started (`/proc/PID/stat`, in
/// clock ticks of 10 ms).
pub fn started_since_boot(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may contain spaces) start at state,
    // field 3; starttime is field 22.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = after
        .split_whitespace()
        .nth(22 - 3)
        .unwrap()
        .parse()
        .unwrap();
    ticks as f64 / 100.0
}

/// Seconds since boot now (`/proc/uptime`), on the clock of
/// [`started_since_boot`].
pub fn uptime() -> f64 {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
    uptime.split_whitespace().next().unwrap().parse().unwrap()
}

/// Waits until `dsfeed.status` satisfies `check`, and returns it.
pub async fn status_until(
    kamailio: &Kamailio,
    what: &str,
    check: impl Fn(&Status) -> bool,
) -> Status {
    eventually(what, WAIT, || async {
        let status = status(kamailio).await;
        check(&status).then_some(status)
    })
    .await
}

/// Waits until `dsfeed.status` reports an error whose text contains `text`
/// (any error when `text` is empty), and returns the status.
pub async fn error_until(kamailio: &Kamailio, text: &str) -> Status {
    let what = format!("an error with {text:?} in dsfeed.status");
    status_until(kamailio, &what, |s| {
        let error = s.text("last_error");
        !error.is_empty() && error.contains(text)
    })
    .await
}

/// Waits as [`error_until`] for a feed that could not connect (no feeder,
/// or one that refused it), and checks that it is not connected.
pub async fn unconnected_until(kamailio: &Kamailio, text: &str) -> Status {
    let status = error_until(kamailio, text).await;
    assert_eq!(status.int("connected"), 0, "{status:?}");
    status
}
