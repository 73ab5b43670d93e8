//! The rtpengine and domain modules' RPCs: reload their tables from the
//! database (here, `db_text` files the feeder writes) and read back what
//! they loaded.

use crate::codec::Value;
use crate::{Client, Error};

/// The fault text of `rtpengine.reload` within the module's own interval
/// (10 s in 5.6 and 6.0) of its previous reload, or of its start.
pub const TOO_SHORT_INTERVAL: &str = "Too short reload interval - try later";

/// Which module's table: the RPC names differ, the handling does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Rtpengine,
    Domain,
}

impl Module {
    /// The RPC that reloads the module's table.
    pub fn reload_method(self) -> &'static str {
        match self {
            Module::Rtpengine => "rtpengine.reload",
            Module::Domain => "domain.reload",
        }
    }
}

/// Asks Kamailio to reload the module's table.
pub async fn reload(client: &Client, module: Module) -> Result<(), Error> {
    client.call(module.reload_method(), &[]).await.map(drop)
}

/// Whether `err` is a refusal worth retrying soon: rtpengine's own reload
/// interval, or Kamailio still starting ("Initializing - try later").
pub fn is_try_later(err: &Error) -> bool {
    matches!(err, Error::Fault { message, .. } if message.ends_with("try later"))
}

/// One relay as `rtpengine.show all` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownRelay {
    pub url: String,
    pub set: i32,
    pub weight: i32,
    /// `0` or `1`; 5.6 says `1(permanent)` for a relay the table disables.
    pub disabled: String,
    /// Ticks until the module tries a disabled relay again; 6.0 says `-1`
    /// for a relay the table disables, 5.6 `N/A` for some.
    pub recheck_ticks: String,
}

impl ShownRelay {
    /// Whether the table disables the relay, rather than a missed ping
    /// (which disables it for a while): the two versions say so differently.
    pub fn disabled_by_table(&self) -> bool {
        self.disabled.contains("permanent") || (self.disabled == "1" && self.recheck_ticks == "-1")
    }
}

/// Every relay the rtpengine module has loaded (`rtpengine.show all`); none
/// is an empty list.
pub async fn rtpengine_show(client: &Client) -> Result<Vec<ShownRelay>, Error> {
    let reply = match client
        .call("rtpengine.show", &[Value::Str("all".into())])
        .await
    {
        Ok(reply) => reply,
        // The module's answer when no set is loaded.
        Err(Error::Fault { code: 404, .. }) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut relays = Vec::new();
    for row in structs(&reply, "url") {
        let text = |key: &str| match row.get(key) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Int(i)) => i.to_string(),
            _ => String::new(),
        };
        let int = |key: &str| row.get(key).and_then(Value::as_int).unwrap_or(-1);
        relays.push(ShownRelay {
            url: text("url"),
            set: int("set"),
            weight: int("weight"),
            disabled: text("disabled"),
            recheck_ticks: text("recheck_ticks"),
        });
    }
    Ok(relays)
}

/// Every domain the domain module has loaded (`domain.dump`), as
/// `(domain, did)`.
pub async fn domain_dump(client: &Client) -> Result<Vec<(String, String)>, Error> {
    let reply = client.call("domain.dump", &[]).await?;
    Ok(structs(&reply, "domain")
        .into_iter()
        .filter_map(|row| {
            let domain = row.get("domain")?.as_str()?.to_owned();
            let did = row.get("did")?.as_str()?.to_owned();
            Some((domain, did))
        })
        .collect())
}

/// Every struct anywhere in `values` with a field `key`: the modules nest
/// their rows in arrays and structs that differ between RPCs and versions.
fn structs<'a>(values: &'a [Value], key: &str) -> Vec<&'a Value> {
    let mut found = Vec::new();
    let mut stack: Vec<&Value> = values.iter().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Struct(fields) => {
                if value.get(key).is_some() {
                    found.push(value);
                } else {
                    stack.extend(fields.iter().map(|(_, v)| v));
                }
            }
            Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    found.reverse();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_however_they_nest() {
        let row = |d: &str| {
            Value::Struct(vec![
                ("domain".into(), Value::Str(d.into())),
                ("did".into(), Value::Str(d.into())),
            ])
        };
        let reply = vec![Value::Struct(vec![(
            "domains".into(),
            Value::Array(vec![row("a"), row("b")]),
        )])];
        let found: Vec<_> = structs(&reply, "domain")
            .into_iter()
            .map(|row| row.get("domain").unwrap().as_str().unwrap().to_owned())
            .collect();
        assert_eq!(found.len(), 2);
        assert!(found.contains(&"a".to_owned()) && found.contains(&"b".to_owned()));
    }

    #[test]
    fn only_try_later_faults_are_retried_soon() {
        let fault = |message: &str| Error::fault("rtpengine.reload", message);
        assert!(is_try_later(&fault(TOO_SHORT_INTERVAL)));
        assert!(is_try_later(&fault("Initializing - try later")));
        assert!(!is_try_later(&fault("Failed reloading db")));
    }
}
