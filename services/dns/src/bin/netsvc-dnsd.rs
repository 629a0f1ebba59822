fn main() -> anyhow::Result<()> {
    netsvc_dns::daemon::main()
}
