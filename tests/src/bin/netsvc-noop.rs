//! `netsvc-noop`: see [`netsvc_tests::noop`].

fn main() {
    netsvc_core::cni::run(netsvc_tests::noop::Noop)
}
