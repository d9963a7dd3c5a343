//! One module per command.

pub mod bench;
pub mod config;
pub mod consume;
pub mod demo;
pub mod diagnose;
pub mod dlq;
pub mod lag;
pub mod offsets;
pub mod produce;
pub mod run;
pub mod topics;
