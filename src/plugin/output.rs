//! Output in kubectl's conventions: aligned tables with upper-case headers (`--no-headers`
//! drops them), ages as `kubectl get` prints them, and `-o json|yaml` documents. Pure, so
//! every format is tested without a cluster.

use serde::Serialize;

use super::args::OutputFormat;
use super::error::{PluginError, PluginResult};

/// Spaces between two columns, as kubectl's tab writer pads them.
const COLUMN_GAP: usize = 3;

/// A table: a header and rows of the same width.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Column names, upper case.
    pub header: Vec<String>,
    /// One row per object.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table as text, each column as wide as its widest cell; the last column is not
    /// padded, so lines carry no trailing blanks.
    pub fn render(&self, headers: bool) -> String {
        let mut lines: Vec<&Vec<String>> = Vec::new();
        if headers {
            lines.push(&self.header);
        }
        lines.extend(self.rows.iter());
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .filter_map(|l| l.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (c, cell) in line.iter().enumerate() {
                text.push_str(cell);
                if c + 1 < line.len() {
                    let pad = widths[c] - cell.chars().count() + COLUMN_GAP;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `value` as the `-o json` or `-o yaml` document; `None` for the table formats.
pub fn structured<T: Serialize>(
    value: &T,
    format: Option<OutputFormat>,
) -> PluginResult<Option<String>> {
    let text = match format {
        Some(OutputFormat::Json) => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| PluginError::Failed(format!("formatting JSON: {e}")))?,
        Some(OutputFormat::Yaml) => serde_norway::to_string(value)
            .map_err(|e| PluginError::Failed(format!("formatting YAML: {e}")))?,
        Some(OutputFormat::Wide) | None => return Ok(None),
    };
    Ok(Some(text))
}

/// How long ago `then` was, as `kubectl get` prints ages (`45s`, `3m20s`, `5h`, `12d`).
pub fn age(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    human_duration(now.as_second() - then.as_second())
}

/// How long until `then`: `in 5h`, or `due` when it is not in the future.
pub fn until(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = then.as_second() - now.as_second();
    if seconds <= 0 {
        "due".to_string()
    } else {
        format!("in {}", human_duration(seconds))
    }
}

/// kubectl's `HumanDuration`: precise while short, coarser as it grows.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    let days = hours / 24;
    let years = days / 365;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        }
    } else {
        format!("{years}y")
    }
}

/// Bytes as restic prints sizes: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The first 8 characters of a snapshot ID, as restic shows them.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The cell of an absent value.
pub const NONE: &str = "<none>";

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("valid")
    }

    #[test]
    fn table_columns_are_aligned_with_three_spaces_and_no_trailing_blanks() {
        let mut table = Table::new(&["NAME", "STATE", "AGE"]);
        table
            .rows
            .push(vec!["nightly".into(), "Succeeded".into(), "5m".into()]);
        table
            .rows
            .push(vec!["a".into(), "Failed".into(), "12d".into()]);
        assert_eq!(
            table.render(true),
            "NAME      STATE       AGE\n\
             nightly   Succeeded   5m\n\
             a         Failed      12d\n"
        );
    }

    #[test]
    fn table_without_headers_has_only_the_rows() {
        let mut table = Table::new(&["NAME", "A-VERY-LONG-HEADER"]);
        table.rows.push(vec!["x".into(), "y".into()]);
        assert_eq!(table.render(false), "x   y\n");
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 15 * 60, "3h15m"),
            (5 * 3600, "5h"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (10 * 365 * 86400, "10y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(age(ts(0), ts(seconds)), want, "{seconds} s");
        }
        assert_eq!(age(ts(10), ts(0)), "<invalid>");
    }

    #[test]
    fn next_runs_read_as_in_or_due() {
        assert_eq!(until(ts(5 * 3600), ts(0)), "in 5h");
        assert_eq!(until(ts(0), ts(30)), "due");
    }

    #[test]
    fn sizes_read_as_restic_prints_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(3 * 1024_u64.pow(4)), "3.0 TiB");
    }

    #[test]
    fn json_and_yaml_are_documents_and_wide_is_a_table() {
        let value = serde_json::json!({"items": [{"name": "nightly"}]});
        let json = structured(&value, Some(OutputFormat::Json))
            .expect("formats")
            .expect("json is structured");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).ok(),
            Some(value.clone())
        );
        let yaml = structured(&value, Some(OutputFormat::Yaml))
            .expect("formats")
            .expect("yaml is structured");
        assert!(yaml.contains("name: nightly"), "{yaml}");
        assert_eq!(
            structured(&value, Some(OutputFormat::Wide)).ok(),
            Some(None)
        );
        assert_eq!(structured(&value, None).ok(), Some(None));
    }
}
