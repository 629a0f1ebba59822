#![forbid(unsafe_code)]

fn main() {
    netsvc_core::runtime::run(netsvc_qos::Qos)
}
