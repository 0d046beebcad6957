//! HTTP routes, one module per resource, merged into one router by [`crate::app`].

pub mod access;
pub mod alerts;
pub mod exports;
pub mod extract;
pub mod fhir;
pub mod households;
pub mod ingest;
pub mod log;
pub mod ops;
pub mod readings;
pub mod registry;
pub mod security;
pub mod shards;
pub mod status;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod ward;
pub mod web;
pub mod webhooks;
