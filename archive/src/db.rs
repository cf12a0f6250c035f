//! The database: which backend a URL names, the connection pool, the schema migrations
//! embedded in the binary, and the few places where the three SQL dialects differ.
//!
//! Everything goes through sqlx's `Any` driver with values of four kinds (integers, text,
//! NULL, and unix-ms times turned into timestamps by SQL), so one code path serves SQLite,
//! PostgreSQL and MySQL/MariaDB; [`Backend`] writes the SQL that differs. One exception: on
//! PostgreSQL the archiver's write transaction ([`Tx`]) runs on PostgreSQL's own driver, the
//! same statements plus COPY, which `Any` cannot send.

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::{Any, AnyPool, Arguments, AssertSqlSafe, Executor, Postgres, Row as _};

use crate::error::{Error, Result};

/// How long a write waits for a database connection (and its transaction's start) before it
/// fails and is tried again (the archiver says so in its log).
pub const CONNECTION_WAIT: Duration = Duration::from_secs(3);

/// The default `--db`: an SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://rmq-archive.db";

/// Where the applied schema versions are recorded (not sqlx's default name, so that the
/// archive can share a database with an application that uses sqlx migrations itself).
pub const MIGRATIONS_TABLE: &str = "_rmq_archive_migrations";

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL: Migrator = sqlx::migrate!("./migrations/mysql");

/// Which database the archive is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The backend a URL names: `sqlite:`, `postgres:`/`postgresql:`, `mysql:`/`mariadb:`.
    pub fn of_url(url: &str) -> Result<Backend> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            _ => Err(Error::Invalid(format!("--db must be a sqlite://, postgres:// or mysql:// URL, got {:?}", redact(url)))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
            Backend::MySql => &MYSQL,
        }
    }

    /// A column name, quoted (`offset` and `key` are reserved words somewhere).
    pub fn col(self, name: &str) -> String {
        match self {
            Backend::MySql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }

    fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }

    /// SQL for a timestamp made of a unix-ms parameter.
    pub fn timestamp_of_ms(self, p: &str) -> String {
        match self {
            Backend::Sqlite => format!("strftime('%Y-%m-%d %H:%M:%f', {p} / 1000.0, 'unixepoch')"),
            Backend::Postgres => format!("to_timestamp({p} / 1000.0)"),
            Backend::MySql => format!("FROM_UNIXTIME({p} / 1000)"),
        }
    }

    /// SQL that reads a timestamp column as unix ms (an integer).
    pub fn ms_of(self, col: &str) -> String {
        match self {
            Backend::Sqlite => {
                format!("CAST(ROUND((julianday({col}) - 2440587.5) * 86400000.0) AS INTEGER)")
            }
            Backend::Postgres => {
                format!("CAST(ROUND(EXTRACT(EPOCH FROM {col}) * 1000) AS BIGINT)")
            }
            Backend::MySql => format!("CAST(ROUND(UNIX_TIMESTAMP({col}) * 1000) AS SIGNED)"),
        }
    }

    /// SQL for a JSON value made of a text parameter.
    fn json_of(self, p: &str) -> String {
        match self {
            Backend::Postgres => format!("CAST({p} AS JSONB)"),
            _ => p.to_string(),
        }
    }

    /// SQL that reads a JSON column as text.
    pub fn json_text(self, col: &str) -> String {
        match self {
            Backend::Postgres => format!("CAST({col} AS TEXT)"),
            Backend::MySql => format!("CAST({col} AS CHAR)"),
            Backend::Sqlite => col.to_string(),
        }
    }

    /// A case-sensitive "column contains parameter" test.
    fn contains(self, col: &str, p: &str) -> String {
        match self {
            Backend::Sqlite => format!("instr({col}, {p}) > 0"),
            Backend::Postgres => format!("strpos({col}, {p}) > 0"),
            Backend::MySql => format!("LOCATE({p}, {col}) > 0"),
        }
    }

    /// The end of an INSERT into `table` that skips rows whose key exists (MySQL: a no-op
    /// update of the first key column, which keeps strict-mode errors, unlike INSERT IGNORE).
    pub fn on_conflict_nothing(self, table: &str, first_key: &str) -> String {
        match self {
            Backend::MySql => {
                let c = format!("{table}.{}", self.col(first_key));
                format!(" ON DUPLICATE KEY UPDATE {c} = {c}")
            }
            _ => " ON CONFLICT DO NOTHING".to_string(),
        }
    }

    /// The end of an INSERT that overwrites `cols` of rows whose key exists.
    pub fn upsert(self, key: &[&str], cols: &[&str]) -> String {
        let sets: Vec<String> = cols
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| {
                let q = self.col(c);
                match self {
                    Backend::MySql => format!("{q} = VALUES({q})"),
                    _ => format!("{q} = excluded.{q}"),
                }
            })
            .collect();
        match self {
            Backend::MySql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
            _ => {
                let k: Vec<String> = key.iter().map(|c| self.col(c)).collect();
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", k.join(", "), sets.join(", "))
            }
        }
    }

    /// Row locks for a SELECT inside a transaction (SQLite locks the whole database instead).
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            _ => " FOR UPDATE",
        }
    }
}

/// A time as the SQLite tables hold it: `YYYY-MM-DD HH:MM:SS.SSS`, UTC (SQLite's own format:
/// its date functions read it, and it sorts as time).
pub fn sqlite_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let mut s = humantime::format_rfc3339_millis(t).to_string();
    s.pop(); // the Z
    s.replace_range(10..11, " ");
    s
}

/// A URL with its password hidden, to show in messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// A statement's argument: an integer or text, or NULL of either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}

/// One SQL statement and its arguments, with placeholders written for the backend. It runs
/// through the `Any` driver ([`Sql::query`]), or PostgreSQL's own ([`Sql::pg`], which the
/// archiver's writes use for COPY).
pub struct Sql {
    pub backend: Backend,
    text: String,
    args: Args,
    n: usize,
    /// Kept prepared on the connection (see [`Sql::unprepared`]).
    keep: bool,
}

/// A statement's arguments: bound for `Any` as they come on SQLite and MySQL (which only it
/// runs), kept as values on PostgreSQL until the driver is known.
enum Args {
    Any(AnyArguments),
    Values(Vec<Arg>),
}

impl Sql {
    pub fn new(backend: Backend) -> Sql {
        let args = match backend {
            Backend::Postgres => Args::Values(Vec::new()),
            _ => Args::Any(AnyArguments::default()),
        };
        Sql { backend, text: String::new(), args, n: 0, keep: true }
    }

    fn add(&mut self, a: Arg) {
        self.n += 1;
        match &mut self.args {
            Args::Values(v) => v.push(a),
            Args::Any(args) => match a {
                Arg::Int(v) => args.add(v),
                Arg::Text(v) => args.add(v),
            }
            .expect("the Any driver encodes integers and text"),
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    fn next_placeholder(&mut self) -> String {
        self.backend.placeholder(self.n + 1)
    }

    /// Appends a placeholder for `v`.
    pub fn arg(&mut self, v: impl Into<Arg>) -> &mut Sql {
        let p = self.next_placeholder();
        self.text.push_str(&p);
        self.add(v.into());
        self
    }

    /// Appends a timestamp of unix ms (NULL for `None`).
    pub fn ts(&mut self, ms: Option<i64>) -> &mut Sql {
        let ms = ms.map(clamp_ms);
        let p = self.next_placeholder();
        if self.backend == Backend::Sqlite {
            // The text SQLite's strftime would make, made here (cheaper than calling it for
            // every column of every row).
            self.text.push_str(&p);
            self.add(Arg::Text(ms.map(sqlite_time)));
        } else {
            self.text.push_str(&self.backend.timestamp_of_ms(&p));
            self.add(Arg::Int(ms));
        }
        self
    }

    /// Appends a PostgreSQL array of `ty` (`BIGINT`, `TEXT`), given as its text (the Any
    /// driver binds scalars only; the server reads the text as the array).
    pub fn array(&mut self, a: PgArray, ty: &str) -> &mut Sql {
        let p = self.next_placeholder();
        self.text.push_str(&format!("CAST({p} AS {ty}[])"));
        self.add(a.finish().into());
        self
    }

    /// Appends a JSON value given as text.
    pub fn json(&mut self, text: String) -> &mut Sql {
        let p = self.next_placeholder();
        self.text.push_str(&self.backend.json_of(&p));
        self.add(text.into());
        self
    }

    /// Appends a case-sensitive "`col` contains `text`" test.
    pub fn contains(&mut self, col: &str, text: String) -> &mut Sql {
        let p = self.next_placeholder();
        self.text.push_str(&self.backend.contains(col, &p));
        self.add(text.into());
        self
    }

    /// Appends `(a, b, c)`.
    pub fn list<T: Into<Arg>>(&mut self, vs: impl IntoIterator<Item = T>) -> &mut Sql {
        self.push("(");
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(v);
        }
        self.push(")")
    }

    /// How many arguments so far.
    pub fn args_len(&self) -> usize {
        self.n
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Not kept prepared on the connection when run (see [`Sql::one_off`]).
    pub fn unprepared(mut self) -> Sql {
        self.keep = false;
        self
    }

    /// The statement, prepared once per connection and reused (for statements whose text
    /// repeats: the archiver's writes).
    pub fn query(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        let args = match self.args {
            Args::Any(args) => args,
            Args::Values(values) => {
                let mut args = AnyArguments::default();
                for a in values {
                    match a {
                        Arg::Int(v) => args.add(v),
                        Arg::Text(v) => args.add(v),
                    }
                    .expect("the Any driver encodes integers and text");
                }
                args
            }
        };
        sqlx::query_with(AssertSqlSafe(self.text), args).persistent(self.keep)
    }

    /// The statement, not kept prepared (for one-off texts: searches).
    pub fn one_off(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        self.unprepared().query()
    }

    /// The statement for PostgreSQL's own driver.
    pub fn pg(self) -> sqlx::query::Query<'static, Postgres, PgArguments> {
        let Args::Values(values) = self.args else {
            panic!("a statement for PostgreSQL's own driver is written for PostgreSQL");
        };
        let mut args = PgArguments::default();
        for a in values {
            match a {
                Arg::Int(v) => args.add(v),
                Arg::Text(v) => args.add(v),
            }
            .expect("the PostgreSQL driver encodes integers and text");
        }
        sqlx::query_with(AssertSqlSafe(self.text), args).persistent(self.keep)
    }
}

/// The columns of a row read back, by position, whichever driver read it.
pub trait Cols {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
}

macro_rules! cols_of {
    ($row:ty) => {
        impl Cols for $row {
            fn int(&self, i: usize) -> Result<i64> {
                Ok(self.try_get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>> {
                Ok(self.try_get(i)?)
            }
            fn text(&self, i: usize) -> Result<String> {
                Ok(self.try_get(i)?)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>> {
                Ok(self.try_get(i)?)
            }
        }
    };
}
cols_of!(AnyRow);
cols_of!(PgRow);

/// A row read in a write transaction ([`Tx::fetch_all`]).
pub enum Rec {
    Any(AnyRow),
    Pg(PgRow),
}

impl Cols for Rec {
    fn int(&self, i: usize) -> Result<i64> {
        match self {
            Rec::Any(r) => r.int(i),
            Rec::Pg(r) => r.int(i),
        }
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self {
            Rec::Any(r) => r.opt_int(i),
            Rec::Pg(r) => r.opt_int(i),
        }
    }
    fn text(&self, i: usize) -> Result<String> {
        match self {
            Rec::Any(r) => r.text(i),
            Rec::Pg(r) => r.text(i),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self {
            Rec::Any(r) => r.opt_text(i),
            Rec::Pg(r) => r.opt_text(i),
        }
    }
}

/// The archiver's write transaction: through PostgreSQL's own driver on PostgreSQL (for
/// COPY, which the `Any` driver cannot send), through `Any` elsewhere.
pub enum Tx {
    Any(sqlx::Transaction<'static, Any>),
    Pg(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&mut self, s: Sql) -> Result<u64> {
        Ok(match self {
            Tx::Any(tx) => s.query().execute(&mut **tx).await?.rows_affected(),
            Tx::Pg(tx) => s.pg().execute(&mut **tx).await?.rows_affected(),
        })
    }

    pub async fn fetch_all(&mut self, s: Sql) -> Result<Vec<Rec>> {
        Ok(match self {
            Tx::Any(tx) => s.query().fetch_all(&mut **tx).await?.into_iter().map(Rec::Any).collect(),
            Tx::Pg(tx) => s.pg().fetch_all(&mut **tx).await?.into_iter().map(Rec::Pg).collect(),
        })
    }

    /// PostgreSQL: `COPY table (cols) FROM STDIN (FORMAT binary)` of `data`
    /// ([`crate::pgcopy::CopyRows`]); returns the rows copied.
    pub async fn copy_in(&mut self, table: &str, cols: &str, data: &[u8]) -> Result<u64> {
        let Tx::Pg(tx) = self else {
            return Err(Error::Failed("COPY is for PostgreSQL only".into()));
        };
        let mut copy = tx.copy_in_raw(&format!("COPY {table} {cols} FROM STDIN (FORMAT binary)")).await?;
        if let Err(e) = copy.send(data).await {
            // The connection is broken; the transaction is lost either way.
            let _ = copy.abort(e.to_string()).await;
            return Err(e.into());
        }
        Ok(copy.finish().await?)
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Any(tx) => tx.commit().await?,
            Tx::Pg(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A PostgreSQL array written as its text, `{1,NULL,3}` or `{"a","b\"c"}`: a whole column
/// of a multi-row write in one argument ([`Sql::array`]).
#[derive(Default)]
pub struct PgArray {
    text: String,
    n: usize,
}

impl PgArray {
    fn sep(&mut self) {
        self.text.push(if self.n == 0 { '{' } else { ',' });
        self.n += 1;
    }

    pub fn int(&mut self, v: Option<i64>) {
        use std::fmt::Write;
        self.sep();
        match v {
            Some(v) => write!(self.text, "{v}").expect("a String takes writes"),
            None => self.text.push_str("NULL"),
        }
    }

    /// Unix ms as [`Sql::ts`] clamps them (the statement makes them timestamps).
    pub fn ms(&mut self, v: Option<i64>) {
        self.int(v.map(clamp_ms));
    }

    pub fn text(&mut self, v: Option<&str>) {
        self.sep();
        let Some(v) = v else {
            self.text.push_str("NULL");
            return;
        };
        self.text.reserve(v.len() + 2);
        self.text.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                self.text.push('\\');
            }
            self.text.push(c);
        }
        self.text.push('"');
    }

    fn finish(mut self) -> String {
        if self.n == 0 {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

/// Unix ms within what every backend's timestamp holds (1970 to 9999): an absurd `AT` must
/// not make a batch fail for ever.
pub fn clamp_ms(ms: i64) -> i64 {
    ms.clamp(0, 253_402_300_799_999)
}

/// An open archive database.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    /// PostgreSQL: a pool of PostgreSQL's own driver, for the archiver's writes
    /// ([`Db::begin_write`]); it connects at its first use.
    pg: Option<PgPool>,
    pub backend: Backend,
    /// The URL without its password.
    pub shown: String,
}

static DRIVERS: Once = Once::new();

impl Db {
    /// Opens the database. `create`: make an SQLite file that does not exist yet (the archiver
    /// and `migrate` do; search, status and replay want an existing archive).
    pub async fn open(url: &str, create: bool) -> Result<Db> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = Backend::of_url(url)?;
        let shown = redact(url);
        let mut url = url.to_string();
        if let Some(rest) = url.strip_prefix("mariadb:") {
            url = format!("mysql:{rest}");
        }
        if backend == Backend::Sqlite {
            url = sqlite_url(&url, create)?;
        }
        let pg = match backend {
            Backend::Postgres => Some(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(CONNECTION_WAIT)
                    // No ping before each batch (a round trip): a dead connection fails the
                    // batch's first statement instead, and the batch is tried again.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            for stmt in session_setup(backend) {
                                conn.execute(*stmt).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy(&url)?,
            ),
            _ => None,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECTION_WAIT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    for stmt in session_setup(backend) {
                        conn.execute(*stmt).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)?;
        Ok(Db { pool, pg, backend, shown })
    }

    /// Applies the schema versions that the database lacks; returns their versions and names.
    pub async fn migrate(&self) -> Result<Vec<(i64, String)>> {
        let before = self.applied().await.unwrap_or_default();
        let mut m = Migrator::with_migrations(self.backend.migrator().iter().cloned().collect());
        m.dangerous_set_table_name(MIGRATIONS_TABLE);
        // PostgreSQL and MySQL lock the schema while migrating; SQLite does not, so two
        // archivers starting at once on a new file can race: the loser's transaction fails
        // and rolls back, and a second try finds the version applied.
        let mut tries = 0;
        while let Err(e) = m.run(&self.pool).await {
            tries += 1;
            if tries >= 5 {
                return Err(e.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
        }
        Ok(self
            .backend
            .migrator()
            .iter()
            .filter(|mig| !before.contains(&mig.version))
            .map(|mig| (mig.version, mig.description.to_string()))
            .collect())
    }

    /// The schema versions applied so far (empty for a new database).
    pub async fn applied(&self) -> Result<Vec<i64>> {
        let sql = format!("SELECT version FROM {MIGRATIONS_TABLE} WHERE success = TRUE ORDER BY version");
        let rows: Vec<(i64,)> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The newest schema version this binary knows.
    pub fn latest_version(&self) -> i64 {
        self.backend.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Fails unless the database answers, holds the archive's tables, and is not of a newer
    /// schema than this binary.
    pub async fn check_schema(&self) -> Result<()> {
        let have = match self.applied().await {
            Ok(v) => v.last().copied().unwrap_or(0),
            // The database answered with an error: no migrations table, so no archive.
            Err(Error::Db(e)) if e.as_database_error().is_some() => 0,
            Err(e) => return Err(Error::Failed(format!("cannot reach the archive database {}: {e}", self.shown))),
        };
        if have == 0 {
            return Err(Error::Failed(format!(
                "{} holds no rmq archive yet; run `rmq archive migrate` or start `rmq archive run`",
                self.shown
            )));
        }
        if have > self.latest_version() {
            return Err(Error::Failed(format!(
                "{} has schema version {have}, newer than this rmq ({}); upgrade rmq",
                self.shown,
                self.latest_version()
            )));
        }
        Ok(())
    }

    /// Starts a transaction that holds the write lock from its first statement (SQLite's
    /// `BEGIN IMMEDIATE`, so two writers queue up instead of failing on a stale snapshot).
    ///
    /// Gives up after [`CONNECTION_WAIT`] like the pool's own wait for a connection: the pool
    /// can go on past it while it finds its idle connections dead one after another (a
    /// database restarting), and a writer that waits in silence tells the operator nothing.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>> {
        let begin = async {
            match self.backend {
                Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
                _ => self.pool.begin().await,
            }
        };
        match tokio::time::timeout(CONNECTION_WAIT, begin).await {
            Ok(tx) => Ok(tx?),
            Err(_) => Err(Error::Db(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Starts the transaction of a batch write ([`Db::begin`]; on PostgreSQL, on a connection
    /// of its own driver, which can COPY).
    pub async fn begin_write(&self) -> Result<Tx> {
        let Some(pg) = &self.pg else {
            return Ok(Tx::Any(self.begin().await?));
        };
        match tokio::time::timeout(CONNECTION_WAIT, pg.begin()).await {
            Ok(tx) => Ok(Tx::Pg(tx?)),
            Err(_) => Err(Error::Db(sqlx::Error::PoolTimedOut)),
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.backend)
    }
}

/// What every new connection runs first.
fn session_setup(backend: Backend) -> &'static [&'static str] {
    match backend {
        // WAL: searches read while the archiver writes. synchronous FULL: a committed batch
        // survives a power cut too, since its log entries are acknowledged right after.
        Backend::Sqlite => &["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA busy_timeout = 10000"],
        Backend::Postgres => &["SET TIME ZONE 'UTC'"],
        // READ COMMITTED: after waiting for a queue's lock, a transaction sees what the other
        // archiver committed (REPEATABLE READ would read an older snapshot).
        Backend::MySql => &["SET time_zone = '+00:00'", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"],
    }
}

/// The SQLite URL with `mode=rwc` when the file may be created, and a clear error when it
/// must exist and does not.
fn sqlite_url(url: &str, create: bool) -> Result<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path == ":memory:" || query.contains("mode=memory");
    if !create && !memory && !std::path::Path::new(path).exists() {
        return Err(Error::Failed(format!("no archive database at {path}: give --db, or start `rmq archive run` first")));
    }
    if create && !memory && !query.contains("mode=") {
        let sep = if query.is_empty() { "?" } else { "&" };
        return Ok(format!("{url}{sep}mode=rwc"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_backend() {
        assert_eq!(Backend::of_url("sqlite://a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgresql://h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("mariadb://h/db").unwrap(), Backend::MySql);
        assert!(Backend::of_url("redis://h").is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let mut s = Sql::new(Backend::Postgres);
        s.push("a = ").arg(1i64).push(" AND b IN ").list(["x".to_string(), "y".to_string()]);
        assert_eq!(s.text(), "a = $1 AND b IN ($2, $3)");
        let mut s = Sql::new(Backend::MySql);
        s.push("t = ").ts(Some(5));
        assert_eq!(s.text(), "t = FROM_UNIXTIME(? / 1000)");
    }

    #[test]
    fn postgres_arrays_quote_what_they_must() {
        let mut a = PgArray::default();
        a.text(Some(r#"a"b\c,{d}"#));
        a.text(None);
        a.text(Some(""));
        assert_eq!(a.finish(), r#"{"a\"b\\c,{d}",NULL,""}"#);
        let mut a = PgArray::default();
        a.int(Some(-5));
        a.int(None);
        a.ms(Some(i64::MAX));
        assert_eq!(a.finish(), "{-5,NULL,253402300799999}");
        assert_eq!(PgArray::default().finish(), "{}");
        let mut s = Sql::new(Backend::Postgres);
        s.push("x = ANY(").array(PgArray::default(), "BIGINT").push(")");
        assert_eq!(s.text(), "x = ANY(CAST($1 AS BIGINT[]))");
    }

    #[test]
    fn sqlite_times_are_sqlites_own_format() {
        assert_eq!(sqlite_time(1_763_769_600_005), "2025-11-22 00:00:00.005");
    }

    #[test]
    fn an_upsert_never_overwrites_the_key() {
        let u = Backend::Sqlite.upsert(&["queue", "offset"], &["queue", "offset", "status"]);
        assert_eq!(u, " ON CONFLICT (\"queue\", \"offset\") DO UPDATE SET \"status\" = excluded.\"status\"");
        let u = Backend::MySql.upsert(&["queue", "offset"], &["queue", "offset", "status"]);
        assert_eq!(u, " ON DUPLICATE KEY UPDATE `status` = VALUES(`status`)");
    }
}
