//! The one rtnetlink socket: requests answered on the calling thread, with
//! no async runtime. A plugin call makes a few requests; building a runtime
//! and a connection task would cost more than the requests themselves.
//! The socket belongs to the namespace of the thread that opened it (open
//! it inside another one with [`super::within`]).

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::{NetlinkError, Request, Result};

/// How often a dump the kernel marks as interrupted (the objects changed
/// while it was read) is read again before the error is given.
const DUMP_TRIES: usize = 4;
/// Big enough for any one datagram the kernel sends a dump in.
const RECV_BUFFER: usize = 256 * 1024;

/// An rtnetlink socket of the calling thread's namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl> {
        let io = |source: std::io::Error| NetlinkError::Io {
            what: "rtnetlink socket".into(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends one request and waits for its acknowledgement.
    pub fn send(&mut self, request: Request) -> Result<()> {
        self.apply(std::slice::from_ref(&request)).map(drop)
    }

    /// Sends `requests` in one datagram and waits for every acknowledgement.
    /// The kernel carries them out in order, each whether or not the one
    /// before was refused; the first refusal, in order, is the error. What
    /// the kernel answered besides the acknowledgements (a read's object, a
    /// creation echoed back by [`Request::echoed`]) is returned, in order.
    pub fn apply(&mut self, requests: &[Request]) -> Result<Vec<RouteNetlinkMessage>> {
        let Some(op) = requests.first().map(|r| r.op.clone()) else {
            return Ok(Vec::new());
        };
        let first = self.seq + 1;
        let mut bytes = Vec::new();
        for r in requests {
            self.seq += 1;
            push_message(
                &mut bytes,
                r.message.clone(),
                NLM_F_REQUEST | NLM_F_ACK | r.flags,
                self.seq,
            );
        }
        self.send_bytes(&bytes, &op)?;
        let mut acks: Vec<Option<Result<()>>> = requests.iter().map(|_| None).collect();
        let mut answered = Vec::new();
        let mut pending = requests.len();
        while pending > 0 {
            for reply in self.receive(&op)? {
                // Answers to other requests (none, on a socket of one caller) are not ours.
                let Some(i) = reply.header.sequence_number.checked_sub(first).map(|i| i as usize) else {
                    continue;
                };
                let (request, e) = match (requests.get(i), reply.payload) {
                    (Some(request), NetlinkPayload::Error(e)) => (request, e),
                    (Some(_), NetlinkPayload::InnerMessage(m)) => {
                        answered.push(m);
                        continue;
                    }
                    _ => continue,
                };
                if acks[i].is_none() {
                    pending -= 1;
                }
                acks[i] = Some(match e.code {
                    None => Ok(()),
                    Some(code) => Err(NetlinkError::kernel(&request.op, code.get())),
                });
            }
        }
        for (request, ack) in requests.iter().zip(acks) {
            Request::outcome(request.missing_ok, ack.unwrap_or(Ok(())))?;
        }
        Ok(answered)
    }

    /// Sends one request that reads one object and returns it; `None` when
    /// the kernel answers that it does not exist.
    pub fn get(&mut self, op: &str, msg: RouteNetlinkMessage) -> Result<Option<RouteNetlinkMessage>> {
        match self.apply(&[Request::new(op, msg, 0)]) {
            Ok(answers) => answers
                .into_iter()
                .next()
                .map(Some)
                .ok_or_else(|| NetlinkError::unexpected(op, "an acknowledgement without the object")),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object the kernel lists for `msg` (`NLM_F_DUMP`), read again
    /// when the kernel says the list changed while it was sent.
    pub fn dump(&mut self, op: &str, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 1..DUMP_TRIES {
            if let Some(objects) = self.dump_once(op, msg.clone())? {
                return Ok(objects);
            }
        }
        self.dump_once(op, msg)?
            .ok_or_else(|| NetlinkError::unexpected(op, "the list kept changing while it was read"))
    }

    /// One dump; `None` when the kernel marked it interrupted.
    fn dump_once(&mut self, op: &str, msg: RouteNetlinkMessage) -> Result<Option<Vec<RouteNetlinkMessage>>> {
        self.seq += 1;
        let seq = self.seq;
        let mut bytes = Vec::new();
        push_message(&mut bytes, msg, NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.send_bytes(&bytes, op)?;
        let mut objects = Vec::new();
        let mut interrupted = false;
        loop {
            for reply in self.receive(op)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => objects.push(m),
                    NetlinkPayload::Done(_) => return Ok((!interrupted).then_some(objects)),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => return Err(NetlinkError::kernel(op, code.get())),
                        None => return Ok((!interrupted).then_some(objects)),
                    },
                    _ => {}
                }
            }
        }
    }

    fn send_bytes(&mut self, bytes: &[u8], op: &str) -> Result<()> {
        self.socket.send(bytes, 0).map_err(|e| io(op, e))?;
        Ok(())
    }

    /// The messages of the next datagram.
    fn receive(&mut self, op: &str) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        self.buf.clear();
        self.socket.recv(&mut self.buf, 0).map_err(|e| io(op, e))?;
        let mut rest = self.buf.as_slice();
        let mut out = Vec::new();
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                break;
            }
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                .map_err(|e| NetlinkError::unexpected(op, format!("an answer that does not parse: {e}")))?;
            out.push(reply);
            rest = rest.get((len + 3) & !3..).unwrap_or_default();
        }
        Ok(out)
    }

    /// The id the calling thread's namespace gives the namespace open at
    /// `ns`; `None` when it gave none.
    pub fn nsid_of(&mut self, ns: BorrowedFd<'_>) -> Result<Option<i32>> {
        let op = "get namespace id";
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(raw_fd(ns)?));
        match self.get(op, RouteNetlinkMessage::GetNsId(msg))? {
            Some(RouteNetlinkMessage::NewNsId(answer)) => Ok(answer.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            })),
            Some(other) => Err(NetlinkError::unexpected(op, format!("{other:?}"))),
            None => Ok(None),
        }
    }

    /// The id the calling thread's namespace gives the namespace open at
    /// `ns`, given now when it had none (as `ip netns set NAME auto`; the
    /// kernel gives one itself to the namespace of any veth's peer).
    pub fn nsid_for(&mut self, ns: BorrowedFd<'_>) -> Result<i32> {
        if let Some(id) = self.nsid_of(ns)? {
            return Ok(id);
        }
        let fd = raw_fd(ns)?;
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(fd));
        msg.attributes.push(NsidAttribute::Id(-1));
        let assign = Request::new("assign a namespace id", RouteNetlinkMessage::NewNsId(msg), 0);
        match self.send(assign) {
            Err(e) if e.is_exists() => {} // given meanwhile
            other => other?,
        }
        self.nsid_of(ns)?
            .ok_or_else(|| NetlinkError::invalid("netns", "the kernel gave the namespace no id"))
    }
}

fn push_message(bytes: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    let start = bytes.len();
    bytes.resize(start + m.buffer_len(), 0);
    m.serialize(&mut bytes[start..]);
}

fn io(op: &str, source: std::io::Error) -> NetlinkError {
    NetlinkError::Io {
        what: format!("{op}: rtnetlink socket"),
        source,
    }
}

fn raw_fd(fd: BorrowedFd<'_>) -> Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| NetlinkError::invalid("fd", fd.as_raw_fd()))
}
