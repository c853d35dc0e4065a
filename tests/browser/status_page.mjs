// Drives the status page of a running `weir serve` in Debian's Chromium with playwright-core,
// headless and kept off the network, and prints what it saw as JSON (tests/it/status_page.rs
// checks it). Screenshots of each page go to the directory given.
//
// node status_page.mjs <playwright-core dir> <chromium> <base URL> <token> <screenshot dir>
import { createRequire } from "node:module";
import path from "node:path";

const [pwDir, chromiumPath, base, token, shots] = process.argv.slice(2);
const require = createRequire(path.join(pwDir, "x.js"));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
  ],
});
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Nothing but the daemon is ever asked for.
  const elsewhere = [];
  context.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) elsewhere.push(r.url()); });
  const page = await context.newPage();

  // Without the token, the pipelines page sends the browser to sign in.
  await page.goto(base + "/");
  out.login_url = new URL(page.url()).pathname;
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  out.wrong_token_status = await page.locator("h1").textContent();
  await page.goto(base + "/login?next=%2F");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/");

  // The pipelines, failing and stale first.
  await page.waitForFunction(() => document.querySelectorAll("tr[data-pipeline]").length >= 3);
  out.pipelines = await page.$$eval("tr[data-pipeline]", (rows) =>
    rows.map((r) => ({ pipeline: r.dataset.pipeline, health: r.dataset.health, text: r.innerText })));
  await page.screenshot({ path: path.join(shots, "pipelines.png"), fullPage: true });
  // Keyboard: the first Tab reaches the skip link, which moves focus to the content.
  await page.keyboard.press("Tab");
  out.first_tab = await page.evaluate(() => document.activeElement.textContent);

  // The failed run of `bad`: its error and the failing check's rows.
  await page.click("tr[data-pipeline=bad] a[href^='/runs/']");
  await page.waitForSelector("#run-status");
  out.failed_run = {
    status: await page.getAttribute("#run-status", "data-status"),
    error: await page.locator("#run-error").textContent(),
    checks: await page.$$eval("section.check", (s) => s.map((c) => ({
      check: c.dataset.check, status: c.dataset.status,
      rows: Array.from(c.querySelectorAll("table.samples tbody tr")).map((tr) => Array.from(tr.cells).map((td) => td.textContent)),
    }))),
  };
  await page.screenshot({ path: path.join(shots, "run-failed.png"), fullPage: true });

  // Run now, and watch the run finish on its page without reloading it.
  await page.goto(base + "/pipelines/good");
  out.dag_nodes = await page.$$eval("svg.dag a.node", (n) => n.map((a) => a.dataset.task + ":" + a.dataset.status));
  await page.screenshot({ path: path.join(shots, "pipeline.png"), fullPage: true });
  await page.click("#run-now");
  await page.waitForURL(/\/runs\//);
  out.run_now_url = new URL(page.url()).pathname;
  let reloads = 0;
  page.on("load", () => reloads++);
  await page.waitForSelector("#run-status[data-status=succeeded]", { timeout: 60000 });
  out.run_now_reloads = reloads;
  out.run_now_tasks = await page.$$eval("#tasks tbody tr", (rows) => rows.map((r) => r.dataset.task + ":" + r.dataset.status));
  out.gantt_bars = await page.locator("ul.gantt .bar").count();
  await page.screenshot({ path: path.join(shots, "run.png"), fullPage: true });

  // Column lineage.
  await page.goto(base + "/pipelines/good/lineage?column=by_region.revenue");
  out.lineage_upstream = await page.$$eval("table.lineage[data-direction=upstream] tbody tr", (rows) =>
    rows.map((r) => r.cells[1].textContent + " " + r.cells[3].textContent));
  out.lineage_nodes = await page.locator("svg.lineage-graph a.node").count();
  await page.screenshot({ path: path.join(shots, "lineage.png"), fullPage: true });

  // At 200 % zoom (half the width in CSS pixels) nothing but the wide tables scrolls sideways.
  await page.setViewportSize({ width: 640, height: 900 });
  await page.goto(base + "/");
  out.zoomed_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.setViewportSize({ width: 1280, height: 900 });

  // Without JavaScript, the read-only views are the same pages.
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  await nojs.addCookies([{ name: "weir_token", value: token, url: base }]);
  const plain = await nojs.newPage();
  await plain.goto(base + "/");
  out.nojs_pipelines = await plain.locator("tr[data-pipeline]").count();
  await plain.goto(base + out.run_now_url);
  out.nojs_run_status = await plain.getAttribute("#run-status", "data-status");
  await nojs.close();

  // A browser without the cookie gets nothing: the API refuses, pages ask to sign in.
  const stranger = await browser.newContext();
  const api = await stranger.request.get(base + "/api/pipelines");
  out.stranger_api = api.status();
  const post = await stranger.request.post(base + "/pipelines/good/run", { maxRedirects: 0 });
  out.stranger_run_now = post.status();
  out.elsewhere = elsewhere;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
