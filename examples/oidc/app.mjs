#!/usr/bin/env node
// The example's app: a static page at `/` (an SPA that never sees a token) and an API under
// `/api/` that trusts nothing but a valid access token: it verifies the bearer cookiegate adds
// against the IdP's published keys (JWKS), its issuer and its expiry, as any resource server
// should. cookiegate sits in front of both:
//
//   browser -> cookiegate -> /       (auth = "none": this page)
//                         -> /api/*  (auth = "session": bearer = the session's access token)
//
//   ISSUER=http://127.0.0.1:PORT APP_PORT=8000 node examples/oidc/app.mjs
//
// Node only, no framework; `jose` (oidc-provider's own JWT library) checks the tokens.
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
// jose comes with the test IdP's packages (tests/idp), which the example runs too.
const require = createRequire(`${here}../../tests/idp/package.json`);
const { createRemoteJWKSet, jwtVerify } = await import(require.resolve('jose'));

const issuer = process.env.ISSUER;
if (!issuer) {
  console.error('app: ISSUER is required');
  process.exit(2);
}
const port = Number(process.env.APP_PORT ?? 8000);
const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));
const page = await readFile(`${here}index.html`);

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
};

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/' || path === '/index.html') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
    return;
  }
  if (path === '/api/me') {
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) return json(res, 401, { error: 'no bearer' });
    try {
      const { payload } = await jwtVerify(auth.slice(7), jwks, { issuer });
      // What the API knows: the user and when this token expires (it changes after a refresh).
      return json(res, 200, {
        sub: payload.sub,
        token_expires_at: payload.exp,
        token_id: String(payload.jti ?? '').slice(0, 8),
        cookie_seen: Boolean(req.headers.cookie),
      });
    } catch (err) {
      return json(res, 401, { error: `invalid token: ${err.code ?? err.message}` });
    }
  }
  json(res, 404, { error: 'not found' });
});
server.listen(port, '127.0.0.1', () => console.error(`app: listening on 127.0.0.1:${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
