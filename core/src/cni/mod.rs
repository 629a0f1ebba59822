//! The CNI protocol: environment, configuration, results of every version,
//! errors, and the plugin main loop.

pub mod config;
pub mod descriptor;
pub mod env;
pub mod error;
pub mod plugin;
pub mod result;
pub mod version;

pub use crate::inet::IpNet;
pub use config::{Attachment, NetConf, NetConfList};
pub use descriptor::{Descriptor, Feature};
pub use env::{CniArgs, Command, Env};
pub use error::{CODE_STATE_MISSING, Cause, CniError, Code, Result};
pub use plugin::{Call, PANIC_CODE, Plugin};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{LATEST, SUPPORTED_VERSIONS, Version};
