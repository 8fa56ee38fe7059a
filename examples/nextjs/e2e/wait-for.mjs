// node wait-for.mjs SECONDS URL...: polls each URL until it answers (any status below 500), or
// fails after SECONDS.
const [seconds, ...urls] = process.argv.slice(2);
const deadline = Date.now() + Number(seconds) * 1000;

for (const url of urls) {
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status < 500) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      console.error(`wait-for: ${url} did not answer within ${seconds}s`);
      process.exit(1);
    }
    await new Promise((ok) => setTimeout(ok, 200));
  }
}
