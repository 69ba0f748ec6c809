//! Placement constraints: `[field, OPERATOR, value?]`, as in Marathon.
//!
//! `field` is `hostname` or the name of a node label. Operators:
//! - `UNIQUE`: at most one instance per distinct field value.
//! - `CLUSTER value`: only on nodes whose field equals `value`. Without a value, every
//!   instance goes where the app's first instance went.
//! - `LIKE regex` / `UNLIKE regex`: the field value must (not) fully match the regex.
//! - `MAX_PER n`: at most `n` instances per distinct field value.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// Which node attribute a constraint reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Hostname,
    Label(String),
}

impl Field {
    fn parse(raw: &str) -> Self {
        if raw == "hostname" {
            Field::Hostname
        } else {
            Field::Label(raw.to_string())
        }
    }

    /// The node's value for this field; `None` when the node lacks the label.
    pub fn value_of<'a>(
        &self,
        hostname: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Option<&'a str> {
        match self {
            Field::Hostname => Some(hostname),
            Field::Label(l) => labels.get(l).map(String::as_str),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Hostname => f.write_str("hostname"),
            Field::Label(l) => f.write_str(l),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Operator {
    Unique,
    Cluster(Option<String>),
    Like(Regex),
    Unlike(Regex),
    MaxPer(u32),
}

#[derive(Debug, Clone)]
pub struct Constraint {
    pub field: Field,
    pub op: Operator,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Operator::Unique => write!(f, "{} UNIQUE", self.field),
            Operator::Cluster(None) => write!(f, "{} CLUSTER", self.field),
            Operator::Cluster(Some(v)) => write!(f, "{} CLUSTER {v}", self.field),
            Operator::Like(r) => write!(f, "{} LIKE {}", self.field, unanchor(r)),
            Operator::Unlike(r) => write!(f, "{} UNLIKE {}", self.field, unanchor(r)),
            Operator::MaxPer(n) => write!(f, "{} MAX_PER {n}", self.field),
        }
    }
}

fn unanchor(r: &Regex) -> &str {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
}

/// A constraint that could not be parsed: message and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintError {
    pub message: String,
    pub fix: String,
}

pub const OPERATORS: &[&str] = &["UNIQUE", "CLUSTER", "LIKE", "UNLIKE", "MAX_PER"];

impl Constraint {
    pub fn parse(parts: &[String]) -> Result<Constraint, ConstraintError> {
        let err = |message: String, fix: &str| ConstraintError {
            message,
            fix: fix.to_string(),
        };
        let (field, op, value) = match parts {
            [f, o] => (f, o, None),
            [f, o, v] => (f, o, Some(v)),
            _ => {
                return Err(err(
                    format!(
                        "a constraint has 2 or 3 parts, this one has {}",
                        parts.len()
                    ),
                    "write [field, OPERATOR] or [field, OPERATOR, value], e.g. [\"hostname\", \"UNIQUE\"]",
                ));
            }
        };
        if field.is_empty() {
            return Err(err(
                "constraint field is empty".into(),
                "use \"hostname\" or a node label name",
            ));
        }
        let field = Field::parse(field);
        let regex = |v: Option<&String>| -> Result<Regex, ConstraintError> {
            let v = v.ok_or_else(|| {
                err(
                    format!("{op} needs a regular expression as third part"),
                    "add a value, e.g. [\"rack\", \"LIKE\", \"rack-[12]\"]",
                )
            })?;
            Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                err(
                    format!("{v:?} is not a valid regular expression: {e}"),
                    "fix the regular expression (Rust regex syntax, matched against the whole value)",
                )
            })
        };
        let op = match op.as_str() {
            "UNIQUE" => {
                if value.is_some() {
                    return Err(err("UNIQUE takes no value".into(), "remove the third part"));
                }
                Operator::Unique
            }
            "CLUSTER" => Operator::Cluster(value.cloned()),
            "LIKE" => Operator::Like(regex(value)?),
            "UNLIKE" => Operator::Unlike(regex(value)?),
            "MAX_PER" => {
                let n = value
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        err(
                            "MAX_PER needs a positive whole number as third part".into(),
                            "write e.g. [\"rack\", \"MAX_PER\", \"2\"]",
                        )
                    })?;
                Operator::MaxPer(n)
            }
            other => {
                return Err(err(
                    format!("unknown constraint operator {other:?}"),
                    "use one of UNIQUE, CLUSTER, LIKE, UNLIKE, MAX_PER (upper case)",
                ));
            }
        };
        Ok(Constraint { field, op })
    }

    /// Can one more instance go on a node with `value` for this constraint's field?
    /// `count_with` gives how many instances of the app already run on nodes whose field
    /// value is the given one; `cluster_value` is the value of the app's existing
    /// instances for an argument-less CLUSTER.
    pub fn allows(
        &self,
        value: Option<&str>,
        count_with: impl Fn(&str) -> u32,
        cluster_value: Option<&str>,
    ) -> bool {
        match &self.op {
            Operator::Unique => value.is_some_and(|v| count_with(v) == 0),
            Operator::MaxPer(n) => value.is_some_and(|v| count_with(v) < *n),
            Operator::Cluster(Some(want)) => value == Some(want.as_str()),
            Operator::Cluster(None) => match cluster_value {
                Some(c) => value == Some(c),
                None => value.is_some(),
            },
            Operator::Like(r) => value.is_some_and(|v| r.is_match(v)),
            Operator::Unlike(r) => value.is_none_or(|v| !r.is_match(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(parts: &[&str]) -> Result<Constraint, ConstraintError> {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_operator() {
        for ok in [
            &["hostname", "UNIQUE"][..],
            &["rack", "CLUSTER", "r1"],
            &["rack", "CLUSTER"],
            &["rack", "LIKE", "r[12]"],
            &["rack", "UNLIKE", "r3"],
            &["hostname", "MAX_PER", "2"],
        ] {
            let parsed = c(ok).unwrap();
            assert_eq!(parsed.to_string(), ok.join(" "));
        }
    }

    #[test]
    fn rejects_bad_constraints() {
        for bad in [
            &["hostname"][..],
            &["hostname", "UNIQUE", "x"],
            &["hostname", "unique"],
            &["rack", "LIKE"],
            &["rack", "LIKE", "("],
            &["rack", "MAX_PER", "0"],
            &["rack", "MAX_PER", "x"],
            &["", "UNIQUE"],
            &["a", "B", "c", "d"],
        ] {
            assert!(!c(bad).unwrap_err().fix.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn evaluates() {
        let zero = |_: &str| 0;
        let one = |_: &str| 1;
        assert!(
            c(&["hostname", "UNIQUE"])
                .unwrap()
                .allows(Some("a"), zero, None)
        );
        assert!(
            !c(&["hostname", "UNIQUE"])
                .unwrap()
                .allows(Some("a"), one, None)
        );
        assert!(
            c(&["r", "MAX_PER", "2"])
                .unwrap()
                .allows(Some("a"), one, None)
        );
        assert!(
            !c(&["r", "MAX_PER", "1"])
                .unwrap()
                .allows(Some("a"), one, None)
        );
        let like = c(&["r", "LIKE", "r[12]"]).unwrap();
        assert!(like.allows(Some("r1"), zero, None));
        assert!(!like.allows(Some("r10"), zero, None));
        assert!(!like.allows(None, zero, None));
        assert!(c(&["r", "UNLIKE", "r1"]).unwrap().allows(None, zero, None));
        let cluster = c(&["r", "CLUSTER"]).unwrap();
        assert!(cluster.allows(Some("x"), zero, None));
        assert!(!cluster.allows(Some("x"), zero, Some("y")));
    }
}
