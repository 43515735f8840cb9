//! The results: one row per figure with its raw ceiling and BullMQ's, printed as a table
//! or as one JSON object.

use std::collections::BTreeMap;

use serde::Serialize;

/// One figure, measured up to three ways.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable key for scripts, e.g. `drain_c128_p1`.
    pub(crate) key: String,
    pub(crate) label: String,
    pub(crate) unit: &'static str,
    /// True for latencies, memory and counts of work.
    pub(crate) lower_is_better: bool,
    pub(crate) stevedore: Option<f64>,
    pub(crate) raw: Option<f64>,
    pub(crate) bullmq: Option<f64>,
    /// stevedore ÷ raw.
    pub(crate) vs_raw: Option<f64>,
    /// stevedore ÷ BullMQ.
    pub(crate) vs_bullmq: Option<f64>,
}

/// A goal from the issue and how this run did against it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) goal: String,
    pub(crate) reached: String,
    /// `None` when the run lacks a figure it needs (BullMQ skipped, section skipped).
    pub(crate) met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: BTreeMap<String, serde_json::Value>,
    pub(crate) sizes: Option<crate::Sizes>,
    pub(crate) figures: Vec<Figure>,
    pub(crate) targets: Vec<Target>,
    /// Per-section breakdowns (commands per job by name, child reports...).
    pub(crate) details: BTreeMap<String, serde_json::Value>,
    /// Tables of a section whose figures don't fit the three-sided table (the cluster's
    /// CPU per primary), printed after it.
    pub(crate) tables: Vec<Table>,
    pub(crate) notes: Vec<String>,
}

/// A table of its own: a title, column names and rows of formatted cells.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Table {
    pub(crate) title: String,
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Report {
    pub(crate) fn figure(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        unit: &'static str,
        lower_is_better: bool,
        [stevedore, raw, bullmq]: [Option<f64>; 3],
    ) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            unit,
            lower_is_better,
            stevedore,
            raw,
            bullmq,
            vs_raw: ratio(stevedore, raw),
            vs_bullmq: ratio(stevedore, bullmq),
        });
    }

    pub(crate) fn detail(&mut self, key: impl Into<String>, value: impl Serialize) {
        self.details.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
    }

    pub(crate) fn target(&mut self, goal: impl Into<String>, reached: String, met: Option<bool>) {
        self.targets.push(Target {
            goal: goal.into(),
            reached,
            met,
        });
    }

    /// The table, the targets and the notes, for a terminal or a Markdown file.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.machine {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push('\n');
        out.push_str("| figure | unit | stevedore | raw | ÷ raw | BullMQ | stevedore ÷ BullMQ |\n");
        out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for f in &self.figures {
            out.push_str(&format!(
                "| {} | {}{} | {} | {} | {} | {} | {} |\n",
                f.label,
                f.unit,
                if f.lower_is_better { " ↓" } else { "" },
                num(f.stevedore),
                num(f.raw),
                times(f.vs_raw),
                num(f.bullmq),
                times(f.vs_bullmq),
            ));
        }
        out.push_str("\n↓: lower is better. ÷: stevedore's figure divided by the other.\n");
        if !self.targets.is_empty() {
            out.push_str("\n| target | this run | met |\n| --- | --- | --- |\n");
            for t in &self.targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "n/a",
                };
                out.push_str(&format!("| {} | {} | {met} |\n", t.goal, t.reached));
            }
        }
        for t in &self.tables {
            out.push_str(&format!(
                "\n{}\n\n| {} |\n|",
                t.title,
                t.columns.join(" | ")
            ));
            for i in 0..t.columns.len() {
                out.push_str(if i == 0 { " --- |" } else { " ---: |" });
            }
            out.push('\n');
            for r in &t.rows {
                out.push_str(&format!("| {} |\n", r.join(" | ")));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}"));
        }
        out.push('\n');
        out
    }
}

/// A number with a sensible number of digits and thousands separators.
pub(crate) fn num(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "–".into();
    };
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}×"))
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub(crate) fn quantile(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(f64::from(sorted[rank - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(Some(1234567.4)), "1,234,567");
        assert_eq!(num(Some(123.4)), "123");
        assert_eq!(num(Some(12.34)), "12.3");
        assert_eq!(num(Some(1.234)), "1.23");
        assert_eq!(num(None), "–");
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), Some(500.0));
        assert_eq!(quantile(&v, 0.99), Some(990.0));
        assert_eq!(quantile(&v, 0.999), Some(999.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
