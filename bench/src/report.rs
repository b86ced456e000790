//! BENCHMARKS.md: one section per benchmark, delimited by `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->`, so each benchmark rewrites only its own section and later issues can
//! add sections without touching the others. Also the machine description every section shows.

use std::path::Path;

use anyhow::{Context, Result};

const HEADER: &str = "# Benchmarks\n\n\
Written by `skiff-bench` (see `bench/`). Each section is rewritten by its own benchmark; the \
others are kept as they are. Figures depend on the machine, so every section names it and the \
exact command that reproduces it.\n";

/// Replaces the section `name` of `doc` with `body` (markers added here), or appends it.
pub fn splice_section(doc: &str, name: &str, body: &str) -> String {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let section = format!("{start}\n{}\n{end}", body.trim_end());
    let doc = if doc.trim().is_empty() { HEADER } else { doc };
    if let Some(from) = doc.find(&start)
        && let Some(to) = doc[from..].find(&end).map(|i| from + i + end.len())
    {
        return format!("{}{section}{}", &doc[..from], &doc[to..]);
    }
    format!("{}\n\n{section}\n", doc.trim_end())
}

/// Rewrites section `name` of the markdown file at `path` (created if missing).
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, splice_section(&doc, name, body)).with_context(|| format!("writing {}", path.display()))
}

/// The machine a benchmark ran on, as one markdown line.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} CPUs ({model}), {mem_gib:.1} GiB RAM, {}", std::env::consts::ARCH)
}

/// Today's date and time in UTC.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// The value of `key: value` in a `/proc` style file.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// A markdown table from a header row and data rows.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out += &format!("|{}\n", " --- |".repeat(header.len()));
    for row in rows {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_empty_doc_with_header() {
        let doc = splice_section("", "api", "body");
        assert!(doc.starts_with("# Benchmarks"));
        assert!(doc.ends_with("<!-- bench:api -->\nbody\n<!-- /bench:api -->\n"));
    }

    #[test]
    fn replaces_only_its_section() {
        let doc = "# B\n\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n\n<!-- bench:b -->\nb\n<!-- /bench:b -->\n";
        let doc = splice_section(doc, "a", "new a");
        assert!(doc.contains("new a") && !doc.contains("old a"));
        assert!(doc.contains("<!-- bench:b -->\nb\n<!-- /bench:b -->"));
        let doc2 = splice_section(&doc, "c", "c");
        assert!(doc2.starts_with(&doc.trim_end().to_string()));
        assert!(doc2.contains("<!-- bench:c -->\nc\n"));
    }

    #[test]
    fn table_has_separator() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }

    #[test]
    fn proc_field() {
        assert_eq!(field("MemTotal:  100 kB\nX: y", "MemTotal"), Some("100 kB"));
        assert!(machine().contains("CPUs"));
    }
}
