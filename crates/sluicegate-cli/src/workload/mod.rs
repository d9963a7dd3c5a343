//! What the demo, the bench and the library's reliability tests share: the records they write
//! ([`records`]), the ledgers that count what a consumer finished ([`ledger`]), the loop
//! that reads a topic back ([`read_back`]), and the process's resident memory ([`mem`]).
//!
//! The library's tests use these files as they are (`crates/sluicegate/tests/common/mod.rs`
//! includes them with `#[path]`), so they depend on nothing of this crate, and their unit tests
//! live in [`tests`] rather than in the files: declared here, they run once, with the CLI's.

// Some parts serve only the library's tests.
#[allow(dead_code)]
pub mod ledger;
pub mod mem;
#[allow(dead_code)]
pub mod read_back;
#[allow(dead_code)]
pub mod records;

#[cfg(test)]
mod tests;
