//! One module per command.

pub mod bench;
pub mod config;
pub mod demo;
pub mod diagnose;
pub mod dlq;
pub mod lag;
pub mod offsets;
pub mod run;
pub mod topics;
