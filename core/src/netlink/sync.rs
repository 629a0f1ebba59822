//! Link look-ups and batches of changes answered on the calling thread,
//! with no tokio runtime: a plugin call's few requests, where building a
//! runtime and a connection task costs more than the requests themselves.
//! The socket belongs to the calling thread's namespace (pair with
//! [`crate::netns::run_sync`]).

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::links::Link;
use super::{NetlinkError, Request, Result, validate_ifname};

/// An rtnetlink socket of the calling thread's namespace, for a few
/// requests in a row.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
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
        Ok(Rtnl { socket, seq: 0 })
    }

    /// The link called `name`, or `None`.
    pub fn find_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        validate_ifname("ifname", name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, &format!("get link {name}"))
    }

    /// The link called `name` in the namespace the calling thread's
    /// namespace knows as `nsid` (`IFLA_TARGET_NETNSID`), or `None`.
    pub fn find_by_name_in(&mut self, nsid: i32, name: &str) -> Result<Option<Link>> {
        validate_ifname("ifname", name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
        self.get_link(msg, &format!("get link {name} in namespace {nsid}"))
    }

    /// The id the calling thread's namespace gives the namespace open at
    /// `ns`; `None` when it gave none.
    pub fn nsid_of(&mut self, ns: BorrowedFd<'_>) -> Result<Option<i32>> {
        let op = "get namespace id";
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(raw_fd(ns)?));
        match self.request(RouteNetlinkMessage::GetNsId(msg), op)? {
            RouteNetlinkMessage::NewNsId(answer) => Ok(answer.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            })),
            other => Err(unexpected(op, other)),
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
        match self.apply(&[assign]) {
            Err(e) if e.is_exists() => {} // given meanwhile
            other => drop(other?),
        }
        self.nsid_of(ns)?
            .ok_or_else(|| NetlinkError::invalid("netns", "the kernel gave the namespace no id"))
    }

    /// The link with index `index`, or `None`.
    pub fn find_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &format!("get link #{index}"))
    }

    fn get_link(&mut self, mut msg: LinkMessage, op: &str) -> Result<Option<Link>> {
        // The counters are no fact a caller reads: the kernel need not fill them.
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self.request(RouteNetlinkMessage::GetLink(msg), op) {
            Ok(RouteNetlinkMessage::NewLink(link)) => Ok(Some(Link::from(&link))),
            Ok(other) => Err(unexpected(op, other)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes a link (`creation`: an RTM_NEWLINK request) and returns its
    /// index as the kernel echoes it with the acknowledgement; `None` from a
    /// kernel that echoes nothing (ask by name then).
    pub fn create_link(&mut self, creation: Request) -> Result<Option<u32>> {
        let answered = self.apply(&[creation.echoed()])?;
        Ok(answered.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
            _ => None,
        }))
    }

    /// Sends `requests` in one datagram and waits for every acknowledgement.
    /// The kernel carries them out in order, each whether or not the one
    /// before was refused; the first refusal, in order, is the error. What
    /// the kernel answered besides the acknowledgements (a read's object, a
    /// creation echoed back by [`Request::echoed`]) is returned, in order.
    pub fn apply(&mut self, requests: &[Request]) -> Result<Vec<RouteNetlinkMessage>> {
        let Some(op) = requests.first().map(|r| r.op.as_str()) else {
            return Ok(Vec::new());
        };
        let io = |source: std::io::Error| NetlinkError::Io {
            what: format!("{op}: rtnetlink socket"),
            source,
        };
        let first = self.seq + 1;
        let mut bytes = Vec::new();
        for r in requests {
            self.seq += 1;
            let mut m = NetlinkMessage::from(r.message.clone());
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
            m.header.sequence_number = self.seq;
            m.finalize();
            let start = bytes.len();
            bytes.resize(start + m.buffer_len(), 0);
            m.serialize(&mut bytes[start..]);
        }
        self.socket.send(&bytes, 0).map_err(io)?;
        let mut acks: Vec<Option<Result<()>>> = requests.iter().map(|_| None).collect();
        let mut answered = Vec::new();
        let mut pending = requests.len();
        let mut buf = Vec::with_capacity(64 * 1024);
        while pending > 0 {
            buf.clear();
            self.socket.recv(&mut buf, 0).map_err(io)?;
            let mut rest = buf.as_slice();
            while let Ok(reply) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) {
                let len = (reply.header.length as usize + 3) & !3;
                rest = rest.get(len.max(1)..).unwrap_or_default();
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
                    Some(_) => Err(NetlinkError::request(&request.op, rtnetlink::Error::NetlinkError(e))),
                });
            }
        }
        for (request, ack) in requests.iter().zip(acks) {
            Request::outcome(request.missing_ok, ack.unwrap_or(Ok(())))?;
        }
        Ok(answered)
    }

    /// Sends one request (no dump) and returns the kernel's one answer.
    fn request(&mut self, msg: RouteNetlinkMessage, op: &str) -> Result<RouteNetlinkMessage> {
        self.apply(&[Request::new(op, msg, 0)])?
            .into_iter()
            .next()
            .ok_or_else(|| NetlinkError::request(op, rtnetlink::Error::RequestFailed))
    }
}

fn unexpected(op: &str, answer: RouteNetlinkMessage) -> NetlinkError {
    NetlinkError::request(op, rtnetlink::Error::UnexpectedMessage(NetlinkMessage::from(answer)))
}

fn raw_fd(fd: BorrowedFd<'_>) -> Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| NetlinkError::invalid("fd", fd.as_raw_fd()))
}
