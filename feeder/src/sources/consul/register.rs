//! `--consul-register`: this Kamailio as a Consul service, the registration
//! step of the Wazo setup, so that other Consul users (proxies, monitoring)
//! can find it.
//!
//! The service carries a TTL check that dsfeed keeps current: passing
//! while Kamailio answers `core.version` on its ctl socket (`--rpc`), or
//! simply while dsfeed runs when it has no ctl address. If the agent lost
//! the registration (a restarted dev agent), the next update fails and the
//! service is registered again. On shutdown dsfeed deregisters it; if
//! dsfeed dies instead, the check goes critical after its TTL and Consul
//! removes the service after [`DEREGISTER_AFTER`].

use std::time::Duration;

use hyper::body::Bytes;
use serde_json::json;

use super::args::ConsulArgs;
use super::client::{ConsulClient, encode};
use super::error::ConsulError;
use super::spec::RegisterSpec;
use dsfeed_binrpc as binrpc;
use dsfeed_model::Backoff;
use dsfeed_model::error_chain;

/// How long Consul keeps a service whose check stays critical.
pub const DEREGISTER_AFTER: &str = "10m";

/// How long a `core.version` probe of Kamailio may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One registration of this Kamailio on the agent.
#[derive(Clone)]
pub struct Registration {
    client: ConsulClient,
    id: String,
    check_id: String,
    body: Bytes,
    ttl: Duration,
    kamailio: Option<binrpc::Client>,
}

impl Registration {
    /// The registration `--consul-register` asks for, if any; `kamailio`
    /// is the ctl address its check probes.
    pub fn new(
        args: &ConsulArgs,
        kamailio: Option<binrpc::Addr>,
    ) -> Result<Option<Self>, ConsulError> {
        let Some(spec) = &args.register else {
            return Ok(None);
        };
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => format!("{}-{}", spec.name, hostname()?),
        };
        let check_id = format!("service:{id}");
        Ok(Some(Registration {
            client: ConsulClient::new(args)?,
            body: Bytes::from(register_body(spec, &id, &check_id).to_string()),
            id,
            check_id,
            ttl: spec.ttl,
            kamailio: kamailio.map(|addr| binrpc::Client::new(addr).with_timeout(PROBE_TIMEOUT)),
        }))
    }

    /// The service ID registered.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Registers, then keeps the check current every third of its TTL,
    /// registering again whenever an update fails. Never returns.
    pub async fn run(self) {
        let backoff =
            Backoff::new(Duration::from_secs(1), self.ttl, 0.3).expect("ttl is at least 1s");
        let mut delays = backoff.iter();
        let mut registered = false;
        loop {
            if !registered {
                match self
                    .client
                    .put("/v1/agent/service/register", self.body.clone())
                    .await
                {
                    Ok(()) => {
                        tracing::info!(id = %self.id, "registered in Consul");
                        registered = true;
                        delays = backoff.iter();
                    }
                    Err(err) => tracing::warn!(
                        id = %self.id,
                        error = %error_chain(&err),
                        "cannot register in Consul; retrying"
                    ),
                }
            }
            if registered {
                let (status, output) = self.probe().await;
                let update = json!({"Status": status, "Output": output}).to_string();
                let path = format!("/v1/agent/check/update/{}", encode(&self.check_id));
                if let Err(err) = self.client.put(&path, Bytes::from(update)).await {
                    tracing::warn!(
                        id = %self.id,
                        error = %error_chain(&err),
                        "cannot update the Consul check; registering again"
                    );
                    registered = false;
                }
            }
            let pause = if registered {
                self.ttl / 3
            } else {
                delays.next().expect("backoff delays never end")
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Removes the service from the agent, for shutdown; a failure is
    /// logged, since the check's TTL and `DEREGISTER_AFTER` remove it
    /// anyway.
    pub async fn deregister(&self) {
        let path = format!("/v1/agent/service/deregister/{}", encode(&self.id));
        match self.client.put(&path, Bytes::new()).await {
            Ok(()) => tracing::info!(id = %self.id, "deregistered from Consul"),
            Err(err) => tracing::warn!(
                id = %self.id,
                error = %error_chain(&err),
                "cannot deregister from Consul; it will expire after {DEREGISTER_AFTER}"
            ),
        }
    }

    /// The check's status and output: Kamailio's answer to `core.version`.
    async fn probe(&self) -> (&'static str, String) {
        let Some(kamailio) = &self.kamailio else {
            return (
                "passing",
                "dsfeed is running (no Kamailio ctl address to probe)".into(),
            );
        };
        match kamailio.call("core.version", &[]).await {
            Ok(_) => (
                "passing",
                format!("Kamailio answers core.version on {}", kamailio.addr()),
            ),
            Err(err) => ("critical", error_chain(&err)),
        }
    }
}

fn register_body(spec: &RegisterSpec, id: &str, check_id: &str) -> serde_json::Value {
    let ttl = format!("{}ms", spec.ttl.as_millis());
    let mut body = json!({
        "ID": id,
        "Name": spec.name,
        "Port": spec.port,
        "Tags": spec.tags,
        "Meta": {"registered-by": "dsfeed"},
        "Check": {
            "CheckID": check_id,
            "Name": "Kamailio answers binrpc",
            "TTL": ttl,
            "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
        },
    });
    if let Some(address) = &spec.address {
        body["Address"] = json!(address);
    }
    body
}

/// The kernel's host name, for the default service ID.
fn hostname() -> Result<String, ConsulError> {
    let path = "/proc/sys/kernel/hostname";
    let name = std::fs::read_to_string(path).map_err(|source| ConsulError::ReadFile {
        what: "host name",
        path: path.into(),
        source,
    })?;
    Ok(name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_carries_a_ttl_check() {
        let spec: RegisterSpec = "kamailio:5080,address=10.0.0.9,tag=edge,ttl=15s"
            .parse()
            .unwrap();
        let body = register_body(&spec, "kamailio-h1", "service:kamailio-h1");
        assert_eq!(
            body,
            json!({
                "ID": "kamailio-h1", "Name": "kamailio", "Port": 5080, "Tags": ["edge"],
                "Address": "10.0.0.9", "Meta": {"registered-by": "dsfeed"},
                "Check": {
                    "CheckID": "service:kamailio-h1", "Name": "Kamailio answers binrpc",
                    "TTL": "15000ms", "DeregisterCriticalServiceAfter": "10m"
                }
            })
        );
        let plain: RegisterSpec = "kamailio".parse().unwrap();
        assert!(
            register_body(&plain, "k", "service:k")
                .get("Address")
                .is_none()
        );
    }
}
