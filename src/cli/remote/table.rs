//! Aligned columns, as `kubectl get` prints them: an upper-case header, two spaces between
//! columns, the last column unpadded (so a long message does not push trailing spaces).

/// A table being filled.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header, each ending in a newline.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let cell = |row: &[String], i: usize| -> String {
            // One line per row: a newline in a cell (a log message) would break the columns.
            row.get(i)
                .map(|c| c.replace(['\n', '\r', '\t'], " "))
                .unwrap_or_default()
        };
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<String>| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                l.push_str(c);
                if i + 1 < n {
                    let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(self.header.iter().map(|h| h.to_string()).collect());
        for row in &self.rows {
            line((0..n).map(|i| cell(row, i)).collect());
        }
        out
    }

    /// Prints the table, or `empty` on standard error when it has no rows.
    pub fn print(&self, empty: &str) {
        if self.is_empty() {
            eprintln!("{empty}");
        } else {
            out_raw!("{}", self.render());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let mut t = Table::new(&["ID", "STATUS", "MESSAGE"]);
        t.row(vec!["a".into(), "succeeded".into(), "x\ny".into()]);
        t.row(vec!["bbbb".into(), "failed".into()]);
        assert_eq!(
            t.render(),
            "ID    STATUS     MESSAGE\na     succeeded  x y\nbbbb  failed\n"
        );
    }
}
