#!/usr/bin/env node
// Helper of bench/session.sh, Node only (fetch, no browser):
//
//   node bench/session.mjs login GW USER    logs in through cookiegate at GW as USER (cookiegate's
//                                           /auth/login, the test IdP's forms via tests/idp/drive.mjs,
//                                           the callback) and prints the session cookie, NAME=VALUE
//   node bench/session.mjs burst URL COOKIE N
//                                           sends N requests to URL with COOKIE, all at once, and
//                                           prints JSON {"sent","ok","statuses":{...},"ms"};
//                                           URL may list several, comma-separated (several
//                                           instances): the requests go round-robin
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const [command, ...args] = process.argv.slice(2);

const setCookies = (res) => res.headers.getSetCookie().map((line) => line.split(';')[0]);

if (command === 'login') {
  const [gw, user] = args;
  const start = await fetch(`${gw}/auth/login`, { redirect: 'manual' });
  if (start.status !== 302) throw new Error(`login: ${start.status}`);
  const loginCookies = setCookies(start).join('; ');
  const callback = execFileSync('node', [`${here}../tests/idp/drive.mjs`, '--authorize-url',
    start.headers.get('location'), '--login', user], { encoding: 'utf8' }).split('\n')[0];
  const done = await fetch(callback, { redirect: 'manual', headers: { cookie: loginCookies } });
  if (done.status !== 302) throw new Error(`callback: ${done.status} ${await done.text()}`);
  const session = setCookies(done).filter((c) => !c.includes('-login.') && !c.endsWith('='));
  console.log(session.join('; '));
} else if (command === 'burst') {
  const [urls, cookie, n] = args;
  const targets = urls.split(',');
  const started = performance.now();
  const answers = await Promise.all(Array.from({ length: Number(n) }, (_, i) =>
    fetch(targets[i % targets.length], { headers: { cookie } }).then(async (res) => { await res.arrayBuffer(); return res.status; },
      () => 'error')));
  const statuses = {};
  for (const status of answers) statuses[status] = (statuses[status] ?? 0) + 1;
  console.log(JSON.stringify({ sent: answers.length, ok: statuses[200] ?? 0, statuses,
    ms: Math.round(performance.now() - started) }));
} else {
  console.error('usage: session.mjs login GW USER | burst URL COOKIE N');
  process.exit(2);
}
