//! The benches' one report: every figure names what it was measured
//! against, is printed as one table, and is saved as JSON in
//! `target/bench/latest.json` (the previous run's file becomes
//! `previous.json`), so two runs can be compared line by line.
//!
//! Each bench owns one section of the file, keyed by its name; a bench run
//! alone replaces only its own section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// One measured figure: dsfeed's value, and the alternative's measured in the
/// same run, if there is one.
#[derive(Debug, Clone)]
pub struct Row {
    /// The question it answers ("orchestrator -> memory").
    pub section: String,
    /// What exactly was measured ("Kubernetes, p50").
    pub figure: String,
    pub unit: &'static str,
    pub value: f64,
    /// What `against` is ("file + dispatcher.reload"), when there is one.
    pub against: Option<(String, f64)>,
}

impl Row {
    /// The value divided by the alternative's: below 1 means dsfeed wins
    /// for times, sizes and staleness.
    pub fn ratio(&self) -> Option<f64> {
        self.against
            .as_ref()
            .filter(|(_, other)| *other != 0.0)
            .map(|(_, other)| self.value / other)
    }
}

/// A bench's figures, printed and saved by [`Report::finish`].
#[derive(Debug)]
pub struct Report {
    bench: &'static str,
    /// What every figure here was measured on (Kamailio's version, cores).
    context: Vec<(String, String)>,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(bench: &'static str) -> Report {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        Report {
            bench,
            context: vec![("cores".into(), cores.to_string())],
            rows: Vec::new(),
        }
    }

    /// Records what the run was measured on (printed and saved).
    pub fn context(&mut self, key: &str, value: impl std::fmt::Display) {
        self.context.push((key.to_owned(), value.to_string()));
    }

    /// A figure with no alternative.
    pub fn figure(&mut self, section: &str, figure: &str, unit: &'static str, value: f64) {
        self.rows.push(Row {
            section: section.to_owned(),
            figure: figure.to_owned(),
            unit,
            value,
            against: None,
        });
    }

    /// A figure and the same figure of `against`, measured side by side.
    pub fn versus(
        &mut self,
        section: &str,
        figure: &str,
        unit: &'static str,
        value: f64,
        against: &str,
        other: f64,
    ) {
        self.rows.push(Row {
            section: section.to_owned(),
            figure: figure.to_owned(),
            unit,
            value,
            against: Some((against.to_owned(), other)),
        });
    }

    /// [`Report::versus`] for two durations, in milliseconds.
    pub fn versus_ms(
        &mut self,
        section: &str,
        figure: &str,
        value: Duration,
        against: &str,
        other: Duration,
    ) {
        self.versus(section, figure, "ms", ms(value), against, ms(other));
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Prints the table and merges this bench's section into
    /// `target/bench/latest.json`; returns the file's path.
    pub fn finish(self) -> PathBuf {
        println!("\n{}", self.table());
        let path = bench_dir().join("latest.json");
        if let Err(err) = self.save(&path) {
            eprintln!("cannot save {}: {err}", path.display());
        } else {
            println!("saved in {}", path.display());
        }
        path
    }

    /// The rows as one table, a section title above its rows.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let context: Vec<String> = self
            .context
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push_str(&format!("== {} ({})\n", self.bench, context.join(", ")));
        out.push_str(&format!(
            "  {:<46} {:>12} {:>12}  {:<34} {:>7}\n",
            "figure", "dsfeed", "against", "measured against", "ratio"
        ));
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = &row.section;
                out.push_str(&format!("  [{section}]\n"));
            }
            let (name, other) = match &row.against {
                Some((name, other)) => (name.as_str(), number(*other, row.unit)),
                None => ("", String::new()),
            };
            let ratio = row.ratio().map_or(String::new(), |r| format!("{r:.2}"));
            out.push_str(&format!(
                "  {:<46} {:>12} {:>12}  {:<34} {:>7}\n",
                row.figure,
                number(row.value, row.unit),
                other,
                name,
                ratio
            ));
        }
        out
    }

    fn to_json(&self) -> Value {
        let context: Map<String, Value> = self
            .context
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut value = json!({
                    "section": row.section,
                    "figure": row.figure,
                    "unit": row.unit,
                    "value": row.value,
                });
                if let Some((against, other)) = &row.against {
                    value["against"] = json!(against);
                    value["against_value"] = json!(other);
                    value["ratio"] = json!(row.ratio());
                }
                value
            })
            .collect();
        json!({
            "measured_at": jiff::Timestamp::now().to_string(),
            "context": context,
            "rows": rows,
        })
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        let mut all = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        all[self.bench] = self.to_json();
        let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

/// `target/bench`, from the bench binary's own path
/// (`target/<profile>/deps/NAME`), or `CARGO_TARGET_DIR`.
pub fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("bench");
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_owned)
        .join("bench")
}

/// Whether `QUICK=1` asks for a short run (`make bench QUICK=1`): fewer
/// changes and smaller runs, same figures.
pub fn quick() -> bool {
    std::env::var("QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `name` from the environment, else `full`, or `quick` under [`quick`].
pub fn count(name: &str, full: usize, quick_count: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { quick_count } else { full })
}

/// The `p`th percentile (nearest rank) of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn number(value: f64, unit: &str) -> String {
    let digits = if value.abs() >= 100.0 || value.fract() == 0.0 {
        0
    } else if value.abs() >= 1.0 {
        1
    } else {
        3
    };
    format!("{value:.digits$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_alternative_and_the_file_keeps_other_benches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latest.json");
        std::fs::write(&path, r#"{"other": {"rows": []}}"#).unwrap();
        let mut report = Report::new("module");
        report.versus("lone change", "p50", "ms", 2.0, "file + reload", 8.0);
        report.figure("memory", "feeder RSS", "MiB", 12.5);
        let table = report.table();
        assert!(
            table.contains("file + reload") && table.contains("0.25"),
            "{table}"
        );
        report.save(&path).unwrap();
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["module"]["rows"][0]["ratio"], json!(0.25));
        assert_eq!(saved["module"]["rows"][1]["value"], json!(12.5));
        assert!(saved["other"].is_object());
    }
}
