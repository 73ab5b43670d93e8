//! The membership endpoints of a running `dsfeed`: `/sets`, `/sets/{id}`
//! and `/check/{id}/{address}`, for IPv4, IPv6 and names, with and without
//! ports, behind the same rules as `/status`.

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::free_addr;
use dsfeed_tests::http::fetch;
use dsfeed_tests::sets::SetsFile;
use serde_json::{Value, json};
use tempfile::TempDir;

const SETS: &str = "sets:
  1:
    - 10.0.0.1
    - 10.0.0.1:5080
    - \"[2001:db8::1]:5060\"
    - uri: sip:pbx.example.com:5070;transport=tcp
      priority: 5
      attrs: weight=50
  2:
    - sips:edge.example.com
  3: []
";

fn sets_file(dir: &TempDir) -> SetsFile {
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(SETS);
    file
}

async fn feeder(dir: &TempDir, more: &[&str]) -> Feeder {
    let args = Args::default()
        .sets_file(&sets_file(dir).path)
        .listen_unix(&dir.path().join("feed.sock"))
        .args(more);
    Feeder::serving(args.http(free_addr())).await
}

/// GET `path` on the feeder: the status and the body as JSON.
async fn get(feeder: &Feeder, path: &str) -> (u16, Value) {
    let response = fetch(feeder.http.unwrap(), path, None).await.unwrap();
    assert_eq!(
        response.content_type.as_deref(),
        Some("application/json"),
        "{path}: {response:?}"
    );
    (response.status, response.json())
}

/// The URIs of a `destinations` array.
fn uris(destinations: &Value) -> Vec<&str> {
    destinations
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uri"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn sets_list_every_set_with_its_destinations() {
    let dir = TempDir::new().unwrap();
    let feeder = feeder(&dir, &[]).await;
    let (code, page) = get(&feeder, "/sets").await;
    assert_eq!(code, 200);
    let version = feeder.status().await["snapshot"]["version"].clone();
    assert_eq!(page["version"], version);
    assert_eq!(page["held"], json!([]));
    let ids: Vec<u64> = page["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        page["sets"][0]["destinations"][0],
        json!({
            "uri": "sip:pbx.example.com:5070;transport=tcp",
            "host": "pbx.example.com",
            "port": 5070,
            "flags": 0,
            "priority": 5,
            "attrs": "weight=50",
        })
    );
    assert_eq!(
        page["sets"][1]["destinations"],
        json!([{"uri": "sips:edge.example.com", "host": "edge.example.com", "port": null,
                 "flags": 0, "priority": 0, "attrs": ""}])
    );

    let (code, one) = get(&feeder, "/sets/1").await;
    assert_eq!(code, 200);
    assert_eq!((&one["id"], &one["version"]), (&json!(1), &version));
    assert_eq!(
        uris(&one["destinations"]),
        [
            "sip:pbx.example.com:5070;transport=tcp",
            "sip:10.0.0.1:5060",
            "sip:10.0.0.1:5080",
            "sip:[2001:db8::1]:5060"
        ]
    );
    assert_eq!(one["destinations"][3]["host"], "2001:db8::1");
    let (code, empty) = get(&feeder, "/sets/3").await;
    assert_eq!((code, empty["destinations"].clone()), (200, json!([])));

    let (code, missing) = get(&feeder, "/sets/9").await;
    assert_eq!(code, 404);
    assert_eq!(missing["error"], "no set 9 in the current snapshot");
    for bad in ["/sets/x", "/sets/-1", "/sets/2147483648"] {
        let (code, refused) = get(&feeder, bad).await;
        assert_eq!(code, 400, "{bad}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("is not a set id"),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn check_answers_for_ipv4_ipv6_and_names_with_and_without_ports() {
    let dir = TempDir::new().unwrap();
    let feeder = feeder(&dir, &[]).await;
    // (set, address as sent, member, the matching URIs)
    let cases: &[(u32, &str, bool, &[&str])] = &[
        (
            1,
            "10.0.0.1",
            true,
            &["sip:10.0.0.1:5060", "sip:10.0.0.1:5080"],
        ),
        (1, "10.0.0.1:5080", true, &["sip:10.0.0.1:5080"]),
        (1, "10.0.0.1:5090", false, &[]),
        (1, "10.0.0.2", false, &[]),
        (2, "10.0.0.1", false, &[]),
        (1, "2001:db8::1", true, &["sip:[2001:db8::1]:5060"]),
        (1, "2001:db8:0:0:0:0:0:1", true, &["sip:[2001:db8::1]:5060"]),
        (1, "[2001:db8::1]:5060", true, &["sip:[2001:db8::1]:5060"]),
        (
            1,
            "%5B2001:db8::1%5D:5060",
            true,
            &["sip:[2001:db8::1]:5060"],
        ),
        (1, "[2001:db8::1]:5061", false, &[]),
        (1, "2001:db8::2", false, &[]),
        (
            1,
            "::ffff:10.0.0.1",
            true,
            &["sip:10.0.0.1:5060", "sip:10.0.0.1:5080"],
        ),
        (
            1,
            "PBX.example.com",
            true,
            &["sip:pbx.example.com:5070;transport=tcp"],
        ),
        (
            1,
            "pbx.example.com:5070",
            true,
            &["sip:pbx.example.com:5070;transport=tcp"],
        ),
        (1, "pbx.example.com:5060", false, &[]),
        // A URI with no port matches any port, as ds_is_from_list.
        (2, "edge.example.com:5061", true, &["sips:edge.example.com"]),
        (2, "edge.example.com", true, &["sips:edge.example.com"]),
        (3, "10.0.0.1", false, &[]),
        (9, "10.0.0.1", false, &[]),
    ];
    for (set, address, member, matching) in cases {
        let (code, body) = get(&feeder, &format!("/check/{set}/{address}")).await;
        assert_eq!(
            code,
            if *member { 200 } else { 404 },
            "{set}/{address}: {body}"
        );
        assert_eq!(body["member"], json!(member), "{set}/{address}: {body}");
        assert_eq!(body["set"], json!(set));
        assert_eq!(uris(&body["destinations"]), *matching, "{set}/{address}");
    }
    let (_, body) = get(&feeder, "/check/1/10.0.0.1:5080").await;
    assert_eq!(body["address"], "10.0.0.1:5080");
    assert_eq!(body["destinations"][0]["port"], 5080);
    for bad in ["10.0.0.1:99999", "a%20b", "%5Bnope%5D", "10.0.0.1:"] {
        let (code, refused) = get(&feeder, &format!("/check/1/{bad}")).await;
        assert_eq!(code, 400, "{bad}: {refused}");
        assert!(
            refused["error"].as_str().unwrap().starts_with('\''),
            "{refused}"
        );
    }

    // An edit shows at once: the answer comes from the current snapshot.
    sets_file(&dir).write_text("sets:\n  1:\n    - 10.0.0.9\n");
    dsfeed_tests::wait_until(
        "10.0.0.9 to be a member of set 1",
        dsfeed_tests::PATIENCE,
        || async {
            let (code, body) = get(&feeder, "/check/1/10.0.0.9").await;
            if code == 200 { Ok(()) } else { Err(body) }
        },
    )
    .await;
    assert_eq!(get(&feeder, "/check/1/10.0.0.1").await.0, 404);
}

#[tokio::test]
async fn membership_follows_the_status_rules() {
    let dir = TempDir::new().unwrap();
    let token = dir.path().join("token");
    dsfeed_tests::write_secret(&token, "s3cret\n");
    let feeder = feeder(&dir, &["--token-file", token.to_str().unwrap()]).await;
    let addr = feeder.http.unwrap();
    for path in ["/sets", "/sets/1", "/check/1/10.0.0.1"] {
        let refused = fetch(addr, path, None).await.unwrap();
        assert_eq!(refused.status, 401, "{path}: {refused:?}");
        assert!(
            !refused.body.contains("10.0.0.1:5060"),
            "{path}: {refused:?}"
        );
        assert_eq!(fetch(addr, path, Some("wrong")).await.unwrap().status, 401);
        let admitted = fetch(addr, path, Some("s3cret")).await.unwrap();
        assert_eq!(admitted.status, 200, "{path}: {admitted:?}");
    }
    // /healthz stays open: only what shows destinations is gated.
    assert_eq!(fetch(addr, "/healthz", None).await.unwrap().status, 200);
}

#[tokio::test]
async fn membership_is_off_on_a_public_address_without_a_token() {
    let dir = TempDir::new().unwrap();
    let http = format!("0.0.0.0:{}", free_addr().port());
    let args = Args::default()
        .sets_file(&sets_file(&dir).path)
        .listen_unix(&dir.path().join("feed.sock"))
        .arg("--http", &http);
    let feeder = Feeder::serving(args).await;
    let addr = feeder.http.unwrap();
    for path in ["/sets", "/sets/1", "/check/1/10.0.0.1", "/status"] {
        let refused = fetch(addr, path, None).await.unwrap();
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
        assert!(refused.body.contains("--public-status"), "{refused:?}");
    }
}
