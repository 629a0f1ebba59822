//! The smallest plugin on the core main loop: ADD passes prevResult through,
//! everything else succeeds. The `netsvc-noop` binary and the main-loop
//! benchmark both run it, to measure what the core itself costs.

use netsvc_core::cni::{Call, CniResult, Descriptor, Plugin, Result};

pub struct Noop;

impl Plugin for Noop {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            plugin_type: "netsvc-noop".into(),
            ..Default::default()
        }
    }
    fn add(&self, call: &Call) -> Result<CniResult> {
        Ok(call.prev_result()?.unwrap_or_default())
    }
    fn del(&self, _: &Call) -> Result<()> {
        Ok(())
    }
    fn check(&self, _: &Call) -> Result<()> {
        Ok(())
    }
    fn gc(&self, _: &Call) -> Result<()> {
        Ok(())
    }
    fn status(&self, _: &Call) -> Result<()> {
        Ok(())
    }
}
