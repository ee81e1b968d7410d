//! The CQL backend: [`MessageStore`] on ScyllaDB or Apache Cassandra through the `scylla`
//! driver. Real-runtime build only: the simulated build never compiles the driver, and in the
//! simulator the ring is the store.
//!
//! The table is Discord's, in a keyspace the caller names:
//! `messages ((channel_id, bucket), message_id)` clustered by `message_id DESC`, 10-day
//! buckets exactly as [`bucket_of`], plus the columns a [`StoredMessage`] carries. Every
//! statement is prepared once, runs at QUORUM and binds the whole partition key, so the
//! driver's token-aware policy sends it to a replica of its partition. Puts and deletes carry
//! the caller's write timestamp (`USING TIMESTAMP`), so they resolve by last-write-wins just
//! as on the ring; an absent nonce is left unset rather than written as null, so a put writes
//! no tombstone.
//!
//! History walks buckets newest first back to the channel's own bucket (a channel is older
//! than its messages), reading each partition in pages, and remembers settled buckets it
//! found empty so later reads skip them, as the ring client does. A page `after` an id walks
//! buckets oldest first from the id's bucket, reading each partition in ascending order
//! (`ORDER BY message_id ASC`, which Cassandra serves within one partition); `around` is
//! composed from both ([`super::compose_page`]). A read returns each row's write timestamp
//! (`WRITETIME(content)`), which an edit or delete must exceed.
//!
//! The directory log is a table of its own in the keyspace, `directory_log (shard, id)`:
//! one partition (`shard` 0) clustered by the record's id ascending, the record as JSON, so
//! a read after an id comes back in log order.
//!
//! Every column of a message is named in one place: `MESSAGE_COLUMNS`, the `MessageRow`
//! type and `decode_rows` for reads, `CqlStore::put_message` and the insert statement for
//! writes; a new column is added there and in the table's DDL.
//!
//! Errors: the server's Unavailable becomes [`StoreError::Unavailable`]; its read and write
//! timeouts, and the driver's own request timeout, become [`StoreError::Timeout`] (a write
//! may have been applied); no reachable node becomes [`StoreError::NoCoordinator`]; anything
//! else is [`StoreError::Storage`] with the driver's message.
//!
//! Replies and reactions take two columns: `referenced_message_id bigint`, and `reactions
//! text` holding the reactions as JSON (`[{"emoji", "user_ids"}]`), both unset when absent.
//! A table made before a column existed (`edited_ms`, `referenced_message_id`, `reactions`)
//! gains it when a store opens with schema creation on (`ALTER TABLE ... ADD`); its rows read
//! the new column as unset. Not done: renaming or retyping a column.
//!
//! Not modelled: rows a delete racing an edit leaves without their author or content are
//! skipped as deleted, as Discord's reader does, rather than repaired.
//! TODO(directory-log-partition): the directory log is one partition, as on the ring, so it
//! grows without bound; fine for the thousands of changes a deployment makes, not millions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::MaybeUnset;

use super::{keyspace_problem, parse_contact_points, CqlTarget};
use super::{HistoryQuery, MessageStore, StoreError, StoreFuture, TimedMessage};
use crate::directory::ChangeRecord;
use crate::env::clock::NodeClock;
use crate::ids;
use crate::model::StoredMessage;
use crate::ring::bucket_of;

/// Rows fetched per page of one partition.
const PAGE_ROWS: i32 = 1_000;
/// How long the driver waits for a coordinator's answer before it gives up.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long connecting to a node may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Where the store lives and how to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlConfig {
    /// Contact points, `host:port`; the driver discovers the rest of the cluster.
    pub nodes: Vec<String>,
    /// The keyspace holding `messages`.
    pub keyspace: String,
    /// Replicas per partition, when the keyspace is created.
    pub replication_factor: u8,
    /// Whether to create the keyspace and table if they are missing.
    pub create_schema: bool,
}

impl CqlConfig {
    /// A config for the cluster and keyspace a `cql://` URL names, creating the schema if
    /// it is missing.
    pub fn of_target(target: &CqlTarget) -> Self {
        Self::new(
            target.nodes.clone(),
            &target.keyspace,
            target.replication_factor,
        )
    }

    /// A config for `nodes` and `keyspace`, creating the schema with `replication_factor`
    /// replicas if it is missing.
    pub fn new(nodes: Vec<String>, keyspace: &str, replication_factor: u8) -> Self {
        Self {
            nodes,
            keyspace: keyspace.to_string(),
            replication_factor,
            create_schema: true,
        }
    }
}

/// Parses contact points written as `[cql://]host:port[,host:port...]`, naming the first
/// entry that is not a `host:port` with a port from 1 to 65535.
pub fn parse_nodes(list: &str) -> Result<Vec<String>, String> {
    parse_contact_points(list.strip_prefix("cql://").unwrap_or(list))
}

/// Checks a keyspace name before it goes into DDL text ([`keyspace_problem`]).
fn check_keyspace(name: &str) -> Result<(), StoreError> {
    match keyspace_problem(name) {
        Some(problem) => Err(StoreError::Storage(problem)),
        None => Ok(()),
    }
}

/// The prepared statements, one per operation.
#[derive(Debug, Clone)]
struct Statements {
    insert: PreparedStatement,
    select_one: PreparedStatement,
    delete: PreparedStatement,
    select_page: PreparedStatement,
    select_after: PreparedStatement,
    insert_change: PreparedStatement,
    select_changes: PreparedStatement,
}

/// ScyllaDB or Cassandra, as a message store.
#[derive(Clone)]
pub struct CqlStore {
    session: Arc<Session>,
    statements: Statements,
    /// Replies a QUORUM needs, for timeouts the driver reports without counts.
    quorum: usize,
    clock: NodeClock,
    /// Per channel, settled buckets read whole and found empty, which later reads skip.
    empty_buckets: Arc<Mutex<BTreeMap<u64, BTreeSet<u32>>>>,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore")
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
    }
}

impl CqlStore {
    /// Connects to `config.nodes`, creates the schema if asked, and prepares the statements.
    pub async fn open(config: &CqlConfig) -> Result<Self, StoreError> {
        check_keyspace(&config.keyspace)?;
        if config.nodes.is_empty() {
            return Err(StoreError::Storage("no CQL contact point given".into()));
        }

        // 1. The session: QUORUM, token-aware, bounded waits.
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::Quorum)
            .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .load_balancing_policy(DefaultPolicy::builder().token_aware(true).build())
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| session_error(&config.nodes, e))?;

        // 2. The schema, if asked: idempotent, so every opener may ask.
        let quorum = usize::from(config.replication_factor) / 2 + 1;
        if config.create_schema {
            create_schema(
                &session,
                &config.keyspace,
                config.replication_factor,
                quorum,
            )
            .await?;
        }

        // 3. The statements.
        let statements = prepare(&session, &config.keyspace).await?;
        Ok(Self {
            session: Arc::new(session),
            statements,
            quorum,
            clock: NodeClock::new(),
            empty_buckets: Arc::default(),
        })
    }

    async fn put_message(&self, message: &StoredMessage, write_us: i64) -> Result<(), StoreError> {
        let nonce = match &message.nonce {
            Some(nonce) => MaybeUnset::Set(nonce.as_str()),
            None => MaybeUnset::Unset,
        };
        let edited_ms = match message.edited_ms {
            Some(edited_ms) => MaybeUnset::Set(edited_ms),
            None => MaybeUnset::Unset,
        };
        let referenced = match message.referenced_message_id {
            Some(id) => MaybeUnset::Set(bigint("referenced_message_id", id)?),
            None => MaybeUnset::Unset,
        };
        let reactions_json = if message.reactions.is_empty() {
            None
        } else {
            let json = serde_json::to_string(&message.reactions)
                .map_err(|e| StoreError::Storage(format!("reactions do not encode: {e}")))?;
            Some(json)
        };
        let reactions = match &reactions_json {
            Some(json) => MaybeUnset::Set(json.as_str()),
            None => MaybeUnset::Unset,
        };
        let values = (
            bigint("channel_id", message.channel_id)?,
            cql_int_bucket(message.message_id)?,
            bigint("message_id", message.message_id)?,
            bigint("guild_id", message.guild_id)?,
            bigint("author_id", message.author_id)?,
            message.content.as_str(),
            nonce,
            edited_ms,
            referenced,
            reactions,
            write_us,
        );
        self.session
            .execute_unpaged(&self.statements.insert, values)
            .await
            .map_err(|e| self.execution_error(e))?;
        Ok(())
    }

    async fn get_message(
        &self,
        channel_id: u64,
        message_id: u64,
    ) -> Result<Option<TimedMessage>, StoreError> {
        let values = (
            bigint("channel_id", channel_id)?,
            cql_int_bucket(message_id)?,
            bigint("message_id", message_id)?,
        );
        let result = self
            .session
            .execute_unpaged(&self.statements.select_one, values)
            .await
            .map_err(|e| self.execution_error(e))?;
        let mut messages = decode_rows(channel_id, result)?;
        Ok(messages.pop())
    }

    async fn delete_message(
        &self,
        channel_id: u64,
        message_id: u64,
        write_us: i64,
    ) -> Result<(), StoreError> {
        let values = (
            write_us,
            bigint("channel_id", channel_id)?,
            cql_int_bucket(message_id)?,
            bigint("message_id", message_id)?,
        );
        self.session
            .execute_unpaged(&self.statements.delete, values)
            .await
            .map_err(|e| self.execution_error(e))?;
        Ok(())
    }

    /// Up to `limit` rows of one partition below `before`, newest first, page by page.
    async fn read_partition(
        &self,
        channel_id: u64,
        bucket: u32,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let before = before.map_or(i64::MAX, bigint_bound);
        let statement = &self.statements.select_page;
        self.read_bounded(statement, channel_id, bucket, before, limit)
            .await
    }

    /// Up to `limit` rows of one partition above `after`, oldest first, page by page.
    async fn read_partition_after(
        &self,
        channel_id: u64,
        bucket: u32,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Ids past bigint's range have nothing above them.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let statement = &self.statements.select_after;
        self.read_bounded(statement, channel_id, bucket, after, limit)
            .await
    }

    /// Runs a select bound by `(channel_id, bucket, id bound, limit)`, page by page, until
    /// `limit` rows came back or the partition ran out.
    async fn read_bounded(
        &self,
        statement: &PreparedStatement,
        channel_id: u64,
        bucket: u32,
        bound: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let values = (
            bigint("channel_id", channel_id)?,
            i32::try_from(bucket).map_err(|_| bucket_range(bucket))?,
            bound,
            i32::try_from(limit).unwrap_or(i32::MAX),
        );
        let mut messages = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(statement, &values, paging)
                .await
                .map_err(|e| self.execution_error(e))?;
            let rows = decode_rows(channel_id, result)?;
            messages.extend(rows.into_iter().map(|row| row.message));
            match next.into_paging_control_flow() {
                ControlFlow::Continue(state) if messages.len() < limit => paging = state,
                _ => break,
            }
        }
        messages.truncate(limit);
        Ok(messages)
    }

    /// The `limit` oldest messages above `after`, oldest first: buckets oldest first from
    /// `after`'s (or the channel's, if later) up to the newest a message can be in.
    async fn read_oldest_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let head_bucket = self.head_bucket();
        let settled = self.settled_bucket();
        let mut bucket = bucket_of(after).max(bucket_of(channel_id));
        let mut messages = Vec::new();
        while messages.len() < limit && bucket <= head_bucket {
            if !self.known_empty(channel_id, bucket) {
                let want = limit - messages.len();
                let rows = self
                    .read_partition_after(channel_id, bucket, after, want)
                    .await?;
                let whole = after < bucket_first_id(bucket);
                if rows.is_empty() && whole && bucket < settled {
                    self.remember_empty(channel_id, bucket);
                }
                messages.extend(rows);
            }
            bucket += 1;
        }
        Ok(messages)
    }

    async fn put_change(&self, record: &ChangeRecord, write_us: i64) -> Result<(), StoreError> {
        let text = serde_json::to_string(record)
            .map_err(|e| StoreError::Storage(format!("a directory change as JSON: {e}")))?;
        let values = (bigint("id", record.id)?, text, write_us);
        self.session
            .execute_unpaged(&self.statements.insert_change, values)
            .await
            .map_err(|e| self.execution_error(e))?;
        Ok(())
    }

    /// The log's records above `after`, oldest first, page by page. A record that does not
    /// parse is skipped with a warning rather than blocking every later change.
    async fn read_changes_after(&self, after: u64) -> Result<Vec<ChangeRecord>, StoreError> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&self.statements.select_changes, (after,), paging)
                .await
                .map_err(|e| self.execution_error(e))?;
            let rows = result.into_rows_result().map_err(|e| {
                StoreError::Storage(format!("a log select returned no rows result: {e}"))
            })?;
            let typed = rows.rows::<(i64, Option<String>)>().map_err(|e| {
                StoreError::Storage(format!("directory_log rows have unexpected types: {e}"))
            })?;
            for row in typed {
                let (id, text) = row.map_err(|e| {
                    StoreError::Storage(format!("a directory_log row did not decode: {e}"))
                })?;
                match serde_json::from_str::<ChangeRecord>(text.as_deref().unwrap_or_default()) {
                    Ok(record) => records.push(record),
                    Err(error) => tracing::warn!(id, %error, "directory_change_unreadable"),
                }
            }
            match next.into_paging_control_flow() {
                ControlFlow::Continue(state) => paging = state,
                ControlFlow::Break(()) => break,
            }
        }
        Ok(records)
    }

    /// The newest bucket a message can be in: this node's, plus one of slack for writers
    /// whose clocks run ahead.
    fn head_bucket(&self) -> u32 {
        bucket_of(ids::from_timestamp_ms(self.clock.now_ms())).saturating_add(1)
    }

    async fn read_history(&self, query: HistoryQuery) -> Result<Vec<StoredMessage>, StoreError> {
        // Every field named: a new kind of bound must be handled here before this compiles.
        let HistoryQuery {
            channel_id,
            before,
            limit,
        } = query;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One bucket of slack past this node's clock for writers whose clocks run ahead.
        let newest_bucket = match before {
            Some(before) => bucket_of(before),
            None => self.head_bucket(),
        };
        let oldest_bucket = bucket_of(channel_id);
        let settled = self.settled_bucket();

        let mut messages = Vec::new();
        let mut bucket = newest_bucket.max(oldest_bucket);
        loop {
            if !self.known_empty(channel_id, bucket) {
                let remaining = limit - messages.len();
                let rows = self
                    .read_partition(channel_id, bucket, before, remaining)
                    .await?;
                let whole = before.is_none_or(|b| bucket < bucket_of(b));
                if rows.is_empty() && whole && bucket < settled {
                    self.remember_empty(channel_id, bucket);
                }
                messages.extend(rows);
            }
            if messages.len() >= limit || bucket <= oldest_bucket {
                break;
            }
            bucket -= 1;
        }
        Ok(messages)
    }

    /// Buckets below this one ended a day or more ago and get no more messages.
    fn settled_bucket(&self) -> u32 {
        let day_ms = 24 * 60 * 60 * 1000;
        bucket_of(ids::from_timestamp_ms(self.clock.now_ms() - day_ms))
    }

    fn known_empty(&self, channel_id: u64, bucket: u32) -> bool {
        let empty = self.empty_buckets.lock().unwrap_or_else(|p| p.into_inner());
        empty.get(&channel_id).is_some_and(|b| b.contains(&bucket))
    }

    fn remember_empty(&self, channel_id: u64, bucket: u32) {
        let mut empty = self.empty_buckets.lock().unwrap_or_else(|p| p.into_inner());
        empty.entry(channel_id).or_default().insert(bucket);
    }

    fn execution_error(&self, error: ExecutionError) -> StoreError {
        map_execution_error(error, self.quorum)
    }
}

impl MessageStore for CqlStore {
    fn put<'a>(&'a self, message: &'a StoredMessage, write_us: i64) -> StoreFuture<'a, ()> {
        Box::pin(self.put_message(message, write_us))
    }

    fn get(&self, channel_id: u64, message_id: u64) -> StoreFuture<'_, Option<TimedMessage>> {
        Box::pin(self.get_message(channel_id, message_id))
    }

    fn delete(&self, channel_id: u64, message_id: u64, write_us: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.delete_message(channel_id, message_id, write_us))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(self.read_history(query))
    }

    fn oldest_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(self.read_oldest_after(channel_id, after, limit))
    }

    fn put_directory_change<'a>(
        &'a self,
        record: &'a ChangeRecord,
        write_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.put_change(record, write_us))
    }

    fn directory_changes_after(&self, after: u64) -> StoreFuture<'_, Vec<ChangeRecord>> {
        Box::pin(self.read_changes_after(after))
    }

    fn backend(&self) -> &'static str {
        "cql"
    }
}

async fn create_schema(
    session: &Session,
    keyspace: &str,
    replication_factor: u8,
    quorum: usize,
) -> Result<(), StoreError> {
    // TODO(cql-topology): SimpleStrategy ignores racks and datacenters; a multi-datacenter
    // deployment wants NetworkTopologyStrategy with a factor per datacenter.
    let keyspace_ddl = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
    );
    let table_ddl = format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.messages (\
         channel_id bigint, bucket int, message_id bigint, \
         guild_id bigint, author_id bigint, content text, nonce text, edited_ms bigint, \
         referenced_message_id bigint, reactions text, \
         PRIMARY KEY ((channel_id, bucket), message_id)) \
         WITH CLUSTERING ORDER BY (message_id DESC)"
    );
    let log_ddl = format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.directory_log (\
         shard int, id bigint, record text, PRIMARY KEY (shard, id)) \
         WITH CLUSTERING ORDER BY (id ASC)"
    );
    for ddl in [keyspace_ddl, table_ddl, log_ddl] {
        session
            .query_unpaged(ddl, ())
            .await
            .map_err(|e| map_execution_error(e, quorum))?;
    }
    add_missing_columns(session, keyspace, quorum).await
}

/// The message columns added after the table's first shape, with their types.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("edited_ms", "bigint"),
    ("referenced_message_id", "bigint"),
    ("reactions", "text"),
];

/// Adds each of [`ADDED_COLUMNS`] that a `messages` table made by an earlier version lacks.
async fn add_missing_columns(
    session: &Session,
    keyspace: &str,
    quorum: usize,
) -> Result<(), StoreError> {
    let result = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = 'messages'",
            (keyspace,),
        )
        .await
        .map_err(|e| map_execution_error(e, quorum))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| StoreError::Storage(format!("the schema read returned no rows: {e}")))?;
    let mut present = Vec::new();
    for row in rows
        .rows::<(String,)>()
        .map_err(|e| StoreError::Storage(format!("schema rows have unexpected types: {e}")))?
    {
        let (name,) =
            row.map_err(|e| StoreError::Storage(format!("a schema row did not decode: {e}")))?;
        present.push(name);
    }
    for (name, kind) in ADDED_COLUMNS {
        if present.iter().any(|p| p == name) {
            continue;
        }
        tracing::info!(keyspace, column = name, "cql_messages_column_added");
        session
            .query_unpaged(
                format!("ALTER TABLE {keyspace}.messages ADD {name} {kind}"),
                (),
            )
            .await
            .map_err(|e| map_execution_error(e, quorum))?;
    }
    Ok(())
}

/// The columns a message read selects, in [`MessageRow`]'s order.
const MESSAGE_COLUMNS: &str = "message_id, guild_id, author_id, content, nonce, edited_ms, \
                               referenced_message_id, reactions, WRITETIME(content)";

async fn prepare(session: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let columns = MESSAGE_COLUMNS;
    let texts = [
        format!(
            "INSERT INTO {keyspace}.messages \
             (channel_id, bucket, message_id, guild_id, author_id, content, nonce, edited_ms, \
             referenced_message_id, reactions) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        ),
        format!(
            "SELECT {columns} FROM {keyspace}.messages \
             WHERE channel_id = ? AND bucket = ? AND message_id = ?"
        ),
        format!(
            "DELETE FROM {keyspace}.messages USING TIMESTAMP ? \
             WHERE channel_id = ? AND bucket = ? AND message_id = ?"
        ),
        format!(
            "SELECT {columns} FROM {keyspace}.messages \
             WHERE channel_id = ? AND bucket = ? AND message_id < ? LIMIT ?"
        ),
        format!(
            "SELECT {columns} FROM {keyspace}.messages \
             WHERE channel_id = ? AND bucket = ? AND message_id > ? \
             ORDER BY message_id ASC LIMIT ?"
        ),
        format!(
            "INSERT INTO {keyspace}.directory_log (shard, id, record) VALUES (0, ?, ?) \
             USING TIMESTAMP ?"
        ),
        format!("SELECT id, record FROM {keyspace}.directory_log WHERE shard = 0 AND id > ?"),
    ];
    let mut prepared = Vec::with_capacity(texts.len());
    for text in texts {
        let mut statement = session
            .prepare(text.as_str())
            .await
            .map_err(|e| prepare_error(&text, e))?;
        // Every statement names its rows and timestamp, so running it twice changes nothing.
        statement.set_is_idempotent(true);
        statement.set_consistency(Consistency::Quorum);
        statement.set_page_size(PAGE_ROWS);
        prepared.push(statement);
    }
    let [insert, select_one, delete, select_page, select_after, insert_change, select_changes] =
        <[PreparedStatement; 7]>::try_from(prepared)
            .map_err(|_| StoreError::Storage("expected seven prepared statements".into()))?;
    Ok(Statements {
        insert,
        select_one,
        delete,
        select_page,
        select_after,
        insert_change,
        select_changes,
    })
}

/// The row's columns as selected ([`MESSAGE_COLUMNS`]): message_id, guild_id, author_id,
/// content, nonce, edited_ms, referenced_message_id, reactions, and the content's write
/// timestamp.
type MessageRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// The messages in a result with their write timestamps, skipping rows left without an
/// author or content.
fn decode_rows(
    channel_id: u64,
    result: scylla::response::query_result::QueryResult,
) -> Result<Vec<TimedMessage>, StoreError> {
    let rows = result
        .into_rows_result()
        .map_err(|e| StoreError::Storage(format!("a select returned no rows result: {e}")))?;
    let typed = rows
        .rows::<MessageRow>()
        .map_err(|e| StoreError::Storage(format!("messages rows have unexpected types: {e}")))?;
    let mut messages = Vec::new();
    for row in typed {
        let (
            message_id,
            guild_id,
            author_id,
            content,
            nonce,
            edited_ms,
            referenced,
            reactions,
            write_us,
        ) = row.map_err(|e| StoreError::Storage(format!("a messages row did not decode: {e}")))?;
        let (Some(guild_id), Some(author_id), Some(content)) = (guild_id, author_id, content)
        else {
            continue;
        };
        let message = StoredMessage {
            channel_id,
            message_id: unsigned("message_id", message_id)?,
            guild_id: unsigned("guild_id", guild_id)?,
            author_id: unsigned("author_id", author_id)?,
            content,
            nonce,
            edited_ms,
            referenced_message_id: referenced
                .map(|id| unsigned("referenced_message_id", id))
                .transpose()?,
            reactions: match reactions {
                Some(json) => serde_json::from_str(&json).map_err(|e| {
                    StoreError::Storage(format!("a reactions column did not decode: {e}"))
                })?,
                None => Vec::new(),
            },
        };
        // A live cell always has a write time; 0 only if the server left it out.
        messages.push(TimedMessage {
            message,
            write_us: write_us.unwrap_or(0),
        });
    }
    Ok(messages)
}

/// A snowflake as CQL's signed bigint; snowflakes stay below 2^63 until the year 2154.
fn bigint(column: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Storage(format!("{column} {value} does not fit CQL's signed bigint"))
    })
}

/// An exclusive upper bound: ids past bigint's range bound nothing.
fn bigint_bound(before: u64) -> i64 {
    i64::try_from(before).unwrap_or(i64::MAX)
}

fn unsigned(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Storage(format!("a messages row has negative {column} {value}")))
}

fn bucket_range(bucket: u32) -> StoreError {
    StoreError::Storage(format!("bucket {bucket} does not fit CQL's int"))
}

/// The smallest snowflake in `bucket`.
fn bucket_first_id(bucket: u32) -> u64 {
    ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS + i64::from(bucket) * crate::ring::BUCKET_MS)
}

/// The bucket of `message_id`, as the table's `int` column.
fn cql_int_bucket(message_id: u64) -> Result<i32, StoreError> {
    let bucket = bucket_of(message_id);
    i32::try_from(bucket).map_err(|_| bucket_range(bucket))
}

fn session_error(nodes: &[String], error: NewSessionError) -> StoreError {
    StoreError::NoCoordinator(format!("no CQL session with {}: {error}", nodes.join(",")))
}

fn prepare_error(text: &str, error: PrepareError) -> StoreError {
    match error {
        PrepareError::ConnectionPoolError(e) => StoreError::NoCoordinator(e.to_string()),
        other => StoreError::Storage(format!("preparing `{text}` failed: {other}")),
    }
}

/// The store's outcome for a driver error; `quorum` fills in timeouts without counts.
pub fn map_execution_error(error: ExecutionError, quorum: usize) -> StoreError {
    let count = |n: i32| usize::try_from(n).unwrap_or(0);
    match error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, message)) => {
            use scylla::errors::DbError;
            match db {
                DbError::Unavailable {
                    required, alive, ..
                } => StoreError::Unavailable {
                    required: count(required),
                    alive: count(alive),
                },
                DbError::ReadTimeout {
                    received, required, ..
                }
                | DbError::WriteTimeout {
                    received, required, ..
                } => StoreError::Timeout {
                    required: count(required),
                    received: count(received),
                },
                other => StoreError::Storage(format!("the server refused: {other}: {message}")),
            }
        }
        ExecutionError::RequestTimeout(_) => StoreError::Timeout {
            required: quorum,
            received: 0,
        },
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(e)) => {
            StoreError::NoCoordinator(format!("connection broke: {e}"))
        }
        ExecutionError::ConnectionPoolError(e) => StoreError::NoCoordinator(e.to_string()),
        ExecutionError::EmptyPlan => {
            StoreError::NoCoordinator("no CQL node is up to take the request".into())
        }
        other => StoreError::Storage(format!("CQL request failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::errors::{DbError, WriteType};

    fn db(error: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, "m".into()))
    }

    #[test]
    fn server_unavailable_and_timeouts_keep_their_counts() {
        let unavailable = db(DbError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1,
        });
        assert_eq!(
            map_execution_error(unavailable, 2),
            StoreError::Unavailable {
                required: 2,
                alive: 1
            }
        );
        let write_timeout = db(DbError::WriteTimeout {
            consistency: Consistency::Quorum,
            received: 1,
            required: 2,
            write_type: WriteType::Simple,
        });
        assert_eq!(
            map_execution_error(write_timeout, 2),
            StoreError::Timeout {
                required: 2,
                received: 1
            }
        );
        let read_timeout = db(DbError::ReadTimeout {
            consistency: Consistency::Quorum,
            received: 0,
            required: 2,
            data_present: false,
        });
        assert_eq!(
            map_execution_error(read_timeout, 2),
            StoreError::Timeout {
                required: 2,
                received: 0
            }
        );
    }

    #[test]
    fn a_client_side_timeout_is_an_unknown_outcome_and_the_rest_is_named() {
        let timeout = ExecutionError::RequestTimeout(Duration::from_secs(10));
        assert_eq!(
            map_execution_error(timeout, 2),
            StoreError::Timeout {
                required: 2,
                received: 0
            }
        );
        assert!(matches!(
            map_execution_error(ExecutionError::EmptyPlan, 2),
            StoreError::NoCoordinator(_)
        ));
        let invalid = map_execution_error(db(DbError::Invalid), 2);
        assert!(
            matches!(&invalid, StoreError::Storage(m) if m.contains("refused")),
            "{invalid:?}"
        );
    }

    #[test]
    fn contact_points_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_nodes("cql://127.0.0.1:9042,127.0.0.2:9043"),
            Ok(vec![
                "127.0.0.1:9042".to_string(),
                "127.0.0.2:9043".to_string()
            ])
        );
        assert_eq!(
            parse_nodes("localhost:9042"),
            Ok(vec!["localhost:9042".to_string()])
        );
        let error = parse_nodes("127.0.0.1:9042,127.0.0.1").expect_err("no port");
        assert!(
            error.contains("node 2") && error.contains("'127.0.0.1'"),
            "{error}"
        );
        assert!(parse_nodes("127.0.0.1:0").is_err());
        assert!(parse_nodes(":9042").is_err());
        assert!(parse_nodes("").is_err());
    }

    #[test]
    fn keyspace_names_that_could_break_ddl_are_refused() {
        assert!(check_keyspace("chat").is_ok());
        assert!(check_keyspace("chat_test_2").is_ok());
        assert!(check_keyspace("chat; DROP").is_err());
        assert!(check_keyspace("1chat").is_err());
        assert!(check_keyspace("").is_err());
        assert!(check_keyspace(&"k".repeat(49)).is_err());
    }

    #[test]
    fn ids_map_to_bigint_and_back_or_are_refused() {
        assert_eq!(
            bigint("message_id", 175_928_847_299_117_063),
            Ok(175_928_847_299_117_063)
        );
        assert!(bigint("message_id", 1 << 63).is_err());
        assert_eq!(bigint_bound(u64::MAX), i64::MAX);
        assert!(unsigned("author_id", -1).is_err());
    }
}
