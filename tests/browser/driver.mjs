// Drives Debian's Chromium for tests/browser.rs: one JSON command per stdin line, one JSON answer per
// stdout line. Pages are named, so a test can keep the feed open while it posts from the send page.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.PGSSE_CHROMIUM || "/usr/bin/chromium",
  // Without these, Chromium keeps trying to reach Google's hosts, which this machine's network refuses.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    ...(process.env.PGSSE_CHROMIUM_ARGS ? process.env.PGSSE_CHROMIUM_ARGS.split(" ") : []),
  ],
});
const context = await browser.newContext({
  viewport: { width: 390, height: 844 },
  ignoreHTTPSErrors: true,
});
const pages = new Map();
// Each page's console lines, for snippets that report only there.
const logs = new Map();

async function page(name = "main") {
  if (!pages.has(name)) {
    const created = await context.newPage();
    logs.set(name, []);
    created.on("console", (message) => logs.get(name).push(message.text()));
    pages.set(name, created);
  }
  return pages.get(name);
}

async function run(cmd) {
  const p = await page(cmd.page);
  const timeout = cmd.timeout ?? 20000;
  switch (cmd.op) {
    case "goto":
      await p.goto(cmd.url, { timeout });
      return null;
    case "fill":
      await p.fill(cmd.selector, cmd.text, { timeout });
      return null;
    case "click":
      await p.click(cmd.selector, { timeout });
      return null;
    case "eval":
      return await p.evaluate(cmd.js);
    case "wait":
      await p.waitForFunction(cmd.js, null, { timeout, polling: 50 });
      return null;
    case "route":
      // Answers requests to `url` (any origin, served or not) with a fixed body.
      await p.route(cmd.url, (route) => route.fulfill({ status: 200, contentType: cmd.contentType, body: cmd.body }));
      return null;
    case "logged": {
      // A console line containing `text`, logged already or awaited (the check and the listener are set in
      // one turn of the event loop, so no line falls between them).
      if (logs.get(cmd.page ?? "main").some((line) => line.includes(cmd.text))) return null;
      await p.waitForEvent("console", { predicate: (m) => m.text().includes(cmd.text), timeout });
      return null;
    }
    case "screenshot":
      await p.screenshot({ path: cmd.path, fullPage: true });
      return null;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = { ok: true, value: await run(JSON.parse(line)) };
  } catch (err) {
    answer = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
