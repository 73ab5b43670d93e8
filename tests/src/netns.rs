//! Hosts of their own on one machine, for fleet tests: each host is a
//! network namespace with one interface, joined by a veth pair to a bridge
//! that lives in a namespace of its own, so the machine's own interfaces,
//! routes and addresses are never touched. A test gives each host an
//! address of a private network only it uses, runs processes on it
//! ([`Host::command`], and the harness's `…_on` starters), cuts its link
//! and restores it. Every namespace (and every `/etc/netns` file) is
//! removed when the [`Network`] drops, also when the test fails.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A private network: the bridge's namespace and every host's.
pub struct Network {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
}

/// One host of a [`Network`]: a namespace whose `eth0` has one address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (unique to this run).
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Its veth's end on the bridge, in the switch namespace.
    link: String,
    switch: String,
}

/// Runs `ip ARGS`, panicking with its error output when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 is installed");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Network {
    /// A new, empty network with its bridge. Names carry this process's id
    /// and a counter, so parallel tests and runs never share one.
    pub fn create() -> Network {
        static NETWORKS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "dsf{}n{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch]);
        // From here on, drop removes what exists.
        let network = Network {
            prefix,
            switch,
            hosts: Vec::new(),
        };
        ip(&[
            "-n",
            &network.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        ip(&["-n", &network.switch, "link", "set", "br0", "up"]);
        network
    }

    /// Adds host `name` (at most 15 characters: it names the veth) with
    /// `addr`/24 on its `eth0`, and loopback up.
    pub fn host(&mut self, name: &str, addr: Ipv4Addr) -> Host {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let sw = self.switch.as_str();
        ip(&[
            "-n", sw, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", sw, "link", "set", name, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        Host {
            ns,
            addr,
            link: name.to_owned(),
            switch: self.switch.clone(),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, veth peers included.
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(etc_dir(ns));
        }
    }
}

/// Where `ip netns exec` finds files to show a namespace's processes in
/// place of those in `/etc`.
fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

impl Host {
    /// A command that runs `program` on this host (`ip netns exec`), ready
    /// for its arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }

    /// `command` run on this host: its program, arguments and environment
    /// kept.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = self.command(command.get_program());
        wrapped.args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// Names resolving on this host through its own `/etc/hosts` (which
    /// `ip netns exec` shows its processes), one line per (address, name).
    pub fn hosts_file(&self, entries: &[(Ipv4Addr, &str)]) {
        let dir = etc_dir(&self.ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns is writable");
        let mut text = String::from("127.0.0.1 localhost\n");
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text).expect("write the host's hosts file");
    }

    /// Cuts this host off the network: its link to the bridge goes down,
    /// and every packet to or from it is lost until [`Host::restore`].
    pub fn cut(&self) {
        ip(&["-n", &self.switch, "link", "set", &self.link, "down"]);
    }

    pub fn restore(&self) {
        ip(&["-n", &self.switch, "link", "set", &self.link, "up"]);
    }
}
