//! Link look-ups answered on the calling thread, with no tokio runtime: a
//! plugin call's few reads, where building a runtime and a connection task
//! costs more than the request itself. The link is read in the calling
//! thread's namespace (pair with [`crate::netns::run_sync`]).

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::links::Link;
use super::{NetlinkError, Result, validate_ifname};

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

    /// The link with index `index`, or `None`.
    pub fn find_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &format!("get link #{index}"))
    }

    fn get_link(&mut self, msg: LinkMessage, op: &str) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), op) {
            Ok(RouteNetlinkMessage::NewLink(link)) => Ok(Some(Link::from(&link))),
            Ok(other) => Err(NetlinkError::request(
                op,
                rtnetlink::Error::UnexpectedMessage(NetlinkMessage::from(other)),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request (no dump) and returns the kernel's one answer.
    fn request(&mut self, msg: RouteNetlinkMessage, op: &str) -> Result<RouteNetlinkMessage> {
        let io = |source: std::io::Error| NetlinkError::Io {
            what: format!("{op}: rtnetlink socket"),
            source,
        };
        self.seq += 1;
        let mut request = NetlinkMessage::from(msg);
        request.header.flags = NLM_F_REQUEST;
        request.header.sequence_number = self.seq;
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(io)?;
        let mut answer = Vec::with_capacity(64 * 1024);
        self.socket.recv(&mut answer, 0).map_err(io)?;
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer)
            .map_err(|e| NetlinkError::request(op, rtnetlink::Error::InvalidNla(e.to_string())))?;
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => Ok(m),
            NetlinkPayload::Error(e) => Err(NetlinkError::request(op, rtnetlink::Error::NetlinkError(e))),
            _ => Err(NetlinkError::request(op, rtnetlink::Error::RequestFailed)),
        }
    }
}
