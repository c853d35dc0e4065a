//! weir: declarative data pipelines. YAML pipeline files are parsed (`spec`), compiled into
//! a DAG (`compile`), run (`run`) with DataFusion over object stores (`storage`), written
//! (`sink`) and recorded (`state`). A module imports only from the layers below it (the order
//! is in `docs/design/connectors.md`; `tests/it/layers.rs` keeps it). `serve` is the
//! daemon that schedules runs and watches them (`metrics`, webhooks, HTTP).

pub mod cli;
pub mod compile;
pub mod diag;
pub mod failpoint;
pub mod metrics;
pub mod openlineage;
pub mod run;
pub mod secrets;
pub mod serve;
pub mod sink;
pub mod source;
pub mod spec;
pub mod state;
pub mod storage;
pub mod types;
