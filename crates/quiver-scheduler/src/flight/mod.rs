//! Arrow Flight on the scheduler's port: Flight SQL for clients, and the
//! result proxy Ballista clients fetch query output through.
//!
//! Both are the same gRPC service (`arrow.flight.protocol.FlightService`), so
//! one [`QuiverFlight`] serves them and routes `DoGet` by its ticket: a
//! Ballista `FetchPartition` action goes to Ballista's proxy, anything else is
//! Flight SQL.
//!
//! Flight SQL (ADBC, JDBC, DBeaver-style browsers) is arrow-flight's
//! `FlightSqlService` over [`ClusterSessions`], so statements plan on this
//! cluster like any session, and every statement runs as a job of source
//! `flight_sql`, in the UI and history like any other ([`statements`]). The
//! scheduler's access token is required, as for REST. Statement handles
//! carry the SQL, its bound parameters and its transaction, so the server
//! keeps nothing between calls but open [`transactions`].
//!
//! (`datafusion-flight-sql-server` was weighed first: it needs `protoc` and
//! protobuf's well-known types to build, through substrait, and leaves
//! `GetSqlInfo`, table listing without a catalog filter and updates
//! unimplemented; what Quiver needs is the smaller part written here.)

pub mod sessions;
pub mod statements;
pub mod transactions;

use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::EndTransaction;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, ActionEndTransactionRequest, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use ballista_core::flight_proxy_service::BallistaFlightProxyService;
use datafusion::catalog::SchemaProvider;
use futures::{Stream, TryStreamExt};
use prost::Message;
use quiver_core::messages::clean_message;
use tonic::{Request, Response, Status};

use crate::auth::Auth;
use crate::jobs::JobService;
pub use sessions::ClusterSessions;
use statements::StatementHandle;
use transactions::Transactions;

/// What `DoGet` answers with.
type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The table types `GetTableTypes` lists (DataFusion's).
const TABLE_TYPES: [&str; 3] = ["BASE TABLE", "VIEW", "LOCAL TEMPORARY"];

/// The scheduler's Flight service; see the [module docs](self).
pub struct QuiverFlight {
    jobs: Arc<JobService>,
    sessions: ClusterSessions,
    transactions: Transactions,
    proxy: BallistaFlightProxyService,
    auth: Auth,
    info: SqlInfoData,
}

impl QuiverFlight {
    /// Flight SQL on `jobs`' cluster, guarded by `auth`, and the result proxy
    /// (whose tickets carry no token; it reaches only the cluster's executors).
    pub fn new(jobs: Arc<JobService>, proxy: BallistaFlightProxyService, auth: Auth) -> Self {
        Self {
            sessions: ClusterSessions::new(Arc::clone(&jobs)),
            jobs,
            transactions: Transactions::default(),
            proxy,
            auth,
            info: sql_info(),
        }
    }

    /// Refuses a Flight SQL call that does not carry the access token.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if self.auth.accepts(presented) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "this scheduler requires an access token: send the header 'authorization: Bearer <token>' \
                 (ADBC: adbc.flight.sql.authorization_header)",
            ))
        }
    }

    /// A `FlightInfo` whose one endpoint's ticket is `ticket`.
    fn info_for(
        ticket: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = Ticket::new(ticket.as_any().encode_to_vec());
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor))
    }

    /// The `FlightInfo` of a metadata listing, for a caller with the token.
    fn listing(
        &self,
        request: Request<FlightDescriptor>,
        command: impl ProstMessageExt,
        schema: &Schema,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(Self::info_for(command, schema, request.into_inner())?))
    }

    /// Every schema of a fresh session: (catalog name, schema name, schema).
    async fn schemas(&self) -> Result<Vec<(String, String, Arc<dyn SchemaProvider>)>, Status> {
        let ctx = self.sessions.context(None).await?;
        let mut found = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if let Some(schema) = catalog.schema(&schema_name) {
                    found.push((catalog_name.clone(), schema_name, schema));
                }
            }
        }
        Ok(found)
    }

    /// The `FlightInfo` of a statement: planned now for its schema.
    async fn statement_info(
        &self,
        handle: &StatementHandle,
        ticket: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = self.sessions.context(None).await?;
        let plan = statements::plan(&ctx, handle).await?;
        Ok(Response::new(Self::info_for(
            ticket,
            &statements::result_schema(&plan),
            descriptor,
        )?))
    }
}

/// What the server says about itself to `GetSqlInfo` (ADBC's `adbc_get_info`,
/// JDBC's `DatabaseMetaData`).
fn sql_info() -> SqlInfoData {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Quiver");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    // Accepted for the clients that need them; see `transactions`.
    builder.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::Transaction as i32,
    );
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, true);
    // Values of the types their names call for: building cannot fail.
    builder.build().expect("valid SqlInfo values")
}

/// One batch, as a `DoGet` answer.
fn one_batch<E: Into<arrow_flight::error::FlightError> + Send + 'static>(batch: Result<RecordBatch, E>) -> DataStream {
    let stream = FlightDataEncoderBuilder::new()
        .build(futures::stream::once(async move { batch.map_err(Into::into) }))
        .map_err(Status::from);
    Box::pin(stream)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl FlightSqlService for QuiverFlight {
    type FlightService = QuiverFlight;

    /// Result fetches through the proxy; nothing else reaches here. With a
    /// token, a fetch must carry its proof; the proxy connects only to this
    /// cluster's alive executors, never to whatever host a ticket names.
    async fn do_get_fallback(&self, request: Request<Ticket>, message: Any) -> Result<Response<DataStream>, Status> {
        use ballista_core::serde::protobuf::action::ActionType;
        let action = ballista_core::serde::protobuf::Action::decode(request.get_ref().ticket.clone()).ok();
        let Some(ActionType::FetchPartition(fetch)) = action.and_then(|a| a.action_type) else {
            self.authorize(&request)?;
            return Err(Status::invalid_argument(format!(
                "not a ticket this server issued ({})",
                message.type_url
            )));
        };
        let user_agent = request.metadata().get("user-agent").and_then(|v| v.to_str().ok());
        if !self.auth.admits_fetch(user_agent) {
            tracing::warn!(job = %fetch.job_id, "result fetch refused: no proof of the access token");
            return Err(Status::unauthenticated(
                "this scheduler requires an access token for result fetches: Quiver's clients given the token \
                 (QUIVER_TOKEN) prove it on every fetch; other clients read results over Flight SQL or REST",
            ));
        }
        if !self.jobs.is_executor_flight_address(&fetch.host, fetch.port).await {
            tracing::warn!(host = %fetch.host, port = fetch.port, job = %fetch.job_id, "result fetch refused: not an executor of this cluster");
            return Err(Status::permission_denied(format!(
                "{}:{} is not an executor of this cluster; the result proxy fetches only from its executors",
                fetch.host, fetch.port
            )));
        }
        if !self.jobs.admits_fetch_of(&fetch.job_id, user_agent.unwrap_or_default()) {
            tracing::warn!(query = %fetch.job_id, "result fetch refused: no fetch proof of the job these results belong to");
            return Err(Status::permission_denied(
                "these results belong to another job: a client fetches only its own job's results, with the proof \
                 the scheduler gave its session (Quiver's clients send it; other clients read results over Flight SQL \
                 or REST)",
            ));
        }
        let response = FlightService::do_get(&self.proxy, request).await?;
        Ok(Response::new(Box::pin(response.into_inner())))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::new(query.query, query.transaction_id);
        let ticket = TicketStatementQuery {
            statement_handle: handle.to_bytes(),
        };
        self.statement_info(&handle, ticket, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::from_bytes(&query.prepared_statement_handle)?;
        self.statement_info(&handle, query, request.into_inner()).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::from_bytes(&ticket.statement_handle)?;
        Ok(Response::new(
            statements::run(&self.sessions, &self.transactions, handle).await?,
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::from_bytes(&query.prepared_statement_handle)?;
        Ok(Response::new(
            statements::run(&self.sessions, &self.transactions, handle).await?,
        ))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::new(query.query, query.transaction_id);
        let ctx = self.sessions.context(None).await?;
        let plan = statements::plan(&ctx, &handle).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_bytes(),
            dataset_schema: statements::schema_bytes(&statements::result_schema(&plan))?,
            parameter_schema: statements::schema_bytes(statements::parameter_schema(&plan)?.as_ref())?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold everything; there is nothing to free.
        self.authorize(&request)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let mut handle = StatementHandle::from_bytes(&query.prepared_statement_handle)?;
        handle.parameters = Some(statements::read_parameters(request.into_inner()).await?);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.to_bytes()),
        })
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::new(command.query, command.transaction_id);
        statements::run_update(&self.sessions, &self.transactions, &handle).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(&request)?;
        let handle = StatementHandle::from_bytes(&query.prepared_statement_handle)?;
        statements::run_update(&self.sessions, &self.transactions, &handle).await
    }

    /// Open like `/healthz`: what the server supports is no secret, and ADBC
    /// asks before it sends its credentials.
    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        Ok(Response::new(Self::info_for(query, &schema, request.into_inner())?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        Ok(Response::new(one_batch(query.into_builder(&self.info).build())))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing(request, query, &schema)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        let ctx = self.sessions.context(None).await?;
        let mut builder = query.into_builder();
        for name in ctx.catalog_names() {
            builder.append(name);
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, query, &schema)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        // The builder applies the request's filters.
        let mut builder = query.into_builder();
        for (catalog, schema, _) in self.schemas().await? {
            builder.append(catalog, schema);
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, query, &schema)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for (catalog, schema_name, schema) in self.schemas().await? {
            for table_name in schema.table_names() {
                let table = schema
                    .table(&table_name)
                    .await
                    .map_err(|e| Status::internal(clean_message(&e.to_string())))?;
                if let Some(table) = table {
                    let kind = table.table_type().to_string();
                    builder
                        .append(&catalog, &schema_name, &table_name, kind, &table.schema())
                        .map_err(internal)?;
                }
            }
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = table_types().map_err(internal)?.schema();
        self.listing(request, query, &schema)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(one_batch(table_types())))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        self.authorize(&request)?;
        Ok(ActionBeginTransactionResult {
            transaction_id: self.transactions.begin(),
        })
    }

    async fn do_action_end_transaction(
        &self,
        query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)?;
        let commit = query.action() == EndTransaction::Commit;
        self.transactions.end(&query.transaction_id, commit)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The answer to `GetTableTypes`.
fn table_types() -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "table_type",
        arrow::datatypes::DataType::Utf8,
        false,
    )]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::StringArray::from(TABLE_TYPES.to_vec()))],
    )
}
