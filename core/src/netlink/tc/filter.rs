//! Filters: u32 with a class target, and the u32 match-all with a mirred
//! egress redirect (the bandwidth plugin's ingress-to-ifb hook).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption, TcActionOption, TcActionType,
    TcFilterU32, TcFilterU32Option, TcHandle, TcMirror, TcMirrorActionType, TcOption,
};

use super::u32::{self, U32Match};
use super::{ETH_P_ALL, ETH_P_IP, message};
use crate::netlink::{Request, Result, Rtnl};

/// A filter's `tcm_info`: priority in the upper 16 bits, the ethertype in
/// network order in the lower.
pub fn filter_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// A u32 filter at `parent` (qdisc handle, e.g. `1:`) matching all of
/// `matches` (IPv4, `protocol ip`) and sending hits to class `classid`.
pub fn u32_class_filter(ifindex: u32, parent: u32, prio: u16, matches: &[U32Match], classid: u32) -> Result<Request> {
    let sel = u32::selector(matches, true)?;
    let opts = vec![
        TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(classid))),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ];
    let msg = message(ifindex, parent, 0, filter_info(prio, ETH_P_IP), TcFilterU32::KIND, opts)?;
    let msg = RouteNetlinkMessage::NewTrafficFilter(msg);
    Ok(Request::new("add u32 filter", msg, NLM_F_CREATE | NLM_F_EXCL))
}

/// The mirred action "egress redirect to `target_ifindex`" (pure).
pub fn mirred_redirect(target_ifindex: u32) -> TcAction {
    let mut generic = TcActionGeneric::default();
    generic.action = TcActionType::Stolen;
    let mut mirror = TcMirror::default();
    mirror.generic = generic;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = target_ifindex;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
    ];
    action
}

/// `tc filter add dev IF parent P protocol all prio N u32 match u32 0 0
/// action mirred egress redirect dev TARGET` — with `parent` =
/// [`INGRESS_HANDLE`] this is the bandwidth plugin's ingress-to-ifb hook.
pub fn redirect_filter(ifindex: u32, parent: u32, prio: u16, target_ifindex: u32) -> Result<Request> {
    let sel = u32::selector(&[U32Match::All], true)?;
    let opts = vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![mirred_redirect(target_ifindex)])),
    ];
    let info = filter_info(prio, ETH_P_ALL);
    let msg = message(ifindex, parent, 0, info, TcFilterU32::KIND, opts)?;
    let msg = RouteNetlinkMessage::NewTrafficFilter(msg);
    Ok(Request::new("add redirect filter", msg, NLM_F_CREATE | NLM_F_EXCL))
}

/// Delete every filter of priority `prio` at `parent`; missing is `Ok`.
pub fn delete_filters(rtnl: &mut Rtnl, ifindex: u32, parent: u32, prio: u16, protocol: u16) -> Result<()> {
    let mut msg = message(ifindex, parent, 0, filter_info(prio, protocol), "", Vec::new())?;
    msg.attributes.clear();
    let msg = RouteNetlinkMessage::DelTrafficFilter(msg);
    rtnl.send(Request::new("delete filter", msg, 0).missing_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn mirred_action_shape() {
        let a = mirred_redirect(42);
        assert_eq!(a.attributes.len(), 2);
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        // contains the ifindex and the TCA_EGRESS_REDIR (1) code
        let hay = buf.windows(4).any(|w| w == 42u32.to_ne_bytes());
        assert!(hay);
    }
}
