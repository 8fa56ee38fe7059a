#!/usr/bin/env node
// A real OpenID Provider for cookiegate's token-handler tests: oidc-provider 9 on 127.0.0.1.
//
//   node tests/idp/server.mjs            (configuration from the environment; see README.md)
//
// Prints ONE line of JSON on stdout once listening, {"issuer":"http://127.0.0.1:PORT","port":PORT},
// and logs only to stderr after that. Test-only endpoints live under /test/ (see README.md); they
// are answered by a small router in front of the provider and never reach it.
//
// Test use only: any login name and any password sign in (devInteractions), keys are made fresh
// at every start, and everything is kept in memory.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info (stdout): stdout carries only the JSON line.
console.log = console.error;
console.info = console.error;

// The signing key is made fresh at every start, in the thread pool while oidc-provider loads.
const keyPair = new Promise((resolve, reject) => {
  crypto.generateKeyPair('rsa', { modulusLength: 2048 }, (err, _publicKey, key) => (err ? reject(err) : resolve(key)));
});
const { default: Provider } = await import('oidc-provider');

const env = process.env;
const list = (value) => (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const seconds = (name, fallback) => {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`idp: ${name} must be a positive whole number of seconds, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
};

// `--port N` on the command line wins over IDP_PORT; 0 (the default) picks a free port.
const argPort = (() => {
  const i = process.argv.indexOf('--port');
  return i > 0 ? process.argv[i + 1] : undefined;
})();
const requestedPort = Number(argPort ?? env.IDP_PORT ?? 0);
const host = '127.0.0.1';

const CLIENT_ID = 'cookiegate';
const clientSecret = env.IDP_CLIENT_SECRET || 'test-secret';
const redirectUris = list(env.IDP_REDIRECT_URIS);
const postLogoutUris = list(env.IDP_POST_LOGOUT_URIS);
const backchannelUri = env.IDP_BACKCHANNEL_URI || undefined;
const accessTtl = seconds('IDP_ACCESS_TTL', 5);
const idTokenTtl = seconds('IDP_ID_TTL', 3600);
const refreshTtl = seconds('IDP_REFRESH_TTL', 24 * 3600);
// The resource (audience) of the JWT access tokens when the authorization request names none.
const defaultResource = env.IDP_RESOURCE || 'urn:cookiegate:test-api';
const resourceScopes = 'api:read api:write';


const log = (...args) => console.error('idp:', ...args);

// ---------------------------------------------------------------------------------------------
// Storage: a plain in-memory adapter (oidc-provider's own keeps at most 1000 entries in an LRU and
// would evict grants in a long test run). It can be listed, which the /test/ endpoints need.

const stores = new Map(); // model name -> Map(id -> { payload, expiresAt })
const storeOf = (model) => {
  let store = stores.get(model);
  if (!store) {
    store = new Map();
    stores.set(model, store);
  }
  return store;
};
const nowSeconds = () => Math.floor(Date.now() / 1000);
const live = (entry) => entry && (entry.expiresAt === undefined || entry.expiresAt > Date.now());
const copy = (payload) => structuredClone(payload);

class TestAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeOf(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.store.set(id, { payload: copy(payload), expiresAt });
  }

  async find(id) {
    const entry = this.store.get(id);
    if (!live(entry)) {
      this.store.delete(id);
      return undefined;
    }
    return copy(entry.payload);
  }

  async findBy(field, value) {
    for (const [id, entry] of this.store) {
      if (live(entry) && entry.payload[field] === value) return this.find(id);
    }
    return undefined;
  }

  findByUid(uid) { return this.findBy('uid', uid); }

  findByUserCode(userCode) { return this.findBy('userCode', userCode); }

  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = nowSeconds();
  }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of this.store) {
      if (entry.payload.grantId === grantId) this.store.delete(id);
    }
  }
}

const liveEntries = (model) => [...storeOf(model).entries()].filter(([, entry]) => live(entry));

// ---------------------------------------------------------------------------------------------
// Counters, in total and per account (sub), so tests sharing one IdP can each log in as their
// own user and read only their own numbers.

const zero = () => ({
  code_grants: 0,
  refresh_grants: 0,
  refresh_errors: 0,
  token_errors: 0,
  revocations: 0,
  introspections: 0,
  grants_revoked: 0,
  backchannel_sent: 0,
  backchannel_errors: 0,
});
const totals = zero();
const bySub = new Map();
const count = (sub, key) => {
  totals[key] += 1;
  if (sub === undefined || sub === null) return;
  if (!bySub.has(sub)) bySub.set(sub, zero());
  bySub.get(sub)[key] += 1;
};
const grantOwner = new Map(); // grantId -> accountId (kept after the grant is gone, for counting)

// ---------------------------------------------------------------------------------------------
// Keys and accounts.

const privateKey = await keyPair;
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `rs256-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };

async function findAccount(_ctx, id) {
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: `${id[0]?.toUpperCase() ?? ''}${id.slice(1)} Example`,
        preferred_username: id,
        email: `${id}@example.com`,
        email_verified: true,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Listen first (port 0 gives the port, which is part of the issuer), then make the provider.

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, host, resolve);
});
const { port } = server.address();
const issuer = `http://${host}:${port}`;

// The client is kept in the adapter (not among static clients), so POST /test/client can change
// its metadata at run time: a test can start the IdP before it knows its own redirect URI's port.
let clientMetadata = {
  client_id: CLIENT_ID,
  client_secret: clientSecret,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutUris,
  backchannel_logout_session_required: true, // logout tokens carry sid (ID tokens too)
  ...(backchannelUri ? { backchannel_logout_uri: backchannelUri } : {}),
};

const provider = new Provider(issuer, {
  adapter: TestAdapter,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  findAccount,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // Profile and email claims in the ID token as well, not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 accepts
  // Refresh tokens for every client allowed the grant (the default also wants offline_access).
  issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
  // Each refresh consumes the refresh token and issues a new one; redeeming a consumed one
  // revokes the whole grant.
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    IdToken: idTokenTtl,
    RefreshToken: refreshTtl,
    Grant: refreshTtl,
    Session: refreshTtl,
    Interaction: 600,
  },
  features: {
    devInteractions: { enabled: true }, // any login name, any password
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No `resource` parameter: the access token is for the default resource all the same. With
      // several resources granted and none named at the token endpoint: the first.
      defaultResource: async (_ctx, _client, oneOf) => (Array.isArray(oneOf) ? oneOf[0] : defaultResource),
      // At the token endpoint (no `resource` there either): the resource granted at authorization.
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => ({
        audience: resourceIndicator,
        scope: resourceScopes,
        accessTokenFormat: 'jwt',
        accessTokenTTL: accessTtl,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  responseTypes: ['code'],
  clientBasedCORS: () => false,
  // oidc-provider 9 sends the back-channel logout request through `fetch` with a dispatcher that
  // refuses special-use addresses (loopback included). The tests' receivers are on 127.0.0.1.
  fetch: (url, options) => {
    const { dispatcher: _ssrfGuard, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

async function setClient(metadata) {
  await provider.Client.validate(metadata); // throws InvalidClientMetadata with a description
  clientMetadata = metadata;
  await provider.Client.adapter.upsert(CLIENT_ID, metadata);
}
const publicMetadata = () => {
  const { client_secret: _secret, ...rest } = clientMetadata;
  return rest;
};
if (redirectUris.length) {
  try {
    await setClient(clientMetadata);
  } catch (err) {
    console.error(`idp: client metadata from the environment is invalid: ${err.error_description ?? err.message}`);
    process.exit(2);
  }
} else {
  log('no IDP_REDIRECT_URIS: client "cookiegate" exists once POST /test/client gives it redirect_uris');
}

// ---------------------------------------------------------------------------------------------
// Counting through the provider's events (and its Koa middleware where it has no event).

// Refresh tokens are opaque (the value is the id): remember their owner, so a refresh with a token
// that is gone (revoked, forgotten) still counts for its account.
const refreshTokenOwner = new Map(); // jti -> accountId
provider.on('refresh_token.saved', (token) => refreshTokenOwner.set(token.jti, token.accountId));

const subOfCtx = (ctx) => ctx.oidc?.entities?.RefreshToken?.accountId
  ?? refreshTokenOwner.get(ctx.oidc?.params?.refresh_token)
  ?? ctx.oidc?.entities?.AuthorizationCode?.accountId
  ?? ctx.oidc?.entities?.Grant?.accountId
  ?? ctx.oidc?.account?.accountId;

provider.on('grant.success', (ctx) => {
  const sub = subOfCtx(ctx);
  const grant = ctx.oidc.entities.Grant;
  if (grant?.jti && sub) grantOwner.set(grant.jti, sub);
  switch (ctx.oidc.params?.grant_type) {
    case 'authorization_code': count(sub, 'code_grants'); break;
    case 'refresh_token': count(sub, 'refresh_grants'); break;
    default: break;
  }
});
provider.on('grant.error', (ctx, err) => {
  const sub = subOfCtx(ctx);
  count(sub, 'token_errors');
  if (ctx.oidc?.params?.grant_type === 'refresh_token') count(sub, 'refresh_errors');
  log(`token endpoint: ${err.error ?? err.name}: ${err.error_description ?? err.message}`);
});
provider.on('grant.revoked', (_ctx, grantId) => {
  count(grantOwner.get(grantId), 'grants_revoked');
});
provider.on('backchannel.success', (_ctx, _client, accountId) => {
  count(accountId, 'backchannel_sent');
});
provider.on('backchannel.error', (_ctx, err, c, accountId) => {
  count(accountId, 'backchannel_errors');
  log(`back-channel logout to ${c.backchannelLogoutUri} failed: ${err.message}`);
});
// JWT access tokens are not stored, so the introspection endpoint refuses them. Remember which
// grant each one belongs to, for /test/introspect.
const accessTokenGrant = new Map(); // jti -> { grantId, exp }
provider.on('access_token.issued', (token) => {
  if (token.grantId) accessTokenGrant.set(token.jti, { grantId: token.grantId, exp: token.exp });
  const now = nowSeconds();
  if (accessTokenGrant.size > 10000) {
    for (const [jti, { exp }] of accessTokenGrant) if (exp < now) accessTokenGrant.delete(jti);
  }
});
provider.on('server_error', (_ctx, err) => log('server error:', err));
for (const event of ['authorization.error', 'introspection.error', 'revocation.error', 'end_session.error']) {
  provider.on(event, (_ctx, err) => log(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}`));
}

// Revocation and introspection have no success event: count answered requests here.
provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc?.route;
  if (ctx.status !== 200) return;
  if (route === 'revocation') {
    const token = ctx.oidc.entities.RefreshToken ?? ctx.oidc.entities.AccessToken;
    count(token?.accountId, 'revocations');
  } else if (route === 'introspection') {
    const token = ctx.oidc.entities.RefreshToken ?? ctx.oidc.entities.AccessToken;
    count(token?.accountId, 'introspections');
  }
});

// ---------------------------------------------------------------------------------------------
// Test-only endpoints, in front of the provider.

function sessionsMatching({ sub, sid }) {
  return liveEntries('Session')
    .map(([id, { payload }]) => ({ id, payload }))
    .filter(({ payload }) => payload.accountId
      && (sub === undefined || payload.accountId === sub)
      && (sid === undefined || Object.values(payload.authorizations ?? {}).some((a) => a.sid === sid)));
}

async function revokeGrant(grantId) {
  if (!grantId) return false;
  const had = Boolean(await provider.Grant.adapter.find(grantId));
  await Promise.all([
    provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode,
  ].map((model) => model.adapter.revokeByGrantId(grantId)));
  await provider.Grant.adapter.destroy(grantId);
  if (had) count(grantOwner.get(grantId), 'grants_revoked');
  return had;
}

// Forgets grants (all, or one account's) and every token of them, without any event: as if the
// IdP had lost them. A later refresh gets invalid_grant.
async function forgetGrants(sub) {
  let forgotten = 0;
  for (const [grantId, { payload }] of liveEntries('Grant')) {
    if (sub !== undefined && payload.accountId !== sub) continue;
    await Promise.all([
      provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode,
    ].map((model) => model.adapter.revokeByGrantId(grantId)));
    await provider.Grant.adapter.destroy(grantId);
    forgotten += 1;
  }
  return forgotten;
}

// Back-channel logout of the sessions of `sub` (or the one holding `sid`), as the end-session
// endpoint does it: a logout token to each client with a backchannel_logout_uri, then the
// session ends and its grants are revoked (unless keep_grant=1).
async function backchannel({ sub, sid, keepGrant }) {
  const sessions = sessionsMatching({ sub, sid });
  const out = { sessions: sessions.length, sent: 0, errors: [], grants_revoked: 0, sids: [] };
  for (const { id, payload } of sessions) {
    for (const [clientId, authorization] of Object.entries(payload.authorizations ?? {})) {
      if (sid !== undefined && authorization.sid !== sid) continue;
      const c = await provider.Client.find(clientId);
      if (c?.backchannelLogoutUri) {
        out.sids.push(authorization.sid);
        try {
          await c.backchannelLogout(payload.accountId, authorization.sid);
          count(payload.accountId, 'backchannel_sent');
          out.sent += 1;
        } catch (err) {
          count(payload.accountId, 'backchannel_errors');
          log(`back-channel logout to ${c.backchannelLogoutUri} failed: ${err.message}`);
          out.errors.push(err.message);
        }
      }
      if (!keepGrant && await revokeGrant(authorization.grantId)) out.grants_revoked += 1;
    }
    await provider.Session.adapter.destroy(id);
  }
  return out;
}

// RFC 7662-shaped answer for one of this IdP's JWT access tokens: active when the signature is
// ours, it has not expired, and its grant still exists (not revoked, not forgotten).
async function introspectJwt(token) {
  const inactive = (reason) => ({ active: false, reason });
  const parts = String(token ?? '').split('.');
  if (parts.length !== 3) return inactive('not a JWT');
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return inactive('not a JWT');
  }
  if (header.alg !== 'RS256' || header.kid !== signingKey.kid) return inactive('not signed by this IdP');
  const valid = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), privateKey, Buffer.from(parts[2], 'base64url'));
  if (!valid) return inactive('bad signature');
  if (claims.iss !== issuer) return inactive('wrong iss');
  const link = accessTokenGrant.get(claims.jti);
  if (!link || !(await provider.Grant.adapter.find(link.grantId))) return inactive('grant revoked');
  if (!(claims.exp > nowSeconds())) return inactive('expired');
  return { active: true, token_type: 'Bearer', ...claims };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 65536) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function testRoute(req, res, url) {
  const q = url.searchParams;
  const sub = q.get('sub') ?? undefined;
  const sid = q.get('sid') ?? undefined;
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /test/stats':
      return send(res, 200, sub === undefined ? totals : (bySub.get(sub) ?? zero()));
    case 'GET /test/sessions':
      return send(res, 200, sessionsMatching({ sub, sid }).map(({ payload }) => ({
        sub: payload.accountId,
        sids: Object.fromEntries(Object.entries(payload.authorizations ?? {}).map(([k, v]) => [k, v.sid])),
      })));
    case 'POST /test/introspect': {
      const form = new URLSearchParams(await readBody(req));
      const out = await introspectJwt(form.get('token') ?? q.get('token'));
      count(out.sub, 'introspections');
      return send(res, 200, out);
    }
    case 'GET /test/client':
      return send(res, 200, publicMetadata());
    case 'POST /test/client': {
      // JSON object merged into the client's metadata; a null value removes the field.
      let patch;
      try {
        patch = JSON.parse(await readBody(req));
      } catch {
        return send(res, 400, { error: 'body must be a JSON object' });
      }
      if (typeof patch !== 'object' || patch === null || Array.isArray(patch) || 'client_id' in patch) {
        return send(res, 400, { error: 'body must be a JSON object without client_id' });
      }
      const next = { ...clientMetadata, ...patch };
      for (const [k, v] of Object.entries(next)) if (v === null) delete next[k];
      try {
        await setClient(next);
      } catch (err) {
        return send(res, 400, { error: 'invalid_client_metadata', error_description: err.error_description ?? err.message });
      }
      log(`client metadata changed: ${Object.keys(patch).join(', ')}`);
      return send(res, 200, publicMetadata());
    }
    case 'POST /test/forget-grants':
      return send(res, 200, { forgotten: await forgetGrants(sub) });
    case 'POST /test/backchannel': {
      if (sub === undefined && sid === undefined) return send(res, 400, { error: 'give sub= or sid=' });
      const out = await backchannel({ sub, sid, keepGrant: q.get('keep_grant') === '1' });
      let status = 200;
      if (out.sessions === 0) status = 404;
      else if (out.errors.length) status = 502;
      return send(res, status, out);
    }
    default:
      return send(res, 404, { error: `no test endpoint ${route}` });
  }
}

const providerCallback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/test' || url.pathname.startsWith('/test/')) {
    testRoute(req, res, url).catch((err) => {
      log('test endpoint failed:', err);
      if (!res.headersSent) send(res, 500, { error: String(err.message ?? err) });
    });
    return;
  }
  providerCallback(req, res);
});

// ---------------------------------------------------------------------------------------------

const stop = (signal) => {
  log(`${signal}: stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
log(`listening on ${issuer} (client ${CLIENT_ID}, access token TTL ${accessTtl}s, resource ${defaultResource}, back-channel ${clientMetadata.backchannel_logout_uri ?? 'off'})`);
