//! One DNS message in, one out: parse, look up, build the response; forward
//! what is not ours. Malformed input never panics: it gets FORMERR or nothing.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};

use super::{cache, forward, limits};
use crate::zone::{Outcome, Zone};

/// Our EDNS payload size (the DNS flag day's safe UDP size).
const EDNS_PAYLOAD: u16 = 1232;
/// The classic UDP limit for clients without EDNS.
const PLAIN_UDP: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What a query needs: a reply now, a trip upstream, or nothing.
pub enum Prepared {
    Reply(Vec<u8>),
    /// Not ours: the parsed query and where it goes.
    Forward(Message, Vec<SocketAddr>),
    /// A response, or too short to carry an id.
    Nothing,
}

/// Answers `query` from `client` from the zone alone (no I/O).
pub fn prepare(zone: &Zone, query: &[u8], client: SocketAddr, listen: SocketAddr, transport: Transport) -> Prepared {
    let reply = |r: Option<Vec<u8>>| r.map_or(Prepared::Nothing, Prepared::Reply);
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return reply(format_error(query)),
    };
    if msg.metadata.message_type != MessageType::Query {
        return Prepared::Nothing;
    }
    if msg.metadata.op_code != OpCode::Query {
        return reply(encode(&error(&msg, ResponseCode::NotImp), &msg, transport));
    }
    let [q] = msg.queries.as_slice() else {
        return reply(encode(&error(&msg, ResponseCode::FormErr), &msg, transport));
    };
    // RFC 6891 6.1.3: a version we do not speak gets BADVERS, with our own OPT (version 0).
    if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return reply(encode(&error(&msg, ResponseCode::BADVERS), &msg, transport));
    }
    let mut resp = error(&msg, ResponseCode::NoError);
    match zone.lookup(client.ip(), listen, q.name(), q.query_type()) {
        Outcome::Answer(records) => {
            resp.metadata.authoritative = true;
            resp.answers = records;
        }
        Outcome::NoData(soa) => {
            resp.metadata.authoritative = true;
            resp.authorities.push(soa);
        }
        Outcome::NxDomain(soa) => {
            resp.metadata.authoritative = true;
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.authorities.push(soa);
        }
        Outcome::Forward(upstreams) => return Prepared::Forward(msg, upstreams),
    }
    reply(encode(&resp, &msg, transport))
}

/// The upstreams' answer to a query [`prepare`] sent there, fitted to the
/// client's transport; SERVFAIL when none answered, or at once when too
/// many forwards are already waiting on upstreams.
pub async fn forwarded(query: &[u8], msg: &Message, upstreams: &[SocketAddr], transport: Transport) -> Option<Vec<u8>> {
    if let Some(kept) = cache::shared().answer(msg, upstreams) {
        return encode(&kept, msg, transport);
    }
    let Some(_slot) = limits::forward_slot() else {
        return encode(&error(msg, ResponseCode::ServFail), msg, transport);
    };
    match forward::exchange(query, upstreams, transport).await {
        Some(reply) => {
            cache::shared().keep(msg, upstreams, &reply);
            Some(fit(reply, msg, transport))
        }
        None => encode(&error(msg, ResponseCode::ServFail), msg, transport),
    }
}

/// The response to `query` from `client`, or `None` when there is nothing to answer.
pub async fn respond(
    zone: &Zone,
    query: &[u8],
    client: SocketAddr,
    listen: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    match prepare(zone, query, client, listen, transport) {
        Prepared::Reply(r) => Some(r),
        Prepared::Nothing => None,
        Prepared::Forward(msg, upstreams) => forwarded(query, &msg, &upstreams, transport).await,
    }
}

/// A response skeleton echoing the query's id, (first) question and RD bit.
fn error(query: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    // Not every question: the FORMERR or NOTIMP to a query of many would be
    // as long as it, past what a UDP client takes even once truncated.
    resp.queries = query.queries.iter().take(1).cloned().collect();
    if let Some(asked) = &query.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        // RFC 3225 3: the DO bit is copied into the response.
        edns.set_dnssec_ok(asked.flags().dnssec_ok);
        resp.set_edns(edns);
    }
    resp
}

/// The largest UDP response `query`'s sender takes.
fn udp_limit(query: &Message) -> usize {
    query.edns.as_ref().map_or(PLAIN_UDP, |e| {
        usize::from(e.max_payload()).clamp(PLAIN_UDP, usize::from(EDNS_PAYLOAD))
    })
}

fn encode(resp: &Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if transport == Transport::Udp && bytes.len() > udp_limit(query) {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// An upstream's reply, truncated when it is too big for the client's UDP.
fn fit(reply: Vec<u8>, query: &Message, transport: Transport) -> Vec<u8> {
    if transport == Transport::Tcp || reply.len() <= udp_limit(query) {
        return reply;
    }
    match Message::from_vec(&reply).ok().and_then(|m| m.truncate().to_vec().ok()) {
        Some(short) => short,
        None => reply,
    }
}

/// FORMERR for an unparsable query that still has a header (id and opcode).
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut out = query[..12].to_vec();
    out[2] = 0x80 | (query[2] & 0x79); // QR=1, keep opcode and RD
    out[3] = 0x80 | ResponseCode::FormErr.low(); // RA, FORMERR
    out[4..12].fill(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn garbage_gets_formerr_or_nothing() {
        let z = Zone::default();
        let c: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        assert_eq!(respond(&z, &[1, 2, 3], c, c, Transport::Udp).await, None);
        let r = respond(
            &z,
            &[0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
            c,
            c,
            Transport::Udp,
        )
        .await
        .unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0xabcd, ResponseCode::FormErr)
        );
    }

    fn with_edns(name: &str, version: u8, dnssec_ok: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        e.set_version(version);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    /// RFC 6891 6.1.3: BADVERS (an extended code: its high bits in the
    /// OPT) for a version above 0, answered with our own OPT of version 0.
    #[tokio::test]
    async fn an_edns_version_we_do_not_speak_gets_badvers_with_our_opt() {
        let z = Zone::default();
        let c: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            let r = respond(&z, &with_edns("x.example.", 1, false), c, c, transport)
                .await
                .unwrap();
            let m = Message::from_vec(&r).unwrap();
            // 16 on the wire (BADVERS; hickory decodes 16 as BADSIG, its TSIG twin).
            assert_eq!(u16::from(m.metadata.response_code), 16);
            assert_eq!(m.edns.map(|e| e.version()), Some(0));
        }
    }

    /// RFC 3225 3: the DO bit of the query is copied into the response.
    #[tokio::test]
    async fn the_do_bit_is_copied_into_the_response() {
        let z = Zone::default();
        let c: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        for dnssec_ok in [true, false] {
            let r = respond(&z, &with_edns("x.example.", 0, dnssec_ok), c, c, Transport::Udp)
                .await
                .unwrap();
            let m = Message::from_vec(&r).unwrap();
            assert_eq!(m.edns.map(|e| e.flags().dnssec_ok), Some(dnssec_ok));
        }
    }

    #[tokio::test]
    async fn many_questions_get_an_error_that_fits_udp() {
        let z = Zone::default();
        let c: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        for (op, code) in [
            (OpCode::Query, ResponseCode::FormErr),
            (OpCode::Status, ResponseCode::NotImp),
        ] {
            let mut m = Message::query();
            m.metadata.op_code = op;
            for i in 0..200 {
                m.add_query(Query::query(
                    Name::from_str(&format!("n{i}.example.")).unwrap(),
                    RecordType::A,
                ));
            }
            let q = m.to_vec().unwrap();
            for transport in [Transport::Udp, Transport::Tcp] {
                let r = respond(&z, &q, c, c, transport).await.unwrap();
                assert!(
                    r.len() <= PLAIN_UDP,
                    "{op:?} {transport:?}: {} bytes to {} bytes",
                    r.len(),
                    q.len()
                );
                let m = Message::from_vec(&r).unwrap();
                assert_eq!(m.metadata.response_code, code);
                assert!(!m.metadata.truncation);
                assert_eq!(m.queries.len(), 1);
            }
        }
    }

    #[tokio::test]
    async fn no_upstream_is_servfail() {
        let z = Zone::default();
        let c: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        let r = respond(&z, &query("example.org.", RecordType::A), c, c, Transport::Udp)
            .await
            .unwrap();
        assert_eq!(
            Message::from_vec(&r).unwrap().metadata.response_code,
            ResponseCode::ServFail
        );
    }
}
