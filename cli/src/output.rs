//! What goes to stdout: aligned tables and key-value blocks for people, one JSON document
//! for programs.
//!
//! Everything is written in one piece at the end of a command, and a reader that goes away
//! early (`stevedore queues | head -1`) ends the command quietly instead of a panic.

use std::io::{ErrorKind, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// Writes `text` to stdout; a closed pipe is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// Writes `value` as one pretty-printed JSON document.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode the output")?;
    text.push('\n');
    print(&text)
}

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Columns separated by two spaces, each as wide as its widest cell.
pub(crate) struct Table {
    header: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let all = || std::iter::once(&header).chain(&self.rows);
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                all()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in all() {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = " ".repeat(width - cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines with the values lined up.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// A time as RFC 3339 in UTC, to the second; `-` when unknown.
pub(crate) fn time(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// A duration to the second, `0s` below one (`1h 2m 3s`).
pub(crate) fn age(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return "0s".to_string();
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// How long ago Unix ms `ms` was, by this machine's clock.
pub(crate) fn ago_ms(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    format!("{} ago", age(Duration::from_millis(now.saturating_sub(ms))))
}

/// `s` cut to `max` characters, with an ellipsis when cut; newlines become spaces.
pub(crate) fn clip(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(&[("QUEUE", Align::Left), ("READY", Align::Right)]);
        t.row(vec!["emails".into(), "5".into()]);
        t.row(vec!["q".into(), "1200".into()]);
        assert_eq!(t.render(), "QUEUE   READY\nemails      5\nq        1200\n");
    }

    #[test]
    fn long_errors_are_clipped_to_one_line() {
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn ages_round_to_the_second() {
        assert_eq!(age(Duration::from_millis(1500)), "1s");
        assert_eq!(age(Duration::from_millis(10)), "0s");
        assert_eq!(age(Duration::from_secs(3723)), "1h 2m 3s");
    }
}
