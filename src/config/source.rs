//! Where the configuration comes from: a file, `$COOKIEGATE_CONFIG`, zero-config flags, or
//! `$BACKEND_URL`, in that order ([`Source::choose`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::file::{self, FileConfig, RouteFile};
use super::{Config, ConfigError};

/// Environment values the config may read, passed in so tests never touch the process
/// environment. Secrets (`[session] keys_env`, `[oidc] client_secret_env`) are read from it
/// by the name the file gives, never from the file itself.
#[derive(Clone, Default)]
pub struct Env {
    /// `$COOKIEGATE_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// `$BACKEND_URL`.
    pub backend_url: Option<String>,
    /// Every other variable, by name (values may be secrets: never printed).
    pub vars: BTreeMap<String, String>,
}

impl Env {
    /// Reads the real process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Self {
        Self {
            config_path: std::env::var_os("COOKIEGATE_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            backend_url: std::env::var("BACKEND_URL").ok().filter(|v| !v.is_empty()),
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// A variable's value, when set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The same environment with `name` set (for tests and embedding).
    #[must_use]
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be session keys or client secrets.
        f.debug_struct("Env")
            .field("config_path", &self.config_path)
            .field("backend_url", &self.backend_url)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The zero-config flags: one route built from the command line.
#[derive(Debug, Clone, Default)]
pub struct ZeroConfig {
    /// `--upstream` (falls back to `$BACKEND_URL`).
    pub upstream: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--cookie`.
    pub cookie: Option<String>,
    /// `--prefix`.
    pub prefix: Option<String>,
}

impl ZeroConfig {
    /// A problem of the built file model renamed after the flag or variable it came from:
    /// `routes[0].upstream: ...` names `--upstream` or `BACKEND_URL`, which the user wrote,
    /// not a key of a file that does not exist.
    fn rename(&self, problem: &str) -> String {
        let names = [
            (
                "routes[0].upstream:",
                if self.upstream.is_some() {
                    "--upstream:"
                } else {
                    "BACKEND_URL:"
                },
            ),
            ("routes[0].prefix:", "--prefix:"),
            ("routes[0].cookie:", "--cookie:"),
            ("listen:", "--listen:"),
        ];
        for (place, name) in names {
            if let Some(rest) = problem.strip_prefix(place) {
                return format!("{name}{rest}");
            }
        }
        problem.to_string()
    }

    /// The file model these flags stand for.
    pub fn to_file(&self, env: &Env) -> FileConfig {
        FileConfig {
            listen: self.listen.clone(),
            routes: vec![RouteFile {
                prefix: Some(
                    self.prefix
                        .clone()
                        .unwrap_or_else(|| file::DEFAULT_PREFIX.into()),
                ),
                upstream: self.upstream.clone().or_else(|| env.backend_url.clone()),
                cookie: self.cookie.clone(),
                ..RouteFile::default()
            }],
            ..FileConfig::default()
        }
    }
}

/// Where `cookiegate` (run or check) gets its configuration, in order: `--config`, then
/// `$COOKIEGATE_CONFIG`, then zero-config flags (`--upstream`), then `./cookiegate.toml`, then
/// `$BACKEND_URL` alone.
#[derive(Debug, Clone)]
pub enum Source {
    /// A TOML file.
    File(PathBuf),
    /// One route from flags and the environment.
    Flags(ZeroConfig),
}

impl Source {
    /// Picks the source.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when nothing says where to proxy to.
    pub fn choose(
        config: Option<PathBuf>,
        flags: ZeroConfig,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        if let Some(path) = config.or_else(|| env.config_path.clone()) {
            return Ok(Self::File(path));
        }
        if flags.upstream.is_some() {
            return Ok(Self::Flags(flags));
        }
        let local = PathBuf::from("cookiegate.toml");
        if local.is_file() {
            return Ok(Self::File(local));
        }
        if env.backend_url.is_some() {
            return Ok(Self::Flags(flags));
        }
        Err(ConfigError::Missing)
    }

    /// Loads and validates the chosen source.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn load(&self, env: &Env) -> Result<Config, ConfigError> {
        match self {
            Self::File(path) => Config::load(path, env),
            Self::Flags(flags) => {
                Config::from_file(flags.to_file(env), env).map_err(|err| match err {
                    ConfigError::Invalid(problems) => ConfigError::Invalid(
                        problems.into_iter().map(|p| flags.rename(&p)).collect(),
                    ),
                    other => other,
                })
            }
        }
    }

    /// Where the config came from, for messages: the file's path, or the flags and
    /// environment variable the one route was built from.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Flags(flags) if flags.upstream.is_some() => "command-line flags".into(),
            Self::Flags(flags)
                if flags.listen.is_some() || flags.prefix.is_some() || flags.cookie.is_some() =>
            {
                "environment (BACKEND_URL) and command-line flags".into()
            }
            Self::Flags(_) => "environment (BACKEND_URL)".into(),
        }
    }
}
