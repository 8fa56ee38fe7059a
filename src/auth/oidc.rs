//! The token handler: cookiegate logs users in with the authorization code flow and PKCE
//! (RFC 6749 §4.1, RFC 7636, OpenID Connect Core §3.1) as a confidential client, keeps their
//! tokens in the encrypted session cookie ([`super::session`]), refreshes them once
//! ([`super::refresh`]) and logs them out, here (RP-initiated, RFC 7009 revocation) and from
//! the IdP (back-channel logout).
//!
//! The endpoints, under `[oidc] path` (`/auth`): `GET PATH/login`, the callback (the path of
//! `redirect_uri`), `GET PATH/user`, `POST PATH/logout`, `POST PATH/backchannel`. Which request
//! reaches which, and the guards before them, is [`crate::admission::admit`]'s decision.
//!
//! Every call to the IdP goes through cookiegate's own upstream client (no redirect is
//! followed, every call has a timeout, TLS as for upstreams), with answers read up to a
//! bounded size. Tokens, codes, the client secret and cookie values never reach a log line,
//! an error body or anything the browser can read (the ID token is given back to the IdP as
//! `id_token_hint`, as OpenID Connect RP-Initiated Logout asks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION,
    SET_COOKIE,
};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use super::CookieName;
use super::jwt::{AlgSet, JtiCache, Jwks, JwtError, TokenPolicy};
use super::opened::{Opened, OpenedCache};
use super::refresh::{self, Outcome, Refresher};
use super::revocation::{Revocations, Revoke, SessionRef};
use super::session::chunk::{self, CookieAttrs, SameSite};
use super::session::{Session, SessionKeys};
use crate::config::SessionSettings;
use crate::error::ProxyError;
use crate::upstream::UpstreamClient;

/// Largest IdP answer read (discovery, JWKS, token responses).
const MAX_IDP_ANSWER: usize = 256 * 1024;
/// Largest back-channel logout request body.
pub(crate) const MAX_LOGOUT_BODY: usize = 64 * 1024;
/// How long a login may take between `PATH/login` and the callback.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The JWKS is fetched again for an unknown `kid` at most this often (key rotation at the IdP
/// without letting forged `kid`s make us hammer it).
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Logout tokens remembered for replay detection.
const MAX_JTIS: usize = 10_000;
/// After a failed discovery, how long requests that need the IdP are answered 503 at once.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);
/// Used login states remembered (each for [`LOGIN_TTL`]); past this, expired ones are dropped,
/// then all.
const MAX_USED_STATES: usize = 100_000;
/// Longest `return_to` followed (longer ones go to `/`): a login-state cookie carries it.
const MAX_RETURN_TO: usize = 1024;
/// Login-state cookies a browser may hold at once; past this, a new login clears the others
/// (a page cannot fill the user's cookie jar by starting logins).
const MAX_LOGINS: usize = 4;

/// Which token-handler endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET PATH/login`: starts a login.
    Login,
    /// The callback: finishes it.
    Callback,
    /// `GET PATH/user`: who is logged in.
    User,
    /// `POST PATH/logout`.
    Logout,
    /// `POST PATH/backchannel`: the IdP's back-channel logout.
    Backchannel,
}

impl Endpoint {
    /// The endpoint `path` names, if any.
    pub(crate) fn find(path: &str, settings: &SessionSettings) -> Option<Self> {
        if path == settings.oidc.callback_path {
            return Some(Self::Callback);
        }
        let rest = path.strip_prefix(settings.oidc.path.as_str())?;
        match rest {
            "/login" => Some(Self::Login),
            "/user" => Some(Self::User),
            "/logout" => Some(Self::Logout),
            "/backchannel" => Some(Self::Backchannel),
            _ => None,
        }
    }

    /// The methods it takes, as an `Allow` value.
    pub(crate) fn allow(self) -> &'static str {
        match self {
            Self::Login | Self::Callback | Self::User => "GET, HEAD",
            Self::Logout | Self::Backchannel => "POST",
        }
    }

    /// Whether it takes `method`.
    pub(crate) fn allows(self, method: &Method) -> bool {
        match self {
            Self::Login | Self::Callback | Self::User => {
                method == Method::GET || method == Method::HEAD
            }
            Self::Logout | Self::Backchannel => method == Method::POST,
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `return_to` may be redirected to after login: a local path, one leading `/`, never
/// `//` or `/\` (which browsers read as another host), nothing but visible ASCII and no
/// backslash at all (browsers turn it into `/`).
pub(crate) fn is_local_path(return_to: &str) -> bool {
    let bytes = return_to.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes.get(1) != Some(&b'/')
        && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'\\')
}

/// The PKCE challenge of `verifier` (RFC 7636 §4.2, `S256`).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// 256 random bits, base64url: a state, a nonce or a PKCE verifier (43 characters, RFC 7636
/// §4.1's recommendation).
fn random_token() -> Result<String, ProxyError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ProxyError::Internal("the system random generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The login-state cookie of the login whose `state` this is: one per login, so two tabs can
/// log in at once. Its value is sealed like the session cookie, so it cannot be forged or read.
fn login_cookie_name(session_cookie: &CookieName, state: &str) -> Option<CookieName> {
    let tag: String = state.chars().take(16).collect();
    CookieName::parse(&format!("{}-login.{tag}", session_cookie.as_str())).ok()
}

/// The login-state cookies a request carries.
fn login_cookies(request: &HeaderMap, session_cookie: &CookieName) -> Vec<CookieName> {
    let prefix = format!("{}-login.", session_cookie.as_str());
    let mut names = Vec::new();
    for field in request.get_all(http::header::COOKIE) {
        for pair in field.as_bytes().split(|&b| b == b';') {
            let name = pair
                .split(|&b| b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if let Some(name) = std::str::from_utf8(name)
                .ok()
                .filter(|n| n.starts_with(&prefix))
                .and_then(|n| CookieName::parse(n).ok())
            {
                names.push(name);
            }
        }
    }
    names
}

/// What the login-state cookie holds.
#[derive(Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    created: u64,
}

/// The IdP as its discovery document describes it.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: Uri,
    jwks_uri: Uri,
    end_session_endpoint: Option<String>,
    revocation_endpoint: Option<Uri>,
    /// RFC 9207: the IdP sends `iss` on its authorization responses.
    sends_iss: bool,
    policy: TokenPolicy,
    jwks: Mutex<Arc<Jwks>>,
}

/// The parts of a discovery document cookiegate uses (OpenID Connect Discovery 1.0 §3).
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    end_session_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// A token endpoint answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds; a number, or a string of digits as some IdPs send it.
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

/// `expires_in` as a number or a string of digits (RFC 6749 says a number; some IdPs quote it).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<Seconds>::deserialize(d)? {
        Some(Seconds::Number(n)) => Some(n),
        Some(Seconds::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

/// Why an IdP call gave no usable answer.
enum IdpFailure {
    /// Transport failure.
    Unreachable(crate::error::BoxError),
    /// No answer in time.
    Timeout,
    /// An answer with this status and body.
    Status(StatusCode, Bytes),
    /// An answer over the size limit.
    TooLarge,
}

impl IdpFailure {
    /// The answer for a failure where the IdP should have worked (discovery, JWKS, refresh
    /// blips): 502, 503 or 504, never a logout.
    fn into_error(self, what: &'static str) -> ProxyError {
        match self {
            Self::Unreachable(e) => ProxyError::IdpUnreachable(e),
            Self::Timeout => ProxyError::IdpTimeout,
            Self::Status(status, _) if status.is_server_error() => ProxyError::IdpUnavailable,
            Self::Status(..) | Self::TooLarge => ProxyError::IdpInvalid(what),
        }
    }

    /// The status [`refresh::Outcome::Failed`] carries.
    fn status(&self) -> u16 {
        match self {
            Self::Timeout => 504,
            Self::Status(status, _) if status.is_server_error() => 503,
            _ => 502,
        }
    }

    /// The OAuth error code of a 4xx answer (`invalid_grant`, ...).
    fn oauth_error(&self) -> Option<String> {
        match self {
            Self::Status(status, body) if status.is_client_error() => {
                #[derive(Deserialize)]
                struct OAuthError {
                    error: String,
                }
                serde_json::from_slice::<OAuthError>(body)
                    .ok()
                    .map(|e| e.error)
            }
            _ => None,
        }
    }
}

/// The token handler's state: settings, the IdP once discovered, and what must be remembered
/// (used login states, seen logout tokens, refreshes in flight).
pub(crate) struct TokenHandler {
    settings: SessionSettings,
    timeout: Duration,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    jwks_fetched: Mutex<Option<tokio::time::Instant>>,
    discovery_failed: Mutex<Option<tokio::time::Instant>>,
    /// Why the last discovery failed (a fixed public reason, for `/readyz`).
    discovery_failure: Mutex<Option<&'static str>>,
    /// Set once the IdP's discovery document and JWKS are loaded.
    discovered: std::sync::atomic::AtomicBool,
    /// Used login states and seen logout tokens, kept across reloads.
    memory: Arc<LoginMemory>,
    refresher: Refresher,
    /// The state shared with other instances (`[store]`): revocations, logout-token `jti`s,
    /// the refresh lock and its outcome.
    shared: Option<Arc<crate::store::SharedState>>,
}

/// What the token handler remembers to refuse replays: used login states and seen logout
/// tokens. Built once per server and handed to every token handler a reload builds (with
/// [`crate::proxy::Lasting`]): a reload, even one that drops `[session]` and brings it back,
/// must not reopen a replay window.
#[derive(Debug)]
pub(crate) struct LoginMemory {
    used_states: Mutex<HashMap<String, u64>>,
    jtis: Mutex<JtiCache>,
}

impl Default for LoginMemory {
    fn default() -> Self {
        Self {
            used_states: Mutex::new(HashMap::new()),
            jtis: Mutex::new(JtiCache::new(MAX_JTIS)),
        }
    }
}

impl std::fmt::Debug for TokenHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHandler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The `Authorization` value for an access token, marked sensitive.
pub(crate) fn bearer(access_token: &str) -> Result<HeaderValue, ProxyError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {access_token}"))
        .map_err(|_| ProxyError::IdpInvalid("an access token that cannot be a header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

impl TokenHandler {
    /// A handler for these settings; IdP calls time out after `timeout`; replays are refused
    /// with `memory`. With the handler of the config before a reload (`previous`) for the same
    /// IdP and client, the refreshes in flight and just landed are shared with it (a refresh
    /// token redeemed twice, once per handler, could end the user's session at an IdP that
    /// rotates them).
    pub(crate) fn new(
        settings: SessionSettings,
        timeout: Duration,
        memory: Arc<LoginMemory>,
        previous: Option<&TokenHandler>,
    ) -> Self {
        Self {
            timeout,
            provider: tokio::sync::Mutex::new(None),
            jwks_fetched: Mutex::new(None),
            discovery_failed: Mutex::new(None),
            discovery_failure: Mutex::new(None),
            discovered: std::sync::atomic::AtomicBool::new(false),
            memory,
            refresher: match previous {
                Some(p)
                    if p.settings.oidc.issuer == settings.oidc.issuer
                        && p.settings.oidc.client_id == settings.oidc.client_id =>
                {
                    p.refresher.clone()
                }
                _ => Refresher::default(),
            },
            shared: None,
            settings,
        }
    }

    /// Whether the IdP's discovery document (and its JWKS) is loaded.
    pub(crate) fn is_discovered(&self) -> bool {
        self.discovered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the last discovery attempt failed, as a fixed public reason (no URL, no secret).
    pub(crate) fn discovery_failure(&self) -> Option<&'static str> {
        *self
            .discovery_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the IdP's discovery document until it succeeds, so the server becomes ready
    /// without waiting for a first login: tries at once, then again after each failure, waiting
    /// 2 s, 4 s, ... up to 30 s between attempts. The server owns (and aborts) the task.
    pub(crate) async fn discover_until_ready(&self, client: &Arc<UpstreamClient>) {
        let mut wait = DISCOVERY_RETRY;
        loop {
            match self.provider(client).await {
                Ok(_) => {
                    tracing::info!(issuer = %self.settings.oidc.issuer, "identity provider discovered");
                    return;
                }
                Err(err) => tracing::warn!(
                    issuer = %self.settings.oidc.issuer,
                    error = %err,
                    cause = %crate::proxy::SourceChain(&err),
                    retry_in_s = wait.as_secs(),
                    "identity provider discovery failed"
                ),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// The same, sharing its revocations and refreshes with other instances through `shared`.
    pub(crate) fn with_shared(mut self, shared: Option<Arc<crate::store::SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    fn keys(&self) -> &SessionKeys {
        &self.settings.keys
    }

    fn cookie_attrs(&self, max_age: Duration) -> CookieAttrs {
        CookieAttrs {
            same_site: self.settings.same_site,
            secure: self.settings.secure,
            max_age,
        }
    }

    /// Opens the request's session, if it carries an authentic one. Expiry and revocation are
    /// the caller's ([`crate::admission::admit`]) to check.
    ///
    /// # Errors
    /// When a session cookie is present but is not an authentic session.
    ///
    /// A cookie value opened before is found in `cache` (compared whole) instead of being
    /// decrypted and parsed again.
    pub(crate) fn open_session(
        settings: &SessionSettings,
        cache: &OpenedCache,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Opened>>, super::session::OpenError> {
        let Some(value) = chunk::assemble(headers, &settings.cookie)? else {
            return Ok(None);
        };
        if let Some(opened) = cache.get(&value) {
            return Ok(Some(opened));
        }
        let session = Session::open(&settings.keys, &settings.cookie, &value)?;
        let Ok(bearer) = bearer(&session.access_token) else {
            return Err(super::session::OpenError::Payload);
        };
        let opened = Arc::new(Opened { session, bearer });
        cache.insert(&value, opened.clone());
        Ok(Some(opened))
    }

    /// With sessions in the store: reads the session the request's handle names into `cache`,
    /// where admission opens it as it opens a cookie's (and drops a cached one the store no
    /// longer has: logged out or expired, so admission refuses the cookie). Read on every
    /// request of a session route, since another instance may have refreshed it. A store that
    /// fails is a 503 whatever `on_failure` says: the tokens are nowhere else, and refusing
    /// the cookie would log the user out.
    ///
    /// # Errors
    /// [`ProxyError::StoreUnavailable`].
    pub(crate) async fn load_stored(
        &self,
        cache: &OpenedCache,
        headers: &HeaderMap,
    ) -> Result<(), ProxyError> {
        let Some(shared) = self.session_store() else {
            return Ok(());
        };
        let Ok(Some(handle)) = chunk::assemble(headers, &self.settings.cookie) else {
            return Ok(());
        };
        if !super::session::is_handle(&handle) {
            return Ok(());
        }
        let found = shared.get_session(&handle).await;
        let Some(found) = shared.settle("session read", found)? else {
            return Err(ProxyError::StoreUnavailable(
                crate::store::StoreError::Failed(
                    "the session's tokens are only in the store".into(),
                ),
            ));
        };
        let opened = found
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|sealed| {
                let session = Session::open(self.keys(), &self.settings.cookie, &sealed).ok()?;
                let bearer = bearer(&session.access_token).ok()?;
                Some((sealed, Opened { session, bearer }))
            });
        match opened {
            Some((sealed, opened)) => {
                if !self.keys().sealed_with_first(&sealed) {
                    // Sealed with an older key: sealed again with the first, so the session
                    // outlives the old key's removal (best effort; tried again next time).
                    if let Ok(again) = opened.session.seal(self.keys(), &self.settings.cookie) {
                        let _ = shared
                            .reseal_session(
                                &handle,
                                &sealed,
                                again.as_str(),
                                opened.session.expires_at,
                            )
                            .await;
                    }
                }
                cache.insert(&handle, Arc::new(opened));
            }
            None => cache.remove(&handle),
        }
        Ok(())
    }

    /// `Set-Cookie` values that delete every session cookie the request carries.
    pub(crate) fn clear_session(
        settings: &SessionSettings,
        request: &HeaderMap,
    ) -> Vec<HeaderValue> {
        let attrs = CookieAttrs {
            same_site: settings.same_site,
            secure: settings.secure,
            max_age: Duration::ZERO,
        };
        chunk::clear_cookie_headers(request, &settings.cookie, &[], &attrs)
    }

    /// The shared store, when sessions' tokens live there (`[store] sessions = "store"`).
    fn session_store(&self) -> Option<&Arc<crate::store::SharedState>> {
        self.shared
            .as_ref()
            .filter(|s| s.sessions == crate::store::SessionStorage::Store)
    }

    /// `Set-Cookie` values carrying `session`, deleting chunks of an older, larger one.
    ///
    /// With sessions in the store, the session goes there, sealed, and the cookie carries its
    /// handle: a new one at login (`fresh`: a handle the browser held before is never reused,
    /// or a planted cookie would name the victim's session), the browser's own after a
    /// refresh. If the store fails with `on_failure = "open"`, the session goes in the cookie
    /// as without a store (both kinds open).
    async fn set_session(
        &self,
        session: &Session,
        request: &HeaderMap,
        fresh: bool,
    ) -> Result<Vec<HeaderValue>, ProxyError> {
        let sealed = session
            .seal(self.keys(), &self.settings.cookie)
            .map_err(|_| ProxyError::Internal("sealing the session failed"))?;
        let mut chunks = None;
        if let Some(shared) = self.session_store() {
            let held = chunk::assemble(request, &self.settings.cookie)
                .ok()
                .flatten()
                .filter(|value| !fresh && super::session::is_handle(value));
            let handle = match held {
                Some(handle) => handle,
                None => super::session::new_handle()
                    .map_err(|_| ProxyError::Internal("the random generator failed"))?,
            };
            let stored = shared
                .put_session(&handle, sealed.as_str(), session.expires_at)
                .await;
            if shared.settle("session write", stored)?.is_some() {
                chunks = Some(chunk::handle(&self.settings.cookie, &handle));
            }
        }
        let chunks = chunks.unwrap_or_else(|| chunk::split(&self.settings.cookie, &sealed));
        let lifetime = Duration::from_secs(session.expires_at.saturating_sub(now()));
        let attrs = self.cookie_attrs(lifetime);
        let mut cookies = chunk::set_cookie_headers(&chunks, &attrs);
        cookies.extend(chunk::clear_cookie_headers(
            request,
            &self.settings.cookie,
            &chunks,
            &attrs,
        ));
        Ok(cookies)
    }

    // --- IdP calls ---------------------------------------------------------------------------

    /// One call to the IdP, its answer read whole up to [`MAX_IDP_ANSWER`]. `form`: an
    /// `application/x-www-form-urlencoded` body, sent with the client's Basic credentials.
    async fn call(
        &self,
        client: &Arc<UpstreamClient>,
        uri: &Uri,
        form: Option<String>,
    ) -> Result<Bytes, IdpFailure> {
        let call = async {
            let mut fields: Vec<(HeaderName, HeaderValue)> = vec![(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            )];
            let method = if form.is_some() {
                fields.push((
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                ));
                fields.push((AUTHORIZATION, self.basic_credentials()));
                Method::POST
            } else {
                Method::GET
            };
            let has_form = form.is_some();
            let body = Full::new(Bytes::from(form.unwrap_or_default()));
            let res = client
                .request(
                    &method,
                    uri,
                    fields.iter().map(|(n, v)| (n, v)),
                    has_form,
                    false,
                    body,
                )
                .await
                .map_err(|e| IdpFailure::Unreachable(Box::new(e)))?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), MAX_IDP_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        IdpFailure::TooLarge
                    } else {
                        IdpFailure::Unreachable(e)
                    }
                })?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(IdpFailure::Status(status, bytes))
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(IdpFailure::Timeout))
    }

    /// `Basic base64(urlencode(client_id):urlencode(secret))` (RFC 6749 §2.3.1), sensitive.
    fn basic_credentials(&self) -> HeaderValue {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            encode(&self.settings.oidc.client_id),
            encode(&self.settings.oidc.client_secret)
        );
        let mut value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair)))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        value.set_sensitive(true);
        value
    }

    /// The IdP, discovered on first use (and again after a failed attempt).
    ///
    /// # Errors
    /// 502/503/504 when discovery or the JWKS cannot be had, or the IdP names another issuer.
    async fn provider(&self, client: &Arc<UpstreamClient>) -> Result<Arc<Provider>, ProxyError> {
        // While the IdP is down, requests do not queue one after another behind discovery
        // attempts: a failure answers 503 for a moment.
        let failed_recently = self
            .discovery_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < DISCOVERY_RETRY);
        let mut slot = self.provider.lock().await;
        if let Some(provider) = &*slot {
            return Ok(provider.clone());
        }
        if failed_recently {
            return Err(ProxyError::IdpUnavailable);
        }
        let discovered = self.discover(client).await;
        match discovered {
            Ok(provider) => {
                *slot = Some(provider.clone());
                self.discovered
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(provider)
            }
            Err(err) => {
                *self
                    .discovery_failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
                *self
                    .discovery_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(public_reason(&err));
                Err(err)
            }
        }
    }

    /// Reads the discovery document and the JWKS.
    async fn discover(&self, client: &Arc<UpstreamClient>) -> Result<Arc<Provider>, ProxyError> {
        let issuer = &self.settings.oidc.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let uri: Uri = url
            .parse()
            .map_err(|_| ProxyError::Internal("the discovery URL is not a URI"))?;
        let doc = self
            .call(client, &uri, None)
            .await
            .map_err(|e| e.into_error("discovery document"))?;
        let doc: Discovery = serde_json::from_slice(&doc)
            .map_err(|_| ProxyError::IdpInvalid("discovery document is not valid"))?;
        // OpenID Connect Discovery §4.3: the issuer must be exactly the one configured.
        if doc.issuer != *issuer {
            return Err(ProxyError::IdpInvalid(
                "the discovery document names another issuer",
            ));
        }
        if doc
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| !m.iter().any(|m| m == "S256"))
        {
            return Err(ProxyError::IdpInvalid("the IdP does not support PKCE S256"));
        }
        let parse = |text: &str, what: &'static str| -> Result<Uri, ProxyError> {
            crate::config::check_idp_url(text).ok_or(ProxyError::IdpInvalid(what))
        };
        let token_endpoint = parse(&doc.token_endpoint, "token endpoint URL")?;
        let jwks_uri = parse(&doc.jwks_uri, "jwks_uri")?;
        parse(&doc.authorization_endpoint, "authorization endpoint URL")?;
        let revocation_endpoint = match &doc.revocation_endpoint {
            Some(r) => Some(parse(r, "revocation endpoint URL")?),
            None => None,
        };
        let algs = if doc.id_token_signing_alg_values_supported.is_empty() {
            AlgSet::all()
        } else {
            AlgSet::from_advertised(
                doc.id_token_signing_alg_values_supported
                    .iter()
                    .map(String::as_str),
            )
        };
        if algs.is_empty() {
            return Err(ProxyError::IdpInvalid(
                "the IdP signs ID tokens with no algorithm cookiegate accepts",
            ));
        }
        let jwks = self.fetch_jwks(client, &jwks_uri).await?;
        let provider = Arc::new(Provider {
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint,
            jwks_uri,
            end_session_endpoint: doc.end_session_endpoint,
            revocation_endpoint,
            sends_iss: doc.authorization_response_iss_parameter_supported,
            policy: TokenPolicy::new(issuer, &self.settings.oidc.client_id, algs),
            jwks: Mutex::new(Arc::new(jwks)),
        });
        Ok(provider)
    }

    async fn fetch_jwks(
        &self,
        client: &Arc<UpstreamClient>,
        uri: &Uri,
    ) -> Result<Jwks, ProxyError> {
        let doc = self
            .call(client, uri, None)
            .await
            .map_err(|e| e.into_error("JWKS"))?;
        Jwks::parse(&doc).map_err(|_| ProxyError::IdpInvalid("JWKS document is not valid"))
    }

    /// Validates a token with the provider's keys, fetching the JWKS again (at most every
    /// [`JWKS_REFETCH_EVERY`]) when the token names a key it does not hold: the IdP rotated.
    async fn with_keys<T>(
        &self,
        client: &Arc<UpstreamClient>,
        provider: &Provider,
        validate: impl Fn(&Jwks) -> Result<T, JwtError>,
    ) -> Result<Result<T, JwtError>, ProxyError> {
        let jwks = provider
            .jwks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match validate(&jwks) {
            Err(e) if e.is_key_miss() => {
                {
                    // Counted from the last re-fetch for a key miss (not from discovery), so
                    // a rotation right after start is picked up at once.
                    let mut last = self.jwks_fetched.lock().unwrap_or_else(|e| e.into_inner());
                    if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_EVERY) {
                        return Ok(Err(e));
                    }
                    *last = Some(tokio::time::Instant::now());
                }
                let fresh = Arc::new(self.fetch_jwks(client, &provider.jwks_uri).await?);
                *provider.jwks.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                Ok(validate(&fresh))
            }
            other => Ok(other),
        }
    }

    // --- endpoints ---------------------------------------------------------------------------

    /// `GET PATH/login[?return_to=/p&prompt=none]`: a redirect to the IdP with a fresh state,
    /// nonce and PKCE challenge, and the login-state cookie that binds them to this browser.
    pub(crate) async fn login(
        &self,
        client: &Arc<UpstreamClient>,
        query: Option<&str>,
        request: &HeaderMap,
    ) -> Result<Response<Bytes>, ProxyError> {
        let provider = self.provider(client).await?;
        let mut return_to = "/".to_string();
        let mut prompt = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*name {
                "return_to" if value.len() <= MAX_RETURN_TO && is_local_path(&value) => {
                    return_to = value.into_owned();
                }
                "prompt" if matches!(&*value, "none" | "login" | "consent" | "select_account") => {
                    prompt = Some(value.into_owned());
                }
                _ => {}
            }
        }
        let (state, nonce, verifier) = (random_token()?, random_token()?, random_token()?);
        let oidc = &self.settings.oidc;
        let mut params = form_urlencoded::Serializer::new(String::new());
        params
            .append_pair("response_type", "code")
            .append_pair("client_id", &oidc.client_id)
            .append_pair("redirect_uri", &oidc.redirect_uri)
            .append_pair("scope", &oidc.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(prompt) = &prompt {
            params.append_pair("prompt", prompt);
        }
        for (name, value) in &oidc.extra_params {
            params.append_pair(name, value);
        }
        let separator = if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!(
            "{}{separator}{}",
            provider.authorization_endpoint,
            params.finish()
        );
        let cookie_name = login_cookie_name(&self.settings.cookie, &state)
            .ok_or(ProxyError::Internal("a login cookie name is not a token"))?;
        let login = LoginState {
            state,
            nonce,
            verifier,
            return_to,
            created: now(),
        };
        let json = serde_json::to_vec(&login)
            .map_err(|_| ProxyError::Internal("the login state did not serialize"))?;
        let sealed = super::session::seal(self.keys(), &cookie_name, &json)
            .map_err(|_| ProxyError::Internal("sealing the login state failed"))?;
        // SameSite=Lax whatever the session's setting: the IdP's redirect back is a cross-site
        // top-level navigation, which must carry this cookie.
        let attrs = CookieAttrs {
            same_site: SameSite::Lax,
            secure: self.settings.secure,
            max_age: LOGIN_TTL,
        };
        let mut cookies = chunk::set_cookie_headers(&chunk::split(&cookie_name, &sealed), &attrs);
        let logins = login_cookies(request, &self.settings.cookie);
        if logins.len() >= MAX_LOGINS {
            let clear = CookieAttrs {
                max_age: Duration::ZERO,
                ..attrs
            };
            for name in logins {
                cookies.extend(chunk::clear_cookie_headers(request, &name, &[], &clear));
            }
        }
        redirect(&location, cookies)
    }

    /// The callback: checks the state (once), exchanges the code with the PKCE verifier,
    /// validates the ID token, and sets the session cookie.
    pub(crate) async fn callback(
        &self,
        client: &Arc<UpstreamClient>,
        query: Option<&str>,
        request: &HeaderMap,
    ) -> Result<Response<Bytes>, ProxyError> {
        let mut params: HashMap<String, String> = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if params
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return Err(ProxyError::LoginFailed("a callback parameter is repeated"));
            }
        }
        let state = params
            .get("state")
            .ok_or(ProxyError::LoginFailed("the callback has no state"))?;
        let Some(cookie_name) = login_cookie_name(&self.settings.cookie, state) else {
            return Err(ProxyError::LoginFailed("the callback's state is malformed"));
        };
        let clear_login = chunk::clear_cookie_headers(
            request,
            &cookie_name,
            &[],
            &CookieAttrs {
                same_site: SameSite::Lax,
                secure: self.settings.secure,
                max_age: Duration::ZERO,
            },
        );
        let with_clear = |error: ProxyError| ProxyError::WithCookies {
            error: Box::new(error),
            cookies: clear_login.clone(),
        };
        let login = self
            .login_state(&cookie_name, state, request)
            .map_err(with_clear)?;
        if params.contains_key("error") {
            return Err(with_clear(ProxyError::LoginFailed(
                "the identity provider refused the login",
            )));
        }
        let provider = self.provider(client).await.map_err(with_clear)?;
        // RFC 9207: an `iss` that is not our issuer is a mix-up attack.
        match params.get("iss") {
            Some(iss) if *iss != self.settings.oidc.issuer => {
                return Err(with_clear(ProxyError::LoginFailed(
                    "the callback names another issuer",
                )));
            }
            None if provider.sends_iss => {
                return Err(with_clear(ProxyError::LoginFailed(
                    "the callback has no iss although the IdP sends it",
                )));
            }
            _ => {}
        }
        let code = params
            .get("code")
            .ok_or_else(|| with_clear(ProxyError::LoginFailed("the callback has no code")))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.settings.oidc.redirect_uri)
            .append_pair("code_verifier", &login.verifier)
            .finish();
        let answer = match self
            .call(client, &provider.token_endpoint, Some(form))
            .await
        {
            Ok(answer) => answer,
            Err(IdpFailure::Status(status, _)) if status.is_client_error() => {
                return Err(with_clear(ProxyError::LoginFailed(
                    "the identity provider refused the code",
                )));
            }
            Err(e) => return Err(with_clear(e.into_error("token response"))),
        };
        let tokens: TokenAnswer = serde_json::from_slice(&answer)
            .map_err(|_| with_clear(ProxyError::IdpInvalid("token response is not valid")))?;
        let id_token = tokens.id_token.clone().ok_or_else(|| {
            with_clear(ProxyError::IdpInvalid("the token response has no ID token"))
        })?;
        let now = now();
        let validated = self
            .with_keys(client, &provider, |jwks| {
                provider
                    .policy
                    .validate_id_token(&id_token, jwks, &login.nonce, now)
            })
            .await
            .map_err(with_clear)?
            .map_err(|_| with_clear(ProxyError::LoginFailed("the ID token is not valid")))?;
        let max_age = self.settings.max_age.as_secs();
        let session = Session {
            id: Session::new_id()
                .map_err(|_| with_clear(ProxyError::Internal("the random generator failed")))?,
            sub: validated.sub,
            sid: validated.sid,
            id_token,
            access_token: tokens.access_token.clone(),
            access_expires_at: now.saturating_add(tokens.expires_in.unwrap_or(300)),
            refresh_token: tokens.refresh_token.clone(),
            issued_at: now,
            expires_at: now.saturating_add(max_age),
        };
        let mut cookies = self
            .set_session(&session, request, true)
            .await
            .map_err(with_clear)?;
        cookies.extend(clear_login);
        redirect(&login.return_to, cookies)
    }

    /// Reads and checks the login-state cookie of `state`, and uses the state up.
    fn login_state(
        &self,
        cookie_name: &CookieName,
        state: &str,
        request: &HeaderMap,
    ) -> Result<LoginState, ProxyError> {
        let value =
            chunk::assemble(request, cookie_name)
                .ok()
                .flatten()
                .ok_or(ProxyError::LoginFailed(
                    "no login in progress for this state",
                ))?;
        let json = super::session::open(self.keys(), cookie_name, &value)
            .map_err(|_| ProxyError::LoginFailed("the login-state cookie is not valid"))?;
        let login: LoginState = serde_json::from_slice(&json)
            .map_err(|_| ProxyError::LoginFailed("the login-state cookie is not valid"))?;
        if !constant_time_eq(login.state.as_bytes(), state.as_bytes()) {
            return Err(ProxyError::LoginFailed("the state does not match"));
        }
        let now = now();
        if now.saturating_sub(login.created) > LOGIN_TTL.as_secs() {
            return Err(ProxyError::LoginFailed("the login took too long"));
        }
        // Usable once: a replayed callback (same cookie, same state) is refused.
        let mut used = self
            .memory
            .used_states
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_USED_STATES {
            used.retain(|_, until| *until > now);
            if used.len() >= MAX_USED_STATES {
                // A flood of logins: forgetting used states only lets a replay reach the IdP,
                // which refuses a used code anyway.
                used.clear();
            }
        }
        if used
            .insert(
                URL_SAFE_NO_PAD.encode(refresh::key_of(state)),
                login.created + LOGIN_TTL.as_secs(),
            )
            .is_some()
        {
            return Err(ProxyError::LoginFailed("the state was already used"));
        }
        Ok(login)
    }

    /// `GET PATH/user`: who is logged in, without any token.
    pub(crate) fn user(&self, session: &Session) -> Result<Response<Bytes>, ProxyError> {
        let claims = id_token_claims(&session.id_token);
        let body = serde_json::json!({
            "sub": session.sub,
            "claims": claims,
            "expires_at": session.expires_at,
        });
        json_response(StatusCode::OK, &body, Vec::new())
    }

    /// `POST PATH/logout`: ends the session here, revokes its refresh token at the IdP, clears
    /// the cookie, and gives the IdP's logout URL for the browser to visit.
    pub(crate) async fn logout(
        &self,
        client: &Arc<UpstreamClient>,
        revocations: &Revocations,
        session: Option<Arc<Opened>>,
        request: &HeaderMap,
    ) -> Result<Response<Bytes>, ProxyError> {
        let cookies = Self::clear_session(&self.settings, request);
        // A handle's entry goes whatever it holds (even a session this instance cannot open).
        if let Some(shared) = self.session_store() {
            if let Some(handle) = chunk::assemble(request, &self.settings.cookie)
                .ok()
                .flatten()
                .filter(|value| super::session::is_handle(value))
            {
                shared.settle("logout", shared.delete_session(&handle).await)?;
            }
        }
        let Some(opened) = session else {
            return json_response(
                StatusCode::OK,
                &serde_json::json!({ "logout_url": null }),
                cookies,
            );
        };
        let session = &opened.session;
        let revoke = Revoke::Session {
            id: &session.id,
            until: session.expires_at,
        };
        // Other instances first: with `on_failure = "closed"`, a store that fails answers 503
        // before anything changed (the cookie stays, the user tries again) rather than a
        // logout that holds on this instance only.
        if let Some(shared) = &self.shared {
            shared.settle("logout", shared.revoke(revoke).await)?;
        }

        revocations.apply(revoke);
        // The cookie is refused from now on whatever the IdP says; without a provider (IdP
        // down) there is no logout URL and no revocation, and the logout still holds here.
        let provider = self.provider(client).await.ok();
        let mut logout_url = None;
        if let Some(provider) = &provider {
            if let (Some(endpoint), Some(token)) =
                (&provider.revocation_endpoint, &session.refresh_token)
            {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", token)
                    .append_pair("token_type_hint", "refresh_token")
                    .finish();
                if self.call(client, endpoint, Some(form)).await.is_err() {
                    tracing::warn!(
                        "refresh token revocation at the IdP failed; the session is ended here all the same"
                    );
                }
            }
            if let Some(end_session) = &provider.end_session_endpoint {
                let mut params = form_urlencoded::Serializer::new(String::new());
                params
                    .append_pair("id_token_hint", &session.id_token)
                    .append_pair("client_id", &self.settings.oidc.client_id);
                if let Some(after) = &self.settings.oidc.post_logout_redirect_uri {
                    params.append_pair("post_logout_redirect_uri", after);
                }
                let separator = if end_session.contains('?') { '&' } else { '?' };
                logout_url = Some(format!("{end_session}{separator}{}", params.finish()));
            }
        }
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "logout_url": logout_url }),
            cookies,
        )
    }

    /// `POST PATH/backchannel`: a logout token from the IdP ends every session of its `sid`
    /// (or, without one, of its `sub`).
    pub(crate) async fn backchannel(
        &self,
        client: &Arc<UpstreamClient>,
        revocations: &Revocations,
        body: &[u8],
    ) -> Result<Response<Bytes>, ProxyError> {
        let token = form_urlencoded::parse(body)
            .find(|(name, _)| name == "logout_token")
            .map(|(_, value)| value.into_owned())
            .ok_or(ProxyError::BadLogoutToken("no logout_token parameter"))?;
        let provider = self.provider(client).await?;
        let now = now();
        let logout = self
            .with_keys(client, &provider, |jwks| {
                provider.policy.validate_logout_token(&token, jwks, now)
            })
            .await?
            .map_err(|_| ProxyError::BadLogoutToken("the logout token is not valid"))?;
        let until = now + self.settings.max_age.as_secs();
        let revoke = match (&logout.sid, &logout.sub) {
            (Some(sid), _) => Revoke::Sid {
                sid,
                at: now,
                until,
            },
            (None, Some(sub)) => Revoke::Sub {
                sub,
                at: now,
                until,
            },
            (None, None) => {
                return Err(ProxyError::BadLogoutToken(
                    "the logout token names no session",
                ));
            }
        };
        // Every instance's replay check and revocation in one step of the store; then this
        // instance's own (which also answers while the store fails with `on_failure = "open"`).
        if let Some(shared) = &self.shared {
            let first = shared.backchannel_logout(revoke, &logout.jti, logout.acceptable_until);
            if shared.settle("back-channel logout", first.await)? == Some(false) {
                return Err(ProxyError::BadLogoutToken("the logout token was replayed"));
            }
        }
        let fresh = self
            .memory
            .jtis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check_and_insert(&logout, now);
        if !fresh {
            return Err(ProxyError::BadLogoutToken("the logout token was replayed"));
        }
        revocations.apply(revoke);
        let mut res = Response::new(Bytes::new());
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }

    /// The bearer for a session route: the session's access token, refreshed first when it
    /// expires within `refresh_before`. With a refresh, the `Set-Cookie` values carrying the
    /// new session come back too.
    ///
    /// # Errors
    /// [`ProxyError::SessionExpired`] (with the cookie cleared) when the IdP no longer knows
    /// the grant; 502/503/504 when it fails, the cookie left alone.
    pub(crate) async fn bearer_for(
        &self,
        client: &Arc<UpstreamClient>,
        revocations: &Revocations,
        opened: Arc<Opened>,
        request: &HeaderMap,
    ) -> Result<(HeaderValue, Vec<HeaderValue>), ProxyError> {
        let now = now();
        let margin = self.settings.oidc.refresh_before.as_secs();
        let session = &opened.session;
        if session.access_expires_at > now + margin {
            return Ok((opened.bearer.clone(), Vec::new()));
        }
        let Some(refresh_token) = session.refresh_token.clone() else {
            if session.access_expires_at > now {
                return Ok((opened.bearer.clone(), Vec::new()));
            }
            return Err(self.expired(revocations, session, request).await);
        };
        let provider = self.provider(client).await?;
        let token_key = refresh::key_of(&refresh_token);
        let parts = self.call_parts(client);
        let outcome = self
            .refresher
            .refresh(token_key, self.timeout, || {
                // The lock must outlast everything its holder does before the outcome is in the
                // store: a read, the IdP call (`parts.timeout`), the write and the release; if it
                // expired first, another instance could redeem the same token.
                let hold = parts.timeout
                    + Duration::from_secs(5)
                    + self
                        .shared
                        .as_ref()
                        .map_or(Duration::ZERO, |s| s.store.timeout() * 4);
                let redeem = refresh_task(
                    parts,
                    provider.token_endpoint.clone(),
                    session.clone(),
                    refresh_token.clone(),
                );
                let shared = self.shared.clone();
                let sealer = refresh::Sealer {
                    keys: self.settings.keys.clone(),
                    cookie: self.settings.cookie.clone(),
                };
                let id = session.id.clone();
                async move {
                    match shared {
                        Some(shared) => {
                            refresh::across_instances(shared, sealer, id, token_key, hold, || {
                                redeem
                            })
                            .await
                        }
                        None => redeem.await,
                    }
                }
            })
            .await;
        match outcome {
            Outcome::Refreshed(new) => {
                let cookies = self.set_session(&new, request, false).await?;
                Ok((bearer(&new.access_token)?, cookies))
            }
            Outcome::Expired => Err(self.expired(revocations, session, request).await),
            Outcome::StoreFailed => Err(ProxyError::StoreUnavailable(
                crate::store::StoreError::Failed("the refresh lock could not be taken".into()),
            )),
            Outcome::Failed(504) => Err(ProxyError::IdpTimeout),
            Outcome::Failed(503) => Err(ProxyError::IdpUnavailable),
            Outcome::Failed(_) => Err(ProxyError::IdpUnreachable(
                "the token refresh failed".into(),
            )),
        }
    }

    /// The session is over (the IdP no longer knows its grant): refused from now on, here and,
    /// with `[store]`, on every instance (best effort: the others learn it from the IdP on
    /// their own next refresh anyway).
    async fn expired(
        &self,
        revocations: &Revocations,
        session: &Session,
        request: &HeaderMap,
    ) -> ProxyError {
        let revoke = Revoke::Session {
            id: &session.id,
            until: session.expires_at,
        };
        if let Some(shared) = &self.shared {
            let _ = shared.settle("session end", shared.revoke(revoke).await);
        }
        revocations.apply(revoke);
        ProxyError::WithCookies {
            error: Box::new(ProxyError::SessionExpired),
            cookies: Self::clear_session(&self.settings, request),
        }
    }

    /// What a refresh task needs to call the IdP on its own (it outlives the request).
    fn call_parts(&self, client: &Arc<UpstreamClient>) -> CallParts {
        CallParts {
            client: client.clone(),
            credentials: self.basic_credentials(),
            // Longer than a request waits: a slow IdP may already have consumed the refresh
            // token, and its late answer is the only copy of the new one.
            timeout: (self.timeout * 4).max(Duration::from_secs(60)),
        }
    }

    /// Forgets used login states, refresh outcomes past their grace, and old revocations.
    pub(crate) fn sweep(&self, revocations: &Revocations, opened: &OpenedCache) {
        let now = now();
        opened.sweep(now);
        self.memory
            .used_states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
        self.refresher.sweep();
        revocations.sweep(now);
    }
}

/// A shareable way to call the IdP from a refresh task.
struct CallParts {
    client: Arc<UpstreamClient>,
    credentials: HeaderValue,
    timeout: Duration,
}

/// A discovery failure's reason as `/readyz` may show it: a fixed text, never a URL, an
/// address or an answer's content.
fn public_reason(err: &ProxyError) -> &'static str {
    match err {
        ProxyError::IdpInvalid(what) => what,
        ProxyError::IdpUnreachable(_) => "identity provider unreachable",
        ProxyError::IdpTimeout => "identity provider timed out",
        ProxyError::IdpUnavailable => "identity provider unavailable",
        _ => "identity provider discovery failed",
    }
}

/// The refresh itself (RFC 6749 §6), in its own task.
async fn refresh_task(
    parts: CallParts,
    token_endpoint: Uri,
    old: Session,
    refresh_token: String,
) -> Outcome {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", &refresh_token)
        .finish();
    let fields = [
        (
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        ),
        (
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        ),
        (AUTHORIZATION, parts.credentials),
    ];
    let call = async {
        let res = parts
            .client
            .request(
                &Method::POST,
                &token_endpoint,
                fields.iter().map(|(n, v)| (n, v)),
                true,
                false,
                Full::new(Bytes::from(form)),
            )
            .await
            .map_err(|e| IdpFailure::Unreachable(Box::new(e)))?;
        let status = res.status();
        let bytes = Limited::new(res.into_body(), MAX_IDP_ANSWER)
            .collect()
            .await
            .map_err(|_| IdpFailure::TooLarge)?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(IdpFailure::Status(status, bytes))
        }
    };
    let answer = match tokio::time::timeout(parts.timeout, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(failure)) => {
            return match failure.oauth_error().as_deref() {
                Some("invalid_grant") => Outcome::Expired,
                _ => {
                    tracing::warn!(status = failure.status(), "token refresh failed at the IdP");
                    Outcome::Failed(failure.status())
                }
            };
        }
        Err(_) => {
            tracing::warn!("token refresh timed out");
            return Outcome::Failed(504);
        }
    };
    let Ok(tokens) = serde_json::from_slice::<TokenAnswer>(&answer) else {
        tracing::warn!("the IdP's refresh answer is not a token response");
        return Outcome::Failed(502);
    };
    let now = now();
    let mut new = old.clone();
    new.access_token = tokens.access_token.clone();
    // Whatever `expires_in` the IdP sends, no overflow.
    new.access_expires_at = now.saturating_add(tokens.expires_in.unwrap_or(300));
    if let Some(rotated) = &tokens.refresh_token {
        new.refresh_token = Some(rotated.clone());
    }
    Outcome::Refreshed(Arc::new(new))
}

/// The claims of an ID token cookiegate validated at login (it is kept in the authenticated
/// session cookie), without the ones only the login needed.
fn id_token_claims(id_token: &str) -> serde_json::Value {
    let payload = id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&p).ok())
        .unwrap_or_default();
    let claims: serde_json::Map<String, serde_json::Value> = payload
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "nonce" | "at_hash" | "c_hash" | "s_hash"))
        .collect();
    serde_json::Value::Object(claims)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A `302 Found` to `location` with these cookies.
fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Result<Response<Bytes>, ProxyError> {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::FOUND;
    let location = HeaderValue::from_str(location)
        .map_err(|_| ProxyError::IdpInvalid("a redirect target that cannot be a header value"))?;
    let headers = res.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    Ok(res)
}

/// A JSON answer with these cookies, never cached.
fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    cookies: Vec<HeaderValue>,
) -> Result<Response<Bytes>, ProxyError> {
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    Ok(res)
}

/// What `SessionRef` the revocation list needs of a session.
pub(crate) fn session_ref(session: &Session) -> SessionRef<'_> {
    SessionRef {
        id: &session.id,
        sid: session.sid.as_deref(),
        sub: &session.sub,
        issued_at: session.issued_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_redirected_to() {
        for ok in ["/", "/p", "/a/b?x=1#f", "/%2F%2Fevil"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in [
            "",
            "p",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "\\\\evil",
            "/a\\\\b",
            "/a b",
            "/\t/evil",
            "/é",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_tokens_are_fresh_43_character_base64url() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn each_login_has_its_own_state_cookie() {
        let name = CookieName::parse("__Host-cookiegate").unwrap();
        let a = login_cookie_name(&name, "abcdefghijklmnopqrstuvwxyz").unwrap();
        let b = login_cookie_name(&name, "zyxwvutsrqponmlkjihgfedcba").unwrap();
        assert_eq!(a.as_str(), "__Host-cookiegate-login.abcdefghijklmnop");
        assert_ne!(a, b);
    }

    #[test]
    fn claims_leave_out_what_only_the_login_needed() {
        let payload = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","email":"a@example.com","nonce":"n","at_hash":"h"}"#);
        let claims = id_token_claims(&format!("e30.{payload}.sig"));
        assert_eq!(
            claims,
            serde_json::json!({"sub": "alice", "email": "a@example.com"})
        );
        assert_eq!(id_token_claims("garbage"), serde_json::json!({}));
    }

    #[test]
    fn constant_time_comparison_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
