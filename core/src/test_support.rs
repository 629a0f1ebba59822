//! What a unit test needs of the machine. A missing requirement fails the
//! test and names it, never lets it pass by doing nothing: CI runs the tests
//! as root with every system package of the design installed.

/// Fails the test unless it runs as root; `why` says what needs it.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root ({why}): run the tests as root, as CI does"
    );
}

/// Fails the test unless `program` is on PATH (from Debian's `package`).
pub fn require_program(program: &str, package: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    assert!(
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file()),
        "this test needs `{program}` on PATH (Debian package {package}): install it, as CI does"
    );
}
