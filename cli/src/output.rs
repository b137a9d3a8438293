//! Writing to stdout: one JSON object per line (or indented with --pretty),
//! and tables on a terminal. A closed pipe (`| head`) ends quietly.

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// Prints one JSON value, on one line or indented.
///
/// # Errors
/// stdout is closed.
pub fn json(value: &Value, pretty: bool) -> std::io::Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .unwrap_or_default();
    line(&text)
}

/// Prints one line.
///
/// # Errors
/// stdout is closed.
pub fn line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Whether lists should be tables (stdout is a terminal and JSON was not asked for).
pub fn tables(json_requested: bool) -> bool {
    !json_requested && std::io::stdout().is_terminal()
}

/// Prints rows as aligned columns under `header`.
///
/// # Errors
/// stdout is closed.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    line(&render(header.to_vec()))?;
    for row in rows {
        line(&render(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
