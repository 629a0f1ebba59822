#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(netsvc_vpn::keeper::SUBCOMMAND) {
        netsvc_core::runtime::init_logging();
        std::process::exit(netsvc_vpn::keeper::run(&args[1..]));
    }
    netsvc_core::runtime::run(netsvc_vpn::Vpn)
}
