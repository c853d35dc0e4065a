//! Integration tests: the real `weir` binary on real pipeline files, outputs read back
//! independently. One test binary (each one links DataFusion again).

mod common;

mod azure;
mod bad_rows;
mod cdc;
mod checks;
mod cli;
mod concurrency;
mod databases;
mod delta;
mod demo;
mod distributed;
mod drift;
mod errors;
mod examples;
mod extract;
mod fixtures;
mod http;
mod incremental;
mod kill;
mod layers;
mod lineage;
mod memory_store;
mod mysql;
mod oncall;
mod openlineage;
mod partitions;
mod policy;
mod postgres;
mod pushdown;
mod readers;
mod s3;
mod schema;
mod serve;
mod status_page;
mod table_loads;
mod types;
mod xml;
