//! # sluice-connectors
//!
//! Where data comes from and goes to. Each connector lives in its own folder; only its
//! config and constructor are public. Sources implement [`sluice_core::Source`], sinks
//! [`sluice_core::Sink`], and every failure is a [`sluice_core::ConnectorError`] with
//! its class.
//!
//! - [`http`]: the HTTP API source (auth, pagination, incremental cursors, rate limits).
//! - [`sql`]: PostgreSQL, MySQL/MariaDB and SQLite sinks with idempotent upserts and a
//!   batch ledger, and the incremental SQL source.

pub mod file;
pub mod http;
pub mod http_sink;
pub mod sql;
mod watermark;
