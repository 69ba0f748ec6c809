//! How PostgreSQL errors and targets read in messages, for every crate that talks to
//! PostgreSQL (the server's store, the registry's key/value store). Behind the `postgres`
//! feature so roles that never talk to a database do not link the driver.

/// The error and its causes in one line (the driver's top-level message is often just
/// "db error").
pub fn describe_error(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// `user@host:port/db` without the password, for messages.
pub fn describe_target(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "{}@{host}{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_never_shows_the_password() {
        let config: postgres::Config = "postgres://app:secret@db.example:5433/berth"
            .parse()
            .unwrap();
        let target = describe_target(&config);
        assert_eq!(target, "app@db.example:5433/berth");
        assert!(!target.contains("secret"));
    }
}
