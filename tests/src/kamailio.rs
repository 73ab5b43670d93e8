//! A real Kamailio for one test: its own temp dir, config, list file, log,
//! SIP port and ctl sockets, stopped and reaped on drop. Which Kamailio is
//! the [`Target`]'s choice: the host's (Debian 12's 5.6.3), or the one
//! installed in a Debian root (Debian 13's 6.0.1).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dsfeed_binrpc::{Addr, Client};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::netns::Host;

/// The host's Kamailio binary, on PATH (Debian installs it in /usr/sbin).
const HOST_KAMAILIO: &str = "kamailio";

/// Names the Debian root whose Kamailio the tests run instead of the host's
/// (`make test` sets it for its second pass).
const ROOT_ENV: &str = "DSFEED_KAMAILIO_ROOT";

/// How long Kamailio may take to answer on ctl after being started. Startup
/// takes well under a second when idle, but several engineers build on the
/// same two cores.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long Kamailio may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Private memory per process in MB.
const PKG_MB: u32 = 8;

/// How often startup is retried when another process took a port between
/// choosing it and Kamailio binding it.
const PORT_RETRIES: usize = 3;

/// Why a Kamailio could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot prepare Kamailio's files in {path}")]
    Files {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot find a free port")]
    Port(#[source] io::Error),
    #[error("cannot run {0}")]
    Spawn(String, #[source] io::Error),
    #[error("Kamailio exited during startup ({status}); its log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error(
        "Kamailio did not answer on ctl within {START_TIMEOUT:?} ({last_error}); its log:\n{log}"
    )]
    NotReady { last_error: String, log: String },
}

/// A `modparam` value: Kamailio tells ints from strings by their quotes.
#[derive(Debug, Clone)]
pub enum ParamValue {
    Int(i64),
    Str(String),
}

impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}

impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::Int(v.into())
    }
}

impl From<u32> for ParamValue {
    fn from(v: u32) -> Self {
        ParamValue::Int(v.into())
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_owned())
    }
}

impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}

impl From<&Path> for ParamValue {
    fn from(v: &Path) -> Self {
        ParamValue::Str(v.display().to_string())
    }
}

/// Configures a [`Kamailio`] before it starts. Extra `loadmodule` and
/// `modparam` lines come after the harness's own, so a `modparam` given here
/// overrides the harness's value for the same parameter.
#[derive(Debug, Clone)]
pub struct KamailioBuilder {
    list: String,
    reload_delta: u32,
    children: u32,
    shm_mb: u32,
    debug: i32,
    ipv6: bool,
    globals: Vec<String>,
    modules: Vec<String>,
    modparams: Vec<(String, String, ParamValue)>,
    envs: Vec<(String, String)>,
    routes: Option<String>,
    host: Option<Host>,
}

/// Builder methods that each set one field to the value given.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $type:ty;)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, value: $type) -> Self {
            self.$field = value;
            self
        }
    )*};
}

impl KamailioBuilder {
    setters! {
        /// `reload_delta` in seconds (Kamailio's default is 5): the minimum
        /// time between two `dispatcher.reload` RPCs.
        reload_delta: u32;
        /// SIP worker processes for the UDP listener (default 2).
        children: u32;
        /// Shared memory in MB (default 64).
        shm_mb: u32;
        /// Kamailio's log level (default 2, info; 3 is debug).
        debug: i32;
    }

    /// Also listens for SIP on `[::1]`. Without an IPv6 socket Kamailio
    /// turns `dns_try_ipv6` off and dispatcher skips `[...]` destinations.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// A core parameter line for the global section, e.g. `tcp_children=1`.
    pub fn global(mut self, line: impl Into<String>) -> Self {
        self.globals.push(line.into());
        self
    }

    /// Loads a module by name (from Kamailio's module dir) or by path.
    pub fn loadmodule(mut self, module: impl Into<String>) -> Self {
        self.modules.push(module.into());
        self
    }

    /// Runs Kamailio on `host` of a private network: SIP on the host's
    /// address, port 5060; ctl on the unix socket (which the test reaches
    /// from outside) and, inside the host only, on 127.0.0.1.
    pub fn on_host(mut self, host: &Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Sets an environment variable for the Kamailio process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }

    /// Replaces the harness's routing (`request_route` and its failure
    /// route) with `script`, for a test of one script function.
    pub fn routes(mut self, script: impl Into<String>) -> Self {
        self.routes = Some(script.into());
        self
    }

    /// Adds `modparam(module, name, value)`; strings are quoted, ints not.
    pub fn modparam(
        mut self,
        module: impl Into<String>,
        name: impl Into<String>,
        value: impl Into<ParamValue>,
    ) -> Self {
        self.modparams
            .push((module.into(), name.into(), value.into()));
        self
    }

    /// Starts Kamailio and waits until ctl answers on all three sockets.
    pub async fn start(self) -> Result<Kamailio, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("dsfeed-kamailio-")
            .tempdir()
            .map_err(|source| HarnessError::Files {
                path: std::env::temp_dir(),
                source,
            })?;
        let list = dir.path().join("dispatcher.list");
        write(&list, self.list.as_bytes())?;
        let cfg = dir.path().join("kamailio.cfg");
        let log = dir.path().join("kamailio.log");
        let ctl_unix = Addr::Unix(dir.path().join("ctl.sock"));

        let mut attempt = 1;
        loop {
            let ports = match &self.host {
                Some(host) => Ports::on_host(host),
                None => Ports::pick(self.ipv6).map_err(HarnessError::Port)?,
            };
            write(&cfg, self.config(dir.path(), &list, &ports).as_bytes())?;
            let process = self.spawn(dir.path(), &cfg, &log)?;
            let ctl = [
                ctl_unix.clone(),
                Addr::Tcp(ports.ctl_tcp.to_string()),
                Addr::Udp(ports.ctl_udp.to_string()),
            ];
            // Only the unix socket is reachable from outside a host.
            let reachable = if self.host.is_some() {
                &ctl[..1]
            } else {
                &ctl[..]
            };
            match wait_ready(&process, reachable, &log).await {
                Ok(()) => {
                    let [ctl_unix, ctl_tcp, ctl_udp] = ctl;
                    return Ok(Kamailio {
                        process,
                        sip: ports.sip,
                        sip_v6: ports.sip_v6,
                        ctl_unix,
                        ctl_tcp,
                        ctl_udp,
                        list,
                        log,
                        dir,
                    });
                }
                Err(HarnessError::Exited { log: text, .. })
                    if attempt < PORT_RETRIES && text.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&self, dir: &Path, cfg: &Path, log: &Path) -> Result<Process, HarnessError> {
        let stdout = File::create(log).map_err(|source| HarnessError::Files {
            path: log.to_path_buf(),
            source,
        })?;
        let stderr = stdout.try_clone().map_err(|source| HarnessError::Files {
            path: log.to_path_buf(),
            source,
        })?;
        let binds: Vec<&Path> = self
            .modules
            .iter()
            .map(Path::new)
            .filter(|m| m.is_absolute())
            .filter_map(Path::parent)
            .collect();
        let mut command = target().command(&binds);
        if let Some(host) = &self.host {
            command = host.wrap(&command);
        }
        let shown = format!("{command:?}");
        let child = command
            .arg("-f")
            .arg(cfg)
            // Foreground, workers forked, log to stderr.
            .args(["-DD", "-E"])
            .args(["-m", &self.shm_mb.to_string()])
            .args(["-M", &PKG_MB.to_string()])
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .current_dir(dir)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group, so that the workers of a Kamailio that
            // ignores SIGTERM can be killed with it, and nothing else.
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::Spawn(shown, e))?;
        Ok(Process {
            child: Mutex::new(child),
        })
    }

    fn config(&self, dir: &Path, list: &Path, ports: &Ports) -> String {
        let mut cfg = String::from("#!KAMAILIO\n");
        let _ = writeln!(cfg, "debug={}", self.debug);
        cfg.push_str(concat!(
            "log_stderror=yes\n",
            "disable_tcp=yes\n",
            "auto_aliases=no\n",
            "dns=no\n",
            "rev_dns=no\n",
        ));
        let _ = writeln!(cfg, "children={}", self.children);
        let _ = writeln!(cfg, "listen=udp:{}", ports.sip);
        if let Some(v6) = ports.sip_v6 {
            let _ = writeln!(cfg, "listen=udp:{v6}");
        }
        for line in &self.globals {
            let _ = writeln!(cfg, "{line}");
        }
        cfg.push('\n');
        for module in STOCK_MODULES
            .iter()
            .map(|m| m.to_string())
            .chain(self.modules.iter().cloned())
        {
            let _ = writeln!(cfg, "loadmodule {}", quote(&module));
        }
        cfg.push('\n');
        let ctl_unix = dir.join("ctl.sock");
        let own: [(&str, &str, ParamValue); 7] = [
            (
                "ctl",
                "binrpc",
                format!("unix:{}", ctl_unix.display()).into(),
            ),
            ("ctl", "binrpc", format!("tcp:{}", ports.ctl_tcp).into()),
            ("ctl", "binrpc", format!("udp:{}", ports.ctl_udp).into()),
            ("dispatcher", "list_file", list.into()),
            ("dispatcher", "reload_delta", self.reload_delta.into()),
            // Failover support, so that ds_next_dst() has something to use.
            ("dispatcher", "flags", 2.into()),
            // Failover within a test's patience when a destination is silent.
            ("tm", "fr_timer", 2000.into()),
        ];
        let extra = self
            .modparams
            .iter()
            .map(|(m, n, v)| (m.as_str(), n.as_str(), v.clone()));
        for (module, name, value) in own.into_iter().chain(extra) {
            let value = match value {
                ParamValue::Int(i) => i.to_string(),
                ParamValue::Str(s) => quote(&s),
            };
            let _ = writeln!(cfg, "modparam({}, {}, {value})", quote(module), quote(name));
        }
        cfg.push_str(self.routes.as_deref().unwrap_or(ROUTES));
        cfg
    }
}

/// The modules the routing below needs, plus ctl for binrpc.
const STOCK_MODULES: [&str; 7] = [
    "ctl.so",
    "tm.so",
    "sl.so",
    "pv.so",
    "xlog.so",
    "textops.so",
    "dispatcher.so",
];

/// Initial INVITEs and OPTIONS to `sip:<set id>@...` go to set `<set id>`,
/// round robin, failing over to the set's next destination on a timeout or
/// a 5xx; 503 when the set has no usable destination; in-dialog requests
/// follow their R-URI.
const ROUTES: &str = r#"
request_route {
    if ($tt != $null) {
        if (is_method("ACK") && !t_check_trans()) {
            exit;
        }
        t_relay();
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (!is_method("INVITE|OPTIONS")) {
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }
    if (!($rU =~ "^[0-9]+$")) {
        sl_send_reply("404", "No Set Id In R-URI User");
        exit;
    }
    if (!ds_select_dst("$rU", "4")) {
        xlog("L_INFO", "no destination in set $rU for $rm $ci\n");
        sl_send_reply("503", "No Destination");
        exit;
    }
    xlog("L_INFO", "$rm $ci to set $rU: $du\n");
    t_on_failure("DS_NEXT");
    if (!t_relay()) {
        sl_reply_error();
    }
}

failure_route[DS_NEXT] {
    if (t_is_canceled()) {
        exit;
    }
    if (t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) {
        if (ds_next_dst()) {
            xlog("L_INFO", "$rm $ci fails over to $du\n");
            t_on_failure("DS_NEXT");
            t_relay();
            exit;
        }
    }
}
"#;

/// A double-quoted Kamailio config string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn write(path: &Path, content: &[u8]) -> Result<(), HarnessError> {
    fs::write(path, content).map_err(|source| HarnessError::Files {
        path: path.to_path_buf(),
        source,
    })
}

/// The Kamailio the tests run, chosen once per test process: the host's
/// `kamailio`, or with `DSFEED_KAMAILIO_ROOT=DIR` the one installed in the
/// Debian root DIR (`kamailio-module/make-kamailio-root.sh`). The same test
/// code then runs against either: a root's Kamailio is started through
/// `kamailio-module/kamailio-in-root`, which chroots into DIR in a private
/// mount namespace holding /proc, /dev and the host's temp dir at their own
/// paths, so the configs, list files, logs and ctl sockets the harness
/// keeps in temp dirs have the same names on both sides, and host tools
/// (kamcmd, sipp, dsfeed, the binrpc client) reach it over loopback.
#[derive(Debug)]
pub struct Target {
    root: Option<PathBuf>,
    version: OnceLock<String>,
}

/// The [`Target`] of this test process.
pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let root = std::env::var_os(ROOT_ENV)
            .filter(|r| !r.is_empty())
            .map(PathBuf::from);
        if let Some(root) = &root {
            assert!(
                root.join("usr/sbin/kamailio").is_file(),
                "{ROOT_ENV}={} has no usr/sbin/kamailio: make one with \
                 kamailio-module/make-kamailio-root.sh",
                root.display()
            );
        }
        Target {
            root,
            version: OnceLock::new(),
        }
    })
}

impl Target {
    /// A command running this Kamailio, ready for its arguments. Files it is
    /// given must be in the temp dir or in one of `binds` (directories made
    /// visible inside a root at their own paths; ignored for the host).
    pub fn command(&self, binds: &[&Path]) -> Command {
        let Some(root) = &self.root else {
            return Command::new(HOST_KAMAILIO);
        };
        let wrapper =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../kamailio-module/kamailio-in-root");
        let mut command = Command::new(wrapper);
        command.env("KAMAILIO_ROOT", root);
        let binds: Vec<String> = binds.iter().map(|b| b.display().to_string()).collect();
        if !binds.is_empty() {
            command.env("KAMAILIO_ROOT_BINDS", binds.join(":"));
        }
        command
    }

    /// The `version:` line of its `kamailio -v`, e.g. `kamailio 6.0.1
    /// (x86_64/linux)`: the string dsfeed.so must have been built for, and
    /// what `core.version` and the module's user agent report.
    pub fn version(&self) -> &str {
        self.version.get_or_init(|| {
            let mut command = self.command(&[]);
            let output = command
                .arg("-v")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
            let text = String::from_utf8_lossy(&output.stdout);
            text.lines()
                .find_map(|l| l.strip_prefix("version: "))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no version line in `{command:?} -v`: {text}"))
        })
    }

    /// The release number of [`Target::version`], e.g. `(6, 0, 1)`, for the
    /// few places where 5.6 and 6.0 answer differently.
    pub fn release(&self) -> (u32, u32, u32) {
        let version = self.version();
        let number = version.split(' ').nth(1).unwrap_or_default();
        let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) => (major, minor, patch),
            _ => panic!("no release number in {version:?}"),
        }
    }
}

/// Free ports on 127.0.0.1, held together while picking so that they differ.
struct Ports {
    sip: SocketAddr,
    sip_v6: Option<SocketAddr>,
    ctl_tcp: SocketAddr,
    ctl_udp: SocketAddr,
}

impl Ports {
    /// Fixed ports on a host of its own, where nothing else listens.
    fn on_host(host: &Host) -> Ports {
        Ports {
            sip: SocketAddr::new(host.addr.into(), 5060),
            sip_v6: None,
            ctl_tcp: SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 2049),
            ctl_udp: SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 2049),
        }
    }

    fn pick(ipv6: bool) -> io::Result<Ports> {
        let sip = UdpSocket::bind("127.0.0.1:0")?;
        let sip_v6 = ipv6.then(|| UdpSocket::bind("[::1]:0")).transpose()?;
        let ctl_tcp = TcpListener::bind("127.0.0.1:0")?;
        let ctl_udp = UdpSocket::bind("127.0.0.1:0")?;
        Ok(Ports {
            sip: sip.local_addr()?,
            sip_v6: sip_v6.map(|s| s.local_addr()).transpose()?,
            ctl_tcp: ctl_tcp.local_addr()?,
            ctl_udp: ctl_udp.local_addr()?,
        })
    }
}

/// Polls ctl until every address answers `core.version`, failing early if
/// Kamailio exits.
async fn wait_ready(process: &Process, ctl: &[Addr], log: &Path) -> Result<(), HarnessError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pending: Vec<Client> = ctl
        .iter()
        .map(|addr| Client::new(addr.clone()).with_timeout(Duration::from_secs(2)))
        .collect();
    loop {
        if let Some(status) = process.exit_status() {
            return Err(HarnessError::Exited {
                status,
                log: read_log(log),
            });
        }
        let mut last_error = String::new();
        let mut still = Vec::new();
        for client in pending {
            if let Err(e) = client.call("core.version", &[]).await {
                last_error = dsfeed_model::error_chain(&e);
                still.push(client);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::NotReady {
                last_error,
                log: read_log(log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// The Kamailio main process; stopped and reaped on drop.
struct Process {
    child: Mutex<Child>,
}

impl Process {
    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// SIGTERM, which Kamailio handles by stopping its workers and exiting;
    /// SIGKILL to its whole process group if it has not exited in time.
    fn stop(&self) -> ExitStatus {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader is not reaped yet, so the group id is still ours.
        let _ = killpg(pid, Signal::SIGKILL);
        match child.wait() {
            Ok(status) => status,
            Err(e) => panic!("cannot reap Kamailio (pid {pid}): {e}"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running Kamailio. Dropping it stops Kamailio and removes its directory
/// (when the test is failing, its log is printed first).
pub struct Kamailio {
    // Declared first: dropped (stopped) before its directory is removed.
    process: Process,
    sip: SocketAddr,
    sip_v6: Option<SocketAddr>,
    ctl_unix: Addr,
    ctl_tcp: Addr,
    ctl_udp: Addr,
    list: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl Kamailio {
    /// A builder for a Kamailio whose `dispatcher.list` initially holds
    /// `list` (may be empty: zero sets).
    pub fn builder(list: impl Into<String>) -> KamailioBuilder {
        KamailioBuilder {
            list: list.into(),
            reload_delta: 5,
            children: 2,
            shm_mb: 64,
            debug: 2,
            ipv6: false,
            globals: Vec::new(),
            modules: Vec::new(),
            modparams: Vec::new(),
            envs: Vec::new(),
            routes: None,
            host: None,
        }
    }

    /// Starts a Kamailio with the builder's defaults.
    pub async fn start(list: impl Into<String>) -> Result<Kamailio, HarnessError> {
        Kamailio::builder(list).start().await
    }

    /// Where SIP is served (UDP on 127.0.0.1, or on its host's address).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// Where SIP is served on `[::1]`, if the builder asked for IPv6.
    pub fn sip_addr_v6(&self) -> Option<SocketAddr> {
        self.sip_v6
    }

    pub fn ctl_unix(&self) -> &Addr {
        &self.ctl_unix
    }

    pub fn ctl_tcp(&self) -> &Addr {
        &self.ctl_tcp
    }

    pub fn ctl_udp(&self) -> &Addr {
        &self.ctl_udp
    }

    /// The three ctl addresses: unix, TCP, UDP.
    pub fn ctl_addrs(&self) -> [&Addr; 3] {
        [&self.ctl_unix, &self.ctl_tcp, &self.ctl_udp]
    }

    /// A binrpc client on the unix socket.
    pub fn client(&self) -> Client {
        Client::new(self.ctl_unix.clone())
    }

    /// The `dispatcher.list` file that `dispatcher.reload` reads.
    pub fn list_path(&self) -> &Path {
        &self.list
    }

    /// Kamailio's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's current content.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Waits until Kamailio logs `text`.
    pub async fn wait_logged(&self, text: &str) {
        let what = format!("Kamailio to log {text:?}");
        crate::eventually(&what, crate::PATIENCE, || async {
            self.log().contains(text).then_some(())
        })
        .await;
    }

    /// The temp dir holding config, list, log and sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the main process is still alive. Kamailio shuts down as a
    /// whole when any of its processes crashes, so this is the crash check.
    pub fn is_running(&self) -> bool {
        self.process.exit_status().is_none()
    }

    /// How Kamailio exited, if it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Stops Kamailio now (as drop would) and returns how it exited.
    pub fn stop(&self) -> ExitStatus {
        self.process.stop()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.process.stop();
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- last {} lines of Kamailio's log ({}) ---",
                tail.len(),
                self.log.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
