//! Who holds a listener's TCP connections. A new connection is always
//! taken, so one client holding connections open can never lock others
//! out (RFC 7766 6.2.3: a server may close idle connections to serve new
//! ones): when its own client already holds its share, that client's
//! idlest connection is closed; when the listener is full, the idlest
//! connection of the client holding the most is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// TCP connections one listener holds open at once.
pub const TOTAL: usize = 128;
/// TCP connections one client (source address) holds at once.
pub const PER_CLIENT: usize = 8;

/// One admitted connection: told through `close` when it must go.
pub struct Admitted {
    pub id: u64,
    pub close: Arc<Notify>,
}

struct Conn {
    client: IpAddr,
    last: Instant,
    close: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Conn>,
}

/// The connections of one listener.
#[derive(Default, Clone)]
pub struct TcpClients {
    state: Arc<Mutex<State>>,
}

impl TcpClients {
    /// Takes a connection of `client`, closing another when its client or
    /// the listener is at its share.
    pub fn admit(&self, client: IpAddr) -> Admitted {
        self.admit_at(client, Instant::now(), TOTAL, PER_CLIENT)
    }

    fn admit_at(&self, client: IpAddr, now: Instant, total: usize, per_client: usize) -> Admitted {
        let mut s = self.state.lock().expect("the connections' lock");
        let own = s.conns.values().filter(|c| c.client == client).count();
        let victim = if own >= per_client {
            idlest(&s.conns, |c| c.client == client)
        } else if s.conns.len() >= total {
            let biggest = biggest_client(&s.conns);
            idlest(&s.conns, |c| Some(c.client) == biggest)
        } else {
            None
        };
        if let Some(id) = victim
            && let Some(gone) = s.conns.remove(&id)
        {
            gone.close.notify_one();
        }
        s.next += 1;
        let id = s.next;
        let close = Arc::new(Notify::new());
        s.conns.insert(
            id,
            Conn {
                client,
                last: now,
                close: close.clone(),
            },
        );
        Admitted { id, close }
    }

    /// The connection `id` just carried a query.
    pub fn touch(&self, id: u64) {
        if let Some(c) = self.state.lock().expect("the connections' lock").conns.get_mut(&id) {
            c.last = Instant::now();
        }
    }

    /// The connection `id` is closed.
    pub fn leave(&self, id: u64) {
        self.state.lock().expect("the connections' lock").conns.remove(&id);
    }

    /// How many connections are held, and by how many clients.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let s = self.state.lock().expect("the connections' lock");
        let clients: std::collections::HashSet<IpAddr> = s.conns.values().map(|c| c.client).collect();
        (s.conns.len(), clients.len())
    }
}

/// The connection that has been quiet longest among those `which` picks.
fn idlest(conns: &HashMap<u64, Conn>, which: impl Fn(&Conn) -> bool) -> Option<u64> {
    conns
        .iter()
        .filter(|(_, c)| which(c))
        .min_by_key(|(id, c)| (c.last, **id))
        .map(|(id, _)| *id)
}

/// The client holding the most connections.
fn biggest_client(conns: &HashMap<u64, Conn>) -> Option<IpAddr> {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for c in conns.values() {
        *counts.entry(c.client).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(ip, n)| (*n, *ip)).map(|(ip, _)| ip)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_at_its_share_loses_its_idlest_connection_not_others() {
        let t = TcpClients::default();
        let t0 = Instant::now();
        let first = t.admit_at(ip("10.0.0.2"), t0, 10, 2);
        let _second = t.admit_at(ip("10.0.0.2"), t0 + Duration::from_secs(1), 10, 2);
        let other = t.admit_at(ip("10.0.0.3"), t0, 10, 2);
        let _third = t.admit_at(ip("10.0.0.2"), t0 + Duration::from_secs(2), 10, 2);
        assert_eq!(t.held(), (3, 2));
        let s = t.state.lock().unwrap();
        assert!(!s.conns.contains_key(&first.id), "the flooder's idlest went");
        assert!(s.conns.contains_key(&other.id), "the other client kept its own");
    }

    #[test]
    fn a_full_listener_closes_the_biggest_clients_idlest_for_a_new_client() {
        let t = TcpClients::default();
        let t0 = Instant::now();
        let many: Vec<Admitted> = (0..3)
            .map(|i| t.admit_at(ip("10.0.0.2"), t0 + Duration::from_secs(i), 4, 8))
            .collect();
        let lone = t.admit_at(ip("10.0.0.3"), t0, 4, 8);
        let newcomer = t.admit_at(ip("10.0.0.4"), t0 + Duration::from_secs(9), 4, 8);
        let s = t.state.lock().unwrap();
        assert_eq!(s.conns.len(), 4);
        assert!(!s.conns.contains_key(&many[0].id), "the biggest client's idlest went");
        assert!(s.conns.contains_key(&lone.id) && s.conns.contains_key(&newcomer.id));
    }
}
