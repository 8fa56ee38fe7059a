//! The shape of the config file, key by key, so every unknown key and every wrong type is
//! reported with its place in one run, next to the values validation refuses.
//!
//! serde stops at its first error (`deny_unknown_fields`, a string where a number belongs), which
//! would hide every other problem. So the text is first parsed into a [`toml::Table`] (a syntax
//! error still fails at once, with its line and column), then [`sift`] walks it against
//! [`ROOT`]: a key the schema does not know, or a value of the wrong type, becomes a problem
//! (`routes[1].upstrem: unknown key (did you mean upstream?)`,
//! `server.max_connections: expected an integer, found a string`) and is taken out, so what is
//! left always deserializes into [`FileConfig`](super::file::FileConfig) and goes through
//! validation. Validation's own problems about a key already reported here are dropped
//! ([`Sifted::is_reported`]): a removed key would otherwise read as "missing".
//!
//! The schema must name exactly the fields of `config/file.rs`; a unit test deserializes a file
//! holding every key of the schema with `deny_unknown_fields`, and the README example with them.

use toml::{Table, Value};

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// A string.
    Str,
    /// An integer between the two bounds.
    Int(i64, i64),
    /// `true` or `false`.
    Bool,
    /// An array of strings.
    Strings,
    /// A table of string values (any keys).
    StringMap,
    /// A table with these keys.
    Table(&'static [Field]),
    /// An array of tables with these keys (`[[routes]]`).
    Tables(&'static [Field]),
}

/// One known key.
#[derive(Debug)]
pub(super) struct Field {
    name: &'static str,
    kind: Kind,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

const USIZE: Kind = Kind::Int(0, i64::MAX);
const U32: Kind = Kind::Int(0, u32::MAX as i64);

const SERVER: &[Field] = &[
    field("max_body", Kind::Str),
    field("upstream_timeout", Kind::Str),
    field("idle_timeout", Kind::Str),
    field("header_timeout", Kind::Str),
    field("shutdown_grace", Kind::Str),
    field("health_path", Kind::Str),
    field("ready_path", Kind::Str),
    field("workers", USIZE),
    field("max_connections", USIZE),
    field("max_headers", USIZE),
    field("max_header_bytes", Kind::Str),
    field("trusted_proxies", Kind::Strings),
];
const LOG: &[Field] = &[
    field("level", Kind::Str),
    field("format", Kind::Str),
    field("access", Kind::Bool),
];
const METRICS: &[Field] = &[field("listen", Kind::Str)];
const STORE: &[Field] = &[
    field("url", Kind::Str),
    field("urls", Kind::Strings),
    field("password_env", Kind::Str),
    field("key_prefix", Kind::Str),
    field("timeout", Kind::Str),
    field("on_failure", Kind::Str),
    field("sessions", Kind::Str),
];
const CSRF: &[Field] = &[
    field("mode", Kind::Str),
    field("allowed_origins", Kind::Strings),
    field("header", Kind::Str),
];
const RATE_LIMIT: &[Field] = &[
    field("per_second", U32),
    field("burst", U32),
    field("key", Kind::Str),
    // Moved to [server]; known so that validation can say where it went.
    field("trusted_proxies", Kind::Strings),
];
const ROUTE: &[Field] = &[
    field("prefix", Kind::Str),
    field("upstream", Kind::Str),
    field("cookie", Kind::Str),
    field("auth", Kind::Str),
    field("methods", Kind::Strings),
    field("max_body", Kind::Str),
    field("forward_cookies", Kind::Bool),
    field("websocket", Kind::Bool),
];
const SESSION: &[Field] = &[
    field("cookie", Kind::Str),
    field("keys_env", Kind::Str),
    field("max_age", Kind::Str),
    field("same_site", Kind::Str),
    field("secure", Kind::Str),
];
const OIDC: &[Field] = &[
    field("issuer", Kind::Str),
    field("client_id", Kind::Str),
    field("client_secret_env", Kind::Str),
    field("scopes", Kind::Strings),
    field("redirect_uri", Kind::Str),
    field("post_logout_redirect_uri", Kind::Str),
    field("refresh_before", Kind::Str),
    field("path", Kind::Str),
    field("extra_params", Kind::StringMap),
];
const WEBSOCKET: &[Field] = &[
    field("allowed_origins", Kind::Strings),
    field("allow_missing_origin", Kind::Bool),
    field("idle_timeout", Kind::Str),
    field("max_lifetime", Kind::Str),
    field("max_per_session", USIZE),
];
const TLS: &[Field] = &[field("cert", Kind::Str), field("key", Kind::Str)];

/// The whole file.
pub(super) const ROOT: &[Field] = &[
    field("listen", Kind::Str),
    field("server", Kind::Table(SERVER)),
    field("log", Kind::Table(LOG)),
    field("csrf", Kind::Table(CSRF)),
    field("rate_limit", Kind::Table(RATE_LIMIT)),
    field("routes", Kind::Tables(ROUTE)),
    field("session", Kind::Table(SESSION)),
    field("oidc", Kind::Table(OIDC)),
    field("websocket", Kind::Table(WEBSOCKET)),
    field("tls", Kind::Table(TLS)),
    field("metrics", Kind::Table(METRICS)),
    field("store", Kind::Table(STORE)),
];

/// A file's table with every unknown key and wrong-typed value taken out, and the problems
/// they were.
#[derive(Debug)]
pub(super) struct Sifted {
    /// What is left: deserializes into the file model.
    pub(super) table: Table,
    /// `place: problem`, in file order within each table.
    pub(super) problems: Vec<String>,
    /// The places reported (`routes[1].upstream`).
    places: Vec<String>,
}

impl Sifted {
    /// Whether a validation problem (`place: message`) is about a key already reported here,
    /// or one inside it.
    pub(super) fn is_reported(&self, problem: &str) -> bool {
        self.places.iter().any(|place| {
            problem
                .strip_prefix(place.as_str())
                .is_some_and(|rest| rest.starts_with([':', '.', '[']))
        })
    }
}

/// Walks `table` against `fields`: unknown keys and wrong types become problems and are
/// removed.
pub(super) fn sift(mut table: Table, fields: &[Field]) -> Sifted {
    let mut sifted = Sifted {
        table: Table::new(),
        problems: Vec::new(),
        places: Vec::new(),
    };
    sift_table(&mut table, fields, "", &mut sifted);
    sifted.table = table;
    sifted
}

fn sift_table(table: &mut Table, fields: &[Field], at: &str, out: &mut Sifted) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let place = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let Some(known) = fields.iter().find(|f| f.name == key) else {
            let hint = closest(&key, fields)
                .map(|name| format!(" (did you mean {name}?)"))
                .unwrap_or_default();
            out.report(place, format!("unknown key{hint}"));
            table.remove(&key);
            continue;
        };
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        if let Err(problem) = sift_value(value, known.kind, &place, out) {
            out.report(place, problem);
            table.remove(&key);
        }
    }
}

/// Checks one value; nested tables are sifted in place. `Err` when the value itself is of the
/// wrong type (the caller removes it).
fn sift_value(value: &mut Value, kind: Kind, place: &str, out: &mut Sifted) -> Result<(), String> {
    match (kind, value) {
        (Kind::Str, Value::String(_)) | (Kind::Bool, Value::Boolean(_)) => Ok(()),
        (Kind::Int(min, max), Value::Integer(n)) => {
            if (min..=max).contains(n) {
                Ok(())
            } else if *n < min {
                Err(format!("expected an integer of at least {min}, found {n}"))
            } else {
                Err(format!("expected an integer of at most {max}, found {n}"))
            }
        }
        (Kind::Strings, Value::Array(items)) => {
            let mut index = 0;
            items.retain(|item| {
                let keep = item.is_str();
                if !keep {
                    out.report(
                        format!("{place}[{index}]"),
                        format!("expected a string, found {}", a(item)),
                    );
                }
                index += 1;
                keep
            });
            Ok(())
        }
        (Kind::StringMap, Value::Table(map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let Some(item) = map.get(&key).filter(|v| !v.is_str()) {
                    out.report(
                        format!("{place}.{key}"),
                        format!("expected a string, found {}", a(item)),
                    );
                    map.remove(&key);
                }
            }
            Ok(())
        }
        (Kind::Table(fields), Value::Table(inner)) => {
            sift_table(inner, fields, place, out);
            Ok(())
        }
        (Kind::Tables(fields), Value::Array(items)) => {
            // Every entry keeps its index, so `routes[2]` still names the third table.
            for (index, item) in items.iter_mut().enumerate() {
                let at = format!("{place}[{index}]");
                match item {
                    Value::Table(inner) => sift_table(inner, fields, &at, out),
                    other => {
                        out.report(at, format!("expected a table, found {}", a(other)));
                        *other = Value::Table(Table::new());
                    }
                }
            }
            Ok(())
        }
        (kind, other) => Err(format!("expected {}, found {}", expected(kind), a(other))),
    }
}

impl Sifted {
    fn report(&mut self, place: String, problem: String) {
        self.problems.push(format!("{place}: {problem}"));
        self.places.push(place);
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Int(..) => "an integer",
        Kind::Bool => "a boolean (true or false)",
        Kind::Strings => "an array of strings",
        Kind::StringMap => "a table of strings",
        Kind::Table(_) => "a table",
        Kind::Tables(_) => "an array of tables ([[...]])",
    }
}

/// A value's type with its article: `a string`, `an integer`.
fn a(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The known key nearest to a typo, when it is near enough to be what was meant (an edit
/// distance of at most a third of its length, at least 1).
fn closest(key: &str, fields: &[Field]) -> Option<&'static str> {
    fields
        .iter()
        .map(|f| (distance(key, f.name), f.name))
        .filter(|(d, name)| *d <= (name.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::FileConfig;

    fn sample(kind: Kind) -> Value {
        match kind {
            Kind::Str => Value::String("x".into()),
            Kind::Int(min, _) => Value::Integer(min.max(1)),
            Kind::Bool => Value::Boolean(true),
            Kind::Strings => Value::Array(vec![Value::String("x".into())]),
            Kind::StringMap => {
                let mut map = Table::new();
                map.insert("k".into(), Value::String("v".into()));
                Value::Table(map)
            }
            Kind::Table(fields) => Value::Table(full(fields)),
            Kind::Tables(fields) => Value::Array(vec![Value::Table(full(fields))]),
        }
    }

    fn full(fields: &[Field]) -> Table {
        fields
            .iter()
            .map(|f| (f.name.to_string(), sample(f.kind)))
            .collect()
    }

    #[test]
    fn every_key_of_the_schema_is_a_field_of_the_file_model() {
        // `deny_unknown_fields` on every struct: a key the schema knows and serde does not
        // fails here.
        let table = full(ROOT);
        let sifted = sift(table.clone(), ROOT);
        assert!(sifted.problems.is_empty(), "{:?}", sifted.problems);
        let parsed: Result<FileConfig, _> = Value::Table(table).try_into();
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_reported_and_removed() {
        let table: Table = r#"
listn = "x"
[server]
max_connections = "many"
workers = -1
trusted_proxies = ["10.0.0.0/8", 7]
[oidc]
extra_params = { audience = 1, ok = "y" }
[[routes]]
prefix = "/a"
[[routes]]
prefix = 5
upstrem = "http://h"
websocket = "yes"
"#
        .parse()
        .unwrap();
        let sifted = sift(table, ROOT);
        let mut problems = sifted.problems.clone();
        // The table's key order is the map's (sorted without `preserve_order`).
        problems.sort();
        assert_eq!(
            problems,
            [
                "listn: unknown key (did you mean listen?)",
                "oidc.extra_params.audience: expected a string, found an integer",
                "routes[1].prefix: expected a string, found an integer",
                "routes[1].upstrem: unknown key (did you mean upstream?)",
                "routes[1].websocket: expected a boolean (true or false), found a string",
                "server.max_connections: expected an integer, found a string",
                "server.trusted_proxies[1]: expected a string, found an integer",
                "server.workers: expected an integer of at least 0, found -1",
            ]
        );
        let file: FileConfig = Value::Table(sifted.table.clone()).try_into().unwrap();
        assert_eq!(file.routes.len(), 2);
        assert_eq!(
            file.server.trusted_proxies.as_deref(),
            Some(&["10.0.0.0/8".to_string()][..])
        );
        assert!(sifted.is_reported("routes[1].prefix: is required"));
        assert!(sifted.is_reported("server.trusted_proxies[1]: whatever"));
        assert!(!sifted.is_reported("routes[0].prefix: is required"));
        assert!(!sifted.is_reported("server.max_connectionsx: no"));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("upstrem", ROUTE), Some("upstream"));
        assert_eq!(closest("cokie", ROUTE), Some("cookie"));
        assert_eq!(closest("banana", ROUTE), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
