//! Label and field selectors, as the apiserver reads them from a list or
//! watch request.

use std::collections::BTreeMap;

use serde_json::Value;

/// A label and field selector, each a conjunction of requirements.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub(crate) labels: Vec<Requirement>,
    pub(crate) fields: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    Exists(String),
}

impl Filter {
    pub(crate) fn parse(query: &BTreeMap<String, String>) -> Result<Filter, String> {
        let mut filter = Filter::default();
        if let Some(labels) = query.get("labelSelector").filter(|s| !s.is_empty()) {
            filter.labels = split_terms(labels)
                .into_iter()
                .map(|term| Requirement::parse(&term))
                .collect::<Result<_, _>>()?;
        }
        if let Some(fields) = query.get("fieldSelector").filter(|s| !s.is_empty()) {
            for term in fields.split(',') {
                let (field, value) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| format!("unsupported field selector '{term}'"))?;
                if !matches!(field, "metadata.name" | "metadata.namespace") {
                    return Err(format!("field label not supported: {field}"));
                }
                filter.fields.push((field.to_owned(), value.to_owned()));
            }
        }
        Ok(filter)
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str();
        self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
        }) && self.fields.iter().all(|(field, value)| {
            let path = field.strip_prefix("metadata.").unwrap_or(field);
            object["metadata"][path].as_str() == Some(value.as_str())
        })
    }
}

impl Requirement {
    pub(crate) fn parse(term: &str) -> Result<Requirement, String> {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
        }
        if let Some((k, set)) = term.split_once(" in ") {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("unsupported label selector '{term}'"))?;
            return Ok(Requirement::In(
                k.trim().into(),
                set.split(',').map(|v| v.trim().to_owned()).collect(),
            ));
        }
        if term.is_empty() || term.contains([' ', '!', '(']) {
            return Err(format!("unsupported label selector '{term}'"));
        }
        Ok(Requirement::Exists(term.to_owned()))
    }
}

/// Splits a label selector on the commas that are not inside `( )`.
pub(crate) fn split_terms(selector: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut depth = 0;
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(String::new());
                continue;
            }
            _ => {}
        }
        terms.last_mut().expect("one term").push(c);
    }
    terms
}
