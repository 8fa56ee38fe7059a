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
// `/api/ws` is a WebSocket echo (RFC 6455, text and binary frames, ping, close) that checks the
// bearer at its handshake like the API does.
import { createHash } from 'node:crypto';
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
// The WebSocket echo: the handshake carries cookiegate's bearer, never a cookie.
server.on('upgrade', async (req, socket) => {
  const path = new URL(req.url, 'http://x').pathname;
  const auth = req.headers.authorization ?? '';
  const key = req.headers['sec-websocket-key'];
  let sub;
  try {
    if (path !== '/api/ws' || !auth.startsWith('Bearer ') || !key || req.headers.cookie) throw new Error('refused');
    sub = (await jwtVerify(auth.slice(7), jwks, { issuer })).payload.sub;
  } catch {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const send = (opcode, payload) => {
    const head = payload.length < 126 ? Buffer.from([0x80 | opcode, payload.length])
      : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff]);
    socket.write(Buffer.concat([head, payload]));
  };
  send(0x1, Buffer.from(`hello ${sub}`));
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 6) {
      const opcode = pending[0] & 0x0f;
      let len = pending[1] & 0x7f;
      let at = 2;
      if (len === 126) { len = pending.readUInt16BE(2); at = 4; }
      if (len === 127) { socket.destroy(); return; } // the example needs no large frames
      if (pending.length < at + 4 + len) return;
      const mask = pending.subarray(at, at + 4);
      const payload = Buffer.from(pending.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      pending = pending.subarray(at + 4 + len);
      if (opcode === 0x8) { send(0x8, payload); socket.end(); return; }
      if (opcode === 0x9) send(0xa, payload);
      else if (opcode === 0x1 || opcode === 0x2) send(opcode, payload);
    }
  });
  socket.on('error', () => {});
});

server.listen(port, '127.0.0.1', () => console.error(`app: listening on 127.0.0.1:${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
