//! What `nape proxies` prints and writes: the scores as a table, CSV or JSON, a manifest with
//! the proxies added to each record, and each proxy's Spearman with the family's accuracies.

use super::{Cached, Job, JobSource};
use crate::cli::util::OutputFormat;
use crate::dataset::{self, Record};
use crate::proxies::Proxy;

/// The rows as a manifest (benchmark records, or one record per file) with their proxies.
pub(super) fn write_records(out: &std::path::Path, rows: &[(&Job, Cached)]) -> anyhow::Result<()> {
    let records: Vec<Record> = rows
        .iter()
        .map(|(j, c)| {
            let mut r = j.record.clone().unwrap_or_else(|| {
                let mut r = Record::new(j.id.clone(), "files", j.key.clone());
                if let JobSource::File(f) = &j.source {
                    r.file = Some(f.clone());
                }
                r
            });
            for (k, v) in &c.values {
                r.proxies.insert(k.clone(), *v);
            }
            r
        })
        .collect();
    dataset::write_manifest(out, &records)?;
    eprintln!("wrote {} records with proxies to {}", records.len(), out.display());
    Ok(())
}

pub(super) fn print_rows(
    rows: &[(&Job, Cached)],
    names: &[&str],
    format: OutputFormat,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|(j, c)| serde_json::json!({"id": j.id, "proxies": c.values, "errors": c.errors}))
                .collect();
            if format == OutputFormat::Json {
                let doc = serde_json::json!({
                    "schema_version": 1,
                    "nape_version": env!("CARGO_PKG_VERSION"),
                    "units": {"params": "millions", "flops": "millions (torchstat)", "synflow": "log10"},
                    "networks": items,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                for i in items {
                    println!("{i}");
                }
            }
        }
        OutputFormat::Csv => {
            println!("id,{}", names.join(","));
            for (j, c) in rows {
                let vals: Vec<String> = names
                    .iter()
                    .map(|n| c.values.get(*n).map(|v| format!("{v}")).unwrap_or_default())
                    .collect();
                println!("{},{}", j.id, vals.join(","));
            }
        }
        OutputFormat::Table => {
            let w = rows.iter().map(|(j, _)| j.id.len()).max().unwrap_or(4).clamp(4, 60);
            print!("{:w$}", "id");
            for n in names {
                print!(" {n:>11}");
            }
            println!();
            for (j, c) in rows {
                print!("{:w$}", j.id);
                for n in names {
                    match c.values.get(*n) {
                        Some(v) => print!(" {:>11}", fmt_num(*v)),
                        None => print!(" {:>11}", "error"),
                    }
                }
                println!();
            }
        }
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// Prints every proxy's error, one line per network and proxy, on stderr; returns how many.
pub(super) fn report_errors(rows: &[(&Job, Cached)], names: &[&str]) -> usize {
    let mut failed = 0usize;
    for (j, c) in rows {
        for n in names {
            if let Some(e) = c.errors.get(*n) {
                failed += 1;
                // the line names the network: its path is not said again (errors nested
                // inside the executor's name it once each)
                let prefix = format!("{}: ", j.id);
                let mut e = e.as_str();
                while let Some(rest) = e.strip_prefix(&prefix) {
                    e = rest;
                }
                eprintln!("{}: {n}: {e}", j.id);
            }
        }
    }
    failed
}

/// Spearman of each proxy with each target, signed so that positive means the proxy ranks
/// networks the way accuracy does (lower-is-better proxies are negated); with `published`
/// (`--published`), a last column: Spearman with the published scores of the same cells, as
/// both are (unsigned).
pub(super) fn print_correlations(
    rows: &[(&Job, Cached)],
    names: &[&str],
    ps: &[Box<dyn Proxy>],
    published: Option<&str>,
    labels: bool,
) {
    let mut targets: Vec<String> = rows
        .iter()
        .filter_map(|(j, _)| j.record.as_ref())
        .flat_map(|r| r.targets.keys().cloned())
        .collect();
    targets.sort();
    targets.dedup();
    // a family's final accuracies; a labels file's one target
    targets.retain(|t| {
        labels || t.contains("test_ep200") || t == "val_acc_ep108" || t.ends_with("_val_accuracy")
    });
    print!("{:12} {:>6}", "proxy", "n");
    for t in &targets {
        print!(" {t:>22}");
    }
    if published.is_some() {
        print!(" {:>22}", "published");
    }
    println!();
    for n in names {
        let sign = if ps.iter().find(|p| p.name() == *n).is_some_and(|p| !p.higher_is_better()) {
            -1.0
        } else {
            1.0
        };
        let mut cells: Vec<(String, usize)> = targets
            .iter()
            .map(|t| column(rows, n, |j, v| Some((sign * v, j.record.as_ref()?.target(t)?))))
            .collect();
        if let Some(d) = published {
            cells.push(column(rows, n, |j, v| {
                Some((v, super::published::value(j.record.as_ref()?, d, n)?))
            }));
        }
        let count = cells.iter().map(|c| c.1).max().unwrap_or(0);
        let line: String =
            cells.iter().map(|(c, k)| format!(" {:>22}", with_count(c, *k, count))).collect();
        println!("{n:12} {count:>6}{line}");
    }
}

/// A cell computed on fewer networks than its row's `n` says on how many (a family's labels of
/// other datasets cover a few of its cells: NB-201's SVHN 199 of 15,625).
fn with_count(cell: &str, pairs: usize, row: usize) -> String {
    if pairs == row || cell == "-" {
        cell.to_string()
    } else {
        // one token, so a table read by whitespace keeps its columns
        format!("{cell}[n={pairs}]")
    }
}

/// One cell of the correlation table: the Spearman of the pairs `pair` makes of each row's
/// value of proxy `n` ("-" under 3 pairs or undefined), and the number of pairs.
fn column(
    rows: &[(&Job, Cached)],
    n: &str,
    pair: impl Fn(&Job, f64) -> Option<(f64, f64)>,
) -> (String, usize) {
    let (xs, ys): (Vec<f64>, Vec<f64>) =
        rows.iter().filter_map(|(j, c)| pair(j, *c.values.get(n)?)).unzip();
    let rho = crate::metrics::spearman(&xs, &ys);
    let cell = if xs.len() >= 3 && rho.is_finite() { format!("{rho:.3}") } else { "-".into() };
    (cell, xs.len())
}

#[cfg(test)]
mod tests {
    use super::with_count;

    #[test]
    fn a_cell_on_fewer_networks_than_its_row_says_how_many() {
        assert_eq!(with_count("0.751", 300, 300), "0.751");
        assert_eq!(with_count("0.714", 4, 300), "0.714[n=4]");
        assert_eq!(with_count("-", 2, 300), "-");
    }
}
