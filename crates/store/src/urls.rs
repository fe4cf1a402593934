//! Database URLs: what the server, the benchmarks and the tests all need
//! to say about one.

/// `url` with its database name replaced by `name` (what follows the
/// authority up to the query).
pub fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url[authority..].find('?') {
        Some(q) => url.split_at(authority + q),
        None => (url, ""),
    };
    let base = match head[authority..].find('/') {
        Some(slash) => &head[..authority + slash],
        None => head,
    };
    format!("{base}/{name}{query}")
}

/// A database URL without its password, for messages and reports.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_and_the_password_hidden() {
        assert_eq!(
            with_database("postgres://neutrino@localhost/neutrino?host=/tmp/pg", "b1"),
            "postgres://neutrino@localhost/b1?host=/tmp/pg"
        );
        assert_eq!(with_database("postgres://u:pw@127.0.0.1:5433/db", "b2"), "postgres://u:pw@127.0.0.1:5433/b2");
        assert_eq!(with_database("postgres://u@h", "b3"), "postgres://u@h/b3");
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u@h/db");
    }
}
