//! A mutation IdP: what a correct identity provider never sends, served over HTTP to the real
//! token handler (discovery, JWKS and token endpoint of a scripted upstream, ID and logout
//! tokens signed here with ES256 keys made by `ring`). Each case must be refused with no
//! session set; the one valid case proves the harness itself works. Token-level details (every
//! claim, every algorithm) are `src/auth/jwt.rs`'s mutation table; this checks the wiring:
//! the callback and the back-channel endpoint use that validation, the JWKS is fetched again
//! for an unknown key at most every 10 s, and a rotated key is picked up.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookiegate::config::Env;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use tokio::net::TcpListener;

use crate::support::*;

/// An ES256 key and its public JWK.
struct Key {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            pair,
            kid: kid.to_string(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// What the mutation IdP serves: its keys (the JWKS), the ID token the token endpoint
/// answers with, and how often the JWKS was fetched.
struct Script {
    issuer: String,
    jwks: Vec<serde_json::Value>,
    id_token: String,
    jwks_fetches: usize,
}

struct Harness {
    idp: TestUpstream,
    gateway: Gateway,
    gw: String,
    script: Arc<Mutex<Script>>,
    key: Key,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn harness() -> Harness {
    let key = Key::new("k1");
    let script = Arc::new(Mutex::new(Script {
        issuer: String::new(),
        jwks: vec![key.jwk()],
        id_token: String::new(),
        jwks_fetches: 0,
    }));
    let served = script.clone();
    let idp = TestUpstream::builder()
        .respond(move |seen: &Seen| {
            let mut script = served.lock().unwrap();
            let issuer = script.issuer.clone();
            let path = seen
                .target
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let body = match path.as_str() {
                "/.well-known/openid-configuration" => serde_json::json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/authorize"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                    "id_token_signing_alg_values_supported": ["ES256"],
                    "code_challenge_methods_supported": ["S256"],
                }),
                "/jwks" => {
                    script.jwks_fetches += 1;
                    serde_json::json!({ "keys": script.jwks })
                }
                "/token" => serde_json::json!({
                    "access_token": "at-opaque",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "refresh_token": "rt-opaque",
                    "id_token": script.id_token,
                }),
                _ => return json_response(http::StatusCode::NOT_FOUND, "{}"),
            };
            http::Response::builder()
                .header("content-type", "application/json")
                .body(full(body.to_string()))
                .unwrap()
        })
        .start()
        .await;
    script.lock().unwrap().issuer = idp.url();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("http://{}", listener.local_addr().unwrap());
    let toml = format!(
        r#"
[session]
cookie = "cg"
[oidc]
issuer = "{issuer}"
client_id = "cookiegate"
redirect_uri = "{gw}/auth/callback"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:9"
auth = "session"
"#,
        issuer = idp.url()
    );
    let env = Env::default()
        .with_var(
            "COOKIEGATE_SESSION_KEYS",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .with_var("COOKIEGATE_CLIENT_SECRET", "s");
    let config = cookiegate::Config::from_toml_str_with(&toml, &env).unwrap();
    let gateway = Gateway::start_on(listener, config);
    Harness {
        idp,
        gateway,
        gw,
        script,
        key,
    }
}

impl Harness {
    fn claims(&self, nonce: &str) -> serde_json::Value {
        let now = now();
        serde_json::json!({
            "iss": self.idp.url(), "aud": "cookiegate", "sub": "mallory",
            "iat": now, "exp": now + 300, "nonce": nonce,
        })
    }

    fn header(&self) -> serde_json::Value {
        serde_json::json!({ "alg": "ES256", "kid": self.key.kid, "typ": "JWT" })
    }

    /// Starts a login, lets `token` make the ID token from the login's nonce, and returns the
    /// callback's answer.
    async fn callback_with(&self, token: impl Fn(&Self, &str) -> String) -> Answer {
        let browser = Browser::new();
        let start = browser.get(&format!("{}/auth/login", self.gw)).await;
        assert_eq!(start.status, 302, "{:?}", start.body);
        let authorize = location(&start, &self.gw);
        let query: std::collections::HashMap<String, String> =
            form_urlencoded::parse(authorize.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        self.script.lock().unwrap().id_token = token(self, &query["nonce"]);
        browser
            .get(&format!(
                "{}/auth/callback?code=c&state={}",
                self.gw, query["state"]
            ))
            .await
    }

    fn jwks_fetches(&self) -> usize {
        self.script.lock().unwrap().jwks_fetches
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.idp.stop().await;
    }
}

fn refused(answer: &Answer, case: &str) {
    assert_eq!(answer.status, 400, "{case}: {:?}", answer.body);
    assert_eq!(answer.json()["error"], "login failed", "{case}");
    assert!(
        answer
            .headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("cg=")),
        "{case}: no session cookie"
    );
}

#[tokio::test]
async fn id_tokens_a_correct_idp_never_sends_are_refused_at_the_callback() {
    let h = harness().await;
    // The harness works: a valid token logs in.
    let valid = h
        .callback_with(|h, nonce| h.key.sign(&h.header(), &h.claims(nonce)))
        .await;
    assert_eq!(valid.status, 302, "{:?}", valid.body);
    type Mutation = fn(&Harness, &str) -> String;
    let cases: Vec<(&str, Mutation)> = vec![
        ("alg none", |h, nonce| {
            let claims = URL_SAFE_NO_PAD.encode(h.claims(nonce).to_string());
            format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#))
        }),
        ("HS256 keyed with the public key", |h, nonce| {
            let header = serde_json::json!({ "alg": "HS256", "kid": h.key.kid });
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(h.claims(nonce).to_string())
            );
            let key =
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, h.key.pair.public_key().as_ref());
            let tag = ring::hmac::sign(&key, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        }),
        ("bad signature", |h, nonce| {
            let token = h.key.sign(&h.header(), &h.claims(nonce));
            let (head, sig) = token.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig[10] ^= 1;
            format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig))
        }),
        ("wrong iss", |h, nonce| {
            let mut claims = h.claims(nonce);
            claims["iss"] = "https://evil.example".into();
            h.key.sign(&h.header(), &claims)
        }),
        ("wrong aud", |h, nonce| {
            let mut claims = h.claims(nonce);
            claims["aud"] = "someone-else".into();
            h.key.sign(&h.header(), &claims)
        }),
        ("two audiences, no azp", |h, nonce| {
            let mut claims = h.claims(nonce);
            claims["aud"] = serde_json::json!(["cookiegate", "other"]);
            h.key.sign(&h.header(), &claims)
        }),
        ("wrong nonce", |h, _| {
            h.key.sign(&h.header(), &h.claims("another-login"))
        }),
        ("expired", |h, nonce| {
            let mut claims = h.claims(nonce);
            claims["exp"] = (now() - 3600).into();
            claims["iat"] = (now() - 7200).into();
            h.key.sign(&h.header(), &claims)
        }),
        ("signed by a key the IdP does not publish", |h, nonce| {
            Key::new(&h.key.kid).sign(&h.header(), &h.claims(nonce))
        }),
        ("not a JWT", |_, _| "garbage".to_string()),
    ];
    for (case, mutation) in cases {
        let answer = h.callback_with(mutation).await;
        refused(&answer, case);
    }
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_jwks_again_at_most_every_ten_seconds() {
    let h = harness().await;
    let unknown = |h: &Harness, nonce: &str| {
        let header = serde_json::json!({ "alg": "ES256", "kid": "nobody-knows" });
        Key::new("nobody-knows").sign(&header, &h.claims(nonce))
    };
    refused(&h.callback_with(unknown).await, "unknown kid");
    // Discovery fetched it once, the unknown kid once more.
    assert_eq!(h.jwks_fetches(), 2);
    // Right after: refused without fetching again (a forged kid cannot make us hammer the IdP).
    refused(&h.callback_with(unknown).await, "unknown kid again");
    assert_eq!(h.jwks_fetches(), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_key_the_idp_rotated_in_is_fetched_and_used() {
    let h = harness().await;
    // The gateway discovers the IdP (and its first key) with a valid login.
    let valid = h
        .callback_with(|h, nonce| h.key.sign(&h.header(), &h.claims(nonce)))
        .await;
    assert_eq!(valid.status, 302);
    // The IdP rotates: a new key, published beside the old one.
    let rotated = Arc::new(Key::new("k2"));
    h.script.lock().unwrap().jwks.push(rotated.jwk());
    let signer = rotated.clone();
    let answer = h
        .callback_with(move |h, nonce| {
            signer.sign(
                &serde_json::json!({ "alg": "ES256", "kid": "k2" }),
                &h.claims(nonce),
            )
        })
        .await;
    assert_eq!(answer.status, 302, "{:?}", answer.body);
    assert_eq!(h.jwks_fetches(), 2);
    h.stop().await;
}

#[tokio::test]
async fn logout_tokens_a_correct_idp_never_sends_are_refused() {
    let h = harness().await;
    // Discovery first (a valid login).
    let valid = h
        .callback_with(|h, nonce| h.key.sign(&h.header(), &h.claims(nonce)))
        .await;
    assert_eq!(valid.status, 302);
    let event = serde_json::json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
    let base = |jti: &str| {
        serde_json::json!({
            "iss": h.idp.url(), "aud": "cookiegate", "iat": now(), "jti": jti,
            "sub": "mallory", "sid": "s-1", "events": event,
        })
    };
    let header = serde_json::json!({ "alg": "ES256", "kid": "k1", "typ": "logout+jwt" });
    let post = |token: String| {
        let url = format!("{}/auth/backchannel", h.gw);
        async move {
            let req = request("POST", &url, None)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full(format!("logout_token={token}")))
                .unwrap();
            send(&client(), req).await
        }
    };
    let mut with_nonce = base("j1");
    with_nonce["nonce"] = "n".into();
    let mut wrong_event = base("j2");
    wrong_event["events"] = serde_json::json!({ "http://example.com/other": {} });
    let mut no_subject = base("j3");
    no_subject.as_object_mut().unwrap().remove("sub");
    no_subject.as_object_mut().unwrap().remove("sid");
    for (case, claims) in [
        ("nonce", with_nonce),
        ("wrong event", wrong_event),
        ("no sid or sub", no_subject),
    ] {
        let answer = post(h.key.sign(&header, &claims)).await;
        assert_eq!(answer.status, 400, "{case}: {:?}", answer.body);
        assert_eq!(answer.json()["error"], "invalid logout token", "{case}");
    }
    // A valid one is taken once; replayed (same jti), it is refused.
    let token = h.key.sign(&header, &base("j-once"));
    assert_eq!(post(token.clone()).await.status, 200);
    post(token).await.assert_error(400, "invalid logout token");
    h.stop().await;
}
