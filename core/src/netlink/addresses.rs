//! IPv4 and IPv6 addresses: add, list, delete (missing is `Ok`).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetlinkError, Request, Result, Rtnl};

/// An address on a link: `address/prefix_len` on link `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

fn check_prefix(address: IpAddr, prefix_len: u8) -> Result<()> {
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NetlinkError::invalid(
            "prefix_len",
            format!("{address}/{prefix_len}: prefix longer than {max}"),
        ));
    }
    Ok(())
}

fn from_message(msg: &AddressMessage) -> Option<Address> {
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 only sends IFA_ADDRESS.
    let mut local = None;
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => addr = Some(*a),
            _ => {}
        }
    }
    local.or(addr).map(|address| Address {
        index: msg.header.index,
        address,
        prefix_len: msg.header.prefix_len,
    })
}

/// The message naming `address/prefix_len` on link `index`, as `ip addr`
/// builds it (an IPv4 address is its own `IFA_LOCAL`, with its broadcast).
fn message(index: u32, address: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix_len;
    msg.header.family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.attributes.push(AddressAttribute::Address(address));
    msg.attributes.push(AddressAttribute::Local(address));
    if let IpAddr::V4(v4) = address
        && prefix_len < 31
    {
        let broadcast = Ipv4Addr::from(u32::MAX >> prefix_len | u32::from(v4));
        msg.attributes.push(AddressAttribute::Broadcast(broadcast));
    }
    msg
}

/// Add `address/prefix_len` to link `index`. Adding an address that is
/// already there is an error (`is_exists()`), like `ip addr add`.
pub fn add(rtnl: &mut Rtnl, index: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    check_prefix(address, prefix_len)?;
    rtnl.send(Request::new(
        format!("add address {address}/{prefix_len} to #{index}"),
        RouteNetlinkMessage::NewAddress(message(index, address, prefix_len)),
        NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// The addresses of link `index`, or of every link when `None`.
pub fn list(rtnl: &mut Rtnl, index: Option<u32>) -> Result<Vec<Address>> {
    Ok(rtnl
        .dump(
            "list addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => from_message(a),
            _ => None,
        })
        .filter(|a| index.is_none_or(|i| a.index == i))
        .collect())
}

/// Delete `address/prefix_len` from link `index`; missing is `Ok`.
pub fn delete(rtnl: &mut Rtnl, index: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    check_prefix(address, prefix_len)?;
    rtnl.send(
        Request::new(
            format!("delete address {address}/{prefix_len}"),
            RouteNetlinkMessage::DelAddress(message(index, address, prefix_len)),
            0,
        )
        .missing_ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds() {
        assert!(check_prefix("10.0.0.1".parse().unwrap(), 32).is_ok());
        assert!(check_prefix("10.0.0.1".parse().unwrap(), 33).is_err());
        assert!(check_prefix("fd00::1".parse().unwrap(), 128).is_ok());
        assert!(check_prefix("fd00::1".parse().unwrap(), 129).is_err());
    }
}
