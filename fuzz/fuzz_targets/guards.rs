//! libFuzzer target over cookiegate's pure security decisions: path mapping
//! (`RoutePrefix::strip` + `UpstreamBase::uri`), session cookie extraction, the CSRF decision and
//! the client IP behind trusted proxies. The first input byte picks the check; the checks and the
//! byte decoding live in `../checks.rs`, shared with `tests/fuzz_props.rs`.

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::run(data));
