#![forbid(unsafe_code)]

fn main() {
    netsvc_core::cni::run(netsvc_qos::Qos)
}
