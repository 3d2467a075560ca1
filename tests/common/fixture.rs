//! The one set-up of an end-to-end test: a throwaway cluster with the test's schema, a temp dir,
//! a sink (a local directory, or a bucket on moto's S3 server) and the pgcdc config that joins
//! them, plus the waits every suite needs. See tests/README.md for a complete example.
//!
//! ```ignore
//! let setup = Fixture::builder().ddl(SALES_DDL).table("public.sales", &["id"]).start().await;
//! let mut pgcdc = setup.run(&setup.config);
//! pgcdc.wait_output("Streaming changes", DEADLINE).await;
//! setup.cluster.execute("insert into public.sales values (1)").await;
//! setup.wait_replay_matches("the insert replays").await;
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::cluster::{PgCluster, SHOP_DB, SUPERUSER, password_for};
use super::config::{PgcdcConfig, add_settings};
use super::process::Pgcdc;
use super::replay::{
    ChangeRow, describe_diff, projection_state, read_change_files, replay, try_read_change_files,
};
use super::s3::{MotoServer, aws_env};
use super::tls::TestCa;
use super::wait::wait_until;

/// What [`Fixture::wait_replay_matches`] and friends allow unless the builder says otherwise.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
enum SinkKind {
    /// `<dir>/stage`.
    Local,
    /// `s3://<bucket>/<prefix>` on a moto server the fixture starts; downloaded to
    /// `<dir>/download` to be read.
    Moto { bucket: String, prefix: String },
}

/// Settings of a [`Fixture`]; every one has a default, so a test names only what it is about.
#[derive(Clone, Debug)]
pub struct FixtureBuilder {
    settings: Vec<(String, String)>,
    ddl: Vec<String>,
    min_major: Option<u32>,
    tls_only: Option<bool>,
    role: Option<&'static str>,
    url_params: Option<String>,
    config: Vec<(String, String)>,
    sink: SinkKind,
    table: Option<(String, Vec<String>)>,
    deadline: Duration,
    dir_for_postgres: bool,
}

impl FixtureBuilder {
    /// Extra `postgresql.conf` settings (see [`PgCluster::start_with`]).
    pub fn settings(mut self, settings: &[(&str, &str)]) -> Self {
        self.settings.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self
    }

    /// SQL run in `shop` as superuser once the cluster is up; each call is its own batch.
    pub fn ddl(mut self, sql: &str) -> Self {
        self.ddl.push(sql.to_owned());
        self
    }

    /// On a server older than `major`, [`start_if_supported`](Self::start_if_supported) gives
    /// `None` (the test has nothing to check there) before any DDL runs.
    pub fn min_major(mut self, major: u32) -> Self {
        self.min_major = Some(major);
        self
    }

    /// Copies in chunks of `chunk_size` by `workers` workers, which only PostgreSQL 14+ does
    /// (13's pgoutput sends no logical messages): older servers give `None` (see
    /// [`min_major`](Self::min_major)).
    pub fn chunked_copy(self, workers: u32, chunk_size: &str) -> Self {
        self.setting(&format!("snapshot.workers = {workers}"))
            .setting(&format!("snapshot.chunk_size = \"{chunk_size}\""))
            .min_major(14)
    }

    /// The cluster serves TLS with a certificate of a throwaway CA ([`Fixture::ca`]); with
    /// `ssl_only` the password roles must use it over TCP.
    pub fn tls(mut self, ssl_only: bool) -> Self {
        self.tls_only = Some(ssl_only);
        self
    }

    /// pgcdc connects as this test role (with its password) instead of the superuser.
    pub fn role(mut self, role: &'static str) -> Self {
        self.role = Some(role);
        self
    }

    /// A query string for the source URL, e.g. `sslmode=require`.
    pub fn url_params(mut self, params: &str) -> Self {
        self.url_params = Some(params.to_owned());
        self
    }

    /// `source.publication` (default `pgcdc_pub`; several are comma-separated).
    pub fn publication(self, publication: &str) -> Self {
        self.string_setting("source.publication", publication)
    }

    /// `batch.window` (default `1s`).
    pub fn window(self, window: &str) -> Self {
        self.string_setting("batch.window", window)
    }

    /// `batch.max_file_bytes` (default: pgcdc's).
    pub fn max_file_bytes(self, size: &str) -> Self {
        self.string_setting("batch.max_file_bytes", size)
    }

    /// `batch.format`, `csv` or `csv.gz` (default: pgcdc's, `csv.gz`).
    pub fn format(self, format: &str) -> Self {
        self.string_setting("batch.format", format)
    }

    /// Any setting as `section.key = <TOML value>`, e.g. `"source.failover = true"`.
    pub fn setting(mut self, line: &str) -> Self {
        let (key, toml) = line.split_once(" = ").expect("`section.key = value`");
        self.config.push((key.to_owned(), toml.to_owned()));
        self
    }

    fn string_setting(self, key: &str, value: &str) -> Self {
        self.setting(&format!("{key} = {}", super::config::toml_string(value)))
    }

    /// The sink is `s3://<bucket>/<prefix>` on a moto server started for the fixture.
    pub fn moto(mut self, bucket: &str, prefix: &str) -> Self {
        self.sink = SinkKind::Moto {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        };
        self
    }

    /// The table (and its key) that [`Fixture::wait_replay_matches`] and [`Fixture::rows`] read.
    pub fn table(mut self, table: &str, key: &[&str]) -> Self {
        self.table = Some((
            table.to_owned(),
            key.iter().map(|k| (*k).to_owned()).collect(),
        ));
        self
    }

    /// How long the fixture's waits may take (default 120 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The temp dir is made under /tmp and readable by everyone: for a pgcdc that runs as
    /// another user (`postgres`, when the test runs as root).
    pub fn dir_for_postgres(mut self) -> Self {
        self.dir_for_postgres = true;
        self
    }

    /// Starts everything and writes the config.
    pub async fn start(self) -> Fixture {
        assert!(
            self.min_major.is_none(),
            "min_major is set: use start_if_supported, which can return None"
        );
        self.start_if_supported()
            .await
            .expect("no minimum major version was set")
    }

    /// Like [`start`](Self::start); `None` (with a note on stderr) when the server is older than
    /// [`min_major`](Self::min_major).
    pub async fn start_if_supported(self) -> Option<Fixture> {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cluster = PgCluster::start_with(&settings).await;
        if let Some(min_major) = self.min_major {
            let major = cluster.major().await;
            if major < min_major {
                eprintln!(
                    "PostgreSQL {major} lacks what this test needs (PostgreSQL {min_major}): nothing to test"
                );
                return None;
            }
        }
        let ca = match self.tls_only {
            Some(ssl_only) => {
                let ca = TestCa::generate();
                cluster
                    .enable_tls(&ca.server_cert, &ca.server_key, ssl_only)
                    .await;
                Some(ca)
            }
            None => None,
        };
        for sql in &self.ddl {
            cluster.execute(sql).await;
        }
        let dir = if self.dir_for_postgres {
            let dir = tempfile::Builder::new()
                .prefix("pgcdc-test-")
                .tempdir_in("/tmp")
                .expect("temp dir");
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod the temp dir");
            dir
        } else {
            tempfile::tempdir().expect("temp dir")
        };

        let mut url = match self.role {
            Some(role) => cluster.role_url(role, SHOP_DB),
            None => cluster.url(SUPERUSER, None, SHOP_DB),
        };
        if let Some(params) = &self.url_params {
            url = format!("{url}?{params}");
        }
        let mut base = PgcdcConfig::new(&url);
        let (sink, moto) = match &self.sink {
            SinkKind::Local => {
                let sink = dir.path().join("stage");
                base = base.local_sink(&sink);
                (sink, None)
            }
            SinkKind::Moto { bucket, prefix } => {
                let server = MotoServer::start().await;
                server.create_bucket(bucket).await;
                base = base
                    .s3_sink(
                        bucket,
                        prefix,
                        &server.endpoint(),
                        &dir.path().join("spool"),
                    )
                    .set("source.status_interval", "1s");
                let moto = (server, bucket.clone(), prefix.clone());
                (dir.path().join("download"), Some(moto))
            }
        };
        for (key, toml) in &self.config {
            base = base.set_toml(key, toml);
        }
        let config = base.write(&dir.path().join("pgcdc-pgcdc.toml"));
        Some(Fixture {
            cluster,
            dir,
            sink,
            config,
            ca,
            moto,
            base,
            role: self.role,
            table: self.table,
            deadline: self.deadline,
        })
    }
}

/// A running cluster with the test's schema, a temp dir, a sink and a written pgcdc config.
/// Dropping it stops the cluster (and moto) and deletes the directories.
pub struct Fixture {
    pub cluster: PgCluster,
    /// Holds the config files, the local sink and anything else of the test's.
    pub dir: TempDir,
    /// Where the change files are read: the local sink, or where the bucket is downloaded to.
    pub sink: PathBuf,
    /// The pgcdc config, `<dir>/pgcdc-pgcdc.toml`.
    pub config: PathBuf,
    ca: Option<TestCa>,
    moto: Option<(MotoServer, String, String)>,
    base: PgcdcConfig,
    role: Option<&'static str>,
    table: Option<(String, Vec<String>)>,
    deadline: Duration,
}

impl Fixture {
    pub fn builder() -> FixtureBuilder {
        FixtureBuilder {
            settings: Vec::new(),
            ddl: Vec::new(),
            min_major: None,
            tls_only: None,
            role: None,
            url_params: None,
            config: Vec::new(),
            sink: SinkKind::Local,
            table: None,
            deadline: DEFAULT_DEADLINE,
            dir_for_postgres: false,
        }
    }

    /// The throwaway CA of a [`tls`](FixtureBuilder::tls) fixture.
    pub fn ca(&self) -> &TestCa {
        self.ca
            .as_ref()
            .expect("the fixture was built without tls()")
    }

    /// The moto server of a [`moto`](FixtureBuilder::moto) fixture.
    pub fn moto(&self) -> &MotoServer {
        &self
            .moto
            .as_ref()
            .expect("the fixture was built without moto()")
            .0
    }

    /// The fixture's role's URL for `host` (e.g. `localhost`, for certificate checks), with
    /// `params` as the query string.
    pub fn role_url_at(&self, host: &str, params: &str) -> String {
        let role = self.role.expect("the fixture was built without role()");
        format!(
            "postgres://{role}:{}@{host}:{}/{SHOP_DB}?{params}",
            password_for(role),
            self.cluster.port()
        )
    }

    /// The fixture's config as a [`PgcdcConfig`], to write a variant of it.
    pub fn config_template(&self) -> PgcdcConfig {
        self.base.clone()
    }

    /// Writes `edit(the fixture's config)`, with a metrics port of its own, to
    /// `<dir>/<name>.toml` and returns its path.
    pub fn config_variant(
        &self,
        name: &str,
        edit: impl FnOnce(PgcdcConfig) -> PgcdcConfig,
    ) -> PathBuf {
        edit(self.config_template().with_free_metrics_port())
            .write(&self.dir.path().join(format!("{name}.toml")))
    }

    /// A variant of a [`moto`](FixtureBuilder::moto) fixture's config that reaches S3 through
    /// `endpoint` (an [`Outage`](super::s3::Outage) proxy, another server), with `sink_lines`
    /// (`key = value`, one per line) added to `[sink]`: `<dir>/pgcdc-s3.toml`.
    pub fn s3_config(&self, endpoint: &str, sink_lines: &str) -> PathBuf {
        self.config_variant("pgcdc-s3", |c| {
            c.set("sink.endpoint", endpoint).lines("sink", sink_lines)
        })
    }

    /// Adds `key = value` lines to the `[source]` section of [`config`](Self::config).
    pub fn add_source_setting(&self, line: &str) {
        add_settings(&self.config, "source", line);
    }

    /// Adds `key = value` lines to `[section]` of [`config`](Self::config).
    pub fn add_settings(&self, section: &str, lines: &str) {
        add_settings(&self.config, section, lines);
    }

    /// `pgcdc run --config <config>`; against moto with the test's AWS credentials and info
    /// logging.
    pub fn run(&self, config: &Path) -> Pgcdc {
        if self.moto.is_none() {
            return Pgcdc::run(config);
        }
        let mut envs = aws_env();
        envs.push(("PGCDC_LOG", "info"));
        Pgcdc::spawn(
            ["run".as_ref(), "--config".as_ref(), config.as_os_str()],
            &envs,
        )
    }

    /// The change rows of the fixture's [`table`](FixtureBuilder::table) in the local sink.
    pub fn rows(&self) -> Vec<ChangeRow> {
        read_change_files(&self.sink, self.table().0)
    }

    /// Waits until the fixture's table replays to exactly what it holds now; returns the rows.
    pub async fn wait_replay_matches(&self, what: &str) -> Vec<ChangeRow> {
        let (table, key) = self.table();
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        self.wait_projection_on(&self.cluster, &self.sink, table, &key, None, None, what)
            .await
    }

    /// Waits until the files of `table` replay to exactly what it holds now.
    pub async fn wait_table_matches(
        &self,
        table: &str,
        key: &[&str],
        what: &str,
    ) -> Vec<ChangeRow> {
        self.wait_projection_on(&self.cluster, &self.sink, table, key, None, None, what)
            .await
    }

    /// Waits until the fixture's table in the local `sink` replays to what `cluster` holds
    /// (another sink, a standby promoted to primary).
    pub async fn wait_replay_matches_at(
        &self,
        cluster: &PgCluster,
        sink: &Path,
        what: &str,
    ) -> Vec<ChangeRow> {
        let (table, key) = self.table();
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        self.wait_projection_on(cluster, sink, table, &key, None, None, what)
            .await
    }

    /// Waits until the files of `table` replay to what the publication publishes of it: only
    /// `columns` (all when `None`) of the rows `filter` (an SQL condition) admits; key `id`.
    pub async fn wait_projection(
        &self,
        table: &str,
        columns: Option<&[&str]>,
        filter: Option<&str>,
        what: &str,
    ) -> Vec<ChangeRow> {
        self.wait_projection_on(
            &self.cluster,
            &self.sink,
            table,
            &["id"],
            columns,
            filter,
            what,
        )
        .await
    }

    /// The one comparison loop: the files (downloaded first from moto) against the table.
    #[allow(clippy::too_many_arguments)]
    async fn wait_projection_on(
        &self,
        cluster: &PgCluster,
        sink: &Path,
        table: &str,
        key: &[&str],
        columns: Option<&[&str]>,
        filter: Option<&str>,
        what: &str,
    ) -> Vec<ChangeRow> {
        let client = cluster.client(SHOP_DB).await;
        wait_until(what, self.deadline, || {
            let client = &client;
            async move {
                let expected = projection_state(client, table, key, columns, filter).await;
                if let Some((server, bucket, prefix)) = &self.moto {
                    server.download(bucket, prefix, sink).await;
                }
                let rows = try_read_change_files(sink, table)?;
                let actual = replay(&rows, key);
                describe_diff(&expected, &actual).map_or(Ok(rows), Err)
            }
        })
        .await
    }

    fn table(&self) -> (&String, &Vec<String>) {
        let (table, key) = self
            .table
            .as_ref()
            .expect("the fixture was built without table()");
        (table, key)
    }
}
