//! Routes in the main table: add, delete (missing is `Ok`), list, default route.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{NetlinkError, Result, ok_if_missing};

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
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst, route.dst_len)
        .map_err(|e| invalid(route, &e.to_string()))?;
    if let Some(gw) = route.gateway {
        b = b.gateway(gw).map_err(|e| invalid(route, &e.to_string()))?;
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(oif) = route.oif {
        b = b.output_interface(oif);
    }
    if let Some(metric) = route.metric {
        b = b.priority(metric);
    }
    Ok(b.build())
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
pub async fn add(handle: &Handle, route: &Route) -> Result<()> {
    let msg = build(route)?;
    handle
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("add route {}/{}", route.dst, route.dst_len), e))
}

/// Delete `route` from the main table; missing is `Ok`. Matches whatever
/// protocol and scope the route was added with (as `ip route del` does):
/// routes other programs added are often `proto unspec`.
pub async fn delete(handle: &Handle, route: &Route) -> Result<()> {
    let mut msg = build(route)?;
    msg.header.protocol = RouteProtocol::Unspec;
    msg.header.scope = RouteScope::NoWhere;
    let r = handle
        .route()
        .del(msg)
        .execute()
        .await
        .map_err(|e| NetlinkError::request(format!("delete route {}/{}", route.dst, route.dst_len), e));
    ok_if_missing(r)
}

/// The main-table unicast routes of one family (`v6 = false` for IPv4).
pub async fn list(handle: &Handle, v6: bool) -> Result<Vec<Route>> {
    let builder = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(builder)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetlinkError::request("list routes", e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
        .filter_map(from_message)
        .collect())
}

/// Add the default route via `gateway` (on `oif` when given).
pub async fn add_default(handle: &Handle, gateway: IpAddr, oif: Option<u32>) -> Result<()> {
    add(handle, &Route::default_via(gateway, oif)).await
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
