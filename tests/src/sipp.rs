//! Real SIP traffic with sipp: backends that name themselves, and a caller
//! that reports which backend answered.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A sipp UAS on 127.0.0.1 answering OPTIONS with `X-Backend:
/// 127.0.0.1:port`; stopped on drop.
pub struct Backend {
    child: Child,
    pub port: u16,
}

impl Backend {
    /// Starts a backend on a free port.
    pub fn start() -> Backend {
        let port = crate::free_udp_port();
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario("uas.xml"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (apt-get install sip-tester)");
        Backend { child, port }
    }

    /// The SIP URI of this backend, as it appears in dispatcher.list.
    pub fn uri(&self) -> String {
        format!("sip:{}", self.name())
    }

    /// How the backend names itself in `X-Backend`, as [`call`] reports it.
    pub fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
    let log = work_dir.join(format!("uac-{set}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let _ = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("uac.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-s",
            &set.to_string(),
            kamailio,
        ])
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
