//! Naming the first malformed row behind a failed task: the strict readers fail with a message
//! that says little; the extracts the task reads are read again with the tolerant reader, which
//! names file, line, column and value.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use futures::StreamExt;
use petgraph::graph::NodeIndex;

use crate::compile::{Plan, TaskKind};
use crate::source::files::tolerant::{BadRow, BadRows, partitions};
use crate::spec::FileFormat;

/// The first malformed row in the CSV and JSON files that task `i` reads (through extracts
/// with `bad_rows: fail`), found by reading them again with the tolerant reader; with the
/// extract it belongs to.
pub async fn first_bad_row(
    plan: &Plan,
    i: NodeIndex,
    pass: &super::incremental::PassRef,
) -> Option<(NodeIndex, BadRow)> {
    let mut nodes: Vec<NodeIndex> = plan.ancestors(i).into_iter().chain(std::iter::once(i)).collect();
    nodes.sort_by_key(|n| plan.order.iter().position(|o| o == n));
    for j in nodes {
        let node = plan.task(j);
        let TaskKind::Extract(e) = &node.kind else { continue };
        let Some(f) = e.files() else { continue };
        // XML's reader names its first malformed record in its own error.
        if matches!(f.format.kind, FileFormat::Parquet | FileFormat::Xml) {
            continue;
        }
        let files = pass.inputs.get(&j).map(|inp| inp.files.clone()).unwrap_or_else(|| f.files.clone());
        // Each file with its own columns (see `drift`).
        let groups = match crate::source::files::drift::layout(
            &f.store,
            &f.format,
            &f.read_schema,
            &files,
            &f.files,
            None,
            pass.full_refresh,
        )
        .await
        {
            Ok(Some(groups)) => groups.into_iter().map(|g| (g.files, g.read_schema)).collect(),
            Ok(None) => vec![(files, f.read_schema.clone())],
            Err(_) => continue,
        };
        for (files, schema) in groups {
            let bad = BadRows::new(true, false);
            let parts = partitions(
                f.store.object_store.clone(),
                &f.store.root,
                &files,
                &f.format,
                schema,
                &node.schema,
                bad.clone(),
            );
            for part in parts {
                let mut stream = part.execute(Arc::new(TaskContext::default()));
                while let Some(r) = stream.next().await {
                    if r.is_err() {
                        break;
                    }
                }
                if let Some(row) = bad.take().into_iter().next() {
                    return Some((j, row));
                }
            }
        }
    }
    None
}
