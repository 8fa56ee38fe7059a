//! A browser as the token handler's tests need one: a cookie jar per `host:port`, requests
//! that follow no redirect, and the login form of the test IdP filled in over HTTP.

use std::collections::BTreeMap;

use http::header::{COOKIE, LOCATION, SET_COOKIE};

use super::*;

/// Cookies by `host:port`, then by name.
#[derive(Default)]
pub struct Browser {
    jar: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

fn origin_of(url: &str) -> String {
    let uri: http::Uri = url.parse().unwrap();
    uri.authority().unwrap().to_string()
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cookie `name` held for `url`'s host.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar
            .lock()
            .unwrap()
            .get(&origin_of(url))
            .and_then(|c| c.get(name).cloned())
    }

    /// Every cookie held for `url`'s host, as a `Cookie` header value.
    pub fn cookie_header(&self, url: &str) -> String {
        self.jar
            .lock()
            .unwrap()
            .get(&origin_of(url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    /// Replaces the jar of `url`'s host (to replay an old cookie set).
    pub fn set_cookies(&self, url: &str, cookies: BTreeMap<String, String>) {
        self.jar.lock().unwrap().insert(origin_of(url), cookies);
    }

    /// The jar of `url`'s host.
    pub fn cookies(&self, url: &str) -> BTreeMap<String, String> {
        self.jar
            .lock()
            .unwrap()
            .get(&origin_of(url))
            .cloned()
            .unwrap_or_default()
    }

    fn take_cookies(&self, url: &str, answer: &Answer) {
        let mut jar = self.jar.lock().unwrap();
        let cookies = jar.entry(origin_of(url)).or_default();
        for value in answer.headers.get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            let (pair, attrs) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            let attrs = attrs.to_ascii_lowercase();
            let gone = v.is_empty()
                || attrs.contains("max-age=0")
                || attrs.contains("expires=thu, 01 jan 1970");
            if gone {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_string(), v.to_string());
            }
        }
    }

    /// Sends `req` to `url` with the jar's cookies (and `extra` headers); keeps what it sets.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(url);
        let cookie = self.cookie_header(url);
        if !cookie.is_empty() {
            req = req.header(COOKIE, cookie);
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let body = match body {
            Some(form) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                full(form)
            }
            None => empty(),
        };
        let answer = send(&client(), req.body(body).unwrap()).await;
        self.take_cookies(url, &answer);
        answer
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send("GET", url, &[], None).await
    }

    /// Logs in through the gateway's `PATH/login` (with `query`) as `user` at the test IdP,
    /// as a browser does: cookiegate's redirect, the IdP's login and consent forms, the
    /// callback. Returns the callback's answer.
    pub async fn log_in(&self, gateway: &str, query: &str, user: &str) -> Answer {
        let start = self.get(&format!("{gateway}/auth/login{query}")).await;
        assert_eq!(start.status, 302, "{:?}", start.body);
        let callback = self.idp_leg(location(&start, gateway), user).await;
        self.get(&callback).await
    }

    /// The IdP's part of a login, from cookiegate's redirect to the IdP up to (not including)
    /// the redirect back: returns the callback URL with its code.
    pub async fn idp_leg(&self, authorize: String, user: &str) -> String {
        let mut url = authorize;
        let mut interactions = 0;
        for _ in 0..10 {
            let answer = self.get(&url).await;
            assert!(
                matches!(answer.status.as_u16(), 302 | 303),
                "{url}: {} {:?}",
                answer.status,
                answer.body
            );
            let next = location(&answer, &url);
            if next.contains("/interaction/") {
                let form = if interactions == 0 {
                    format!("prompt=login&login={user}&password=x")
                } else {
                    "prompt=consent".to_string()
                };
                interactions += 1;
                let posted = self.send("POST", &next, &[], Some(form)).await;
                assert_eq!(posted.status, 303, "{next}: {:?}", posted.body);
                url = location(&posted, &next);
            } else if next.contains("code=") || next.contains("error=") {
                return next;
            } else {
                url = next;
            }
        }
        panic!("the IdP's login did not end");
    }
}

/// The absolute URL an answer's `Location` names, resolved against `base`.
pub fn location(answer: &Answer, base: &str) -> String {
    let loc = answer
        .headers
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location: {} {:?}", answer.status, answer.body))
        .to_str()
        .unwrap()
        .to_string();
    if loc.starts_with('/') {
        let uri: http::Uri = base.parse().unwrap();
        format!(
            "{}://{}{loc}",
            uri.scheme_str().unwrap(),
            uri.authority().unwrap()
        )
    } else {
        loc
    }
}
