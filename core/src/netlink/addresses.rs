//! IPv4 and IPv6 addresses: add, list, delete (missing is `Ok`).

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::Handle;

use super::{NetlinkError, Result, ok_if_missing};

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

/// Add `address/prefix_len` to link `index`. Adding an address that is
/// already there is an error (`is_exists()`), like `ip addr add`.
pub async fn add(handle: &Handle, index: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    check_prefix(address, prefix_len)?;
    handle
        .address()
        .add(index, address, prefix_len)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("add address {address}/{prefix_len} to #{index}"), e))
}

async fn list_messages(handle: &Handle, index: Option<u32>) -> Result<Vec<AddressMessage>> {
    let mut req = handle.address().get();
    if let Some(index) = index {
        req = req.set_link_index_filter(index);
    }
    req.execute()
        .try_collect()
        .await
        .map_err(|e| NetlinkError::request("list addresses", e))
}

/// The addresses of link `index`, or of every link when `None`.
pub async fn list(handle: &Handle, index: Option<u32>) -> Result<Vec<Address>> {
    Ok(list_messages(handle, index)
        .await?
        .iter()
        .filter_map(from_message)
        .collect())
}

/// Delete `address/prefix_len` from link `index`; missing is `Ok`.
pub async fn delete(handle: &Handle, index: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    check_prefix(address, prefix_len)?;
    let msgs = match list_messages(handle, Some(index)).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    let want = Address {
        index,
        address,
        prefix_len,
    };
    for msg in msgs {
        if from_message(&msg) == Some(want) {
            let r = handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| NetlinkError::request(format!("delete address {address}/{prefix_len}"), e));
            return ok_if_missing(r);
        }
    }
    Ok(())
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
