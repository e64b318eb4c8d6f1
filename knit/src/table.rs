//! Plain aligned tables for `--format table`, as `docker network ls` prints them.

/// Columns left-aligned, separated by three spaces; the last column is not padded.
pub fn render(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&head).chain(rows.iter()) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{c:<pad$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::render(
            &["ID", "NAME"],
            vec![vec!["abc".into(), "n1".into()], vec!["a".into(), "".into()]],
        );
        assert_eq!(t, "ID    NAME\nabc   n1\na\n");
    }
}
