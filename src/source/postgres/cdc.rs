//! Change data capture from PostgreSQL: a table's inserts, updates and deletes, read from a
//! logical replication slot (`pgoutput`) through the SQL interface, exactly once.
//!
//! - **The slot and the publication.** weir creates the slot (`pg_create_logical_replication_slot`)
//!   and, unless one is named, a publication of the table, on the first run. The slot keeps
//!   every change the loads downstream have not committed yet.
//! - **Reading never consumes.** Changes are read with `pg_logical_slot_peek_binary_changes`
//!   (binary values, decoded by the snapshot's decoder), which leaves the slot where it is. The
//!   position read up to (the end of the last transaction's commit record) is committed **with
//!   the load's data**, like a watermark; the slot is moved to it
//!   (`pg_replication_slot_advance`) only after every load fed by the extract has committed,
//!   at the end of the run. A run killed at any point reads the same changes again, and drops
//!   the transactions its output already holds (those that committed before the committed
//!   position).
//! - **The first run** (no committed position, or `--full-refresh`) reads the table in one
//!   snapshot and then the changes in the slot, dropping every transaction that snapshot
//!   already saw (by transaction id, `pg_current_snapshot()`): each change is in the output
//!   once, whether it committed before the snapshot (in the table read) or after it (in the
//!   stream). This needs no replication connection and also holds when the slot existed
//!   before the snapshot (a first run that was killed, a state that was deleted).
//! - **Rows.** Each change is a row of the table's columns plus `_op` (`insert`, `update`,
//!   `delete`) and `_lsn` (the change's WAL position: for one key, changes come in the order
//!   they were made, since a row is locked until its transaction ends). Rows of the initial
//!   snapshot are `insert`s with `_lsn` 0. A delete carries the key columns (all columns with
//!   `REPLICA IDENTITY FULL`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Int64Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, pin_mut};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::pgoutput::{self, Message, Value};
use super::{Builders, PgError, PgPlan, PgStore, Raw, Relation, quote_ident, quote_table};

/// The column holding a change's kind.
pub const OP: &str = "_op";
/// The column holding a change's WAL position.
pub const LSN: &str = "_lsn";

/// `incremental: { cdc: … }` as compile resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcPlan {
    pub slot: String,
    pub publication: String,
    /// weir creates (and `weir cdc drop` drops) the publication: none was named.
    pub own_publication: bool,
    /// Raise an alert when the slot holds more WAL than this, in bytes.
    pub lag_alert: Option<u64>,
    /// `logical_decoding_work_mem` for the session that reads the changes, in bytes.
    pub decoding_memory: u64,
}

impl CdcPlan {
    /// `lag_alert` when the pipeline does not say: 1 GiB.
    pub const DEFAULT_LAG_ALERT: u64 = 1 << 30;
    /// `decoding_memory` when the pipeline does not say: 512 MiB.
    pub const DEFAULT_DECODING_MEMORY: u64 = 512 << 20;

    /// The plan of `c`, with its sizes parsed (`None`: the default).
    pub fn new(c: &crate::spec::Cdc, lag_alert: Option<u64>, decoding_memory: Option<u64>) -> CdcPlan {
        CdcPlan {
            slot: c.slot.clone(),
            publication: c.publication.clone().unwrap_or_else(|| c.slot.clone()),
            own_publication: c.publication.is_none(),
            lag_alert: Some(lag_alert.unwrap_or(Self::DEFAULT_LAG_ALERT)),
            decoding_memory: decoding_memory.unwrap_or(Self::DEFAULT_DECODING_MEMORY),
        }
    }
}

/// The columns a change data capture extract adds to the table's.
pub fn change_fields() -> [Field; 2] {
    [Field::new(OP, DataType::Utf8, false), Field::new(LSN, DataType::Int64, false)]
}

/// Whether `name` can name a slot or publication weir makes: lower-case letters, digits and
/// underscores, at most 63 bytes (PostgreSQL's rule for slots).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn cdc_err(message: impl Into<String>, help: impl Into<String>) -> PgError {
    PgError::Cdc { message: message.into(), help: Some(help.into()) }
}

fn table_of(plan: &PgPlan) -> Result<&str, PgError> {
    match &plan.relation {
        Relation::Table(t) => Ok(t),
        Relation::Query(_) => {
            Err(PgError::Cdc { message: "change data capture reads a `table`, not a `query`".into(), help: None })
        }
    }
}

/// Everything change data capture needs from the server, checked without changing anything:
/// `wal_level = logical`, a role allowed to replicate, a table whose changes identify their
/// rows (a primary key or `REPLICA IDENTITY FULL`, and FULL when a column can be TOASTed,
/// since an unchanged TOASTed value is otherwise not sent), and, when a publication is named
/// or already exists, that it publishes the table.
pub async fn check(store: &PgStore, table: &str, cdc: &CdcPlan) -> Result<(), PgError> {
    let client = store.connect().await?;
    let version: String = client.query_one("SHOW server_version_num", &[]).await?.get(0);
    if version.parse::<u32>().is_ok_and(|v| v < 140_000) {
        return Err(cdc_err(
            format!(
                "{} runs PostgreSQL {version}: change data capture needs 14 or later (binary pgoutput)",
                store.display_url
            ),
            "read the table with a `watermark` instead",
        ));
    }
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal_level != "logical" {
        return Err(cdc_err(
            format!("replication is not enabled on {}: `wal_level` is `{wal_level}`", store.display_url),
            "change data capture needs `wal_level = logical` in postgresql.conf (and a restart of the server)",
        ));
    }
    let can: bool = client
        // Amazon RDS grants the right through membership of `rds_replication` instead.
        .query_one(
            "SELECT rolsuper OR rolreplication OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'rds_replication' \
               AND pg_has_role(current_user, r.oid, 'member')) FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if !can {
        let user: String = client.query_one("SELECT current_user::text", &[]).await?.get(0);
        return Err(cdc_err(
            format!("user `{user}` may not read replication slots"),
            format!(
                "ALTER ROLE {} REPLICATION (on Amazon RDS: GRANT rds_replication TO {})",
                quote_ident(&user),
                quote_ident(&user)
            ),
        ));
    }
    let quoted = quote_table(table);
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
                      OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&quoted],
        )
        .await?
    else {
        return Err(PgError::NoTable { table: table.to_string(), url: store.display_url.clone(), known: Vec::new() });
    };
    let oid: u32 = row.get(0);
    let kind: String = row.get(1);
    let identity: String = row.get(2);
    let has_pk: bool = row.get(3);
    let owner: bool = row.get(4);
    if kind != "r" && kind != "p" {
        return Err(cdc_err(
            format!("`{table}` is not a table: only tables publish their changes"),
            "read a view with a watermark instead",
        ));
    }
    let alter = format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL");
    match identity.as_str() {
        "n" => {
            return Err(cdc_err(
                format!(
                    "`{table}` has REPLICA IDENTITY NOTHING: its updates and deletes do not say which row they change"
                ),
                alter,
            ));
        }
        "d" if !has_pk => {
            return Err(cdc_err(
                format!(
                    "`{table}` has no primary key: its updates and deletes would not say which row they change (and publishing it would make them fail)"
                ),
                format!("add a primary key, or {alter}"),
            ));
        }
        "f" => {}
        _ => {
            let toastable: Vec<String> = client
                .query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attstorage <> 'p' ORDER BY attnum",
                    &[&oid],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !toastable.is_empty() {
                return Err(cdc_err(
                    format!(
                        "`{table}` has column{} {} whose large values are stored apart (TOAST) and not sent with an update that leaves them unchanged",
                        if toastable.len() == 1 { "" } else { "s" },
                        toastable.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                    ),
                    format!("{alter} (every change then carries the whole old row)"),
                ));
            }
        }
    }
    let publication = client
        .query_opt(
            "SELECT p.pubinsert AND p.pubupdate AND p.pubdelete, \
                    EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname \
                            AND to_regclass(format('%I.%I', t.schemaname, t.tablename)) = $2::oid::regclass) \
             FROM pg_publication p WHERE p.pubname = $1",
            &[&cdc.publication, &oid],
        )
        .await?;
    match publication {
        Some(row) => {
            let (all_ops, has_table): (bool, bool) = (row.get(0), row.get(1));
            if !has_table {
                return Err(cdc_err(
                    format!("publication `{}` does not publish `{table}`", cdc.publication),
                    format!("ALTER PUBLICATION {} ADD TABLE {quoted}", quote_ident(&cdc.publication)),
                ));
            }
            if !all_ops {
                return Err(cdc_err(
                    format!("publication `{}` does not publish every insert, update and delete", cdc.publication),
                    format!(
                        "ALTER PUBLICATION {} SET (publish = 'insert, update, delete')",
                        quote_ident(&cdc.publication)
                    ),
                ));
            }
        }
        None if !cdc.own_publication => {
            return Err(cdc_err(
                format!("publication `{}` does not exist", cdc.publication),
                format!(
                    "CREATE PUBLICATION {} FOR TABLE {quoted}, or leave `publication` out for weir to create one",
                    quote_ident(&cdc.publication)
                ),
            ));
        }
        None if !owner => {
            return Err(cdc_err(
                format!(
                    "weir would create publication `{}`, but only the owner of `{table}` may publish it",
                    cdc.publication
                ),
                format!(
                    "as the owner: CREATE PUBLICATION {} FOR TABLE {quoted}, and name it in `publication`",
                    quote_ident(&cdc.publication)
                ),
            ));
        }
        None => {}
    }
    let slot = client
        .query_opt("SELECT slot_type, coalesce(plugin::text, ''), database::text FROM pg_replication_slots WHERE slot_name = $1", &[&cdc.slot])
        .await?;
    if let Some(row) = slot {
        let (kind, plugin, database): (String, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
        let here: String = client.query_one("SELECT current_database()::text", &[]).await?.get(0);
        if kind != "logical" || plugin != "pgoutput" || database.as_deref() != Some(here.as_str()) {
            return Err(cdc_err(
                format!(
                    "slot `{}` exists but is a {kind} slot{} of database `{}`, not weir's",
                    cdc.slot,
                    if plugin.is_empty() { String::new() } else { format!(" for `{plugin}`") },
                    database.unwrap_or_default()
                ),
                "choose another `slot` name",
            ));
        }
    }
    Ok(())
}

/// Make sure the publication and the slot exist (creating them on the first run); the slot's
/// confirmed position.
pub async fn prepare(plan: &PgPlan, cdc: &CdcPlan) -> Result<u64, PgError> {
    let table = table_of(plan)?;
    let client = plan.store.connect().await?;
    if cdc.own_publication
        && client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&cdc.publication]).await?.is_none()
    {
        let sql = format!("CREATE PUBLICATION {} FOR TABLE {}", quote_ident(&cdc.publication), quote_table(table));
        if let Err(e) = client.batch_execute(&sql).await
            && e.as_db_error().is_none_or(|d| d.code().code() != "42710")
        {
            return Err(e.into());
        }
    }
    if let Some(lsn) = confirmed(&client, &cdc.slot).await? {
        return Ok(lsn);
    }
    let created = client
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&cdc.slot])
        .await;
    match created {
        Ok(_) => {}
        // Created meanwhile by another run: use it.
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42710") => {}
        Err(e) => return Err(e.into()),
    }
    confirmed(&client, &cdc.slot).await?.ok_or_else(|| cdc_err(format!("slot `{}` vanished", cdc.slot), "run again"))
}

async fn confirmed(client: &Client, slot: &str) -> Result<Option<u64>, PgError> {
    let row = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)).and_then(|s| pgoutput::parse_lsn(&s)))
}

/// Move the slot to `to` when it is behind (never back); the WAL it still holds, in bytes.
pub async fn advance(store: &PgStore, slot: &str, to: Option<u64>) -> Result<Option<u64>, PgError> {
    let client = store.connect().await?;
    if let (Some(to), Some(at)) = (to, confirmed(&client, slot).await?)
        && at < to
    {
        client
            .execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&slot, &pgoutput::lsn_text(to)])
            .await?;
    }
    lag(&client, slot).await
}

async fn lag(client: &Client, slot: &str) -> Result<Option<u64>, PgError> {
    let row = client
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<f64>>(0)).map(|b| b.max(0.0) as u64))
}

/// The slot's confirmed position and the WAL it holds (bytes); `None` when there is no slot.
pub async fn status(store: &PgStore, slot: &str) -> Result<Option<(u64, u64)>, PgError> {
    let client = store.connect().await?;
    match confirmed(&client, slot).await? {
        Some(at) => Ok(Some((at, lag(&client, slot).await?.unwrap_or(0)))),
        None => Ok(None),
    }
}

/// Drop the slot, and the publication when weir created it. Says what existed.
pub async fn drop(store: &PgStore, cdc: &CdcPlan) -> Result<(bool, bool), PgError> {
    let client = store.connect().await?;
    let slot =
        client.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&cdc.slot]).await?.is_some();
    if slot {
        client.execute("SELECT pg_drop_replication_slot($1)", &[&cdc.slot]).await?;
    }
    let mut publication = false;
    if cdc.own_publication {
        publication =
            client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&cdc.publication]).await?.is_some();
        client.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&cdc.publication))).await?;
    }
    Ok((slot, publication))
}

/// The transactions a snapshot sees, from `pg_current_snapshot()` (`xmin:xmax:xip,…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut it = text.split(':');
        let _xmin: u64 = it.next()?.parse().ok()?;
        let xmax: u64 = it.next()?.parse().ok()?;
        let in_progress = match it.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        Some(Snapshot { xmax, in_progress })
    }

    /// Whether the transaction with the 32-bit id `xid` (as logical decoding gives it), now
    /// committed, had committed when the snapshot was taken.
    pub fn saw(&self, xid: u32) -> bool {
        // Compare modulo 2^32, as PostgreSQL does: ids within 2^31 of xmax.
        let d = xid.wrapping_sub(self.xmax as u32) as i32;
        if d >= 0 {
            return false;
        }
        let full = self.xmax.wrapping_sub((-(d as i64)) as u64);
        !self.in_progress.contains(&full)
    }
}

/// What a read of the changes found.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The next position: the end of the last transaction read (or passed over), or where
    /// the WAL ended when the read started, whichever is later.
    pub end: Option<u64>,
    /// Rows of changes emitted.
    pub changes: u64,
    /// Transactions emitted.
    pub transactions: u64,
    /// Transactions passed over: committed before the position, or seen by the snapshot.
    pub skipped: u64,
}

/// The changes in the slot since a position, as one DataFusion partition.
#[derive(Debug)]
pub struct Changes {
    pub plan: Arc<PgPlan>,
    pub cdc: CdcPlan,
    /// Transactions whose commit record starts before this are in the output already.
    pub after: Option<u64>,
    /// The first run's snapshot: the transactions it saw are in the output already.
    pub snapshot: Option<Snapshot>,
    /// Wait until the server's WAL is flushed this far (the snapshot's end) before reading,
    /// so that every transaction the snapshot saw is in the stream to be dropped.
    pub flushed_to: Option<u64>,
    pub progress: Arc<Mutex<Progress>>,
    schema: SchemaRef,
}

impl Changes {
    pub fn new(
        plan: Arc<PgPlan>,
        cdc: CdcPlan,
        after: Option<u64>,
        snapshot: Option<Snapshot>,
        flushed_to: Option<u64>,
    ) -> Changes {
        let schema = plan.schema();
        Changes { plan, cdc, after, snapshot, flushed_to, progress: Arc::default(), schema }
    }
}

impl PartitionStream for Changes {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let plan = self.plan.clone();
        let cdc = self.cdc.clone();
        let (after, snapshot, flushed_to) = (self.after, self.snapshot.clone(), self.flushed_to);
        let schema = self.schema.clone();
        let progress = self.progress.clone();
        builder.spawn(async move {
            let emit = |batch| {
                let tx = tx.clone();
                async move {
                    tx.send(Ok(batch))
                        .await
                        .map_err(|_| PgError::Value { column: String::new(), message: "stopped".into() })
                }
            };
            read_changes(&plan, &cdc, after, snapshot.as_ref(), flushed_to, &schema, &progress, emit)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        builder.build()
    }
}

/// The column of `relation` each of the plan's columns is in, checked against the plan.
fn columns_of(plan: &PgPlan, rel: &pgoutput::Relation) -> Result<Vec<usize>, PgError> {
    plan.columns
        .iter()
        .map(|c| {
            let (k, rc) = rel.columns.iter().enumerate().find(|(_, rc)| rc.name == c.name).ok_or_else(|| {
                PgError::Value {
                    column: c.name.clone(),
                    message: format!(
                        "is no longer in `{}.{}` (dropped or renamed since `weir validate`): check the pipeline, then `weir run --full-refresh`",
                        rel.namespace, rel.name
                    ),
                }
            })?;
            if rc.type_oid != c.pg_type.oid() {
                let now = Type::from_oid(rc.type_oid).map_or_else(|| format!("type {}", rc.type_oid), |t| t.name().to_string());
                return Err(PgError::Value {
                    column: c.name.clone(),
                    message: format!(
                        "changed type from {} to {now} in the change stream: check the pipeline, then `weir run --full-refresh`",
                        c.pg_name
                    ),
                });
            }
            Ok(k)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn read_changes<F, Fut>(
    plan: &PgPlan,
    cdc: &CdcPlan,
    after: Option<u64>,
    snapshot: Option<&Snapshot>,
    flushed_to: Option<u64>,
    schema: &SchemaRef,
    progress: &Mutex<Progress>,
    emit: F,
) -> Result<(), PgError>
where
    F: Fn(datafusion::arrow::record_batch::RecordBatch) -> Fut,
    Fut: std::future::Future<Output = Result<(), PgError>>,
{
    let client = plan.store.connect().await?;
    // Every transaction that committed before this read (and, on a first run, every one its
    // snapshot saw) is read: wait until the WAL is flushed to where it ends now.
    let now: String = client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    let now = pgoutput::parse_lsn(&now).unwrap_or(0);
    wait_flushed(&client, flushed_to.map_or(now, |f| f.max(now))).await?;
    let sql = format!(
        "COPY (SELECT lsn, data FROM pg_logical_slot_peek_binary_changes('{}', NULL, NULL, 'proto_version', '1', 'publication_names', '{}', 'binary', 'true')) TO STDOUT (FORMAT binary)",
        cdc.slot, cdc.publication
    );
    // The table and its partitions: a named publication may publish other tables too.
    let ours: std::collections::HashSet<u32> = client
        .query(
            "SELECT to_regclass($1)::oid UNION SELECT relid::oid FROM pg_partition_tree(to_regclass($1))",
            &[&quote_table(table_of(plan)?)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Decoding keeps each transaction in memory up to this much before spilling it to disk
    // (the server's default, 64MB, spills a million-row UPDATE: 4.5 s instead of 2.9 s).
    client
        .batch_execute(&format!("SET logical_decoding_work_mem = '{}kB'", (cdc.decoding_memory / 1024).max(64)))
        .await?;
    let stream = client.copy_out(&sql).await?;
    let rows = tokio_postgres::binary_copy::BinaryCopyOutStream::new(stream, &[Type::PG_LSN, Type::BYTEA]);
    pin_mut!(rows);
    let n = plan.columns.len();
    let mut builders = Builders::new(schema);
    let mut relations: std::collections::HashMap<u32, (Vec<usize>, String)> = std::collections::HashMap::new();
    // Within a transaction: whether it is passed over.
    let mut skip = false;
    let mut p = Progress::default();
    while let Some(row) = rows.next().await {
        let row = row?;
        let lsn: Raw<'_> = row.try_get(0)?;
        let data: Raw<'_> = row.try_get(1)?;
        let lsn = lsn.0.and_then(|r| r.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        let data = data.0.unwrap_or_default();
        let message = pgoutput::parse(data).map_err(|m| PgError::Value { column: String::new(), message: m })?;
        let (op, tuple, old) = match message {
            Message::Begin { final_lsn, xid } => {
                skip = after.is_some_and(|a| final_lsn < a) || snapshot.is_some_and(|s| s.saw(xid));
                continue;
            }
            Message::Commit { end_lsn, .. } => {
                p.end = Some(p.end.map_or(end_lsn, |e| e.max(end_lsn)));
                if skip {
                    p.skipped += 1
                } else {
                    p.transactions += 1
                }
                skip = false;
                continue;
            }
            Message::Relation(rel) => {
                if ours.contains(&rel.id) {
                    let cols = columns_of(plan, &rel)?;
                    relations.insert(rel.id, (cols, format!("{}.{}", rel.namespace, rel.name)));
                }
                continue;
            }
            Message::Other(_) => continue,
            _ if skip => continue,
            Message::Truncate { relations: truncated } if !truncated.iter().any(|r| ours.contains(r)) => continue,
            Message::Insert { relation, .. } | Message::Update { relation, .. } | Message::Delete { relation, .. }
                if !ours.contains(&relation) =>
            {
                continue;
            }
            Message::Truncate { .. } => {
                return Err(cdc_err(
                    format!(
                        "`{}` was truncated (at {}): a truncate is not a change of rows",
                        table_of(plan)?,
                        pgoutput::lsn_text(lsn)
                    ),
                    "reload the table with `weir run --full-refresh` (its snapshot includes the truncate)",
                ));
            }
            Message::Insert { relation, new } => ("insert", (relation, new), None),
            Message::Update { relation, old, new } => ("update", (relation, new), old),
            Message::Delete { relation, old } => ("delete", (relation, old), None),
        };
        let (relation, values) = tuple;
        let (cols, table) = relations.get(&relation).ok_or_else(|| PgError::Value {
            column: String::new(),
            message: format!("a change of relation {relation} came before its description"),
        })?;
        for (i, &k) in cols.iter().enumerate() {
            let c = &plan.columns[i];
            let mut v = values.get(k).copied().unwrap_or(Value::Null);
            if v == Value::Unchanged {
                v = old.as_ref().and_then(|o| o.get(k).copied()).unwrap_or(Value::Unchanged);
            }
            let raw = match v {
                Value::Null => None,
                Value::Binary(b) => Some(b),
                Value::Unchanged => {
                    return Err(PgError::Value {
                        column: c.name.clone(),
                        message: format!(
                            "an update of `{table}` at {} left this TOASTed value unchanged, and the server did not send it: give the table REPLICA IDENTITY FULL, then `weir run --full-refresh`",
                            pgoutput::lsn_text(lsn)
                        ),
                    });
                }
                Value::Text(_) => {
                    return Err(PgError::Value {
                        column: c.name.clone(),
                        message: "the server sent a text value where binary was asked for".into(),
                    });
                }
            };
            super::decode(&mut builders.0[i], &c.arrow, &c.pg_type, raw)
                .map_err(|message| PgError::Value { column: c.name.clone(), message })?;
        }
        let op_builder = builders.0[n].as_any_mut().downcast_mut::<StringBuilder>();
        op_builder.ok_or_else(|| PgError::Value { column: OP.into(), message: "no builder".into() })?.append_value(op);
        let lsn_builder = builders.0[n + 1].as_any_mut().downcast_mut::<Int64Builder>();
        lsn_builder
            .ok_or_else(|| PgError::Value { column: LSN.into(), message: "no builder".into() })?
            .append_value(lsn as i64);
        builders.1 += 1;
        p.changes += 1;
        if builders.1 == super::BATCH_ROWS {
            emit(builders.finish(schema)?).await?;
        }
    }
    if builders.1 > 0 {
        emit(builders.finish(schema)?).await?;
    }
    // Every record that starts before `now` was decoded (the WAL was flushed past it first):
    // no transaction of the table commits before it unread. So the position can move there
    // even when the table did not change, and the slot need not keep the server's unrelated
    // WAL.
    p.end = Some(p.end.map_or(now, |e| e.max(now)));
    *progress.lock().unwrap_or_else(|e| e.into_inner()) = p;
    Ok(())
}

/// Wait (up to a minute) until the server has flushed its WAL up to `lsn`: with asynchronous
/// commit (`synchronous_commit = off`), a transaction is visible and reported committed a
/// moment (`wal_writer_delay`) before its commit record is on disk, and logical decoding reads
/// only what is flushed.
async fn wait_flushed(client: &Client, lsn: u64) -> Result<(), PgError> {
    let text = pgoutput::lsn_text(lsn);
    for _ in 0..600 {
        let done: bool =
            client.query_one("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", &[&text]).await?.get(0);
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(cdc_err(format!("the server's WAL was not flushed to {text} within a minute"), "run again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_what_committed_before_it() {
        let s = Snapshot::parse("100:105:101,103").unwrap();
        assert!(s.saw(99));
        assert!(s.saw(100));
        assert!(!s.saw(101));
        assert!(s.saw(102));
        assert!(!s.saw(103));
        assert!(s.saw(104));
        assert!(!s.saw(105));
        assert!(!s.saw(200));
        // Across the 32-bit wraparound: xmax = 2^32 + 5 (epoch 1).
        let s = Snapshot::parse(&format!("{}:{}:", (1u64 << 32) - 10, (1u64 << 32) + 5)).unwrap();
        assert!(s.saw(u32::MAX - 2));
        assert!(s.saw(3));
        assert!(!s.saw(5));
        assert!(!s.saw(9));
        assert_eq!(Snapshot::parse("1:2"), Some(Snapshot { xmax: 2, in_progress: vec![] }));
        assert_eq!(Snapshot::parse("x"), None);
    }

    #[test]
    fn names_weir_makes_are_plain() {
        assert!(valid_name("weir_orders_1"));
        assert!(!valid_name("Weir"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(&"a".repeat(64)));
    }
}
