//! What a reload cannot apply: settings fixed when the process started.
//!
//! Everything else in a new config applies to new requests (routes, guards, limits, session
//! settings) or new connections (`[server]` timeouts and limits) at a reload; see
//! `crate::server::reload` for what is carried over and why.

use super::Config;

impl Config {
    /// One line per setting that differs from `running` and needs a restart to apply:
    /// `listen changed from X to Y: restart to apply`. Empty when a reload applies it all.
    pub fn needs_restart(&self, running: &Config) -> Vec<String> {
        let mut lines = Vec::new();
        let mut differs = |key: &str, old: String, new: String| {
            if old != new {
                lines.push(format!(
                    "{key} changed from {old} to {new}: restart to apply"
                ));
            }
        };
        // The socket is bound once (and by then maybe with privileges the process gave up).
        differs(
            "listen",
            running.listen.to_string(),
            self.listen.to_string(),
        );
        // The runtime's threads are started once.
        differs(
            "server.workers",
            running.server.workers.to_string(),
            self.server.workers.to_string(),
        );
        // The log filter is installed once, before anything is logged.
        differs(
            "log.level",
            format!("`{}`", running.log_level),
            format!("`{}`", self.log_level),
        );
        differs(
            "log.format",
            running.log.format.as_str().to_string(),
            self.log.format.as_str().to_string(),
        );
        // The metrics listener is bound once, and its registry outlives every config.
        let metrics = |c: &Config| {
            c.metrics
                .map_or("off".to_string(), |m| m.listen.to_string())
        };
        differs("metrics.listen", metrics(running), metrics(self));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml_str(&format!(
            "{extra}\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn listen_workers_and_log_level_need_a_restart_and_nothing_else_does() {
        let running = config("listen = \"127.0.0.1:4000\"");
        assert!(running.needs_restart(&running).is_empty());
        let other = config(
            "listen = \"127.0.0.1:5000\"\n[server]\nworkers = 2\nmax_body = \"1KiB\"\n[log]\nlevel = \"debug\"",
        );
        assert_eq!(
            other.needs_restart(&running),
            [
                "listen changed from 127.0.0.1:4000 to 127.0.0.1:5000: restart to apply",
                "server.workers changed from 0 to 2: restart to apply",
                "log.level changed from `info` to `debug`: restart to apply",
            ]
        );
    }
}
