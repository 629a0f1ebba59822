#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    netsvc_dns::daemon::main()
}
