//! PostgreSQL on the test environment: the server's address and superuser
//! (`EBB_POSTGRES_HOST`/`PORT`/`USER`/`PASSWORD`/`DB`), an admin connection, and tables and
//! roles made at runtime under unique names.

use std::collections::BTreeMap;

use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};

/// The test environment's PostgreSQL server and its superuser.
#[derive(Debug, Clone)]
pub struct PgServer {
    /// Host (loopback).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The superuser.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The database tests use.
    pub db: String,
}

/// Why the server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A variable is missing from the env file.
    #[error("{0} is not in the test environment file; run `tests/env/testenv.sh up`")]
    MissingVar(String),
    /// `EBB_POSTGRES_PORT` is not a port.
    #[error("EBB_POSTGRES_PORT is not a port number")]
    BadPort,
    /// No TCP connection.
    #[error("cannot reach PostgreSQL at {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    /// The server refused a statement or the login.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl PgServer {
    /// The server named by the env file's variables (`lookup` returns a variable's value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, PgError> {
        let get = |k: &str| lookup(k).ok_or_else(|| PgError::MissingVar(k.to_string()));
        Ok(Self {
            host: get("EBB_POSTGRES_HOST")?,
            port: get("EBB_POSTGRES_PORT")?.parse().map_err(|_| PgError::BadPort)?,
            user: get("EBB_POSTGRES_USER")?,
            password: get("EBB_POSTGRES_PASSWORD")?,
            db: get("EBB_POSTGRES_DB")?,
        })
    }

    /// The server named by a parsed env file.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, PgError> {
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    /// The server named by the running test environment.
    pub fn from_env(env: &crate::TestEnv) -> Result<Self, PgError> {
        Self::from_lookup(|k| env.var(k).ok().map(str::to_string))
    }

    /// A superuser connection (plain TCP); its task runs on the current runtime.
    pub async fn admin(&self) -> Result<Client, PgError> {
        self.connect_as(&self.user, &self.password).await
    }

    /// A connection as `user`/`password` to the test database.
    pub async fn connect_as(&self, user: &str, password: &str) -> Result<Client, PgError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| PgError::Connect(addr.clone(), e))?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(user)
            .password(password)
            .dbname(&self.db)
            .application_name("ebb-tests");
        let (client, connection) = config.connect_raw(tcp, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A libpq connection string for `user`/`password` (`extra` appended, e.g. `sslmode=disable`).
    pub fn connection_string(&self, user: &str, password: &str, extra: &str) -> String {
        format!(
            "host={} port={} user={user} password='{}' dbname={} {extra}",
            self.host,
            self.port,
            password.replace('\\', "\\\\").replace('\'', "\\'"),
            self.db
        )
    }

    /// Creates table `name` (`n bigint`) holding `rows` rows and returns the admin client.
    pub async fn table_with_rows(&self, name: &str, rows: i64) -> Result<Client, PgError> {
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "CREATE TABLE {name} (n bigint); INSERT INTO {name} SELECT generate_series(1, {rows});"
            ))
            .await?;
        Ok(admin)
    }

    /// Creates login role `name` with `password` that may read every table of the database.
    pub async fn role(&self, name: &str, password: &str) -> Result<(), PgError> {
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{}'; GRANT pg_read_all_data TO {name};",
                password.replace('\'', "''")
            ))
            .await?;
        Ok(())
    }
}

/// Creates Secret and TriggerAuthentication `name` in `ns`, giving the `password` parameter.
pub async fn create_password_auth(
    client: &kube::Client,
    ns: &str,
    name: &str,
    password: &str,
) -> Result<(), crate::HarnessError> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"password": password}
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let auth: ebb_crds::TriggerAuthentication = serde_json::from_value(serde_json::json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": name},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": name, "key": "password"}]}
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<ebb_crds::TriggerAuthentication>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &auth)
        .await?;
    Ok(())
}
