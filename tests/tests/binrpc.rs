//! The binrpc client against a real Kamailio's ctl module (5.6.3, or 6.0.1
//! in a Debian 13 root), over unix stream, TCP and UDP.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dsfeed_binrpc::dispatcher::{self, ListedDestination, ListedSets};
use dsfeed_binrpc::{Addr, Client, Error, Value};
use dsfeed_tests::Kamailio;

const LIST: &str = "\
# set 1: two backends, one with attrs
1 sip:127.0.0.1:5070 0 10 weight=50;duid=a
1 sip:127.0.0.1:5071 0 5
# set 2: an admin-disabled (4) destination
2 sip:10.0.0.1:5060 4 0
# set 30: no flags, no priority, a transport
30 sip:127.0.0.2:5080;transport=tcp
";

fn dest(uri: &str, flags: &str, priority: i32, attrs: &str) -> ListedDestination {
    ListedDestination {
        uri: uri.into(),
        flags: flags.into(),
        priority,
        attrs: attrs.into(),
    }
}

fn expected_list() -> ListedSets {
    BTreeMap::from([
        (
            1,
            vec![
                dest("sip:127.0.0.1:5070", "AX", 10, "weight=50;duid=a"),
                dest("sip:127.0.0.1:5071", "AX", 5, ""),
            ],
        ),
        (2, vec![dest("sip:10.0.0.1:5060", "DX", 0, "")]),
        (
            30,
            vec![dest("sip:127.0.0.2:5080;transport=tcp", "AX", 0, "")],
        ),
    ])
}

/// A client with room for a loaded machine: no test here waits for it to
/// expire except the one that means to.
fn client(addr: &Addr) -> Client {
    Client::new(addr.clone()).with_timeout(Duration::from_secs(20))
}

#[tokio::test]
async fn core_version_over_every_transport() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    for addr in kamailio.ctl_addrs() {
        let reply = client(addr).call("core.version", &[]).await.unwrap();
        match reply.as_slice() {
            [Value::Str(version)] => {
                assert!(
                    version.contains(dsfeed_tests::target().version()),
                    "{addr}: {version}"
                )
            }
            other => panic!("{addr}: unexpected reply {other:?}"),
        }
    }
    assert!(kamailio.is_running());
}

#[tokio::test]
async fn dispatcher_list_matches_the_list_file_over_every_transport() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    for addr in kamailio.ctl_addrs() {
        let mut sets = dispatcher::list(&client(addr)).await.unwrap();
        // Kamailio orders a set by priority, then by reverse file order.
        for dests in sets.values_mut() {
            dests.sort_by(|a, b| a.uri.cmp(&b.uri));
        }
        assert_eq!(sets, expected_list(), "over {addr}");
    }
}

#[tokio::test]
async fn parameters_reach_the_method() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    let client = kamailio.client();
    // dispatcher.list "full" adds HOST, PORT and friends to every DEST.
    let reply = client
        .call("dispatcher.list", &[Value::Str("full".into())])
        .await
        .unwrap();
    let text = reply[0].to_string();
    assert!(text.contains("HOST: \"10.0.0.1\""), "{text}");
    assert!(text.contains("PORT: 5080, PROTOID: 2"), "{text}");
    // A string parameter, and ints back: shared memory in MB is what -m set.
    let shm = client
        .call("core.shmmem", &[Value::Str("m".into())])
        .await
        .unwrap();
    // 5.6 sends these sizes as ints; 6.0 made them unsigned longs, which
    // ctl sends as doubles.
    let total = if dsfeed_tests::target().release() >= (6, 0, 0) {
        Value::Double(64.0)
    } else {
        Value::Int(64)
    };
    assert_eq!(shm[0].get("total"), Some(&total), "{}", shm[0]);
    // A double back: "full" adds DNSTIME_SEC, an unsigned long that ctl
    // sends as a double (fixed point, three decimals).
    let first_dest = reply[0]
        .get("RECORDS")
        .and_then(|r| r.get("SET"))
        .and_then(|set| set.get("TARGETS"))
        .and_then(|t| t.get("DEST"))
        .unwrap();
    assert_eq!(
        first_dest.get("DNSTIME_SEC"),
        Some(&Value::Double(0.0)),
        "{first_dest}"
    );
    // An int parameter: dispatcher.set_state takes state, set id, URI.
    client
        .call(
            "dispatcher.set_state",
            &[
                Value::Str("ip".into()),
                Value::Int(2),
                Value::Str("sip:10.0.0.1:5060".into()),
            ],
        )
        .await
        .unwrap();
    let sets = dispatcher::list(&client).await.unwrap();
    assert_eq!(sets[&2], [dest("sip:10.0.0.1:5060", "IP", 0, "")]);
}

/// The member names of `uri`'s DEST struct in a `dispatcher.list` reply,
/// and of its ATTRS struct (empty if it has none).
fn dest_fields(reply: &Value, uri: &str) -> (Vec<String>, Vec<String>) {
    let names = |v: &Value| -> Vec<String> {
        v.members()
            .unwrap_or_default()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    };
    let records = reply.get("RECORDS").and_then(Value::members).unwrap();
    let dest = records
        .iter()
        .filter(|(n, _)| n == "SET")
        .filter_map(|(_, set)| set.get("TARGETS").and_then(Value::members))
        .flatten()
        .map(|(_, dest)| dest)
        .find(|dest| dest.get("URI").and_then(Value::as_str) == Some(uri))
        .unwrap_or_else(|| panic!("no DEST {uri} in {reply}"));
    (
        names(dest),
        dest.get("ATTRS").map(names).unwrap_or_default(),
    )
}

/// 6.0 added overload control to the dispatcher, and `dispatcher.list`
/// shows it: `OCMIN`/`OCMAX` in every ATTRS struct, and in the `full`
/// listing `OCRATE`, `OCIDX`, `OCSEQ` and `OCTIME_*` per DEST, plus an
/// ATTRS struct for destinations without attrs. The fields the feeder reads
/// (URI, FLAGS, PRIORITY, ATTRS.BODY) are the same in both; see
/// `dispatcher_list_matches_the_list_file_over_every_transport`.
#[tokio::test]
async fn dispatcher_list_shows_overload_control_from_6_0_on() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    let client = kamailio.client();
    let plain = client.call("dispatcher.list", &[]).await.unwrap();
    let full = client
        .call("dispatcher.list", &[Value::Str("full".into())])
        .await
        .unwrap();
    let six = dsfeed_tests::target().release() >= (6, 0, 0);
    // The 5.6 names, followed on 6.0 by the overload-control ones.
    let names = |base: &[&str], from_6_0: &[&str]| -> Vec<String> {
        let extra: &[&str] = if six { from_6_0 } else { &[] };
        base.iter().chain(extra).map(|n| (*n).to_owned()).collect()
    };
    let attrs = names(
        &[
            "BODY", "DUID", "MAXLOAD", "WEIGHT", "RWEIGHT", "SOCKET", "SOCKNAME", "OBPROXY",
        ],
        &["OCMIN", "OCMAX"],
    );
    let full_dest = names(
        &[
            "URI",
            "FLAGS",
            "PRIORITY",
            "HOST",
            "IPADDR",
            "PORT",
            "PROTOID",
            "DNSTIME_SEC",
            "DNSTIME_USEC",
        ],
        &["OCRATE", "OCIDX", "OCSEQ", "OCTIME_SEC", "OCTIME_USEC"],
    );
    let full_with_attrs = [full_dest.clone(), vec!["ATTRS".to_owned()]].concat();
    let (with, without) = ("sip:127.0.0.1:5070", "sip:127.0.0.1:5071");

    assert_eq!(
        dest_fields(&plain[0], with),
        (
            names(&["URI", "FLAGS", "PRIORITY", "ATTRS"], &[]),
            attrs.clone()
        )
    );
    assert_eq!(
        dest_fields(&plain[0], without),
        (names(&["URI", "FLAGS", "PRIORITY"], &[]), vec![])
    );
    assert_eq!(
        dest_fields(&full[0], with),
        (full_with_attrs.clone(), attrs.clone())
    );
    let expected = if six {
        (full_with_attrs, attrs)
    } else {
        (full_dest, vec![])
    };
    assert_eq!(
        dest_fields(&full[0], without),
        expected,
        "from 6.0 on, `full` gives a DEST without attrs an ATTRS struct"
    );
}

#[tokio::test]
async fn an_unknown_method_is_a_fault() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    for addr in kamailio.ctl_addrs() {
        let err = client(addr).call("no.such.method", &[]).await.unwrap_err();
        match &err {
            Error::Fault { code, message, .. } => {
                assert_eq!(*code, 500);
                assert_eq!(message, "command no.such.method not found");
            }
            other => panic!("{addr}: expected a fault, got {other}"),
        }
        assert_eq!(err.label(), "fault");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}

#[tokio::test]
async fn a_second_reload_within_reload_delta_is_refused() {
    let kamailio = Kamailio::builder(LIST)
        .reload_delta(60)
        .start()
        .await
        .unwrap();
    let client = kamailio.client();
    dispatcher::reload(&client).await.unwrap();
    let err = dispatcher::reload(&client).await.unwrap_err();
    match &err {
        Error::Fault { code, message, .. } => {
            assert_eq!((*code, message.as_str()), (500, "Ongoing reload"));
        }
        other => panic!("expected a fault, got {other}"),
    }
    assert!(dispatcher::is_ongoing_reload(&err));
    // The refused reload changed nothing.
    let mut sets = dispatcher::list(&client).await.unwrap();
    for dests in sets.values_mut() {
        dests.sort_by(|a, b| a.uri.cmp(&b.uri));
    }
    assert_eq!(sets, expected_list());
}

#[tokio::test]
async fn zero_sets_list_as_empty_and_a_reload_loads_the_file() {
    let kamailio = Kamailio::start("").await.unwrap();
    let client = kamailio.client();
    assert_eq!(dispatcher::list(&client).await.unwrap(), ListedSets::new());
    // The raw reply is the fault dispatcher uses for zero sets.
    let err = client.call("dispatcher.list", &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Fault { code: 500, message, .. } if message == dispatcher::NO_SETS),
        "{err}"
    );

    std::fs::write(kamailio.list_path(), "5 sip:192.0.2.1:5060 0 0 k=v\n").unwrap();
    dispatcher::reload(&client).await.unwrap();
    assert_eq!(
        dispatcher::list(&client).await.unwrap(),
        BTreeMap::from([(5, vec![dest("sip:192.0.2.1:5060", "AX", 0, "k=v")])])
    );
    assert!(kamailio.is_running());
}

/// Kamailio turns `dns_try_ipv6` off when it has no IPv6 socket, and its
/// dispatcher then skips `[...]` destinations with a mere warning.
#[tokio::test]
async fn ipv6_destinations_load_only_with_an_ipv6_socket() {
    let list = "4 sip:[::1]:5090\n4 sip:127.0.0.1:5090\n";
    let kamailio = Kamailio::start(list).await.unwrap();
    let sets = dispatcher::list(&kamailio.client()).await.unwrap();
    assert_eq!(
        sets,
        BTreeMap::from([(4, vec![dest("sip:127.0.0.1:5090", "AX", 0, "")])])
    );
    assert!(
        kamailio
            .log()
            .contains("unable to add destination sip:[::1]:5090 to set 4 -- skipping"),
        "{}",
        kamailio.log()
    );
    drop(kamailio);

    let kamailio = Kamailio::builder(list).ipv6().start().await.unwrap();
    assert!(kamailio.sip_addr_v6().unwrap().is_ipv6());
    let mut sets = dispatcher::list(&kamailio.client()).await.unwrap();
    sets.get_mut(&4).unwrap().sort_by(|a, b| a.uri.cmp(&b.uri));
    assert_eq!(
        sets,
        BTreeMap::from([(
            4,
            vec![
                dest("sip:127.0.0.1:5090", "AX", 0, ""),
                dest("sip:[::1]:5090", "AX", 0, ""),
            ]
        )])
    );
}

#[tokio::test]
async fn nothing_listening_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let unix = Addr::Unix(dir.path().join("no-kamailio.sock"));
    // Bound but not listening: the port stays ours and connects are refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tcp = Addr::Tcp(reserved.local_addr().unwrap().to_string());
    for addr in [&unix, &tcp] {
        let err = client(addr).call("core.version", &[]).await.unwrap_err();
        // Refused at once, not after the 20 s timeout.
        assert!(matches!(err, Error::Connect { .. }), "{addr}: {err}");
        assert_eq!(err.label(), "connect");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    // UDP has no connection: a closed port answers with ICMP (refused) on
    // loopback, a silent peer with nothing at all (timeout).
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let udp = Addr::Udp(udp_port.to_string());
    let err = Client::new(udp.clone())
        .with_timeout(Duration::from_secs(2))
        .call("core.version", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Connect { .. } | Error::Timeout { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&udp.to_string()), "{err}");

    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = Addr::Udp(silent.local_addr().unwrap().to_string());
    let err = Client::new(udp.clone())
        .with_timeout(Duration::from_millis(500))
        .call("core.version", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.label(), "timeout");
    assert_eq!(
        err.to_string(),
        format!("no answer from Kamailio's ctl at {udp} within 500ms")
    );
}

/// `count` destinations spread over `sets` sets, as a list file and as the
/// map `dispatcher.list` should return (sorted by URI).
fn big_list(count: usize, sets: usize) -> (String, ListedSets) {
    let mut file = String::new();
    let mut expected = ListedSets::new();
    for i in 0..count {
        let set = (i % sets) as u32 + 1;
        let uri = format!("sip:10.{}.{}.{}:5060", i / 65_536, (i / 256) % 256, i % 256);
        file.push_str(&format!("{set} {uri} 0 {} duid=d{i}\n", i % 7));
        expected.entry(set).or_default().push(dest(
            &uri,
            "AX",
            (i % 7) as i32,
            &format!("duid=d{i}"),
        ));
    }
    for dests in expected.values_mut() {
        dests.sort_by(|a, b| a.uri.cmp(&b.uri));
    }
    (file, expected)
}

async fn list_sorted(addr: &Addr) -> Result<ListedSets, Error> {
    let mut sets = dispatcher::list(&client(addr)).await?;
    for dests in sets.values_mut() {
        dests.sort_by(|a, b| a.uri.cmp(&b.uri));
    }
    Ok(sets)
}

#[tokio::test]
async fn a_list_of_2000_destinations_comes_back_whole_over_every_transport() {
    // About 413 KB of reply; over UDP ctl sends it as some 85 datagrams.
    let (file, expected) = big_list(2000, 20);
    let kamailio = Kamailio::start(file).await.unwrap();
    for addr in kamailio.ctl_addrs() {
        let sets = list_sorted(addr).await.unwrap();
        assert!(sets == expected, "{addr}: {} sets differ", sets.len());
    }
}

/// ctl builds every struct of a reply in its own buffer of
/// `binrpc_struct_max_body_size` KB (default 8). A `DEST` member takes 8
/// bytes of its set's `TARGETS`, so a set of more than 1024 destinations
/// cannot be listed; neither can more than 1170 sets (7 bytes per `SET`).
#[tokio::test]
async fn ctl_caps_each_struct_of_a_reply_at_8_kb_by_default() {
    let (file, expected) = big_list(1024, 1);
    let kamailio = Kamailio::start(file).await.unwrap();
    assert!(list_sorted(kamailio.ctl_unix()).await.unwrap() == expected);
    drop(kamailio);

    // One destination too many in a set, then one set too many.
    for (destinations, sets, fault) in [
        (1025, 1, "Internal error creating dest"),
        (1171, 1171, "Internal error set structure"),
    ] {
        let (file, _) = big_list(destinations, sets);
        let kamailio = Kamailio::start(file).await.unwrap();
        let err = list_sorted(kamailio.ctl_unix()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Fault { code: 500, message, .. } if message == fault),
            "{err}"
        );
        assert!(kamailio.is_running());
    }
}

#[tokio::test]
async fn a_bigger_struct_buffer_lists_2000_destinations_in_one_set() {
    let (file, expected) = big_list(2000, 1);
    let kamailio = Kamailio::builder(file)
        .modparam("ctl", "binrpc_struct_max_body_size", 16)
        .start()
        .await
        .unwrap();
    for addr in kamailio.ctl_addrs() {
        let sets = list_sorted(addr).await.unwrap();
        assert!(sets == expected, "{addr}: {} sets differ", sets.len());
    }
}

#[tokio::test]
async fn stopping_kamailio_ends_every_process_and_closes_ctl() {
    let kamailio = Kamailio::start(LIST).await.unwrap();
    let group = nix::unistd::Pid::from_raw(kamailio.pid() as i32);
    assert!(kamailio.is_running());
    let status = kamailio.stop();
    assert!(status.success(), "{status}\n{}", kamailio.log());
    assert!(!kamailio.is_running());
    assert_eq!(kamailio.exit_status(), Some(status));
    // Workers are gone with the main process: the group is empty.
    assert_eq!(
        nix::sys::signal::killpg(group, None),
        Err(nix::errno::Errno::ESRCH)
    );
    let err = client(kamailio.ctl_tcp())
        .call("core.version", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn extra_modules_and_params_are_loaded() {
    let kamailio = Kamailio::builder(LIST)
        .loadmodule("htable.so")
        .modparam("htable", "htable", "dsfeedtest=>size=4;")
        .start()
        .await
        .unwrap();
    let reply = kamailio
        .client()
        .call("htable.listTables", &[])
        .await
        .unwrap();
    let text = format!("{reply:?}");
    assert!(text.contains("dsfeedtest"), "{text}");
}

/// A UAS on `socket` answering every request with `code`, counting them.
fn uas(socket: tokio::net::UdpSocket, code: u16) -> std::sync::Arc<AtomicUsize> {
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.fetch_add(1, Ordering::SeqCst);
            let reply = sip_reply(&request, code);
            socket.send_to(reply.as_bytes(), from).await.unwrap();
        }
    });
    count
}

/// A response to `request` echoing the headers a UAC matches it by.
fn sip_reply(request: &str, code: u16) -> String {
    let mut reply = format!("SIP/2.0 {code} Test\r\n");
    for line in request.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                reply.push_str(line);
                reply.push_str("\r\n");
            }
            "to" | "t" => {
                reply.push_str(line);
                reply.push_str(";tag=uas\r\n");
            }
            _ => {}
        }
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    reply
}

/// Sends an OPTIONS for `user` through Kamailio; returns the status code.
async fn options(kamailio: &Kamailio, user: &str, n: usize) -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let target = kamailio.sip_addr();
    let request = format!(
        "OPTIONS sip:{user}@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-dsfeed-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=uac{n}\r\n\
         To: <sip:{user}@{target}>\r\n\
         Call-ID: dsfeed-{n}@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), target).await.unwrap();
    let mut buf = vec![0; 65_536];
    let (len, _) = tokio::time::timeout(Duration::from_secs(30), socket.recv_from(&mut buf))
        .await
        .expect("no SIP response within 30 s")
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..len]);
    response
        .strip_prefix("SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a SIP response: {response}"))
}

#[tokio::test]
async fn sip_goes_round_robin_to_the_set_in_the_r_uri_user_with_failover() {
    let failing = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let working = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let list = format!(
        "1 sip:{}\n1 sip:{}\n",
        failing.local_addr().unwrap(),
        working.local_addr().unwrap()
    );
    let failing = uas(failing, 503);
    let working = uas(working, 200);
    let kamailio = Kamailio::start(list).await.unwrap();

    // Round robin starts each request at the next destination; the one that
    // answers 503 hands over to the other.
    assert_eq!(options(&kamailio, "1", 1).await, 200);
    assert_eq!(options(&kamailio, "1", 2).await, 200);
    assert_eq!(failing.load(Ordering::SeqCst), 1);
    assert_eq!(working.load(Ordering::SeqCst), 2);

    assert_eq!(
        options(&kamailio, "9", 3).await,
        503,
        "a set that does not exist"
    );
    assert_eq!(options(&kamailio, "sales", 4).await, 404, "no set id");
    assert!(kamailio.is_running());
}
