//! Upstream answers kept for as long as their TTLs allow (RFC 1035 and, for
//! NXDOMAIN and NODATA, RFC 2308 5: the SOA's TTL bounded by its minimum),
//! so a name asked again is answered without a trip upstream, and while the
//! upstreams are down. Bounded in size and in how long anything is kept;
//! emptied through the control socket (`flush`).
//!
//! An answer is kept per question and per upstream set (networks with
//! other upstreams may see other answers), and per the query's EDNS and DO
//! bit (the answer's OPT and its records depend on them). Truncated
//! answers and failures are never kept.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

/// Answers kept at most; the oldest go first.
const ENTRIES: usize = 10_000;
/// Nothing is kept longer, whatever its TTL says.
const MAX_TTL: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    qtype: u16,
    class: u16,
    edns: bool,
    dnssec_ok: bool,
    upstreams: Vec<SocketAddr>,
}

impl Key {
    fn of(query: &Message, upstreams: &[SocketAddr]) -> Option<Key> {
        let [q] = query.queries.as_slice() else {
            return None;
        };
        Some(Key {
            name: q.name().to_lowercase().to_ascii(),
            qtype: q.query_type().into(),
            class: q.query_class().into(),
            edns: query.edns.is_some(),
            dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            upstreams: upstreams.to_vec(),
        })
    }
}

struct Entry {
    answer: Message,
    stored: Instant,
    ttl: u32,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were stored (eviction).
    order: VecDeque<Key>,
}

/// The upstream answers the daemon keeps.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

/// The daemon's cache, one for every listener.
pub fn shared() -> &'static Cache {
    static CACHE: LazyLock<Cache> = LazyLock::new(Cache::default);
    &CACHE
}

impl Cache {
    /// The kept answer to `query` (asked of `upstreams`), as a reply to it:
    /// its id and question, its TTLs counted down by the time it was kept.
    pub fn answer(&self, query: &Message, upstreams: &[SocketAddr]) -> Option<Message> {
        self.answer_at(query, upstreams, Instant::now())
    }

    fn answer_at(&self, query: &Message, upstreams: &[SocketAddr], now: Instant) -> Option<Message> {
        let key = Key::of(query, upstreams)?;
        let mut inner = self.inner.lock().expect("the cache lock");
        let entry = inner.entries.get(&key)?;
        let age = now.saturating_duration_since(entry.stored).as_secs();
        if age >= u64::from(entry.ttl) {
            inner.entries.remove(&key);
            return None;
        }
        let mut reply = entry.answer.clone();
        drop(inner);
        reply.metadata.id = query.metadata.id;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.queries = query.queries.clone();
        let age = age as u32;
        for r in reply
            .answers
            .iter_mut()
            .chain(reply.authorities.iter_mut())
            .chain(reply.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(reply)
    }

    /// Keeps `reply`, the upstreams' answer to `query`, when it may be kept.
    pub fn keep(&self, query: &Message, upstreams: &[SocketAddr], reply: &[u8]) {
        self.keep_at(query, upstreams, reply, Instant::now());
    }

    fn keep_at(&self, query: &Message, upstreams: &[SocketAddr], reply: &[u8], now: Instant) {
        let (Some(key), Ok(answer)) = (Key::of(query, upstreams), Message::from_vec(reply)) else {
            return;
        };
        let Some(ttl) = keepable_ttl(&answer) else {
            return;
        };
        let mut inner = self.inner.lock().expect("the cache lock");
        if inner.entries.len() >= ENTRIES {
            inner
                .entries
                .retain(|_, e| now.saturating_duration_since(e.stored) < Duration::from_secs(e.ttl.into()));
            while inner.entries.len() >= ENTRIES {
                let Some(oldest) = inner.order.pop_front() else { break };
                inner.entries.remove(&oldest);
            }
            let Inner { entries, order } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
        if inner
            .entries
            .insert(
                key.clone(),
                Entry {
                    answer,
                    stored: now,
                    ttl,
                },
            )
            .is_none()
        {
            inner.order.push_back(key);
        }
    }

    /// Empties the cache; how many answers it held.
    pub fn flush(&self) -> usize {
        let mut inner = self.inner.lock().expect("the cache lock");
        let n = inner.entries.len();
        *inner = Inner::default();
        n
    }
}

/// How long `answer` may be kept: the smallest TTL of its records for an
/// answer, the SOA's (bounded by its minimum) for a negative one; `None`
/// for what is never kept (a failure, a truncated answer, a negative answer
/// without a SOA, a TTL of 0).
fn keepable_ttl(answer: &Message) -> Option<u32> {
    if answer.metadata.truncation {
        return None;
    }
    let ttl = match answer.metadata.response_code {
        ResponseCode::NoError if !answer.answers.is_empty() => {
            answer.answers.iter().chain(&answer.authorities).map(|r| r.ttl).min()?
        }
        ResponseCode::NoError | ResponseCode::NXDomain => negative_ttl(&answer.authorities)?,
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

fn negative_ttl(authorities: &[Record]) -> Option<u32> {
    authorities.iter().find_map(|r| match (&r.data, r.record_type()) {
        (RData::SOA(soa), RecordType::SOA) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn query(name: &str, id: u16) -> Message {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m
    }

    fn reply_to(q: &Message, code: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Vec<u8> {
        let mut r = Message::error_msg(q.metadata.id, q.metadata.op_code, code);
        r.queries = q.queries.clone();
        r.answers = answers;
        r.authorities = authorities;
        r.to_vec().unwrap()
    }

    fn a(name: &str, ttl: u32) -> Record {
        Record::from_rdata(Name::from_str(name).unwrap(), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_str("example.").unwrap();
        let soa = SOA::new(n.clone(), n.clone(), 1, 3600, 600, 86400, minimum);
        Record::from_rdata(n, ttl, RData::SOA(soa))
    }

    const UP: [SocketAddr; 1] = [SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 53)),
        53,
    )];

    #[test]
    fn an_answer_is_served_for_its_ttl_counted_down_with_the_askers_id() {
        let c = Cache::default();
        let t0 = Instant::now();
        let q = query("www.example.", 1);
        c.keep_at(
            &q,
            &UP,
            &reply_to(&q, ResponseCode::NoError, vec![a("www.example.", 30)], vec![]),
            t0,
        );
        let again = query("WWW.example.", 2);
        let hit = c.answer_at(&again, &UP, t0 + Duration::from_secs(10)).expect("kept");
        assert_eq!((hit.metadata.id, hit.answers[0].ttl), (2, 20));
        assert_eq!(hit.queries, again.queries, "the asker's question, as asked");
        assert!(
            c.answer_at(&again, &UP, t0 + Duration::from_secs(30)).is_none(),
            "expired"
        );
        let elsewhere = [SocketAddr::from(([192, 0, 2, 54], 53))];
        c.keep_at(
            &q,
            &UP,
            &reply_to(&q, ResponseCode::NoError, vec![a("www.example.", 30)], vec![]),
            t0,
        );
        assert!(
            c.answer_at(&q, &elsewhere, t0).is_none(),
            "other upstreams, other answers"
        );
    }

    #[test]
    fn a_negative_answer_is_kept_for_the_soas_minimum_and_failures_never() {
        let c = Cache::default();
        let t0 = Instant::now();
        let q = query("none.example.", 1);
        c.keep_at(
            &q,
            &UP,
            &reply_to(&q, ResponseCode::NXDomain, vec![], vec![soa(300, 5)]),
            t0,
        );
        assert!(c.answer_at(&q, &UP, t0 + Duration::from_secs(4)).is_some());
        assert!(c.answer_at(&q, &UP, t0 + Duration::from_secs(5)).is_none());
        let q2 = query("fail.example.", 1);
        c.keep_at(&q2, &UP, &reply_to(&q2, ResponseCode::ServFail, vec![], vec![]), t0);
        c.keep_at(&q2, &UP, &reply_to(&q2, ResponseCode::NXDomain, vec![], vec![]), t0);
        assert!(c.answer_at(&q2, &UP, t0).is_none(), "no SOA: not kept");
        assert_eq!(c.flush(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_flushed() {
        let c = Cache::default();
        let t0 = Instant::now();
        for i in 0..ENTRIES + 5 {
            let q = query(&format!("n{i}.example."), 1);
            c.keep_at(
                &q,
                &UP,
                &reply_to(
                    &q,
                    ResponseCode::NoError,
                    vec![a(&format!("n{i}.example."), 60)],
                    vec![],
                ),
                t0,
            );
        }
        assert!(
            c.answer_at(&query("n0.example.", 1), &UP, t0).is_none(),
            "the oldest went"
        );
        assert!(
            c.answer_at(&query(&format!("n{}.example.", ENTRIES + 4), 1), &UP, t0)
                .is_some()
        );
        assert_eq!(c.flush(), ENTRIES);
        assert!(
            c.answer_at(&query(&format!("n{}.example.", ENTRIES + 4), 1), &UP, t0)
                .is_none()
        );
    }
}
