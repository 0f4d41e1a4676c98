//! Redis on the test environment, driven with `redis-cli` (the server's own client, so that the
//! tests do not check ebb's RESP code with itself): filling lists and streams, reading
//! `CLIENT LIST`, and ACL users made per test.

use std::path::PathBuf;
use std::process::Command;

/// Why a `redis-cli` command failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisCliError {
    /// `redis-cli` could not be run.
    #[error("cannot run {cli}: {source}")]
    Spawn {
        /// The program.
        cli: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed or the server answered with an error.
    #[error("redis-cli {command}: {output}")]
    Failed {
        /// The command (never a password: ACL passwords are passed as `>`-rules the tests make up).
        command: String,
        /// What it printed.
        output: String,
    },
}

/// A `redis-cli` bound to one server (`host:port`, e.g. `EBB_REDIS_ADDRESS`).
#[derive(Debug, Clone)]
pub struct RedisCli {
    cli: PathBuf,
    host: String,
    port: String,
}

impl RedisCli {
    /// `redis-cli` beside `server_bin` (`EBB_REDIS_SERVER_BIN`), else from `PATH`, for `address`.
    pub fn new(address: &str, server_bin: Option<&str>) -> Self {
        let beside = server_bin
            .map(|bin| PathBuf::from(bin).with_file_name("redis-cli"))
            .filter(|p| p.exists());
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
        Self {
            cli: beside.unwrap_or_else(|| PathBuf::from("redis-cli")),
            host: host.to_string(),
            port: port.to_string(),
        }
    }

    /// Runs one command (in database 0) and returns its raw output, trimmed.
    pub fn run(&self, args: &[&str]) -> Result<String, RedisCliError> {
        self.run_in(0, args)
    }

    /// Runs one command in database `db`; an error reply is an error.
    pub fn run_in(&self, db: u32, args: &[&str]) -> Result<String, RedisCliError> {
        let output = Command::new(&self.cli)
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port,
                "-n",
                &db.to_string(),
                "--no-raw",
            ])
            .args(args)
            .output()
            .map_err(|source| RedisCliError::Spawn {
                cli: self.cli.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || text.starts_with("(error)") {
            return Err(RedisCliError::Failed {
                command: args.first().copied().unwrap_or("").to_string(),
                output: format!("{text} {}", String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        Ok(text)
    }

    /// Runs a command whose reply is an integer.
    pub fn int(&self, args: &[&str]) -> Result<i64, RedisCliError> {
        let text = self.run(args)?;
        text.trim_start_matches("(integer) ")
            .parse()
            .map_err(|_| RedisCliError::Failed {
                command: args.first().copied().unwrap_or("").to_string(),
                output: format!("not an integer: {text}"),
            })
    }

    /// How many client connections are logged in as `user` (from `CLIENT LIST`).
    pub fn connections_of(&self, user: &str) -> Result<usize, RedisCliError> {
        let list = self.run(&["CLIENT", "LIST"])?;
        let needle = format!(" user={user} ");
        Ok(list.lines().filter(|l| l.contains(&needle)).count())
    }

    /// Makes ACL user `user` with password `password`, allowed `commands` (e.g. `+@all`) on
    /// keys matching `keys` (e.g. `~*`).
    pub fn make_user(
        &self,
        user: &str,
        password: &str,
        keys: &str,
        commands: &str,
    ) -> Result<(), RedisCliError> {
        let password = format!(">{password}");
        self.run(&["ACL", "SETUSER", user, "reset", "on", &password, keys, commands])
            .map(drop)
    }

    /// Deletes ACL user `user` (and so its connections).
    pub fn drop_user(&self, user: &str) -> Result<(), RedisCliError> {
        self.run(&["ACL", "DELUSER", user]).map(drop)
    }
}
