//! Storage: one connection pool per service, MySQL or SQLite chosen by the
//! URL scheme, migrations applied at start.
//!
//! Repositories hold a [`Database`] and run the same bound SQL on either
//! backend through [`on_pool!`](crate::on_pool). Both backends take `?`
//! placeholders; where their SQL differs (DDL), each service keeps one
//! migration directory per backend.

use std::{str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    migrate::Migrator,
    mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tracing::Instrument as _;

use crate::config::{ConfigError, Env};

/// Storage settings of one service.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `EASYNOTE_DATABASE_URL`: `sqlite://…` or `mysql://…`; may hold a password.
    pub url: SecretString,
    /// `EASYNOTE_DATABASE_PASSWORD` or `EASYNOTE_DATABASE_PASSWORD_FILE`:
    /// the MySQL password, kept out of the URL (e.g. a mounted secret);
    /// it replaces any password the URL holds.
    pub password: Option<SecretString>,
    /// `EASYNOTE_DB_MAX_CONNECTIONS` (default 10).
    pub max_connections: u32,
    /// `EASYNOTE_DB_CONNECT_TIMEOUT` (default 30s): how long start-up keeps
    /// retrying a database that is not reachable yet.
    pub connect_timeout: Duration,
}

/// `EASYNOTE_DB_CONNECT_TIMEOUT`'s default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl DatabaseConfig {
    /// Reads the database settings; `default_url` is the service's embedded SQLite file.
    pub fn from_env(env: &Env, default_url: &str) -> Result<Self, ConfigError> {
        let defaults = Self::new(default_url);
        let url = env.secret("EASYNOTE_DATABASE_URL").unwrap_or(defaults.url);
        let password = match env.secret_or_file("EASYNOTE_DATABASE_PASSWORD")? {
            Some((var, _)) if !is_mysql_url(url.expose_secret()) => {
                return Err(ConfigError::invalid(
                    &var,
                    "is for a mysql:// EASYNOTE_DATABASE_URL; SQLite has no password",
                ));
            }
            found => found.map(|(_, password)| password),
        };
        let max_connections = env.parse("EASYNOTE_DB_MAX_CONNECTIONS", defaults.max_connections)?;
        if max_connections == 0 {
            return Err(ConfigError::invalid(
                "EASYNOTE_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url,
            password,
            max_connections,
            connect_timeout: Self::connect_timeout(env)?,
        })
    }

    /// `EASYNOTE_DB_CONNECT_TIMEOUT` alone: what the database adds to a
    /// start-up's worst case, read without the URL or its password (for
    /// `easy-note deploy-facts`).
    pub fn connect_timeout(env: &Env) -> Result<Duration, ConfigError> {
        env.duration("EASYNOTE_DB_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    }

    /// A config for `url` with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            password: None,
            max_connections: 10,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql:") || url.starts_with("mariadb:")
}

/// A pool on one of the supported backends.
#[derive(Debug, Clone)]
pub enum Database {
    /// The embedded default.
    Sqlite(SqlitePool),
    /// Production (MySQL 8, MariaDB 10.5+, ApsaraDB RDS).
    MySql(MySqlPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`, so that one
/// piece of SQL serves both backends.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($pool) => $body,
            $crate::db::Database::MySql($pool) => $body,
        }
    };
}

/// A service's migrations, one set per backend.
#[derive(Debug)]
pub struct Migrations {
    sqlite: Migrator,
    mysql: Migrator,
}

impl Migrations {
    /// A service's two migration sets (from `sqlx::migrate!`). Services may
    /// share one database, so each one keeps its own version range and
    /// tolerates the others' applied migrations.
    pub fn new(mut sqlite: Migrator, mut mysql: Migrator) -> Self {
        sqlite.set_ignore_missing(true);
        mysql.set_ignore_missing(true);
        // sqlx serialises MySQL migrations with `GET_LOCK(name, -1)`: MySQL
        // waits for ever on a negative timeout, but MariaDB answers NULL at
        // once (10.11, measured), so two replicas starting together both
        // migrated and one exited ("partially applied", or a duplicate
        // version in `_sqlx_migrations`): 4 fresh installs in 7 lost a
        // note-service replica. [`Database::migrate`] takes a lock that
        // waits on both instead.
        mysql.set_locking(false);
        Self { sqlite, mysql }
    }
}

/// How long a process waits for another one's migrations before it gives up.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(300);

/// The lock every process migrating a MySQL database takes: one per database.
const MIGRATION_LOCK: &str = "SELECT GET_LOCK(CONCAT('easy-note-migrations:', DATABASE()), ?)";

/// Why the database could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `mysql:`, or does not parse.
    #[error("EASYNOTE_DATABASE_URL: {0}")]
    BadUrl(String),
    /// The database stayed unreachable for the whole connect timeout.
    #[error("database unreachable after {attempts} attempts over {waited:?}")]
    Unreachable {
        /// How many connection attempts were made.
        attempts: u32,
        /// How long we kept trying.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("applying migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another process held the migration lock for too long, or taking it
    /// failed.
    #[error("taking the migration lock failed")]
    MigrationLock(#[source] sqlx::Error),
    /// Creating the directory of the SQLite file failed.
    #[error("creating the directory for the SQLite file failed")]
    Io(#[from] std::io::Error),
}

/// Takes the database's migration lock on `conn`, waiting (in steps of a
/// positive timeout, which MySQL and MariaDB both honour) while another
/// process applies migrations, for at most [`MIGRATION_LOCK_WAIT`].
async fn lock_migrations(conn: &mut sqlx::MySqlConnection) -> Result<(), DbError> {
    const STEP_SECONDS: u64 = 5;
    let started = std::time::Instant::now();
    loop {
        let got: Option<i64> = sqlx::query_scalar(MIGRATION_LOCK)
            .bind(STEP_SECONDS as i64)
            .fetch_one(&mut *conn)
            .await
            .map_err(DbError::MigrationLock)?;
        match got {
            Some(1) => return Ok(()),
            _ if started.elapsed() >= MIGRATION_LOCK_WAIT => {
                return Err(DbError::MigrationLock(sqlx::Error::Protocol(format!(
                    "another process held the migration lock for {MIGRATION_LOCK_WAIT:?}"
                ))));
            }
            _ => tracing::info!(
                waited_s = started.elapsed().as_secs(),
                "another process is applying migrations; waiting for it"
            ),
        }
    }
}

impl Database {
    /// Connects (retrying with backoff for `config.connect_timeout`, since a
    /// freshly started MySQL may refuse connections for a while) and applies
    /// `migrations`.
    pub async fn connect(
        config: &DatabaseConfig,
        migrations: &Migrations,
    ) -> Result<Self, DbError> {
        let url = config.url.expose_secret();
        let db = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, config).await?
        } else if is_mysql_url(url) {
            Self::connect_mysql(url, config).await?
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(DbError::BadUrl(format!(
                "unsupported scheme {scheme:?}; use sqlite://path or mysql://user:password@host/db"
            )));
        };
        db.migrate(migrations).await?;
        Ok(db)
    }

    async fn connect_sqlite(url: &str, config: &DatabaseConfig) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| DbError::BadUrl(err.to_string()))?
            .create_if_missing(true)
            // WAL lets readers run beside the writer; FULL syncs every commit so an
            // acknowledged write survives a crash or power loss.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            let path = options.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        let pool_options = if in_memory {
            // Every connection to `:memory:` is a database of its own: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(config.max_connections)
        };
        let pool = retry_connect(config.connect_timeout, || {
            pool_options.clone().connect_with(options.clone())
        })
        .await?;
        Ok(Self::Sqlite(pool))
    }

    async fn connect_mysql(url: &str, config: &DatabaseConfig) -> Result<Self, DbError> {
        let url = url
            .strip_prefix("mariadb:")
            .map_or_else(|| url.to_owned(), |rest| format!("mysql:{rest}"));
        let mut options = MySqlConnectOptions::from_str(&url)
            .map_err(|err| DbError::BadUrl(err.to_string()))?
            .charset("utf8mb4");
        if let Some(password) = &config.password {
            options = options.password(password.expose_secret());
        }
        let pool_options = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5));
        let pool = retry_connect(config.connect_timeout, || {
            pool_options.clone().connect_with(options.clone())
        })
        .await?;
        Ok(Self::MySql(pool))
    }

    /// Applies the backend's migrations. Migrations of other services sharing
    /// the same database are tolerated (each service uses its own version range).
    async fn migrate(&self, migrations: &Migrations) -> Result<(), DbError> {
        match self {
            Self::Sqlite(pool) => migrations.sqlite.run(pool).await?,
            Self::MySql(pool) => {
                // One connection holds the lock and applies the migrations;
                // the lock goes with it if the process dies meanwhile.
                let mut conn = pool.acquire().await.map_err(DbError::MigrationLock)?;
                lock_migrations(&mut conn).await?;
                let applied = migrations.mysql.run_direct(&mut *conn).await;
                let released =
                    sqlx::query("SELECT RELEASE_LOCK(CONCAT('easy-note-migrations:', DATABASE()))")
                        .execute(&mut *conn)
                        .await;
                applied?;
                released.map_err(DbError::MigrationLock)?;
            }
        }
        Ok(())
    }

    /// The backend's name, as OpenTelemetry's `db.system.name` spells it.
    pub fn system(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::MySql(_) => "mysql",
        }
    }

    /// Runs one statement inside a client span named `"{operation} {table}"`
    /// (e.g. `SELECT note`), with the backend, operation and table as
    /// attributes; a failure marks the span as an error. Parameter values are
    /// never recorded. This span is the only one a repository call makes.
    pub async fn traced<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        self.traced_with(operation, table, None, statement).await
    }

    /// [`Database::traced`] for a statement over `ids` keys at once (`WHERE id
    /// IN (…)`): their number is the span's `easynote.db.keys` attribute.
    pub async fn traced_batch<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        ids: usize,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        self.traced_with(operation, table, Some(ids), statement)
            .await
    }

    async fn traced_with<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        keys: Option<usize>,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let span = tracing::info_span!(
            "database statement",
            otel.name = %format_args!("{operation} {table}"),
            otel.kind = "client",
            db.system.name = self.system(),
            db.operation.name = operation,
            db.collection.name = table,
            easynote.db.keys = keys,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let result = statement.instrument(span.clone()).await;
        if let Err(err) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", err.to_string().as_str());
        }
        result
    }

    /// Checks that the database answers (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    /// Waits for checked-out connections to return and closes the pool.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
    }
}

async fn retry_connect<P, F, Fut>(budget: Duration, mut connect: F) -> Result<P, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<P, sqlx::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match connect().await {
            Ok(pool) => return Ok(pool),
            Err(err) if is_retryable(&err) && started.elapsed() + delay < budget => {
                tracing::warn!(error = %err, attempt = attempts, retry_in = ?delay, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(source) => {
                return Err(DbError::Unreachable {
                    attempts,
                    waited: started.elapsed(),
                    source,
                });
            }
        }
    }
}

/// Connection-level failures are worth retrying; a wrong password or a
/// missing database is not going to fix itself.
fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
    )
}

/// The id an `INSERT` generated, on either backend.
pub trait InsertedId {
    /// The auto-increment id of the inserted row.
    fn inserted_id(&self) -> i64;
}

impl InsertedId for sqlx::sqlite::SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

impl InsertedId for sqlx::mysql::MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        // Our ids are BIGINT (signed) columns, so this always fits.
        i64::try_from(self.last_insert_id()).unwrap_or(i64::MAX)
    }
}

/// Whether `err` says the database cannot be reached now (down,
/// restarting, no connection free within the pool's wait) rather than that
/// a statement failed: the caller may retry later, or elsewhere.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// Whether `err` is a unique-constraint violation (e.g. a taken username).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The escape character used by [`like_contains`] patterns: `ESCAPE '!'`.
/// (A backslash would mean different things to MySQL and SQLite string literals.)
pub(crate) const LIKE_ESCAPE: char = '!';

/// A `LIKE … ESCAPE '!'` pattern matching `needle` as a plain substring, with
/// the user's `%` and `_` taken literally.
pub fn like_contains(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Milliseconds since the Unix epoch: how the schema stores time.
pub fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards_and_the_escape_itself() {
        assert_eq!(like_contains("abc"), "%abc%");
        assert_eq!(like_contains("50%_off!"), "%50!%!_off!!%");
        assert_eq!(like_contains(""), "%%");
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_clearly() {
        let migrations = Migrations::new(Migrator::DEFAULT, Migrator::DEFAULT);
        let err = Database::connect(&DatabaseConfig::new("postgres://x/y"), &migrations)
            .await
            .expect_err("postgres is not supported");
        assert!(
            err.to_string().contains("unsupported scheme \"postgres\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn sqlite_files_get_their_directory_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deeper/app.db");
        let url = format!("sqlite://{}", path.display());
        let migrations = Migrations::new(Migrator::DEFAULT, Migrator::DEFAULT);
        let db = Database::connect(&DatabaseConfig::new(url), &migrations)
            .await
            .expect("connect");
        db.ping().await.expect("ping");
        db.close().await;
        assert!(path.exists());
    }
}
