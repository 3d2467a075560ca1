//! A throwaway PostgreSQL cluster per test, from the installed server binaries (found by
//! `scripts/lib/pg-bindir.sh`, the rule the scripts use too).
//!
//! The cluster lives in a fresh temp dir, listens on 127.0.0.1 on a free port plus a unix socket
//! in that dir, and is stopped and deleted on drop. It never touches a system cluster, a fixed
//! port or a shared data directory.
//!
//! initdb and postgres refuse to run as root; CI runs everything as root. So when the effective
//! uid is 0 the temp dir is handed to the `postgres` system user (created by Debian's postgresql
//! package) and every server binary runs through `runuser -u postgres --`.
//!
//! initdb costs about a second of CPU, which adds up over many tests on a 2-core machine: the
//! first cluster of a build initdb's a pristine template into `CARGO_TARGET_TMPDIR` (keyed by the
//! server version), later clusters copy it. `PGCDC_TEST_FRESH_INITDB=1` skips the template.
//!
//! The server runs with `fsync=off` and `synchronous_commit=off` for speed. An immediate stop is
//! therefore a real crash: commits from the last few hundred milliseconds may be lost, exactly as
//! they would be on a production server with `synchronous_commit=off`. Such commits never reach
//! pgcdc either (a walsender only sends WAL that was written), so compare pgcdc's files with the
//! table as it is *after* the restart, not with what the test inserted.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tempfile::TempDir;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::config::free_port;
use super::wait::wait_until;

/// Login + replication role that authenticates with SCRAM-SHA-256.
pub const SCRAM_USER: &str = "pgcdc_scram";
/// Login + replication role whose password is stored as MD5 and checked with `md5`.
pub const MD5_USER: &str = "pgcdc_md5";
/// Login + replication role checked with `password` (cleartext over the wire).
pub const CLEAR_USER: &str = "pgcdc_clear";
/// The database every cluster has, owned by `postgres`.
pub const SHOP_DB: &str = "shop";
/// The bootstrap superuser; trusted on 127.0.0.1 and the unix socket.
pub const SUPERUSER: &str = "postgres";

/// How long a (re)started server may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Bumped when initdb's arguments change, so stale templates are not reused.
const TEMPLATE_REVISION: u32 = 1;
/// Environment variables that would redirect the server binaries somewhere else.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGTZ",
];

/// The password of each test role: `secret-pw-<role>`.
pub fn password_for(role: &str) -> String {
    format!("secret-pw-{role}")
}

/// How [`PgCluster::stop`] shuts the server down (`pg_ctl stop -m ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clean shutdown: sessions are ended, a shutdown checkpoint is written.
    Fast,
    /// Crash: every process quits at once, the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running throwaway cluster. Dropping it stops the server and deletes its directory.
pub struct PgCluster {
    bin: PgBin,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    running: AtomicBool,
    // Last: dropped after the server is stopped.
    root: TempDir,
}

impl PgCluster {
    /// initdb + start with the harness's settings, create the test roles and the `shop` database,
    /// and wait until the server accepts connections.
    pub async fn start() -> PgCluster {
        PgCluster::start_with(&[]).await
    }

    /// Like [`PgCluster::start`], with extra `postgresql.conf` settings that override the
    /// defaults (e.g. `("wal_sender_timeout", "5s")`, `("max_slot_wal_keep_size", "64MB")`).
    pub async fn start_with(settings: &[(&str, &str)]) -> PgCluster {
        let settings = owned(settings);
        let cluster = blocking(move || PgCluster::create(&settings)).await;
        cluster.wait_ready().await;
        cluster.bootstrap().await;
        cluster.check_expected_major().await;
        cluster
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (and the data dir and log).
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory of the server binaries in use (initdb, pg_ctl, postgres, psql, ...).
    pub fn bindir(&self) -> &Path {
        &self.bin.dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `postgres://user[:password]@127.0.0.1:PORT/db`, percent-encoded.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut url = format!("postgres://{}", percent_encode(user));
        if let Some(password) = password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        let _ = write!(url, "@127.0.0.1:{}/{}", self.port, percent_encode(db));
        url
    }

    /// The URL of one of the test roles, with its password.
    pub fn role_url(&self, role: &str, db: &str) -> String {
        self.url(role, Some(&password_for(role)), db)
    }

    /// A connection as the `postgres` superuser; its connection task runs on the test runtime.
    pub async fn client(&self, db: &str) -> Client {
        try_client(self.port, db).await.unwrap_or_else(|e| {
            panic!(
                "connecting to database {db:?} on port {} failed: {}",
                self.port,
                pg_error(&e)
            )
        })
    }

    /// Runs `sql` (one or more statements, one implicit transaction) in `shop` as superuser.
    pub async fn execute(&self, sql: &str) {
        self.execute_in(SHOP_DB, sql).await;
    }

    /// Runs `sql` in `db` as superuser; panics with the server's message on error.
    pub async fn execute_in(&self, db: &str, sql: &str) {
        let client = self.client(db).await;
        if let Err(e) = client.batch_execute(sql).await {
            panic!(
                "SQL failed in database {db:?}: {}\n--- SQL ---\n{sql}",
                pg_error(&e)
            );
        }
    }

    /// The first column of the first row of `sql` in `shop`, as text (`None` for NULL or no row).
    pub async fn query_scalar(&self, sql: &str) -> Option<String> {
        let client = self.client(SHOP_DB).await;
        let messages = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("query failed: {}\n--- SQL ---\n{sql}", pg_error(&e)));
        messages.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })?
    }

    /// With `PGCDC_PG_EXPECT_MAJOR` set (the version matrix sets it), a server of any other
    /// major is a broken setup: a matrix row must never pass on the wrong version.
    async fn check_expected_major(&self) {
        let Ok(expected) = std::env::var("PGCDC_PG_EXPECT_MAJOR") else {
            return;
        };
        let major = self.major().await;
        assert_eq!(
            major.to_string(),
            expected,
            "PGCDC_PG_EXPECT_MAJOR={expected}, but {} started PostgreSQL {major}",
            self.bin.dir.display()
        );
    }

    /// The server's major version (13, 14, ...), for tests whose expectations differ by version.
    pub async fn major(&self) -> u32 {
        let num = self.query_scalar("show server_version_num").await;
        num.as_deref()
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| n / 10_000)
            .unwrap_or_else(|| panic!("server_version_num was {num:?}"))
    }

    /// The server's WAL insert position now (`X/Y`).
    pub async fn insert_lsn(&self) -> String {
        self.query_scalar("select pg_current_wal_insert_lsn()::text")
            .await
            .expect("current LSN")
    }

    /// Waits until `slot` has confirmed everything the server wrote up to now.
    pub async fn wait_slot_confirms_now(&self, slot: &str, what: &str, deadline: Duration) {
        let lsn = self.insert_lsn().await;
        self.wait_true(
            what,
            deadline,
            &format!(
                "select confirmed_flush_lsn >= '{lsn}'::pg_lsn from pg_replication_slots where slot_name = '{slot}'"
            ),
        )
        .await;
    }

    /// Waits until `sql` (a query returning one boolean, run in `shop`) is true.
    pub async fn wait_true(&self, what: &str, deadline: Duration, sql: &str) {
        let client = self.client(SHOP_DB).await;
        wait_until(what, deadline, || {
            let client = &client;
            async move {
                client
                    .query_one(sql, &[])
                    .await
                    .ok()
                    .is_some_and(|row| row.get::<_, bool>(0))
            }
        })
        .await;
    }

    /// `ALTER SYSTEM SET name = 'value'` and reload (for settings that need no restart).
    pub async fn set_config(&self, name: &str, value: &str) {
        let client = self.client("postgres").await;
        // ALTER SYSTEM cannot run in a transaction block: one statement per call.
        let sql = format!("alter system set {name} = {}", quote_literal(value));
        if let Err(e) = client.batch_execute(&sql).await {
            panic!("{sql} failed: {}", pg_error(&e));
        }
        if let Err(e) = client.batch_execute("select pg_reload_conf()").await {
            panic!("pg_reload_conf() failed: {}", pg_error(&e));
        }
    }

    /// Stops the server (`pg_ctl stop -m fast|immediate`); data dir and port are kept.
    pub async fn stop(&self, mode: StopMode) {
        let (bin, data) = (self.bin.clone(), self.data.clone());
        let root = self.root.path().to_owned();
        let result = blocking(move || pg_ctl_stop(&bin, &data, &root, mode)).await;
        if let Err(e) = result {
            panic!("stopping the server failed: {e}\n{}", self.log_tail(40));
        }
        self.running.store(false, Ordering::SeqCst);
    }

    /// A hot standby of `primary`, streaming from its physical slot `primary_slot` and, on
    /// PostgreSQL 17+, copying its failover slots (`sync_replication_slots`). The standby begins as a
    /// cold copy of the primary's data directory: the primary is stopped (fast) for the copy and
    /// started again, as a base backup without `pg_basebackup` (which the npm builds lack).
    pub async fn start_standby_of(primary: &PgCluster, primary_slot: &str) -> PgCluster {
        let syncs_slots = primary.major().await >= 17;
        primary.stop(StopMode::Fast).await;
        let (source, primary_port) = (primary.data.clone(), primary.port);
        let primary_slot = primary_slot.to_owned();
        let (bin, root, data) = blocking(move || {
            let bin = PgBin::find();
            let root = bin.scratch_dir("pgcdc-pg-standby-");
            let data = root.path().join("data");
            copy_dir(&source, &data)
                .unwrap_or_else(|e| panic!("copying the primary's data directory: {e}"));
            // Slots are the primary's own, as in a real base backup: a copied logical slot would
            // block the standby's slot synchronisation of the same name.
            for slot in std::fs::read_dir(data.join("pg_replslot")).expect("reading pg_replslot") {
                let path = slot.expect("reading pg_replslot").path();
                std::fs::remove_dir_all(&path)
                    .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
            }
            write_owned(&bin, &data.join("standby.signal"), "");
            (bin, root, data)
        })
        .await;
        // Up before the standby: its slot sync worker, finding no primary, would wait a minute
        // before trying again.
        primary.start_again().await;
        let standby = blocking(move || {
            let conninfo = format!(
                "host=127.0.0.1 port={primary_port} user={SUPERUSER} dbname={SHOP_DB} \
                 application_name=pgcdc_standby"
            );
            let mut settings = vec![
                ("primary_conninfo", conninfo.as_str()),
                ("primary_slot_name", primary_slot.as_str()),
                ("hot_standby_feedback", "on"),
                // Report the flush position every second, not every 10: the primary holds
                // logical changes back until its synchronized_standby_slots have them.
                ("wal_receiver_status_interval", "1s"),
            ];
            if syncs_slots {
                settings.push(("sync_replication_slots", "on"));
            }
            PgCluster::start_on_a_free_port(bin, root, data, &owned(&settings))
        })
        .await;
        standby.wait_ready().await;
        standby
    }

    /// Promotes a standby to primary (`pg_ctl promote -w`: returns once it accepts writes).
    pub async fn promote(&self) {
        let (bin, data) = (self.bin.clone(), self.data.clone());
        let root = self.root.path().to_owned();
        let out = blocking(move || {
            bin.command("pg_ctl", &root)
                .args(["promote", "-w", "-t", "60", "-s", "-D"])
                .arg(&data)
                .output()
                .map_err(|e| format!("running pg_ctl: {e}"))
                .and_then(|out| check(&out, "pg_ctl promote"))
        })
        .await;
        if let Err(e) = out {
            panic!("promoting the standby failed: {e}\n{}", self.log_tail(40));
        }
    }

    /// Starts a stopped server again on the same port and data dir, and waits until it accepts
    /// connections (after crash recovery, if it was stopped immediately).
    pub async fn start_again(&self) {
        let (bin, data, log) = (self.bin.clone(), self.data.clone(), self.log.clone());
        let root = self.root.path().to_owned();
        let result = blocking(move || pg_ctl_start(&bin, &data, &log, &root)).await;
        if let Err(e) = result {
            panic!("restarting the server failed: {e}\n{}", self.log_tail(40));
        }
        self.running.store(true, Ordering::SeqCst);
        self.wait_ready().await;
    }

    /// [`stop`](PgCluster::stop) then [`start_again`](PgCluster::start_again).
    pub async fn restart(&self, mode: StopMode) {
        self.stop(mode).await;
        self.start_again().await;
    }

    /// Serves TLS with `cert` and `key` (copied into the cluster's directory, the key readable by
    /// the server only) and restarts. With `ssl_only` the password roles must use TLS over TCP.
    pub async fn enable_tls(&self, cert: &Path, key: &Path, ssl_only: bool) {
        use std::os::unix::fs::PermissionsExt;
        let (own_cert, own_key) = (
            self.root.path().join("server.crt"),
            self.root.path().join("server.key"),
        );
        std::fs::copy(cert, &own_cert).expect("copying the server certificate");
        std::fs::copy(key, &own_key).expect("copying the server key");
        std::fs::set_permissions(&own_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the server key");
        self.bin.give(&own_cert);
        self.bin.give(&own_key);
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("pgcdc_test.conf"))
            .expect("opening pgcdc_test.conf");
        let settings = format!(
            "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
            quote_literal(&own_cert.display().to_string()),
            quote_literal(&own_key.display().to_string())
        );
        std::io::Write::write_all(&mut conf, settings.as_bytes()).expect("appending TLS settings");
        write_owned(
            &self.bin,
            &self.data.join("pg_hba.conf"),
            &hba_conf(ssl_only),
        );
        self.restart(StopMode::Fast).await;
    }

    /// The last `lines` lines of the server log, headed, for panic messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_text();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    async fn wait_ready(&self) {
        let port = self.port;
        let what = format!("PostgreSQL on 127.0.0.1:{port} to accept connections");
        wait_until(&what, READY_DEADLINE, || async move {
            try_client(port, "postgres")
                .await
                .map(|_| ())
                .map_err(|e| pg_error(&e))
        })
        .await;
    }

    /// Roles for every password method, and the `shop` database with read access for them.
    async fn bootstrap(&self) {
        let mut roles = String::new();
        for (role, encryption) in [
            (SCRAM_USER, "scram-sha-256"),
            (MD5_USER, "md5"),
            (CLEAR_USER, "scram-sha-256"),
        ] {
            // The verifier is chosen when the password is set: an MD5 verifier is what makes
            // the `md5` pg_hba method really use MD5 (with a SCRAM verifier it upgrades to SCRAM).
            let _ = writeln!(
                roles,
                "set password_encryption = '{encryption}'; \
                 create role {role} login replication password {};",
                quote_literal(&password_for(role))
            );
        }
        roles.push_str("reset password_encryption;");
        self.execute_in("postgres", &roles).await;
        // CREATE DATABASE cannot run inside the implicit transaction of a multi-statement batch.
        self.execute_in(
            "postgres",
            &format!("create database {SHOP_DB} owner {SUPERUSER}"),
        )
        .await;
        let grantees = [SCRAM_USER, MD5_USER, CLEAR_USER].join(", ");
        self.execute_in(
            SHOP_DB,
            &format!(
                "grant usage on schema public to {grantees};\n\
                 alter default privileges for role {SUPERUSER} in schema public \
                 grant select on tables to {grantees};"
            ),
        )
        .await;
    }

    /// The blocking part of start: directories, initdb, configuration, `pg_ctl start`.
    fn create(settings: &[(String, String)]) -> PgCluster {
        let bin = PgBin::find();
        let root = bin.scratch_dir("pgcdc-pg-");
        let data = root.path().join("data");
        init_data_dir(&bin, &data);

        // Our settings live in their own file, included last, so they override initdb's.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("opening postgresql.conf");
        std::io::Write::write_all(&mut conf, b"\ninclude 'pgcdc_test.conf'\n")
            .expect("appending to postgresql.conf");
        write_owned(&bin, &data.join("pg_hba.conf"), &hba_conf(false));
        PgCluster::start_on_a_free_port(bin, root, data, settings)
    }

    /// `pg_ctl start` with `pgcdc_test.conf` naming a free port; tried again on another port if
    /// someone took that one first.
    fn start_on_a_free_port(
        bin: PgBin,
        root: TempDir,
        data: PathBuf,
        settings: &[(String, String)],
    ) -> PgCluster {
        let log = root.path().join("postgres.log");
        let mut attempts = Vec::new();
        // The free port is only free until someone else takes it: on a bind failure pick another.
        for _ in 0..5 {
            let port = free_port();
            write_owned(
                &bin,
                &data.join("pgcdc_test.conf"),
                &server_conf(port, root.path(), settings),
            );
            let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            match pg_ctl_start(&bin, &data, &log, root.path()) {
                Ok(()) => {
                    return PgCluster {
                        bin,
                        port,
                        data,
                        log,
                        running: AtomicBool::new(true),
                        root,
                    };
                }
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let new = text.get(log_len as usize..).unwrap_or_default();
                    if !(new.contains("could not bind") || new.contains("already in use")) {
                        panic!(
                            "starting PostgreSQL failed: {e}\n--- {} ---\n{text}",
                            log.display()
                        );
                    }
                    attempts.push(format!("port {port}: {e}"));
                }
            }
        }
        panic!("no free port for PostgreSQL after 5 attempts: {attempts:?}");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
        }
        if self.running.load(Ordering::SeqCst)
            && pg_ctl_stop(&self.bin, &self.data, self.root.path(), StopMode::Immediate).is_err()
        {
            // pg_ctl could not do it: SIGQUIT (immediate shutdown) straight to the postmaster.
            if let Ok(pid_file) = std::fs::read_to_string(self.data.join("postmaster.pid"))
                && let Some(pid) = pid_file.lines().next().filter(|p| p.parse::<u32>().is_ok())
            {
                let _ = Command::new("kill").args(["-s", "QUIT", pid]).status();
            }
        }
    }
}

/// Where the server binaries are and whom they run as.
#[derive(Clone, Debug)]
struct PgBin {
    dir: PathBuf,
    /// `Some((uid, gid))` of the `postgres` user when we are root and must switch users.
    owner: Option<(u32, u32)>,
}

impl PgBin {
    /// The binaries [`find_bindir`] names, and whom they run as.
    fn find() -> PgBin {
        let dir = find_bindir().unwrap_or_else(|why| panic!("{why}"));
        let owner = (effective_uid() == 0).then(postgres_user);
        PgBin { dir, owner }
    }

    /// A command running `program` from the bindir, as `postgres` when we are root.
    fn command(&self, program: &str, cwd: &Path) -> Command {
        let path = self.dir.join(program);
        let mut cmd = if self.owner.is_some() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        if let Some(lib) = self.bundled_lib_dir() {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        // postgres may try to chdir back to the caller's cwd (/root): keep it somewhere it owns.
        cmd.current_dir(cwd).env("LC_ALL", "C").stdin(Stdio::null());
        cmd
    }

    /// The libraries of a build that carries its own (the npm builds `scripts/fetch-postgres.sh`
    /// unpacks: `native/{bin,lib}` beside `native/pg-symlinks.json`). A distribution's build
    /// finds its libraries through the system linker and gets nothing.
    fn bundled_lib_dir(&self) -> Option<PathBuf> {
        let native = self.dir.parent()?;
        native
            .join("pg-symlinks.json")
            .is_file()
            .then(|| native.join("lib"))
    }

    /// The parent of temp dirs: somewhere `postgres` can traverse when we switch to it.
    fn scratch_base(&self) -> PathBuf {
        if self.owner.is_some() {
            // TMPDIR may be under /root (mode 0700), which postgres cannot enter.
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        }
    }

    /// A new temp dir for one cluster, owned by the server's user.
    fn scratch_dir(&self, prefix: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.scratch_base())
            .expect("creating a cluster's temp dir");
        self.give(dir.path());
        dir
    }

    /// Hands `path` to the server's user (no-op when not root).
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
        }
    }
}

/// The server binaries' directory, by the one rule `scripts/lib/pg-bindir.sh` implements
/// (`PGCDC_PG_BINDIR`, else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`),
/// asked once per test binary. The error is the script's own account of what it tried.
fn find_bindir() -> Result<PathBuf, String> {
    static BINDIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINDIR
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/pg-bindir.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !dir.is_empty() {
                Ok(PathBuf::from(dir))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            }
        })
        .clone()
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .expect("no effective uid in /proc/self/status")
}

/// uid and gid of the `postgres` system user.
pub fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id"),
            _ => panic!(
                "running as root, so the cluster must run as the `postgres` system user, \
                 but it does not exist; Debian's postgresql package creates it \
                 (run scripts/install-deps.sh)"
            ),
        }
    };
    (id("-u"), id("-g"))
}

/// Fills `data` with a pristine cluster: a copy of the cached template, or a fresh initdb when
/// there is no usable template (`PGCDC_TEST_FRESH_INITDB`, or the cache is not writable).
fn init_data_dir(bin: &PgBin, data: &Path) {
    let template = match std::env::var_os("PGCDC_TEST_FRESH_INITDB") {
        Some(_) => None,
        None => template(bin),
    };
    let Some(template) = template else {
        run_initdb(bin, data);
        return;
    };
    // `cp -a` keeps ownership (postgres) and the 0700 mode the server insists on.
    if let Err(e) = copy_dir(&template, data) {
        panic!("copying the initdb template {}: {e}", template.display());
    }
}

/// The initdb'd template for this server version, created on first use; `None` (after a
/// warning) if it cannot be cached.
fn template(bin: &PgBin) -> Option<PathBuf> {
    // One initdb per process even when tests start clusters in parallel threads.
    static CREATING: Mutex<()> = Mutex::new(());
    let _guard = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    let version = server_version(bin);
    let mut hasher = DefaultHasher::new();
    (&bin.dir, &version, bin.owner, TEMPLATE_REVISION).hash(&mut hasher);
    let label: String = version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("pgcdc-initdb-{label}-{:016x}", hasher.finish());
    let template = cache.join(&name);
    if template.join("PG_VERSION").is_file() {
        return Some(template);
    }

    let scratch = bin.scratch_dir("pgcdc-initdb-");
    let data = scratch.path().join("data");
    run_initdb(bin, &data);
    // Other test binaries may race us (nextest runs them in parallel): build under a private
    // name, then rename into place, which is atomic; the loser throws its copy away.
    let partial = cache.join(format!("{name}.partial-{}", std::process::id()));
    let cached = std::fs::create_dir_all(cache)
        .map_err(|e| format!("creating {}: {e}", cache.display()))
        .and_then(|()| {
            let _ = std::fs::remove_dir_all(&partial);
            copy_dir(&data, &partial)
        })
        .and_then(|()| match std::fs::rename(&partial, &template) {
            Ok(()) => Ok(()),
            Err(_) if template.join("PG_VERSION").is_file() => {
                let _ = std::fs::remove_dir_all(&partial);
                Ok(())
            }
            Err(e) => Err(format!("renaming into {}: {e}", template.display())),
        });
    match cached {
        Ok(()) => Some(template),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            eprintln!(
                "pgcdc test harness: not caching the initdb template ({e}); running initdb per cluster"
            );
            None
        }
    }
}

/// `cp -a from to`: keeps owners and modes.
/// Settings as owned pairs, to move into a blocking task.
fn owned(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `cp -a`: keeps ownership (postgres) and the 0700 mode the server insists on.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("running cp: {e}"))?;
    check(&out, "cp -a")
}

fn server_version(bin: &PgBin) -> String {
    let out = Command::new(bin.dir.join("postgres"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {}/postgres --version: {e}", bin.dir.display()));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run_initdb(bin: &PgBin, data: &Path) {
    let cwd = data.parent().expect("data dir has a parent");
    let out = bin
        .command("initdb", cwd)
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .expect("running initdb");
    check(&out, "initdb").unwrap_or_else(|e| panic!("{e}"));
}

fn pg_ctl_start(bin: &PgBin, data: &Path, log: &Path, cwd: &Path) -> Result<(), String> {
    // -w: pg_ctl polls the postmaster until it is ready or has exited, so a server that fails to
    // start is reported at once instead of at the end of our own readiness deadline.
    let out = bin
        .command("pg_ctl", cwd)
        .args(["start", "-w", "-t", "60", "-s", "-D"])
        .arg(data)
        .arg("-l")
        .arg(log)
        .output()
        .map_err(|e| format!("running pg_ctl: {e}"))?;
    check(&out, "pg_ctl start")
}

fn pg_ctl_stop(bin: &PgBin, data: &Path, cwd: &Path, mode: StopMode) -> Result<(), String> {
    let out = bin
        .command("pg_ctl", cwd)
        .args(["stop", "-w", "-t", "60", "-s", "-m", mode.as_arg(), "-D"])
        .arg(data)
        .output()
        .map_err(|e| format!("running pg_ctl: {e}"))?;
    check(&out, "pg_ctl stop")
}

fn check(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Writes a file the server reads, owned by the server's user.
fn write_owned(bin: &PgBin, path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    bin.give(path);
}

fn server_conf(port: u16, socket_dir: &Path, extra: &[(String, String)]) -> String {
    let socket_dir = socket_dir.to_str().expect("temp dir path is UTF-8");
    let mut conf = format!(
        "# Written by the pgcdc test harness (tests/common/cluster.rs).\n\
         port = {port}\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = {}\n\
         wal_level = logical\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         wal_sender_timeout = '60s'\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = '32MB'\n\
         timezone = 'UTC'\n\
         log_timezone = 'UTC'\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n\
         log_connections = on\n\
         log_disconnections = on\n\
         log_replication_commands = on\n",
        quote_literal(socket_dir)
    );
    for (name, value) in extra {
        let _ = writeln!(conf, "{name} = {}", quote_literal(value));
    }
    conf
}

/// One rule per password method for each test role (databases and replication), then trust for
/// everyone else on 127.0.0.1 and the unix socket. Rules match first-to-last.
/// With `ssl_only`, the password roles may connect over TCP only with TLS, and trust is left to
/// the superuser alone (so a plain connection of theirs finds no rule at all).
pub fn hba_conf(ssl_only: bool) -> String {
    let mut hba = String::from("# Written by the pgcdc test harness (tests/common/cluster.rs).\n");
    let host = if ssl_only { "hostssl" } else { "host" };
    for (role, method) in [
        (SCRAM_USER, "scram-sha-256"),
        (MD5_USER, "md5"),
        (CLEAR_USER, "password"),
    ] {
        let _ = writeln!(hba, "{host} all         {role} 127.0.0.1/32 {method}");
        let _ = writeln!(hba, "{host} replication {role} 127.0.0.1/32 {method}");
    }
    let trusted = if ssl_only { SUPERUSER } else { "all" };
    let _ = write!(
        hba,
        "host  all         {trusted} 127.0.0.1/32 trust\n\
         host  replication {trusted} 127.0.0.1/32 trust\n\
         local all         all              trust\n\
         local replication all              trust\n"
    );
    hba
}

/// A single-quoted SQL / postgresql.conf literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The server's own message for database errors (tokio-postgres prints only "db error").
/// A connection to `db` on 127.0.0.1:`port` as the `postgres` superuser, for callers that must
/// not panic when the server is down (readiness polls, a workload that outlives restarts). The
/// connection task runs on the current runtime; it ends when the server goes away.
/// The harness reads values in one form whatever the database's or role's settings (a test
/// may set `ALTER DATABASE … SET TimeZone`): the form the file format promises, ISO dates in UTC,
/// hex bytea, round-tripping floats. Written here, not taken from pgcdc: it is the expectation.
const CANONICAL_SESSION: &str = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres \
     -c extra_float_digits=3 -c bytea_output=hex -c lc_monetary=C";

pub async fn try_client(port: u16, db: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .dbname(db)
        .options(CANONICAL_SESSION)
        .application_name("pgcdc-test-harness")
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => format!("{e:?}"),
    }
}

/// Runs blocking work (initdb, pg_ctl) off the async workers; re-raises its panic as is.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task failed: {e}"),
    }
}
