//! netsvc-tests: the integration-test harness.
//!
//! Every test builds its own world out of throwaway network namespaces: a
//! [`TestNode`] (the "host" the plugins run on) and any number of
//! [`Container`]s. Nothing here touches the host's root namespace; every
//! namespace and state dir is removed on drop, including while a test panics.
//!
//! Traffic is proven with real packets: [`Netns::ping`], [`Netns::tcp_echo`],
//! [`Netns::udp_echo`] against an [`EchoServer`] that answers with an identity.
//! Every probe takes a timeout; readiness is polled ([`poll_until`]), never slept.
//! Firewall truth tables: [`matrix`] probes every pod pair on every port at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use netsvc_tests::{EchoServer, TestNode};
//!
//! # fn main() -> anyhow::Result<()> {
//! let node = TestNode::new()?; // needs root
//! let (a, b) = (node.container("a")?, node.container("b")?);
//! a.veth("eth0", &b, "eth0")?; // a plugin chain would do this instead
//! a.add_addr("eth0", "10.0.0.1/24")?;
//! b.add_addr("eth0", "10.0.0.2/24")?;
//! let t = Duration::from_secs(5);
//! assert!(a.ping("10.0.0.2".parse()?, 1, t));
//! let srv = EchoServer::start(&b, "0.0.0.0:8080".parse()?, "b")?;
//! assert_eq!(a.tcp_echo("10.0.0.2:8080".parse()?, "hi", t)?.identity, srv.identity());
//! # Ok(())
//! # }
//! ```

pub mod capture;
pub mod chain;
pub mod cluster;
mod echo;
pub mod etcd;
pub mod leftovers;
pub mod matrix;
mod names;
mod netns;
pub mod nft_forms;
mod node;
pub mod noop;
mod observe;
pub mod patterns;
mod ping;
pub mod podman;
mod process;
pub mod shaping;
pub mod store_writer;
mod sysctl;
pub mod timing;
pub mod wireguard;

pub use echo::{EchoReply, EchoServer};
pub use names::unique_name;
pub use netns::Netns;
pub use node::{Container, Daemon, STATE_DIR_ENV, TestNode};
pub use observe::{AddrInfo, LinkInfo};
pub use process::{DEFAULT_TIMEOUT, files_under, output_with_timeout, poll_until, with_stdin};
