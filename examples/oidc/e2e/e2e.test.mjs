// The token-handler example in a real browser (Debian's Chromium, driven by playwright-core):
// log in through the IdP's own pages, see the user, call the API, wait past the access token's
// expiry and call again (refreshed without the user noticing), log out. run.sh starts the
// servers and passes their addresses:
//
//   APP_URL     the app through cookiegate (http://127.0.0.1:<port>)
//   TOKEN_TTL   the IdP's access-token lifetime, seconds
//   SCREENSHOT  where to save the screenshot of the logged-in page
//   EVIL_URL    a page on another origin that tries to open the app's socket

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through run.sh`);
  return value;
};
const APP_URL = env('APP_URL');
const TOKEN_TTL = Number(env('TOKEN_TTL'));
const SCREENSHOT = env('SCREENSHOT');
const EVIL_URL = env('EVIL_URL');

let browser;
let page;

before(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await (await browser.newContext()).newPage();
});

after(async () => {
  await browser?.close();
});

const callApi = async () => {
  await page.evaluate(() => { document.getElementById('api').textContent = 'calling'; });
  await page.click('#call');
  await page.waitForFunction(() => document.getElementById('api').textContent !== 'calling');
  const text = await page.textContent('#api');
  const [status, ...json] = text.split(' ');
  return { status: Number(status), body: JSON.parse(json.join(' ')) };
};

test('logged out at first, the page offers a login', async () => {
  await page.goto(`${APP_URL}/`);
  await page.waitForSelector('#login');
  assert.equal(await page.textContent('#status'), 'Not logged in.');
  const me = await page.evaluate(async () => (await fetch('/api/me')).status);
  assert.equal(me, 401, 'the API is closed without a session');
});

test('log in through the IdP and land back on the page as alice', async () => {
  await page.click('#login');
  // oidc-provider's development login form, then its consent form.
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', 'alice');
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  await page.click('button[type=submit]');
  await page.waitForURL(`${APP_URL}/`);
  await page.waitForSelector('#sub');
  assert.equal(await page.textContent('#sub'), 'alice');
  assert.equal(await page.textContent('#email'), 'alice@example.com');
  // The session cookie is HttpOnly: the page's script sees no cookie at all.
  assert.equal(await page.evaluate(() => document.cookie), '');
});

test('the API gets a verified bearer, and a refreshed one after the token expired', async () => {
  const first = await callApi();
  assert.equal(first.status, 200);
  assert.equal(first.body.sub, 'alice');
  assert.equal(first.body.cookie_seen, false, 'no cookie reaches the API');
  // Past the access token's lifetime: cookiegate refreshes it on the next call.
  await new Promise((resolve) => setTimeout(resolve, (TOKEN_TTL + 0.5) * 1000));
  const second = await callApi();
  assert.equal(second.status, 200, JSON.stringify(second.body));
  assert.equal(second.body.sub, 'alice');
  assert.ok(second.body.token_expires_at > first.body.token_expires_at,
    `a new token: ${first.body.token_expires_at} then ${second.body.token_expires_at}`);
  assert.notEqual(second.body.token_id, first.body.token_id);
  await page.screenshot({ path: SCREENSHOT });
});

test('the page opens a live socket with the session (the cookie is the only credential)', async () => {
  await page.click('#live');
  await page.waitForFunction(() => document.getElementById('socket').textContent === 'open');
  await page.waitForFunction(() => document.getElementById('messages').textContent.includes('ping from the page'));
  const messages = await page.textContent('#messages');
  assert.match(messages, /^hello alice\n/, 'the upstream saw the bearer of alice');
});

test('a page on another origin cannot open the socket (cross-site WebSocket hijacking)', async () => {
  const evil = await page.context().newPage();
  await evil.goto(EVIL_URL);
  await evil.waitForFunction(() => document.title === 'opened' || document.title === 'refused');
  assert.equal(await evil.title(), 'refused');
  await evil.close();
});

test('log out: the session ends, its socket closes, and the API closes again', async () => {
  assert.equal(await page.textContent('#socket'), 'open');
  await page.click('#logout');
  await page.waitForFunction(() => document.getElementById('socket').textContent === 'closed',
    null, { timeout: 3000 });
  await page.waitForSelector('#login');
  assert.equal(await page.textContent('#status'), 'Not logged in.');
  assert.match(await page.textContent('#api'), /IdP logout URL given/);
  const me = await page.evaluate(async () => (await fetch('/api/me')).status);
  assert.equal(me, 401);
});
