//! `--consul-attr KEY=FIELD`: which part of a health entry becomes which
//! dispatcher attr.

use std::fmt;
use std::str::FromStr;

/// Where an attr's value comes from in a `/v1/health/service` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `Service.ID`.
    ServiceId,
    /// `Node.Node`.
    NodeName,
    /// `Service.Weights.Passing`.
    WeightPassing,
    /// `Service.Weights.Warning`.
    WeightWarning,
    /// `Service.Meta[NAME]`.
    Meta(String),
    /// `Node.Meta[NAME]`.
    NodeMeta(String),
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = |k: &str| -> Result<String, String> {
            if k.is_empty() {
                Err(format!("'{s}' names no meta key"))
            } else {
                Ok(k.to_owned())
            }
        };
        Ok(match s {
            "ID" => Field::ServiceId,
            "Node" => Field::NodeName,
            "Weights.Passing" => Field::WeightPassing,
            "Weights.Warning" => Field::WeightWarning,
            _ => {
                if let Some(k) = s.strip_prefix("Meta.") {
                    Field::Meta(key(k)?)
                } else if let Some(k) = s.strip_prefix("NodeMeta.") {
                    Field::NodeMeta(key(k)?)
                } else {
                    return Err(format!(
                        "unknown field '{s}' (known: ID, Node, Weights.Passing, Weights.Warning, Meta.NAME, NodeMeta.NAME)"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::ServiceId => f.write_str("ID"),
            Field::NodeName => f.write_str("Node"),
            Field::WeightPassing => f.write_str("Weights.Passing"),
            Field::WeightWarning => f.write_str("Weights.Warning"),
            Field::Meta(k) => write!(f, "Meta.{k}"),
            Field::NodeMeta(k) => write!(f, "NodeMeta.{k}"),
        }
    }
}

/// One `--consul-attr KEY=FIELD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrMapping {
    /// The dispatcher attr name, such as `weight` or `duid`.
    pub key: String,
    pub field: Field,
}

impl FromStr for AttrMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, field)) = s.split_once('=') else {
            return Err(format!("'{s}' is not KEY=FIELD, as weight=Weights.Passing"));
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "'{s}': attr name '{key}' must be letters, digits and '_'"
            ));
        }
        let field = field.parse().map_err(|e| format!("'{s}': {e}"))?;
        Ok(AttrMapping {
            key: key.to_owned(),
            field,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_mappings_parse() {
        let attr: AttrMapping = "weight=Weights.Passing".parse().unwrap();
        assert_eq!(attr.field, Field::WeightPassing);
        let attr: AttrMapping = "duid=Meta.instance".parse().unwrap();
        assert_eq!(attr.field, Field::Meta("instance".into()));
        for bad in ["weight", "we ight=ID", "x=Meta.", "x=Service.Port", "=ID"] {
            assert!(bad.parse::<AttrMapping>().is_err(), "{bad}");
        }
    }
}
