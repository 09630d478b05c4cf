//! The HTTP API and the command line of `escrow-ledger`: wires the ledger, the projections
//! and the importer together. The only crate that knows HTTP.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod db;
pub mod demo;
pub mod http;
pub mod import;
pub mod project;
pub mod serve;
pub mod telemetry;
