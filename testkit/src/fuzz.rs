//! How long the property tests of every crate run: 512 cases each in the test suite, or
//! `PROPTEST_CASES` (say 100000) to fuzz longer by hand.

use proptest::test_runner::Config;

pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok());
    Config {
        cases: cases.unwrap_or(512),
        ..Config::default()
    }
}
