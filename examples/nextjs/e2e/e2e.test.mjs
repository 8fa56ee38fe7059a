// The Next.js example in a real browser (Debian's Chromium, driven by playwright-core), in both
// deployment shapes. run.sh starts the servers and passes their addresses:
//
//   SHAPE1_URL   the app through cookiegate in front          (http://app.example.com:<port>)
//   SHAPE2_URL   the app through `next start` in front        (http://app.example.com:<port>)
//   BACKEND_URL  the backend itself, for checks behind the browser's back
//   AUTH_LOG     the backend's log of every full Authorization header it received
//   RESULTS      where to write the measured figures (JSON)
//   APP_DIR      examples/nextjs (for the built client bundles)
//   SCREENSHOT   where to save the screenshot of the working page
//
// Host names: Chromium maps *.example.com to 127.0.0.1 (--host-resolver-rules), so the app
// (app.example.com) and a same-site attacker (evil.example.com) are two origins of one site, as
// app.example.com and evil.example.com would be in production. *.localhost does not work for
// that: "localhost" is not a registrable domain, so Chromium puts app.localhost and evil.localhost
// in different sites and never sends a SameSite=Lax cookie between them.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through run.sh`);
  return value;
};
const BACKEND_URL = env("BACKEND_URL");
const AUTH_LOG = env("AUTH_LOG");
const RESULTS = env("RESULTS");
const APP_DIR = env("APP_DIR");
const SCREENSHOT = env("SCREENSHOT");
// `mustStream`: the SSE reply must arrive token by token. Shape 2 with Next.js's default gzip is
// measured and reported, not failed (the issue asks to document it).
const SHAPES = [
  { key: "shape1", name: "shape 1: cookiegate in front", url: env("SHAPE1_URL"), user: ["ada", "lovelace"], mustStream: true },
  { key: "shape2", name: "shape 2: Next.js in front (rewrites to cookiegate)", url: env("SHAPE2_URL"), user: ["grace", "hopper"], mustStream: false },
  { key: "shape2-nocompress", name: "shape 2 with NEXT_COMPRESS=0 (Next.js compression off)", url: env("SHAPE2_NOCOMPRESS_URL"), user: ["alan", "turing"], mustStream: true },
];
const TOKEN_PAUSE_MS = 100; // the backend's pause between two SSE tokens

const results = { sse: {}, attacks: {} };
let browser;
let attacker; // { server, port }

/** The attacker's pages: one page that POSTs to `target` twice, with fetch (no-cors) and a form. */
function attackerPage(target, label) {
  const action = `${target}/api/proxy/api/tasks`;
  // enctype=text/plain lets a form send a JSON-looking body: {"title":"…","x":"="}
  return `<!doctype html><meta charset="utf-8"><title>attacker</title>
<h1>Totally harmless page (${label})</h1>
<form id="f" method="POST" action="${action}" enctype="text/plain">
  <input type="hidden" name='{"title":"pwned by form (${label})","x":"' value='"}'>
</form>
<script>
  (async () => {
    try {
      await fetch(${JSON.stringify(action)}, {
        method: "POST", mode: "no-cors", credentials: "include",
        headers: { "content-type": "text/plain" },
        body: JSON.stringify({ title: "pwned by fetch (${label})" }),
      });
    } catch (e) {}
    document.getElementById("f").submit();   // top-level navigation, like a real CSRF form
  })();
</script>`;
}

async function backend(pathname, token, init = {}) {
  const res = await fetch(new URL(pathname, BACKEND_URL), {
    ...init,
    headers: { ...(init.headers ?? {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

const stats = (arrivals) => {
  const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]);
  const sorted = [...gaps].sort((a, b) => a - b);
  return {
    tokens: arrivals.length,
    first_ms: arrivals[0],
    last_ms: arrivals.at(-1),
    spread_ms: arrivals.at(-1) - arrivals[0],
    median_gap_ms: sorted[Math.floor(sorted.length / 2)] ?? 0,
    max_gap_ms: sorted.at(-1) ?? 0,
    // gaps under 20 ms: tokens that arrived together, in one network read
    bunched_gaps: gaps.filter((g) => g < 20).length,
  };
};

before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    // launch() gives every run a fresh, empty user-data dir of its own.
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
      "--host-resolver-rules=MAP *.example.com 127.0.0.1",
      // plain http to *.example.com must stay plain http (no https upgrade attempts)
      "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
    ],
  });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://attacker");
    const target = url.searchParams.get("target") ?? "";
    const label = url.searchParams.get("label") ?? "";
    res.setHeader("content-type", "text/html; charset=utf-8");
    res.end(attackerPage(target, label));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  attacker = { server, port: server.address().port };
});

after(async () => {
  await browser?.close();
  attacker?.server.close();
  fs.writeFileSync(RESULTS, JSON.stringify(results, null, 2) + "\n");
});

test("client bundles carry no token handling", () => {
  const dir = path.join(APP_DIR, ".next", "static");
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => f.endsWith(".js"));
  assert.ok(files.length > 0, "built client chunks exist");
  for (const file of files) {
    const text = fs.readFileSync(path.join(dir, file), "utf8");
    for (const needle of ["access_token", "/auth/token", "BACKEND_URL", "Bearer "]) {
      assert.ok(!text.includes(needle), `${file} mentions ${needle}`);
    }
  }
});

for (const shape of SHAPES) {
  describe(shape.name, () => {
    let context;
    let page;
    let token;
    const [username, password] = shape.user;

    before(async () => {
      context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
      page = await context.newPage();
    });
    after(async () => {
      await context?.close();
    });

    test("log in: token in an httpOnly cookie, not in document.cookie; backend got Bearer <token>", async (t) => {
      const loginBodies = [];
      page.on("response", async (res) => {
        if (res.url().endsWith("/api/auth/login")) loginBodies.push(await res.text().catch(() => ""));
      });
      await page.goto(shape.url + "/");
      await page.getByTestId("login-form").waitFor();
      await page.locator('input[name="username"]').fill(username);
      await page.locator('input[name="password"]').fill(password);
      await page.getByTestId("login").click();
      await page.getByTestId("user").filter({ hasText: `Signed in as ${username}` }).waitFor();

      const cookie = (await context.cookies(shape.url)).find((c) => c.name === "auth_token");
      assert.ok(cookie, "auth_token cookie set");
      token = cookie.value;
      assert.match(token, /^[0-9a-f]{64}$/);
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, "Lax");
      assert.equal(cookie.secure, false, "plain http: no Secure flag (Secure only over https)");

      const documentCookie = await page.evaluate(() => document.cookie);
      assert.ok(!documentCookie.includes(token), "document.cookie must not hold the token");
      assert.ok(!documentCookie.includes("auth_token"), "document.cookie must not list auth_token");
      assert.ok(documentCookie.includes(`signed_in_as=${username}`), "readable cookies still show");
      const shown = await page.getByTestId("document-cookie").textContent();
      assert.ok(!shown.includes(token));
      assert.ok(!(await page.content()).includes(token), "token not in the DOM");
      assert.ok(loginBodies.length > 0 && loginBodies.every((b) => !b.includes(token)), "token not in the login response body");

      const log = fs.readFileSync(AUTH_LOG, "utf8");
      assert.ok(log.includes(`GET /api/me Bearer ${token}`), "backend logged Bearer <token> for /api/me");
      t.diagnostic(`document.cookie = ${JSON.stringify(documentCookie)}; backend saw "Bearer ${token.slice(0, 6)}…"`);
    });

    test("tasks: list, create, edit, delete", async () => {
      const item = (title) => page.locator(`li[data-title="${title}"]`);
      const title = `Buy milk (${shape.key})`;
      await page.getByTestId("new-task").fill(title);
      await page.getByTestId("add-task").click();
      await item(title).waitFor();
      let listed = await backend("/api/tasks", token);
      const created = listed.json.find((x) => x.title === title);
      assert.ok(created, "the backend has the new task");

      await item(title).getByTestId("edit").click();
      await page.getByTestId("edit-title").fill(`${title}, oat`);
      await page.getByTestId("save").click();
      await item(`${title}, oat`).waitFor();
      // click, not check(): the box is controlled and flips only when the PATCH has answered
      await item(`${title}, oat`).getByRole("checkbox").click();
      await page.locator(`li.done[data-title="${title}, oat"]`).waitFor();
      listed = await backend("/api/tasks", token);
      assert.deepEqual(listed.json.find((x) => x.id === created.id), { id: created.id, title: `${title}, oat`, done: true });

      await item(`${title}, oat`).getByTestId("delete").click();
      await item(`${title}, oat`).waitFor({ state: "detached" });
      await page.getByTestId("api-status").filter({ hasText: `DELETE /api/proxy/api/tasks/${created.id} → 204` }).waitFor();
      listed = await backend("/api/tasks", token);
      assert.ok(!listed.json.some((x) => x.id === created.id), "deleted at the backend");

      // Two tasks that stay, for the screenshot and the assistant's count.
      for (const keep of ["Write the migration guide", "Measure SSE in both shapes"]) {
        await page.getByTestId("new-task").fill(keep);
        await page.getByTestId("add-task").click();
        await item(keep).waitFor();
      }
      await item("Measure SSE in both shapes").getByRole("checkbox").click();
      await page.locator('li.done[data-title="Measure SSE in both shapes"]').waitFor();
      // The list as the page shows it after a reload comes from the backend again.
      await page.reload();
      await item("Write the migration guide").waitFor();
      assert.equal(await page.locator("li[data-task-id]").count(), 2);
    });

    test("upload all 256 byte values (multipart) and download them back", async () => {
      const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      await page.getByTestId("file").setInputFiles({ name: "all-bytes.bin", mimeType: "application/octet-stream", buffer: bytes });
      await page.getByTestId("upload").click();
      await page.getByTestId("uploaded").waitFor();
      assert.match(await page.getByTestId("uploaded").textContent(), /all-bytes\.bin: 256 bytes/);
      await page.getByTestId("download").click();
      await page.getByTestId("downloaded").waitFor();
      assert.equal(await page.getByTestId("downloaded").getAttribute("data-matches"), "true");
      const downloaded = await page.evaluate(() => window.__download);
      assert.deepEqual(Buffer.from(downloaded), bytes);
      assert.match(await page.getByTestId("downloaded").textContent(), /attachment; filename="all-bytes\.bin"/);
    });

    test("assistant reply streams token by token (SSE through /api/chatkit)", async (t) => {
      await page.getByTestId("question").fill("What is on my list?");
      await page.getByTestId("ask").click();
      await page.locator('[data-testid="reply"][data-done="true"]').waitFor({ timeout: 30_000 });
      const record = await page.evaluate(() => window.__sse);
      assert.equal(record.status, 200);
      const s = stats(record.arrivals);
      const expected = (s.tokens - 1) * TOKEN_PAUSE_MS;
      s.incremental = s.tokens >= 10 && s.spread_ms >= expected * 0.6 && s.median_gap_ms >= TOKEN_PAUSE_MS * 0.5;
      results.sse[shape.key] = s;
      t.diagnostic(
        `${shape.name}: ${s.tokens} tokens, first after ${s.first_ms} ms, spread over ${s.spread_ms} ms ` +
          `(backend pace ≈ ${expected} ms), median gap ${s.median_gap_ms} ms, max gap ${s.max_gap_ms} ms, ` +
          `${s.bunched_gaps} gaps under 20 ms -> ${s.incremental ? "UNBUFFERED (token by token)" : "BUFFERED (all at once)"}`,
      );
      const reply = record.tokens.join("");
      assert.match(reply, new RegExp(`^Hello ${username}! You asked: "What is on my list\\?". You have 1 open task\\.`));
      assert.equal(await page.getByTestId("reply").textContent(), reply);
      if (shape.mustStream) {
        assert.ok(s.incremental, `tokens must arrive spread over time: ${JSON.stringify(s)}`);
      } else if (!s.incremental) {
        // The issue: if Next.js's rewrite buffers the stream, record and report it, do not fail.
        t.diagnostic("Next.js buffered the event stream (its gzip): use shape 1 for streaming routes, or NEXT_COMPRESS=0");
      }
      if (shape.key === "shape1") await page.screenshot({ path: SCREENSHOT, fullPage: true });
    });

    for (const [kind, origin, expectCookie] of [
      ["cross-site (http://127.0.0.1)", () => `http://127.0.0.1:${attacker.port}`, false],
      ["same-site, cross-origin (http://evil.example.com)", () => `http://evil.example.com:${attacker.port}`, true],
    ]) {
      test(`attacker page, ${kind}: form POST and fetch POST create nothing`, async (t) => {
        const before = await backend("/api/tasks", token);
        const logBefore = fs.readFileSync(AUTH_LOG, "utf8").length;
        // Chromium's own account of each request (DevTools protocol): which cookies it attached
        // or withheld and why, the status, and the body, even of the page's opaque no-cors fetch.
        const evil = await context.newPage();
        const cdp = await context.newCDPSession(evil);
        await cdp.send("Network.enable");
        const seen = new Map();
        const entry = (id) => seen.get(id) ?? seen.set(id, {}).get(id);
        cdp.on("Network.requestWillBeSent", (e) => {
          if (e.request.method === "POST" && e.request.url.startsWith(`${shape.url}/api/proxy/api/tasks`)) {
            Object.assign(entry(e.requestId), { attack: true, via: e.type === "Document" ? "form POST" : "fetch POST (no-cors)" });
          }
        });
        cdp.on("Network.requestWillBeSentExtraInfo", (e) => {
          const headers = Object.fromEntries(Object.entries(e.headers).map(([k, v]) => [k.toLowerCase(), v]));
          const session = (e.associatedCookies ?? []).find((c) => c.cookie.name === "auth_token");
          Object.assign(entry(e.requestId), {
            origin: headers.origin,
            cookieSent: /(^|;\s*)auth_token=/.test(headers.cookie ?? ""),
            blockedBecause: session?.blockedReasons?.join(",") || undefined,
          });
        });
        cdp.on("Network.responseReceived", (e) => Object.assign(entry(e.requestId), { status: e.response.status }));
        cdp.on("Network.loadingFinished", (e) => Object.assign(entry(e.requestId), { finished: true }));
        cdp.on("Network.loadingFailed", (e) => Object.assign(entry(e.requestId), { finished: true, failed: e.errorText }));

        const label = `${shape.key}, ${kind.split(" ")[0]}`;
        await evil.goto(`${origin()}/attack?target=${encodeURIComponent(shape.url)}&label=${encodeURIComponent(label)}`);
        const deadline = Date.now() + 15_000;
        let attacks = [];
        for (;;) {
          attacks = [...seen.entries()].filter(([, v]) => v.attack);
          if (attacks.length === 2 && attacks.every(([, v]) => v.finished && v.status && v.origin)) break;
          assert.ok(Date.now() < deadline, `both attack requests seen: ${JSON.stringify(attacks)}`);
          await new Promise((ok) => setTimeout(ok, 50));
        }
        const attempts = [];
        for (const [id, v] of attacks) {
          const body = await cdp.send("Network.getResponseBody", { requestId: id }).then((b) => b.body, () => "(opaque)");
          attempts.push({ via: v.via, origin: v.origin, cookieSent: v.cookieSent, blockedBecause: v.blockedBecause, status: v.status, body: body.trim() });
        }
        await evil.close();

        const after = await backend("/api/tasks", token);
        const newPosts = fs.readFileSync(AUTH_LOG, "utf8").slice(logBefore).split("\n").filter((l) => l.startsWith("POST /api/tasks"));
        results.attacks[`${shape.key} ${kind}`] = { attempts, tasks_before: before.json.length, tasks_after: after.json.length, backend_posts: newPosts.length };
        for (const a of attempts) {
          t.diagnostic(
            `${kind} ${a.via} from ${a.origin}: session cookie ${a.cookieSent ? "SENT" : `withheld (${a.blockedBecause})`} -> ${a.status} ${a.body} ` +
              (a.cookieSent
                ? "(the browser sent the session: only cookiegate's CSRF guard stopped it)"
                : "(SameSite=Lax withheld the session cookie; cookiegate's CSRF guard refused it as well)"),
          );
        }
        t.diagnostic(`backend tasks before/after: ${before.json.length}/${after.json.length}; POST /api/tasks reaching the backend: ${newPosts.length}`);

        assert.deepEqual(after.json, before.json, "no task created");
        assert.equal(newPosts.length, 0, "no attack reached the backend");
        for (const a of attempts) {
          assert.equal(a.cookieSent, expectCookie, `${a.via}: cookie ${expectCookie ? "sent (same site)" : "withheld (SameSite=Lax)"}`);
          // The CSRF guard runs before the cookie is looked for, so both get 403 (not 401).
          assert.equal(a.status, 403, `${a.via}: status`);
          // A no-cors response is opaque, even to DevTools; the form's navigation shows the JSON.
          if (a.via === "form POST") assert.match(a.body, /"error"/);
        }
      });
    }

    test("log out: cookie cleared, token revoked, the API answers 401 in the page", async (t) => {
      await page.getByTestId("logout").click();
      await page.getByTestId("api-status").filter({ hasText: "GET /api/proxy/api/tasks → 401" }).waitFor();
      const status = await page.getByTestId("api-status").textContent();
      assert.match(status, /→ 401 \{"error":"not authenticated"\}/);
      const cookies = await context.cookies(shape.url);
      assert.ok(!cookies.some((c) => c.name === "auth_token"), "auth_token cleared");
      assert.equal((await backend("/api/me", token)).status, 401, "the old token is revoked at the backend");
      assert.equal(await page.evaluate(() => document.cookie), "");
      t.diagnostic(`after logout the page shows: ${status}`);
    });
  });
}

test("summary", (t) => {
  for (const [key, s] of Object.entries(results.sse)) {
    t.diagnostic(`SSE ${key}: ${s.tokens} tokens spread over ${s.spread_ms} ms, first after ${s.first_ms} ms, median gap ${s.median_gap_ms} ms -> ${s.incremental ? "unbuffered" : "BUFFERED"}`);
  }
  for (const [key, a] of Object.entries(results.attacks)) {
    t.diagnostic(`attack ${key}: ${a.attempts.map((x) => `${x.via} ${x.status}${x.cookieSent ? " (cookie sent)" : " (no cookie)"}`).join(", ")}; tasks ${a.tasks_before} -> ${a.tasks_after}`);
  }
  const startedAt = Number(process.env.E2E_STARTED_AT);
  if (startedAt) t.diagnostic(`run.sh elapsed so far: ${Math.round(Date.now() / 1000 - startedAt)} s`);
  const shot = fs.statSync(SCREENSHOT);
  t.diagnostic(`screenshot: ${SCREENSHOT} (${Math.round(shot.size / 1024)} KiB)`);
  assert.ok(shot.size < 400 * 1024, "screenshot stays small");
});
