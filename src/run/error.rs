//! Why a task failed, and whether trying again could help — said by the error where it is
//! made (`SinkError::is_transient`, `storage::is_transient` for DataFusion's), not worked out
//! from message text here. The cause is kept (`source`).

use tokio_util::sync::CancellationToken;

use crate::compile::clean_df_message;
use crate::failpoint;
use crate::sink::SinkError;
use crate::source::database::DbError;
use crate::source::postgres::PgError as PostgresError;

/// Why a task failed, and whether trying again could help.
#[derive(Debug)]
pub struct TaskError {
    /// What the report and the logs say (the cause's message, made readable).
    pub message: String,
    pub retryable: bool,
    /// Stopped by cancellation (or its timeout) before publishing anything.
    pub cancelled: bool,
    /// The error it comes from, when there is one.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl TaskError {
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError { message: message.into(), retryable: false, cancelled: false, source: None }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        TaskError { message: message.into(), retryable: true, cancelled: false, source: None }
    }

    pub fn cancelled() -> Self {
        TaskError { message: "cancelled".into(), retryable: false, cancelled: true, source: None }
    }

    fn caused_by(message: String, retryable: bool, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        TaskError { message, retryable, cancelled: false, source: Some(Box::new(source)) }
    }
}

impl From<datafusion::error::DataFusionError> for TaskError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // A database source's error inside a scan: its own message and retry rule.
        if let Some((message, retryable)) = DbError::inside(&e) {
            return TaskError::caused_by(message, retryable, e);
        }
        if let Some(h) = crate::source::http::HttpError::inside(&e) {
            let (message, retryable) = (h.to_string(), h.is_transient());
            return TaskError::caused_by(message, retryable, e);
        }
        let message = clean_df_message(&e.strip_backtrace());
        let retryable = crate::storage::is_transient(&e);
        TaskError::caused_by(message, retryable, e)
    }
}

impl From<DbError> for TaskError {
    fn from(e: DbError) -> Self {
        let retryable = e.is_transient();
        TaskError::caused_by(e.text(), retryable, e)
    }
}

impl From<PostgresError> for TaskError {
    fn from(e: PostgresError) -> Self {
        let retryable = e.is_transient();
        TaskError::caused_by(crate::source::postgres::error_text(&e), retryable, e)
    }
}

impl From<failpoint::Failure> for TaskError {
    fn from(f: failpoint::Failure) -> Self {
        match f {
            failpoint::Failure::Transient(m) => TaskError::transient(m),
            failpoint::Failure::Permanent(m) => TaskError::fatal(m),
        }
    }
}

impl From<SinkError> for TaskError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::DataFusion(e) => e.into(),
            SinkError::Failpoint(f) => f.into(),
            other => {
                let retryable = other.is_transient();
                TaskError::caused_by(other.to_string(), retryable, other)
            }
        }
    }
}

/// Await `fut` unless `cancel` fires first.
pub async fn cancellable<T, E: Into<TaskError>>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, TaskError> {
    tokio::select! {
        r = fut => r.map_err(Into::into),
        _ = cancel.cancelled() => Err(TaskError::cancelled()),
    }
}
