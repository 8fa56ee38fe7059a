//! The route table `cookiegate check` prints when the config is valid.

use super::Config;
use crate::auth::AuthMode;
use crate::guard::csrf::CsrfMode;

impl Config {
    /// The route table as `cookiegate check` prints it.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("listen {}\n", self.listen);
        match &self.tls {
            Some(tls) => {
                let _ = writeln!(
                    out,
                    "tls on: cert {} ({} certificate{}), key {}; ALPN h2, http/1.1; TLS 1.2, 1.3",
                    tls.cert.display(),
                    tls.loaded.chain_len(),
                    if tls.loaded.chain_len() == 1 { "" } else { "s" },
                    tls.key.display()
                );
            }
            None => out.push_str("tls off (plain HTTP)\n"),
        }
        let csrf = match &self.csrf.mode {
            CsrfMode::Origin => "origin".to_string(),
            CsrfMode::Header(name) => format!("header {name}"),
            CsrfMode::Off => "off".to_string(),
        };
        let _ = writeln!(out, "csrf {csrf}");
        let _ = writeln!(
            out,
            "log {} {}, access log {}",
            self.log_level,
            self.log.format.as_str(),
            if self.log.access { "on" } else { "off" }
        );
        match &self.metrics {
            Some(m) => {
                let _ = writeln!(out, "metrics http://{}/metrics", m.listen);
            }
            None => out.push_str("metrics off\n"),
        }
        match &self.rate_limit {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "rate_limit {}/s burst {} by {}",
                    r.per_second,
                    r.burst,
                    r.key.as_str()
                );
            }
            None => out.push_str("rate_limit off\n"),
        }
        if let Some(store) = &self.store {
            let s = &store.settings;
            let nodes: Vec<String> = s.urls.iter().map(|u| crate::store::redact_url(u)).collect();
            let _ = writeln!(
                out,
                "store {}{} (prefix {}, timeout {}, on_failure {}, sessions in the {}{})",
                if s.cluster { "cluster " } else { "" },
                nodes.join(" "),
                s.key_prefix,
                humantime::format_duration(s.timeout),
                store.on_failure.as_str(),
                store.sessions.as_str(),
                if s.password.is_some() {
                    ", password from the environment"
                } else {
                    ""
                },
            );
        }
        if let Some(session) = &self.session {
            let oidc = &session.oidc;
            let _ = writeln!(
                out,
                "session cookie {} ({} keys, max_age {}, SameSite={}{}), oidc {} as {}",
                session.cookie.as_str(),
                session.keys.len(),
                humantime::format_duration(session.max_age),
                session.same_site.as_str(),
                if session.secure { ", Secure" } else { "" },
                oidc.issuer,
                oidc.client_id
            );
            let _ = writeln!(
                out,
                "endpoints {0}/login {0}/user {0}/logout {0}/backchannel, callback {1}",
                oidc.path, oidc.callback_path
            );
        }
        let rows: Vec<[String; 6]> = self
            .routes
            .in_file_order()
            .into_iter()
            .map(|r| {
                [
                    r.prefix.as_str().to_string(),
                    r.upstream.to_string(),
                    r.auth.as_str().to_string(),
                    if r.auth == AuthMode::None {
                        "-".into()
                    } else if r.auth == AuthMode::Session {
                        self.session
                            .as_ref()
                            .map_or("-", |s| s.cookie.as_str())
                            .to_string()
                    } else {
                        r.cookie.as_str().to_string()
                    },
                    r.methods.describe(),
                    r.max_body.to_string(),
                ]
            })
            .collect();
        let header = [
            "PREFIX", "UPSTREAM", "AUTH", "COOKIE", "METHODS", "MAX_BODY",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(header.map(String::from)).chain(rows) {
            let line = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}
