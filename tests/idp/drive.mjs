#!/usr/bin/env node
// Logs in at the test IdP over plain HTTP, as a browser would, and prints the final redirect.
//
//   node tests/idp/drive.mjs --issuer http://127.0.0.1:PORT --redirect-uri URI [--login alice]
//        [--scope "openid profile email offline_access"] [--param name=value ...] [--exchange] [-v]
//   node tests/idp/drive.mjs --authorize-url 'http://127.0.0.1:PORT/auth?...' [--login alice] [-v]
//
// First form: makes its own authorization request (fresh state, nonce and PKCE S256 pair) and,
// with --exchange, also redeems the code at the token endpoint (client_secret_basic, secret from
// IDP_CLIENT_SECRET or test-secret). Second form: drives an authorization URL made by someone else
// (cookiegate's /auth/login redirect, say) and only prints where it ends.
//
// stdout: line 1 is the final redirect URL (redirect_uri?code=...&state=...&iss=...); with
// --exchange, line 2 is JSON {"code_verifier","nonce","state","redirect","tokens":{...}}.
// -v shows every step on stderr. The steps are the ones README.md documents for the Rust tests.

import * as crypto from 'node:crypto';

const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const flag = (name) => argv.includes(name);
const verbose = flag('-v');
const say = (...args) => { if (verbose) console.error(...args); };
const b64url = (buf) => Buffer.from(buf).toString('base64url');

// A cookie jar by name: every IdP cookie has its own name, so path scoping can be ignored for
// this one host. A Set-Cookie with an empty value or a past expiry removes the cookie.
class Jar {
  constructor() { this.cookies = new Map(); }

  take(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.split('=').map((s) => s?.trim());
        return (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now())
          || (k.toLowerCase() === 'max-age' && Number(v) <= 0);
      });
      if (value === '' || expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header() { return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '); }
}

async function step(jar, method, url, form) {
  const headers = { cookie: jar.header() };
  let body;
  if (form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  }
  say(`> ${method} ${url}${body ? `  [${body}]` : ''}  cookies: ${[...jar.cookies.keys()].join(', ') || '-'}`);
  const response = await fetch(url, { method, headers, body, redirect: 'manual' });
  jar.take(response);
  const location = response.headers.get('location');
  say(`< ${response.status}${location ? ` -> ${location}` : ''}  set: ${response.headers.getSetCookie().map((c) => c.split('=')[0]).join(', ') || '-'}`);
  if (response.status < 300 || response.status > 399 || !location) {
    throw new Error(`${method} ${url}: expected a redirect, got ${response.status}: ${(await response.text()).slice(0, 500)}`);
  }
  await response.arrayBuffer();
  return new URL(location, url).href;
}

// Follows an authorization URL to the client's redirect_uri: interaction pages get the dev login
// form (prompt=login) or the consent form (prompt=consent) posted to them.
export async function login(authorizeUrl, { user = 'alice', password = 'x', maxSteps = 10 } = {}) {
  const jar = new Jar();
  const issuerOrigin = new URL(authorizeUrl).origin;
  let url = await step(jar, 'GET', authorizeUrl);
  for (let i = 0; i < maxSteps; i += 1) {
    const u = new URL(url);
    if (u.origin !== issuerOrigin) return url; // left the IdP: the client's redirect_uri
    const interaction = u.pathname.match(/^\/interaction\/([^/]+)$/);
    if (interaction) {
      // GET the page only to learn which prompt it is (login or consent).
      const page = await fetch(url, { headers: { cookie: jar.header() } });
      jar.take(page);
      const html = await page.text();
      const prompt = html.includes('name="prompt" value="login"') ? 'login' : 'consent';
      say(`  interaction ${interaction[1]}: ${prompt}`);
      const form = prompt === 'login' ? { prompt, login: user, password } : { prompt };
      url = await step(jar, 'POST', url, form);
    } else {
      url = await step(jar, 'GET', url);
    }
  }
  throw new Error(`no redirect out of the IdP after ${maxSteps} steps`);
}

async function main() {
  const user = opt('--login') ?? 'alice';
  const given = opt('--authorize-url');
  if (given) {
    process.stdout.write(`${await login(given, { user })}\n`);
    return;
  }

  const issuer = opt('--issuer');
  const redirectUri = opt('--redirect-uri');
  if (!issuer || !redirectUri) {
    console.error('usage: drive.mjs --issuer URL --redirect-uri URI [--login NAME] [--scope S] [--param k=v]... [--exchange] [-v]');
    console.error('       drive.mjs --authorize-url URL [--login NAME] [-v]');
    process.exit(2);
  }
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  const codeVerifier = b64url(crypto.randomBytes(32));
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));
  const params = new URLSearchParams({
    client_id: 'cookiegate',
    response_type: 'code',
    redirect_uri: redirectUri,
    scope: opt('--scope') ?? 'openid profile email offline_access',
    state,
    nonce,
    code_challenge: b64url(crypto.createHash('sha256').update(codeVerifier).digest()),
    code_challenge_method: 'S256',
  });
  argv.forEach((a, i) => {
    if (a === '--param') {
      const [k, ...v] = argv[i + 1].split('=');
      params.append(k, v.join('='));
    }
  });
  const redirect = await login(`${discovery.authorization_endpoint}?${params}`, { user });
  process.stdout.write(`${redirect}\n`);
  if (!flag('--exchange')) return;

  const back = new URL(redirect).searchParams;
  if (back.get('state') !== state) throw new Error('state mismatch');
  if (back.get('iss') !== discovery.issuer) throw new Error('iss mismatch');
  const secret = process.env.IDP_CLIENT_SECRET || 'test-secret';
  const basic = Buffer.from(`${encodeURIComponent('cookiegate')}:${encodeURIComponent(secret)}`).toString('base64');
  const response = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code: back.get('code'), redirect_uri: redirectUri, code_verifier: codeVerifier,
    }),
  });
  const tokens = await response.json();
  if (response.status !== 200) throw new Error(`token endpoint: ${response.status} ${JSON.stringify(tokens)}`);
  process.stdout.write(`${JSON.stringify({ code_verifier: codeVerifier, nonce, state, redirect, tokens })}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(`drive: ${err.message}`);
    process.exit(1);
  });
}
