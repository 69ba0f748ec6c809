//! The client side of ACLs: which token a client command sends and how. The token comes
//! from `--token`, `--token-file`, `BERTH_TOKEN` or `BERTH_TOKEN_FILE` (first found wins,
//! see [`resolve`]) and every request to the server carries it as
//! `Authorization: Bearer SECRET` (see [`authorize`]). The secret is never printed: the
//! errors here name where it came from, never its value.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable holding the secret itself.
pub const ENV_TOKEN: &str = "BERTH_TOKEN";
/// The environment variable naming a file that holds the secret.
pub const ENV_TOKEN_FILE: &str = "BERTH_TOKEN_FILE";

/// A secret given on the command line: `Debug` (and so any dump of the parsed flags)
/// shows that one was given, never what it is.
#[derive(Clone)]
pub struct SecretArg(String);

impl From<String> for SecretArg {
    fn from(value: String) -> Self {
        SecretArg(value)
    }
}

impl SecretArg {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

/// Where the token came from, for messages ("the token from BERTH_TOKEN was refused").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    FlagFile(PathBuf),
    Env,
    EnvFile(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("--token"),
            Source::FlagFile(path) => write!(f, "the token file {} (--token-file)", path.display()),
            Source::Env => f.write_str(ENV_TOKEN),
            Source::EnvFile(path) => {
                write!(f, "the token file {} ({ENV_TOKEN_FILE})", path.display())
            }
        }
    }
}

/// A token secret and where it came from. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    secret: String,
    pub source: Source,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Why no usable token could be read. Each names the source and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "{0} is empty: give the secret_id printed by `berth acl bootstrap` or `berth acl token create`"
    )]
    Empty(Source),
    #[error("cannot read the token file {}: {reason}; check the path given to {via}", path.display())]
    Unreadable {
        path: PathBuf,
        via: &'static str,
        reason: String,
    },
    #[error(
        "the token file {} can be read or written by other users (mode {mode:03o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{0} holds a character a token cannot have (spaces, control characters or non-ASCII): give only the secret_id"
    )]
    Malformed(Source),
}

/// The token to send, from the first of these that is given:
/// `--token`, `--token-file`, `BERTH_TOKEN`, `BERTH_TOKEN_FILE`. Flags come before the
/// environment (what is typed on this command line beats what the shell exported), and
/// a secret before a file. An environment variable set to "" counts as unset, so
/// `BERTH_TOKEN= berth ...` sends none; an empty `--token ""` or token file is an error.
/// `env` reads one environment variable (the real environment in the binary).
pub fn resolve(
    flag: Option<&str>,
    flag_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Token>, TokenError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let token = if let Some(secret) = flag {
        checked(secret.trim().to_string(), Source::Flag)?
    } else if let Some(path) = flag_file {
        read_file(path, "--token-file", Source::FlagFile(path.to_path_buf()))?
    } else if let Some(secret) = env(ENV_TOKEN) {
        checked(secret.trim().to_string(), Source::Env)?
    } else if let Some(path) = env(ENV_TOKEN_FILE) {
        let path = PathBuf::from(path);
        read_file(&path, ENV_TOKEN_FILE, Source::EnvFile(path.clone()))?
    } else {
        return Ok(None);
    };
    Ok(Some(token))
}

fn checked(secret: String, source: Source) -> Result<Token, TokenError> {
    if secret.is_empty() {
        return Err(TokenError::Empty(source));
    }
    // A header value must be visible ASCII; anything else is a copy-and-paste accident
    // that the server could only answer with "invalid token".
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Malformed(source));
    }
    Ok(Token { secret, source })
}

fn read_file(path: &Path, via: &'static str, source: Source) -> Result<Token, TokenError> {
    let unreadable = |err: std::io::Error| TokenError::Unreadable {
        path: path.to_path_buf(),
        via,
        reason: err.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    // Like ssh with its keys: a secret others may read is no longer a secret, so refuse
    // it before using it (and say how to fix it) rather than go on quietly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    // One secret, optionally followed by a newline (`echo $SECRET > file`).
    checked(text.trim().to_string(), source)
}

/// `request` carrying `token` as `Authorization: Bearer`, marked sensitive so that no
/// debug output of the HTTP client shows it. Without a token, the request as it was.
pub fn authorize(
    request: reqwest::RequestBuilder,
    token: Option<&Token>,
) -> reqwest::RequestBuilder {
    match token.and_then(bearer) {
        Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
        None => request,
    }
}

/// `Bearer SECRET` as a header value marked sensitive (for clients other than reqwest's,
/// such as the exec WebSocket).
pub fn bearer(token: &Token) -> Option<reqwest::header::HeaderValue> {
    // `checked` let only visible ASCII through, which is always a valid header value.
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.secret)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn precedence_is_flag_then_flag_file_then_env_then_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let flag_file = token_file(dir.path(), "flag", "from-flag-file\n", 0o600);
        let env_file = token_file(dir.path(), "env", "from-env-file", 0o600);
        let env_file_text = env_file.to_str().unwrap();
        let all = env_of(&[(ENV_TOKEN, "from-env"), (ENV_TOKEN_FILE, env_file_text)]);

        let t = resolve(Some("from-flag"), Some(&flag_file), &all)
            .unwrap()
            .unwrap();
        assert_eq!((t.secret.as_str(), &t.source), ("from-flag", &Source::Flag));

        let t = resolve(None, Some(&flag_file), &all).unwrap().unwrap();
        assert_eq!(t.secret.as_str(), "from-flag-file");
        assert_eq!(t.source, Source::FlagFile(flag_file.clone()));

        let t = resolve(None, None, &all).unwrap().unwrap();
        assert_eq!((t.secret.as_str(), &t.source), ("from-env", &Source::Env));

        let t = resolve(None, None, env_of(&[(ENV_TOKEN_FILE, env_file_text)]))
            .unwrap()
            .unwrap();
        assert_eq!(t.secret.as_str(), "from-env-file");
        assert_eq!(t.source, Source::EnvFile(env_file.clone()));

        assert_eq!(resolve(None, None, env_of(&[])).unwrap(), None);
    }

    #[test]
    fn an_empty_environment_variable_counts_as_unset() {
        let env = env_of(&[(ENV_TOKEN, ""), (ENV_TOKEN_FILE, "")]);
        assert_eq!(resolve(None, None, &env).unwrap(), None);
    }

    #[test]
    fn an_empty_flag_or_file_is_an_error_naming_it() {
        let err = resolve(Some("  "), None, env_of(&[])).unwrap_err();
        assert_eq!(err, TokenError::Empty(Source::Flag));
        assert!(err.to_string().starts_with("--token is empty"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let empty = token_file(dir.path(), "empty", "\n", 0o600);
        let err = resolve(None, Some(&empty), env_of(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(empty.to_str().unwrap()), "{text}");
        assert!(text.contains("is empty"), "{text}");
        assert!(text.contains("berth acl bootstrap"), "{text}");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let open = token_file(dir.path(), "open", "s3cr3t", 0o644);
        let err = resolve(None, Some(&open), env_of(&[])).unwrap_err();
        assert_eq!(
            err,
            TokenError::TooOpen {
                path: open.clone(),
                mode: 0o644
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", open.display())),
            "{text}"
        );
        assert!(text.contains("644"), "{text}");
        assert!(
            !text.contains("s3cr3t"),
            "the secret is never echoed: {text}"
        );
    }

    #[test]
    fn a_missing_token_file_names_the_file_and_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let env = env_of(&[(ENV_TOKEN_FILE, missing.to_str().unwrap())]);
        let text = resolve(None, None, env).unwrap_err().to_string();
        assert!(text.contains(missing.to_str().unwrap()), "{text}");
        assert!(text.contains(ENV_TOKEN_FILE), "{text}");
    }

    #[test]
    fn a_malformed_secret_is_refused_without_echoing_it() {
        let err = resolve(None, None, env_of(&[(ENV_TOKEN, "abc def")])).unwrap_err();
        assert_eq!(err, TokenError::Malformed(Source::Env));
        assert!(!err.to_string().contains("abc def"));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let t = resolve(Some("s3cr3t"), None, env_of(&[])).unwrap().unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", SecretArg::from("s3cr3t".to_string())).contains("s3cr3t"));
    }

    #[test]
    fn requests_carry_the_token_as_a_bearer_header() {
        let client = reqwest::Client::new();
        let t = resolve(Some("s3cr3t"), None, env_of(&[])).unwrap().unwrap();
        let request = authorize(client.get("http://127.0.0.1:1/v1/apps"), Some(&t))
            .build()
            .unwrap();
        let value = &request.headers()[reqwest::header::AUTHORIZATION];
        assert_eq!(value.to_str().unwrap(), "Bearer s3cr3t");
        assert!(value.is_sensitive());

        let request = authorize(client.get("http://127.0.0.1:1/v1/apps"), None)
            .build()
            .unwrap();
        assert!(
            request
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .is_none()
        );
    }
}
