//! A real Kamailio 5.6.3 with the stock dispatcher and `dsfeed.so`, in its
//! own temporary directory, on its own UDP port and binrpc unix socket,
//! stopped (SIGTERM, then SIGKILL of its process group) when dropped.
//! RPCs go through `kamcmd -s`, the reference binrpc client.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Generous: the machine is shared and loaded.
pub const STARTUP: Duration = Duration::from_secs(60);

/// Where `dsfeed.so` is: `DSFEED_MODULE`, else the workspace's target dir.
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

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (apt-get install kamailio)"))
}

/// What to run Kamailio with.
pub struct Setup {
    /// `modparam("dsfeed", ...)` lines: (name, value as written in the cfg).
    pub dsfeed: Vec<(String, String)>,
    /// Extra `modparam("dispatcher", ...)` lines.
    pub dispatcher: Vec<(String, String)>,
    /// The dispatcher.list content at start (None: no file at all).
    pub list: Option<String>,
    pub env: Vec<(String, String)>,
    /// The body of `request_route`.
    pub route: String,
    /// Verbatim cfg after the module parameters: more `modparam` lines,
    /// other routes.
    pub global: String,
    pub children: u32,
    /// Load dsfeed.so at all.
    pub load_module: bool,
    /// Load the stock dispatcher.so.
    pub load_dispatcher: bool,
    /// Shared memory, MB (`-m`).
    pub shm_mb: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            dsfeed: Vec::new(),
            dispatcher: Vec::new(),
            list: Some(String::new()),
            env: Vec::new(),
            route: "sl_send_reply(\"404\", \"Not here\");".into(),
            global: String::new(),
            children: 2,
            load_module: true,
            load_dispatcher: true,
            shm_mb: 128,
        }
    }
}

impl Setup {
    pub fn dsfeed(mut self, name: &str, value: &str) -> Self {
        self.dsfeed.push((name.into(), format!("\"{value}\"")));
        self
    }

    pub fn dsfeed_int(mut self, name: &str, value: i64) -> Self {
        self.dsfeed.push((name.into(), value.to_string()));
        self
    }

    pub fn dispatcher_int(mut self, name: &str, value: i64) -> Self {
        self.dispatcher.push((name.into(), value.to_string()));
        self
    }

    pub fn list(mut self, list: &str) -> Self {
        self.list = Some(list.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

pub struct Kamailio {
    child: Child,
    dir: TempDir,
    pub sip_port: u16,
}

/// A Kamailio that did not come up.
#[derive(Debug)]
pub struct Failed {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl Kamailio {
    /// Starts Kamailio and waits until its RPC answers; panics with the log
    /// if it does not.
    pub fn start(setup: Setup) -> Kamailio {
        Self::try_start(setup).unwrap_or_else(|failed| {
            panic!(
                "kamailio did not start ({:?}); log:\n{}",
                failed.status, failed.log
            )
        })
    }

    /// Starts Kamailio in a fresh directory.
    pub fn try_start(setup: Setup) -> Result<Kamailio, Failed> {
        Self::try_start_in(tempfile::tempdir().unwrap(), setup)
    }

    /// Starts Kamailio in `dir` (reused across restarts in one test).
    pub fn try_start_in(dir: TempDir, setup: Setup) -> Result<Kamailio, Failed> {
        let sip_port = free_udp_port();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let list_path = dir.path().join("dispatcher.list");
        if let Some(list) = &setup.list {
            std::fs::write(&list_path, list).unwrap();
        }
        let cfg = config(&setup, dir.path(), sip_port);
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let child = Command::new(tool("kamailio"))
            .arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-M", "16", "-m"])
            .arg(setup.shm_mb.to_string())
            .arg("-Y")
            .arg(&run)
            .arg("-w")
            .arg(dir.path())
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot run kamailio");
        let mut kamailio = Kamailio {
            child,
            dir,
            sip_port,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = kamailio.child.try_wait().unwrap() {
                return Err(Failed {
                    status: Some(status),
                    log: kamailio.log(),
                });
            }
            if kamailio.rpc(&["core.version"]).is_ok() {
                return Ok(kamailio);
            }
            if Instant::now() > deadline {
                return Err(Failed {
                    status: None,
                    log: kamailio.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ctl(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stops Kamailio and hands back its directory, for a restart.
    pub fn stop(mut self) -> TempDir {
        self.terminate();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn terminate(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever is left of the process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    /// Runs an RPC through `kamcmd`; a fault comes back as `Err(text)`.
    pub fn rpc(&self, args: &[&str]) -> Result<Vec<Value>, String> {
        let output = Command::new(tool("kamcmd"))
            .arg("-s")
            .arg(format!("unix:{}", self.ctl().display()))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // kamcmd exits 0 on an RPC fault; its text starts with "error:".
        if !output.status.success() || stdout.starts_with("error:") || stderr.contains("error") {
            return Err(format!("{stdout}{stderr}"));
        }
        Ok(parse(&stdout))
    }

    /// `dsfeed.status` as a map of its top-level fields.
    pub fn status(&self) -> Value {
        let mut values = self.rpc(&["dsfeed.status"]).expect("dsfeed.status failed");
        assert_eq!(values.len(), 1, "{values:?}");
        values.remove(0)
    }

    /// The dispatcher's in-memory sets: id → [(uri, flags letters)].
    pub fn sets(&self) -> BTreeMap<u32, Vec<(String, String)>> {
        let mut sets = BTreeMap::new();
        let values = match self.rpc(&["dispatcher.list"]) {
            Ok(values) => values,
            Err(fault) if fault.contains("No Destination Sets") => return sets,
            Err(fault) => panic!("dispatcher.list failed: {fault}"),
        };
        let Some(top) = values.first() else {
            return sets;
        };
        let Some(records) = top.get("RECORDS") else {
            return sets;
        };
        for set in records.all("SET") {
            let id: u32 = set.str("ID").parse().unwrap();
            let dests = set
                .get("TARGETS")
                .map(|t| {
                    t.all("DEST")
                        .map(|d| (d.str("URI").to_owned(), d.str("FLAGS").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            sets.insert(id, dests);
        }
        sets
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            let log = self.log();
            eprintln!(
                "---- kamailio log: distinct errors ----\n{}\n---- kamailio log: tail ----\n{}",
                distinct_errors(&log),
                tail(&log, 100)
            );
        }
    }
}

/// ERROR/WARNING/CRITICAL lines without their process prefix, each once.
fn distinct_errors(log: &str) -> String {
    let mut seen = std::collections::BTreeSet::new();
    for line in log.lines() {
        if let Some(at) = ["ERROR:", "WARNING:", "CRITICAL:", "ALERT:", "BUG:"]
            .iter()
            .filter_map(|level| line.find(level))
            .min()
        {
            seen.insert(&line[at..]);
        }
    }
    seen.into_iter().collect::<Vec<_>>().join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(setup: &Setup, dir: &Path, sip_port: u16) -> String {
    let mut cfg = format!(
        "#!KAMAILIO\n\
         debug=2\n\
         log_stderror=yes\n\
         children={children}\n\
         listen=udp:127.0.0.1:{sip_port}\n\
         mpath=\"/usr/lib/x86_64-linux-gnu/kamailio/modules/\"\n\
         loadmodule \"ctl.so\"\n\
         modparam(\"ctl\", \"binrpc\", \"unix:{dir}/ctl.sock\")\n\
         loadmodule \"tm.so\"\n\
         loadmodule \"sl.so\"\n\
         loadmodule \"pv.so\"\n\
         loadmodule \"xlog.so\"\n\
         loadmodule \"tmx.so\"\n",
        children = setup.children,
        dir = dir.display(),
    );
    if setup.load_dispatcher {
        cfg.push_str(&format!(
            "loadmodule \"dispatcher.so\"\n\
             modparam(\"dispatcher\", \"list_file\", \"{}/dispatcher.list\")\n",
            dir.display()
        ));
        for (name, value) in &setup.dispatcher {
            cfg.push_str(&format!("modparam(\"dispatcher\", \"{name}\", {value})\n"));
        }
    }
    if setup.load_module {
        cfg.push_str(&format!("loadmodule \"{}\"\n", module_path().display()));
    }
    for (name, value) in &setup.dsfeed {
        cfg.push_str(&format!("modparam(\"dsfeed\", \"{name}\", {value})\n"));
    }
    cfg.push_str(&setup.global);
    cfg.push_str(&format!("\nrequest_route {{\n{}\n}}\n", setup.route));
    cfg
}

/// One value of kamcmd's printed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Struct(Vec<(String, Value)>),
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Value::Text(_) => None,
        }
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        let members: &[(String, Value)] = match self {
            Value::Struct(members) => members,
            Value::Text(_) => &[],
        };
        members
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The text of member `key`; panics if absent.
    pub fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Some(Value::Text(text)) => text,
            other => panic!("{key} is {other:?} in {self:?}"),
        }
    }

    pub fn int(&self, key: &str) -> i64 {
        self.str(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not an integer in {self:?}"))
    }

    /// The members of a struct, as (key, text) pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Value::Struct(members) => members
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Text(t) => Some((k.clone(), t.clone())),
                    Value::Struct(_) => None,
                })
                .collect(),
            Value::Text(_) => Vec::new(),
        }
    }
}

/// Parses kamcmd's indented output: `{`, `key: value`, `key: {`, `}`.
fn parse(text: &str) -> Vec<Value> {
    type Open = (Option<String>, Vec<(String, Value)>);
    let mut stack: Vec<Open> = Vec::new();
    let mut top = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "{" {
            stack.push((None, Vec::new()));
        } else if line == "}" {
            let (key, members) = stack.pop().expect("unbalanced kamcmd output");
            let value = Value::Struct(members);
            match (stack.last_mut(), key) {
                (Some((_, parent)), Some(key)) => parent.push((key, value)),
                _ => top.push(value),
            }
        } else if let Some(key) = line.strip_suffix(": {") {
            stack.push((Some(key.to_owned()), Vec::new()));
        } else if let Some((key, value)) = line.split_once(':') {
            let value = Value::Text(value.trim().to_owned());
            match stack.last_mut() {
                Some((_, members)) => members.push((key.to_owned(), value)),
                None => top.push(value),
            }
        } else {
            top.push(Value::Text(line.to_owned()));
        }
    }
    top
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
