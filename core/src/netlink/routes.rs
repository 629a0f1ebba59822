//! Routes in the main table: add, delete (missing is `Ok`), list, default route.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetlinkError, Request, Result, Rtnl};

/// A route: `dst/dst_len [via gateway] [dev oif] [metric]`. A route with no
/// gateway is a link-scope (on-link) route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
}

impl Route {
    /// The default route (`0.0.0.0/0` or `::/0`) via `gateway`.
    pub fn default_via(gateway: IpAddr, oif: Option<u32>) -> Route {
        let dst = match gateway {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Route {
            dst,
            dst_len: 0,
            gateway: Some(gateway),
            oif,
            metric: None,
        }
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }
}

fn invalid(route: &Route, why: &str) -> NetlinkError {
    NetlinkError::invalid("route", format!("{}/{}: {why}", route.dst, route.dst_len))
}

/// Build the netlink message for `route` (pure).
pub fn build(route: &Route) -> Result<RouteMessage> {
    if route.gateway.is_none() && route.oif.is_none() {
        return Err(invalid(route, "needs a gateway or a device"));
    }
    if let Some(gw) = route.gateway
        && gw.is_ipv4() != route.dst.is_ipv4()
    {
        return Err(invalid(route, "gateway family differs from destination"));
    }
    let max = if route.dst.is_ipv4() { 32 } else { 128 };
    if route.dst_len > max {
        return Err(invalid(route, &format!("prefix longer than {max}")));
    }
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(route.dst);
    msg.header.destination_prefix_length = route.dst_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    if route.dst_len > 0 {
        msg.attributes.push(RouteAttribute::Destination(address(route.dst)));
    }
    match route.gateway {
        Some(gw) => msg.attributes.push(RouteAttribute::Gateway(address(gw))),
        None => msg.header.scope = RouteScope::Link,
    }
    msg.attributes.extend(route.oif.map(RouteAttribute::Oif));
    msg.attributes.extend(route.metric.map(RouteAttribute::Priority));
    Ok(msg)
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn from_message(msg: &RouteMessage) -> Option<Route> {
    let family = msg.header.address_family;
    let mut route = Route {
        dst: match family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        },
        dst_len: msg.header.destination_prefix_length,
        gateway: None,
        oif: None,
        metric: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => route.dst = ip(a)?,
            RouteAttribute::Gateway(a) => route.gateway = ip(a),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Priority(p) => route.metric = Some(*p),
            _ => {}
        }
    }
    Some(route)
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Add `route` to the main table. An identical route already present is an
/// error (`is_exists()`).
pub fn add(rtnl: &mut Rtnl, route: &Route) -> Result<()> {
    rtnl.send(Request::new(
        format!("add route {}/{}", route.dst, route.dst_len),
        RouteNetlinkMessage::NewRoute(build(route)?),
        NLM_F_CREATE | NLM_F_EXCL,
    ))
}

/// Delete `route` from the main table; missing is `Ok`. Matches whatever
/// protocol and scope the route was added with (as `ip route del` does):
/// routes other programs added are often `proto unspec`.
pub fn delete(rtnl: &mut Rtnl, route: &Route) -> Result<()> {
    let mut msg = build(route)?;
    msg.header.protocol = RouteProtocol::Unspec;
    msg.header.scope = RouteScope::NoWhere;
    let op = format!("delete route {}/{}", route.dst, route.dst_len);
    rtnl.send(Request::new(op, RouteNetlinkMessage::DelRoute(msg), 0).missing_ok())
}

/// The main-table unicast routes of one family (`v6 = false` for IPv4).
pub fn list(rtnl: &mut Rtnl, v6: bool) -> Result<Vec<Route>> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    Ok(rtnl
        .dump("list routes", RouteNetlinkMessage::GetRoute(msg))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN => from_message(r),
            _ => None,
        })
        .collect())
}

/// Add the default route via `gateway` (on `oif` when given).
pub fn add_default(rtnl: &mut Rtnl, gateway: IpAddr, oif: Option<u32>) -> Result<()> {
    add(rtnl, &Route::default_via(gateway, oif))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_rejects_nonsense() {
        let r = Route {
            dst: "10.0.0.0".parse().unwrap(),
            dst_len: 8,
            gateway: None,
            oif: None,
            metric: None,
        };
        assert!(build(&r).is_err());
        let r = Route {
            gateway: Some("fd00::1".parse().unwrap()),
            ..r
        };
        assert!(build(&r).is_err());
        let r = Route {
            dst_len: 33,
            gateway: None,
            oif: Some(2),
            ..r
        };
        assert!(build(&r).is_err());
    }

    #[test]
    fn build_round_trips() {
        let r = Route {
            dst: "10.1.0.0".parse().unwrap(),
            dst_len: 16,
            gateway: Some("10.0.0.1".parse().unwrap()),
            oif: Some(3),
            metric: Some(100),
        };
        assert_eq!(from_message(&build(&r).unwrap()), Some(r));
        let d = Route::default_via("fd00::1".parse().unwrap(), None);
        assert!(d.is_default());
        assert_eq!(from_message(&build(&d).unwrap()), Some(d));
    }
}
