//! `netsvc-noop`: see [`netsvc_tests::noop`].

#![forbid(unsafe_code)]

fn main() {
    netsvc_core::runtime::run(netsvc_tests::noop::Noop)
}
