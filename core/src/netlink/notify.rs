//! Kernel notifications of changes someone else may make to what netsvc
//! owns: the nftables multicast group (any change to a table, chain, rule,
//! set or element, with its table's name) and rtnetlink's link and tc groups
//! (a link, qdisc, class or filter deleted). The agent repairs after them
//! instead of polling. The sockets belong to the calling thread's namespace.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use netlink_sys::Socket;
use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};

/// nfnetlink's nftables multicast group.
const NFNLGRP_NFTABLES: u32 = 7;
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_TC: u32 = 4;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nftables messages that name no table: a new generation, a trace.
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_TRACE: u16 = 17;

/// One change the kernel told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something in the nftables table of this name changed.
    Nft { table: String },
    /// The link of this name was deleted.
    LinkGone { name: String },
    /// A qdisc, class or filter of the link of this index was deleted.
    TcGone { index: u32 },
    /// Notifications were lost (the socket's buffer overflowed): assume anything.
    Lost,
}

/// The subscription: one nfnetlink and one rtnetlink socket.
pub struct Notifications {
    nft: Socket,
    route: Socket,
}

impl Notifications {
    pub fn open() -> std::io::Result<Notifications> {
        let subscribe = |protocol, groups: &[u32]| -> std::io::Result<Socket> {
            let mut s = Socket::new(protocol)?;
            s.bind_auto()?;
            for g in groups {
                s.add_membership(*g)?;
            }
            s.set_non_blocking(true)?;
            Ok(s)
        };
        Ok(Notifications {
            nft: subscribe(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES])?,
            route: subscribe(NETLINK_ROUTE, &[RTNLGRP_LINK, RTNLGRP_TC])?,
        })
    }

    /// Waits up to `timeout` for notifications; every one that arrived
    /// (empty on timeout).
    pub fn wait(&mut self, timeout: Duration) -> std::io::Result<Vec<Notice>> {
        let mut fds = [
            libc::pollfd {
                fd: self.nft.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.route.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of two pollfd for the call's duration.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut out = Vec::new();
        drain(&self.nft, &mut out, parse_nft)?;
        drain(&self.route, &mut out, parse_route)?;
        Ok(out)
    }
}

/// Reads every datagram waiting on `socket`, parsing each with `parse`.
fn drain(socket: &Socket, out: &mut Vec<Notice>, parse: fn(&[u8], &mut Vec<Notice>)) -> std::io::Result<()> {
    loop {
        let mut buf = Vec::with_capacity(1 << 16);
        match socket.recv(&mut buf, 0) {
            Ok(_) => parse(&buf, out),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            // ENOBUFS: the kernel dropped notifications for us.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(Notice::Lost),
            Err(e) => return Err(e),
        }
    }
}

/// nftables notifications: each message's table (its first attribute, type
/// 1, in every message that names one).
fn parse_nft(mut buf: &[u8], out: &mut Vec<Notice>) {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap_or_default());
        if len < 16 || len > buf.len() {
            return;
        }
        let msg = kind & 0xff;
        if kind >> 8 == NFNL_SUBSYS_NFTABLES && msg != NFT_MSG_NEWGEN && msg != NFT_MSG_TRACE {
            // nlmsghdr (16) + nfgenmsg (4), then attributes.
            if let Some(table) = first_string_attr(&buf[20.min(len)..len], 1) {
                out.push(Notice::Nft { table });
            }
        }
        buf = &buf[align(len).min(buf.len())..];
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attribute of type `want` among `attrs`, as a NUL-terminated string.
fn first_string_attr(mut attrs: &[u8], want: u16) -> Option<String> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == want {
            let value = &attrs[4..len];
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return String::from_utf8(value[..end].to_vec()).ok();
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

/// rtnetlink notifications: deleted links (by name) and tc objects.
fn parse_route(mut buf: &[u8], out: &mut Vec<Notice>) {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
        if len < 16 || len > buf.len() {
            return;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len])
            && let NetlinkPayload::InnerMessage(inner) = msg.payload
        {
            match inner {
                RouteNetlinkMessage::DelLink(link) => {
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    });
                    out.extend(name.map(|name| Notice::LinkGone { name }));
                }
                RouteNetlinkMessage::DelQueueDiscipline(tc)
                | RouteNetlinkMessage::DelTrafficClass(tc)
                | RouteNetlinkMessage::DelTrafficFilter(tc) => out.push(Notice::TcGone {
                    index: tc.header.index as u32,
                }),
                _ => {}
            }
        }
        buf = &buf[align(len).min(buf.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nft_message(msg: u16, table: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let value = format!("{table}\0");
        attr.extend(((4 + value.len()) as u16).to_ne_bytes());
        attr.extend(1u16.to_ne_bytes());
        attr.extend(value.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let len = 16 + 4 + attr.len();
        let mut m = Vec::new();
        m.extend((len as u32).to_ne_bytes());
        m.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend([1u8, 0, 0, 0]);
        m.extend(attr);
        m
    }

    #[test]
    fn nft_notifications_name_their_table_and_generations_are_skipped() {
        let mut buf = nft_message(2, "netsvc_firewall");
        buf.extend(nft_message(NFT_MSG_NEWGEN, "x"));
        buf.extend(nft_message(14, "filter"));
        let mut out = Vec::new();
        parse_nft(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                Notice::Nft {
                    table: "netsvc_firewall".into()
                },
                Notice::Nft { table: "filter".into() }
            ]
        );
    }
}
