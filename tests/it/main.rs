//! Integration tests: the real proxy, real upstream servers, real clients, all on 127.0.0.1.

#![allow(unreachable_pub, missing_docs)]

mod support;
mod smoke;
