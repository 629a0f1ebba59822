//! Text tables of a [`Matrix`]: rows are sources, columns are target × port,
//! one character per cell so 6 pods × 3 ports fit in about 65 columns.
//!
//! ```text
//! ports: 1=tcp/80 2=tcp/81 3=udp/53; . reachable, X blocked, - self, ! differs
//! from\to   a        b        c        d
//!           1 2 3    1 2 3    1 2 3    1 2 3
//! a         - - -    . . .    . X!.    . . .
//! ```

use std::collections::BTreeSet;
use std::fmt::Write;

use super::Matrix;

const CORNER: &str = "from\\to";
/// Between target groups, so they stand apart from the cells inside one.
const GAP: &str = "   ";

/// One table; cells whose index is in `marked` carry a `!`.
pub(super) fn table(m: &Matrix, marked: &BTreeSet<usize>) -> String {
    let legend: Vec<String> = m
        .ports
        .iter()
        .enumerate()
        .map(|(k, p)| format!("{}={p}", k + 1))
        .collect();
    // A cell is its value plus a mark slot, as wide as the widest port number.
    let cell_w = m.ports.len().to_string().len() + 1;
    let names_w = m.pods.iter().map(String::len).max().unwrap_or(0);
    let label_w = names_w.max(CORNER.len());
    let group_w = names_w.max(cell_w * m.ports.len());

    let mut out = format!(
        "ports: {}; . reachable, X blocked, - self, ! differs\n",
        legend.join(" ")
    );
    let mut names = format!("{CORNER:<label_w$}");
    let mut numbers = " ".repeat(label_w);
    for to in &m.pods {
        let ids: String = (1..=m.ports.len()).map(|k| format!("{k:<cell_w$}")).collect();
        let _ = write!(names, "{GAP}{to:<group_w$}");
        let _ = write!(numbers, "{GAP}{ids:<group_w$}");
    }
    push_line(&mut out, &names);
    push_line(&mut out, &numbers);
    for (f, from) in m.pods.iter().enumerate() {
        let mut row = format!("{from:<label_w$}");
        for t in 0..m.pods.len() {
            let cells: String = (0..m.ports.len())
                .map(|k| {
                    let i = m.index(f, t, k);
                    let value = match (f == t, m.cells[i]) {
                        (true, _) => '-',
                        (false, true) => '.',
                        (false, false) => 'X',
                    };
                    let mark = if marked.contains(&i) { "!" } else { "" };
                    format!("{:<cell_w$}", format!("{value}{mark}"))
                })
                .collect();
            let _ = write!(row, "{GAP}{cells:<group_w$}");
        }
        push_line(&mut out, &row);
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Port;

    #[test]
    fn renders_one_char_per_cell() {
        let ports = [Port::tcp(80), Port::tcp(81), Port::udp(53)];
        let mut m = Matrix::expect(&["a", "b"], &ports, |_, _, _| true);
        m.set(0, 1, 1, false);
        let marked = BTreeSet::from([m.index(0, 1, 1)]);
        let expected = "\
ports: 1=tcp/80 2=tcp/81 3=udp/53; . reachable, X blocked, - self, ! differs
from\\to   a        b
          1 2 3    1 2 3
a         - - -    . X!.
b         . . .    - - -
";
        assert_eq!(table(&m, &marked), expected);
    }
}
