//! A PostgreSQL database of a test's own, for the tests that start server
//! processes on one database (several servers, agent failover): created
//! with `psql` in the cluster `NEUTRINO_TEST_DATABASE_URL` names, with the
//! C collation the servers insist on, and dropped at the end, so runs never
//! see each other's data (or another admin password).

use std::process::Command;

pub struct TestDatabase {
    base: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// A fresh database `neutrino_<tag>_<pid>` beside the one of `base`.
    pub fn create(base: &str, tag: &str) -> TestDatabase {
        let name = format!("neutrino_{tag}_{}", std::process::id());
        psql(base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).expect("drop a leftover test database");
        let create = format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
        psql(base, &create).expect("create the test's database");
        TestDatabase { base: base.to_string(), url: with_database(base, &name), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(&self.base, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("the test database {} was not dropped: {e}", self.name);
        }
    }
}

pub fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

pub use neutrino_store::with_database;
