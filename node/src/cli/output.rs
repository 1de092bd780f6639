//! How list/describe/status commands print: a table for people, JSON for programs.

/// `--output` choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// The API's JSON, unchanged.
    Json,
}

/// Print `rows` under `headers` with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A millisecond timestamp as RFC 3339 UTC (to the second), or "-" for none.
pub fn time(ms: Option<u64>) -> String {
    match ms {
        None | Some(0) => "-".into(),
        Some(ms) => keel_raft_store::timefmt::format_ms(ms - ms % 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_tables_and_times() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1");
        assert_eq!(time(Some(0)), "-");
        assert_eq!(time(Some(1_795_000_000_000)), "2026-11-18T11:06:40Z");
    }
}
