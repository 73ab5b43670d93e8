//! Real SIP traffic with sipp: backends that name themselves, and a caller
//! that reports which backend answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::netns::Host;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// sipp, on `host` if given.
fn sipp(host: Option<&Host>) -> Command {
    match host {
        Some(host) => host.command("sipp"),
        None => Command::new("sipp"),
    }
}

/// A sipp UAS on 127.0.0.1 answering OPTIONS with `X-Backend:
/// 127.0.0.1:port`; stopped on drop.
pub struct Backend {
    child: Child,
    ip: IpAddr,
    pub port: u16,
}

impl Backend {
    /// Starts a backend on a free port.
    pub fn start() -> Backend {
        Backend::answering(Request::Options)
    }

    /// Starts a backend on a free port that answers `request`s with 200.
    pub fn answering(request: Request) -> Backend {
        let port = crate::free_udp_port();
        Backend::spawn(None, request, Ipv4Addr::LOCALHOST.into(), port)
    }

    /// Starts a backend answering OPTIONS on `host` of a private network,
    /// port 5060.
    pub fn start_on(host: &Host) -> Backend {
        Backend::spawn(Some(host), Request::Options, host.addr.into(), 5060)
    }

    fn spawn(host: Option<&Host>, request: Request, ip: IpAddr, port: u16) -> Backend {
        let child = sipp(host)
            .arg("-sf")
            .arg(scenario(request.backend()))
            .args(["-i", &ip.to_string(), "-p", &port.to_string(), "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (apt-get install sip-tester)");
        Backend { child, ip, port }
    }

    /// The SIP URI of this backend, as it appears in dispatcher.list.
    pub fn uri(&self) -> String {
        format!("sip:{}", self.name())
    }

    /// How the backend names itself in `X-Backend`, as [`call`] reports it.
    pub fn name(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `calls` OPTIONS for `sip:SET@kamailio` through Kamailio at
/// `kamailio` (HOST:PORT) and returns the backend (`HOST:PORT`) that
/// answered each one; calls that got no 200 are left out.
pub fn call(kamailio: &str, set: u32, calls: u32, work_dir: &Path) -> Vec<String> {
    call_from(None, "127.0.0.1", kamailio, set, calls, work_dir)
}

/// [`call`] from `host` of a private network.
pub fn call_on(host: &Host, kamailio: &str, set: u32, calls: u32, work_dir: &Path) -> Vec<String> {
    call_from(
        Some(host),
        &host.addr.to_string(),
        kamailio,
        set,
        calls,
        work_dir,
    )
}

fn call_from(
    host: Option<&Host>,
    ip: &str,
    kamailio: &str,
    set: u32,
    calls: u32,
    work_dir: &Path,
) -> Vec<String> {
    let log = work_dir.join(format!("uac-{set}-{}-{ip}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let _ = sipp(host)
        .arg("-sf")
        .arg(scenario("uac.xml"))
        .args(["-i", ip, "-p", "0", "-s", &set.to_string(), kamailio])
        .args([
            "-m",
            &calls.to_string(),
            "-nostdin",
            "-timeout",
            "20",
            "-trace_logs",
        ])
        .arg("-log_file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp is installed (apt-get install sip-tester)");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    text.lines()
        .filter_map(|line| line.strip_prefix("reached "))
        .map(str::to_owned)
        .collect()
}

/// What a [`Load`] sends and a [`Backend`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// OPTIONS: one non-INVITE transaction each.
    Options,
    /// INVITE, answered 200 and ACKed: one INVITE transaction each.
    Invite,
}

impl Request {
    fn caller(self) -> &'static str {
        match self {
            Request::Options => "uac",
            Request::Invite => "uac_invite",
        }
    }

    fn backend(self) -> &'static str {
        match self {
            Request::Options => "uas.xml",
            Request::Invite => "uas_invite.xml",
        }
    }
}

/// sipp as SIP load: OPTIONS for `sip:SET@kamailio` at a fixed rate until a
/// fixed total is sent, with sipp's statistics written once a second.
pub struct Load {
    child: Child,
    stats: PathBuf,
    errors: PathBuf,
    total: u64,
    /// Where sipp writes its response times (`uac_PID_rtt.csv`).
    work_dir: PathBuf,
    /// Whether it records response times.
    timed: bool,
    request: Request,
}

/// sipp's totals for one [`Load`], and what it said about failed calls.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStats {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    /// The last lines of sipp's error log.
    pub errors: String,
    /// Each answered request's response time, in milliseconds, sorted
    /// (closed loop only).
    pub response_ms: Vec<f64>,
}

/// Where a load is sent from: a host of a private network, or loopback.
struct Caller<'a> {
    host: Option<&'a Host>,
    from: SocketAddr,
}

impl Caller<'_> {
    /// A free port on loopback, on this machine.
    fn local() -> Self {
        Caller {
            host: None,
            from: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), crate::free_udp_port()),
        }
    }

    /// OPTIONS from here at `rate` a second, at most four seconds' worth in
    /// flight.
    fn options(self, kamailio: &str, set: u32, rate: u64, total: u64, work_dir: &Path) -> Load {
        let limits = (rate, rate * 4, total);
        Load::spawn(
            self,
            Request::Options,
            kamailio,
            set,
            limits,
            work_dir,
            false,
        )
    }
}

impl Load {
    /// Starts `rate` requests a second, `total` in all, to set `set` through
    /// Kamailio at `kamailio` (HOST:PORT); files go to `work_dir`.
    pub fn start(kamailio: &str, set: u32, rate: u64, total: u64, work_dir: &Path) -> Load {
        Caller::local().options(kamailio, set, rate, total, work_dir)
    }

    /// [`Load::start`] from `host` of a private network, from its `port`.
    pub fn start_on(
        host: &Host,
        port: u16,
        kamailio: &str,
        set: u32,
        rate: u64,
        total: u64,
        work_dir: &Path,
    ) -> Load {
        let caller = Caller {
            host: Some(host),
            from: SocketAddr::new(host.addr.into(), port),
        };
        caller.options(kamailio, set, rate, total, work_dir)
    }

    /// `total` requests to set `set` as fast as Kamailio answers, at most
    /// `concurrency` at a time (a new one as soon as one is answered), each
    /// one's response time recorded: the most a Kamailio can take.
    pub fn closed_loop(
        request: Request,
        kamailio: &str,
        set: u32,
        concurrency: u64,
        total: u64,
        work_dir: &Path,
    ) -> Load {
        let limits = (100_000, concurrency, total);
        Load::spawn(
            Caller::local(),
            request,
            kamailio,
            set,
            limits,
            work_dir,
            true,
        )
    }

    /// sipp sending `request`s from `caller` at `rate` a second, at most
    /// `limit` at a time, `total` in all.
    fn spawn(
        caller: Caller<'_>,
        request: Request,
        kamailio: &str,
        set: u32,
        (rate, limit, total): (u64, u64, u64),
        work_dir: &Path,
        timed: bool,
    ) -> Load {
        let (ip, port) = (caller.from.ip(), caller.from.port());
        let stats = work_dir.join(format!("load-{ip}-{port}.csv"));
        let errors = work_dir.join(format!("load-{ip}-{port}-errors.log"));
        let child = sipp(caller.host)
            .current_dir(work_dir)
            .arg("-sf")
            .arg(scenario(&format!("{}.xml", request.caller())))
            .args(["-i", &ip.to_string(), "-p", &port.to_string(), "-t", "u1"])
            .args(["-s", &set.to_string(), kamailio])
            .args(["-r", &rate.to_string(), "-m", &total.to_string()])
            .args(["-l", &limit.to_string(), "-nostdin", "-timeout", "600s"])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stats)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .args(if timed {
                &["-trace_rtt", "-rtt_freq", "1"][..]
            } else {
                &[]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (apt-get install sip-tester)");
        Load {
            child,
            stats,
            errors,
            total,
            work_dir: work_dir.to_owned(),
            timed,
            request,
        }
    }

    /// Waits for the last request's answer (or sipp's own timeouts) and
    /// returns the totals; panics if sipp is still running after `timeout`.
    pub async fn finish(mut self, timeout: std::time::Duration) -> LoadStats {
        let deadline = std::time::Instant::now() + timeout;
        while self.child.try_wait().expect("wait on sipp").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "sipp did not finish its {} requests in {timeout:?}",
                self.total
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let text = std::fs::read_to_string(&self.stats).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| {
                    panic!("no {name} in sipp's statistics {}", self.stats.display())
                })
        };
        let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
        let tail: Vec<&str> = errors.lines().rev().take(20).collect();
        // Lines of `date_ms;response_time_ms;rtd_no`.
        let rtt = self.work_dir.join(format!(
            "{}_{}_rtt.csv",
            self.request.caller(),
            self.child.id()
        ));
        let mut response_ms: Vec<f64> = std::fs::read_to_string(rtt)
            .ok()
            .filter(|_| self.timed)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
            .collect();
        response_ms.sort_by(f64::total_cmp);
        LoadStats {
            created: column("TotalCallCreated"),
            successful: column("SuccessfulCall(C)"),
            failed: column("FailedCall(C)"),
            errors: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            response_ms,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
