//! Tables the run registers besides extracts' (see `source`): fused transforms, planned into
//! their consumer's query, and the session states they plan with.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType, ViewTable};
use datafusion::error::Result;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

/// A fused transform: its query, planned into its consumer's physical plan when scanned.
///
/// DataFusion's own `ViewTable` has its logical plan inlined into every query that names it,
/// which makes a chain of N fused transforms cost O(N²) to plan. This provider keeps the plan
/// to itself; the projection and filters of the consumer are still pushed into it at scan.
#[derive(Debug)]
pub struct FusedView {
    view: ViewTable,
    /// The run's state without physical optimizer rules (see [`unoptimized`]); weak, as the
    /// state's catalog holds this view.
    planning: std::sync::Weak<SessionState>,
}

impl FusedView {
    pub fn new(plan: datafusion::logical_expr::LogicalPlan, sql: String, planning: &Arc<SessionState>) -> Self {
        FusedView { view: ViewTable::new(plan, Some(sql)), planning: Arc::downgrade(planning) }
    }
}

/// A state like `state` but with `config`, sharing its catalog (the tables other tasks
/// registered), functions and runtime.
pub fn derive_state(state: SessionState, mut config: SessionConfig) -> SessionStateBuilder {
    // Without this, building the state replaces the catalog with a new, empty default one.
    config.options_mut().catalog.create_default_catalog_and_schema = false;
    SessionStateBuilder::new_from_existing(state).with_config(config)
}

/// `state` without physical optimizer rules. Fused views plan their part of a query with it
/// (made once per run: building a state registers every function again).
pub fn unoptimized(state: &SessionState) -> SessionState {
    derive_state(state.clone(), state.config().clone()).with_physical_optimizer_rules(vec![]).build()
}

#[async_trait]
impl TableProvider for FusedView {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.view.get_table_definition()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.view.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The view's plan is made without the physical optimizer: the query that reads it
        // optimizes the whole tree, this view's part included, once. Optimizing at every level
        // too would cost O(n²) for a chain of n fused queries.
        if let Some(unoptimized) = self.planning.upgrade() {
            return self.view.scan(unoptimized.as_ref(), projection, filters, limit).await;
        }
        self.view.scan(state, projection, filters, limit).await
    }
}
