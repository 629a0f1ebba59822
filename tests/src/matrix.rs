//! Reachability matrices for firewall truth-table tests, in the style of the
//! Kubernetes network-policy e2e suite: listen on every port of every pod
//! ([`Listeners`]), probe every ordered pair of distinct pods on every port
//! with real connects ([`probe_all`]), and compare against a table built from
//! a rule ([`Matrix::expect`]). A mismatch prints both tables
//! ([`Matrix::diff`], [`assert_matrix`]).
//!
//! ```no_run
//! # use std::time::Duration;
//! # use netsvc_tests::Container;
//! use netsvc_tests::matrix::{Listeners, Matrix, Port, Target, assert_matrix, probe_all};
//! # fn f(pods: &[(&Container, Target)]) -> anyhow::Result<()> {
//! let ports = [Port::tcp(80), Port::udp(53)];
//! let _listeners = Listeners::start(pods, &ports)?;
//! let observed = probe_all(pods, &ports, Duration::from_secs(1));
//! let names: Vec<&str> = pods.iter().map(|(_, t)| t.name.as_str()).collect();
//! let expected = Matrix::expect(&names, &ports, |_from, to, port| !(to == "db" && port == Port::tcp(80)));
//! assert_matrix("db closed on tcp/80", &observed, &expected);
//! # Ok(())
//! # }
//! ```

mod probe;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

pub use probe::{Listeners, probe_all};

/// A transport protocol a probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One probed port, e.g. `tcp/80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub proto: Proto,
    pub port: u16,
}

impl Port {
    pub const fn tcp(port: u16) -> Port {
        Port {
            proto: Proto::Tcp,
            port,
        }
    }

    pub const fn udp(port: u16) -> Port {
        Port {
            proto: Proto::Udp,
            port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{proto}/{}", self.port)
    }
}

/// A pod as probes see it: its name (also its listeners' identity) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub ip: IpAddr,
}

impl Target {
    pub fn new(name: impl Into<String>, ip: IpAddr) -> Target {
        Target { name: name.into(), ip }
    }
}

/// Reachability of every port between every ordered pair of distinct pods.
///
/// Pods never probe themselves: those cells are not part of the matrix
/// ([`Matrix::get`] returns `None`, tables show `-`). Equality compares pods,
/// ports and cells; the failure notes a probe round attaches are ignored.
#[derive(Debug, Clone)]
pub struct Matrix {
    pods: Vec<String>,
    ports: Vec<Port>,
    /// Indexed by [`Matrix::index`]; self cells stay false.
    cells: Vec<bool>,
    /// Why a probed cell counted as blocked, for the mismatch list.
    notes: BTreeMap<usize, String>,
}

impl PartialEq for Matrix {
    fn eq(&self, other: &Matrix) -> bool {
        self.pods == other.pods && self.ports == other.ports && self.cells == other.cells
    }
}

impl Eq for Matrix {}

impl Matrix {
    /// A table of every port between every ordered pair of distinct `pods`,
    /// each cell `f(from, to, port)` (true: reachable).
    ///
    /// Panics on a duplicate pod name or port: a cell must mean one probe.
    pub fn expect<S: AsRef<str>>(pods: &[S], ports: &[Port], f: impl Fn(&str, &str, Port) -> bool) -> Matrix {
        let mut m = Matrix::blank(pods.iter().map(|p| p.as_ref().to_owned()).collect(), ports.to_vec());
        for (from, to, k) in m.probes().collect::<Vec<_>>() {
            let reachable = f(&m.pods[from], &m.pods[to], m.ports[k]);
            m.set(from, to, k, reachable);
        }
        m
    }

    /// An all-blocked matrix; panics on duplicates (see [`Matrix::expect`]).
    pub(crate) fn blank(pods: Vec<String>, ports: Vec<Port>) -> Matrix {
        let distinct_pods: BTreeSet<_> = pods.iter().collect();
        assert_eq!(distinct_pods.len(), pods.len(), "duplicate pod name in {pods:?}");
        let distinct_ports: BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct_ports.len(), ports.len(), "duplicate port in {ports:?}");
        let size = pods.len() * pods.len() * ports.len();
        Matrix {
            pods,
            ports,
            cells: vec![false; size],
            notes: BTreeMap::new(),
        }
    }

    /// The pod names, in row and column order.
    pub fn pods(&self) -> &[String] {
        &self.pods
    }

    /// The ports, in column order within each target pod.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Whether `from` reached `to` on `port`; `None` for a self pair or a
    /// pod or port this matrix does not have.
    pub fn get(&self, from: &str, to: &str, port: Port) -> Option<bool> {
        let f = self.pods.iter().position(|p| p == from)?;
        let t = self.pods.iter().position(|p| p == to)?;
        let k = self.ports.iter().position(|p| *p == port)?;
        (f != t).then(|| self.cells[self.index(f, t, k)])
    }

    /// `None` when `self` (observed) equals `expected`; otherwise a report of
    /// both tables with the differing cells marked `!`, and the list of
    /// differing probes with the reason each blocked one failed.
    pub fn diff(&self, expected: &Matrix) -> Option<String> {
        if self == expected {
            return None;
        }
        let none = BTreeSet::new();
        if self.pods != expected.pods || self.ports != expected.ports {
            return Some(format!(
                "the matrices cover different pods or ports\nexpected:\n{}\nobserved:\n{}",
                render::table(expected, &none),
                render::table(self, &none)
            ));
        }
        let differing: BTreeSet<usize> = (0..self.cells.len())
            .filter(|&i| self.cells[i] != expected.cells[i])
            .collect();
        let mut report = format!(
            "{} of {} probes differ from the expectation\nexpected:\n{}\nobserved:\n{}\nmismatches:\n",
            differing.len(),
            self.probes().count(),
            render::table(expected, &differing),
            render::table(self, &differing)
        );
        for (from, to, k) in self
            .probes()
            .filter(|&(f, t, k)| differing.contains(&self.index(f, t, k)))
        {
            let i = self.index(from, to, k);
            let word = |reachable| if reachable { "reachable" } else { "blocked" };
            report += &format!(
                "  {} -> {} {}: expected {}, observed {}",
                self.pods[from],
                self.pods[to],
                self.ports[k],
                word(expected.cells[i]),
                word(self.cells[i])
            );
            if let Some(note) = self.notes.get(&i) {
                report += &format!(" ({note})");
            }
            report.push('\n');
        }
        Some(report)
    }

    /// Every probed cell as `(from, to, port)` indices, row by row.
    pub(crate) fn probes(&self) -> impl Iterator<Item = (usize, usize, usize)> + use<> {
        let (n, p) = (self.pods.len(), self.ports.len());
        (0..n).flat_map(move |f| {
            (0..n)
                .filter(move |&t| t != f)
                .flat_map(move |t| (0..p).map(move |k| (f, t, k)))
        })
    }

    fn index(&self, from: usize, to: usize, port: usize) -> usize {
        (from * self.pods.len() + to) * self.ports.len() + port
    }

    pub(crate) fn set(&mut self, from: usize, to: usize, port: usize, reachable: bool) {
        let i = self.index(from, to, port);
        self.cells[i] = reachable;
    }

    /// Records why a probe counted as blocked.
    pub(crate) fn note(&mut self, from: usize, to: usize, port: usize, why: String) {
        let i = self.index(from, to, port);
        self.notes.insert(i, why);
    }
}

/// The observed table alone.
impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render::table(self, &BTreeSet::new()))
    }
}

/// Panics naming `step` with the [`Matrix::diff`] report when `observed`
/// differs from `expected`.
#[track_caller]
pub fn assert_matrix(step: &str, observed: &Matrix, expected: &Matrix) {
    if let Some(report) = observed.diff(expected) {
        panic!("reachability matrix mismatch at step {step:?}:\n{report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: [Port; 2] = [Port::tcp(80), Port::udp(53)];

    #[test]
    fn expect_fills_every_distinct_pair() {
        let m = Matrix::expect(&["a", "b", "c"], &PORTS, |from, to, port| {
            from == "a" || (to == "a" && port.port == 80)
        });
        assert_eq!(m.probes().count(), 3 * 2 * 2);
        assert_eq!(m.get("a", "b", Port::udp(53)), Some(true));
        assert_eq!(m.get("b", "a", Port::tcp(80)), Some(true));
        assert_eq!(m.get("b", "a", Port::udp(53)), Some(false));
        assert_eq!(m.get("b", "c", Port::tcp(80)), Some(false));
        assert_eq!(m.get("a", "a", Port::tcp(80)), None, "no self cells");
        assert_eq!(m.get("a", "b", Port::tcp(81)), None);
    }

    #[test]
    fn diff_shows_both_tables_and_the_mismatch() {
        let open = Matrix::expect(&["a", "b"], &PORTS, |_, _, _| true);
        let mut seen = open.clone();
        seen.set(1, 0, 1, false);
        seen.note(1, 0, 1, "no reply".into());
        assert_eq!(open.diff(&open), None);
        let report = seen.diff(&open).unwrap();
        assert!(report.starts_with("1 of 4 probes differ"), "{report}");
        assert!(
            report.contains("expected:\n") && report.contains("observed:\n"),
            "{report}"
        );
        assert!(
            report.contains("b -> a udp/53: expected reachable, observed blocked (no reply)"),
            "{report}"
        );
        assert_eq!(
            report.matches(".!").count(),
            1,
            "marked in the expected table: {report}"
        );
        assert_eq!(
            report.matches("X!").count(),
            1,
            "marked in the observed table: {report}"
        );
    }

    #[test]
    fn diff_of_different_shapes() {
        let a = Matrix::expect(&["a", "b"], &PORTS, |_, _, _| true);
        let b = Matrix::expect(&["a", "c"], &PORTS, |_, _, _| true);
        assert!(a.diff(&b).unwrap().contains("different pods or ports"));
    }

    #[test]
    #[should_panic(expected = "duplicate pod name")]
    fn duplicate_pods_are_refused() {
        Matrix::expect(&["a", "a"], &PORTS, |_, _, _| true);
    }
}
