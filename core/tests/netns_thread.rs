//! The namespace helper runs work in the target namespace and leaves the
//! calling thread where it was — also when the work panics.

mod common;

use common::{TestNs, ns_inode, thread_ns_inode};
use netsvc_core::netns::{self, NetnsError};

#[test]
fn sync_work_runs_inside_and_caller_stays_home() {
    let ns = TestNs::new("nst");
    let before = thread_ns_inode();
    let inside = netns::run_sync(&ns.path, thread_ns_inode).unwrap();
    assert_eq!(inside, ns_inode(&ns.path));
    assert_ne!(inside, before);
    assert_eq!(thread_ns_inode(), before);
}

#[test]
fn panic_is_an_error_and_caller_stays_home() {
    let ns = TestNs::new("nsp");
    let before = thread_ns_inode();
    let err = netns::run_sync(&ns.path, || -> u32 { panic!("boom inside") }).unwrap_err();
    match &err {
        NetnsError::Panicked { message, .. } => assert!(message.contains("boom inside")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(thread_ns_inode(), before);
    let cni: netsvc_core::cni::error::CniError = err.into();
    assert_eq!(cni.code, netns::PANIC_CODE);

    // work with a netlink socket panicking, too
    let err = netsvc_core::netlink::within(&ns.path, |_| -> netsvc_core::netlink::Result<()> {
        panic!("socket boom")
    })
    .unwrap_err();
    assert!(
        matches!(&err, netsvc_core::netlink::NetlinkError::Netns(NetnsError::Panicked { message, .. }) if message.contains("socket boom")),
        "{err:?}"
    );
    assert_eq!(thread_ns_inode(), before);

    // the namespace is still usable afterwards
    let inside = netns::run_sync(&ns.path, thread_ns_inode).unwrap();
    assert_eq!(inside, ns_inode(&ns.path));
}

#[test]
fn socket_is_opened_inside_the_namespace() {
    let ns = TestNs::new("nsh");
    ns.exec(&["ip", "link", "add", "probe0", "type", "ifb"]);
    let names = netsvc_core::netlink::within(&ns.path, netsvc_core::netlink::links::list_names).unwrap();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["lo".to_string(), "probe0".to_string()]);
}

#[test]
fn missing_namespace_is_not_found() {
    let err = netns::run_sync("/var/run/netns/nsvc-does-not-exist", || ()).unwrap_err();
    assert!(err.is_not_found());
    let cni: netsvc_core::cni::error::CniError = err.into();
    assert_eq!(cni.code, 3);
}

#[test]
fn a_file_that_is_not_a_netns_is_invalid() {
    let err = netns::run_sync("/proc/self/status", || ()).unwrap_err();
    assert!(matches!(err, NetnsError::Enter { .. }), "{err:?}");
    let cni: netsvc_core::cni::error::CniError = err.into();
    assert_eq!(cni.code, 7);
}
