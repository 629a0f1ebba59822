//! The CNI protocol: environment, configuration, results of every version,
//! errors, and the plugin main loop.

pub mod error;

pub use error::{CniError, Code, Result};
