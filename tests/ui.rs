//! Compile-time tests of `#[job_handler]`: what it accepts (`tests/ui/pass`) and, for each
//! mistake a user can make, the error it gives and where it points (`tests/ui/fail`, with
//! the expected compiler output committed next to each case as `.stderr`).
//!
//! After a deliberate change to a message, regenerate with
//! `TRYBUILD=overwrite cargo test --test ui` and read the diff of every `.stderr`.

#[test]
fn job_handler_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
