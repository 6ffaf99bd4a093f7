//! Plain-text tables for the bench's reports.
//!
//! Every job prints its figures as an aligned table on stdout, so that a run can be
//! read at a glance and two runs compared line by line. Columns are sized to their
//! widest cell; numbers are right-aligned so their digits line up.

use std::fmt;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Names and labels.
    Left,
    /// Numbers.
    Right,
}

/// A table: a header row and data rows, printed by its `Display` implementation.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

/// Spaces between two columns.
const GAP: usize = 2;

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|&(name, align)| (name.to_owned(), align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells print empty; extra cells are a bug in the caller.
    ///
    /// # Panics
    ///
    /// If the row has more cells than the table has columns.
    pub fn row(&mut self, cells: Vec<String>) {
        assert!(
            cells.len() <= self.columns.len(),
            "a row of {} cells in a table of {} columns",
            cells.len(),
            self.columns.len()
        );
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .chain(std::iter::once(name.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn write_line<'a>(
        &self,
        f: &mut fmt::Formatter<'_>,
        widths: &[usize],
        cells: impl Iterator<Item = &'a str>,
    ) -> fmt::Result {
        let mut line = String::new();
        let cells = cells.chain(std::iter::repeat(""));
        for ((width, (_, align)), cell) in widths.iter().zip(&self.columns).zip(cells) {
            if !line.is_empty() {
                line.push_str(&" ".repeat(GAP));
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            match align {
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
        writeln!(f, "{}", line.trim_end())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        self.write_line(f, &widths, self.columns.iter().map(|(n, _)| n.as_str()))?;
        for row in &self.rows {
            self.write_line(f, &widths, row.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut table = Table::new(&[("lane", Align::Left), ("sent", Align::Right)]);
        table.row(vec!["gossip".into(), "5".into()]);
        table.row(vec!["private".into(), "12345".into()]);
        table.row(vec!["short".into()]);
        assert_eq!(
            table.to_string(),
            "lane      sent\n\
             gossip       5\n\
             private  12345\n\
             short\n"
        );
    }
}
