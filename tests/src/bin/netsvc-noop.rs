//! `netsvc-noop`: see [`netsvc_tests::noop`].

#![forbid(unsafe_code)]

fn main() {
    netsvc_core::cni::run(netsvc_tests::noop::Noop)
}
