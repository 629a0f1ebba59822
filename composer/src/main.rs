#![forbid(unsafe_code)]

fn main() {
    std::process::exit(netsvc_composer::cli::main());
}
