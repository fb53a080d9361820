// Drives callgate's wallboard in Debian's headless Chromium for tests/e2e_wallboard.rs.
//
//   node tests/web/wallboard.mjs --url http://127.0.0.1:PORT/wallboard?token=…&tenant=demo \
//        [--chromium /usr/bin/chromium] [--tenant demo]
//
// Run it inside a loopback-only network namespace (the Rust test does). It never downloads a
// browser: playwright-core drives the Chromium at --chromium.
//
// It opens the page at 1920×1080, waits until the tiles show numbers, prints one JSON line
// {"ready":…} and then obeys commands, one per line on stdin, answering each with one JSON line
// on stdout:
//   sample NAME   the tiles (their text), the body's data-* attributes and GET /stats/live,
//                 read until the tiles agree with the API (or 8 s pass): {"sample":NAME,"agree":…,…}
//   shot PATH     a screenshot of the page (PNG): {"shot":PATH,"bytes":N,"layout":[…]}
//   quit          closes the browser and exits 0
// Page errors and console errors are collected and reported in every answer ("errors"); "layout" lists
// what does not fit the screen (text cut off in its box, anything outside 1920×1080).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { writeFileSync } from "node:fs";

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const url = arg("url");
const executablePath = arg("chromium", "/usr/bin/chromium");
const tenant = arg("tenant", "demo");
if (!url) {
  console.error("usage: node wallboard.mjs --url URL [--chromium PATH] [--tenant ID]");
  process.exit(2);
}
const origin = new URL(url).origin;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const errors = [];

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--disable-quic",
  ],
});
const context = await browser.newContext({ viewport: { width: 1920, height: 1080 }, deviceScaleFactor: 1, locale: "ko-KR" });
const page = await context.newPage();
page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
page.on("console", (m) => {
  // Failed loads are reported with their URL by the "response" handler below.
  if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) errors.push("console: " + m.text());
});
page.on("response", (r) => {
  if (r.status() >= 400) errors.push("HTTP " + r.status() + ": " + r.request().method() + " " + r.url());
});
page.on("requestfailed", (r) => {
  // A WebSocket or fetch torn down by the page's own reload is not an error; anything else is.
  const f = r.failure();
  if (f && !/ERR_ABORTED/.test(f.errorText)) errors.push("requestfailed: " + r.url() + " " + f.errorText);
});

async function apiLive() {
  const r = await fetch(origin + "/stats/live");
  if (!r.ok) throw new Error("GET /stats/live: " + r.status);
  return r.json();
}

/** What the page shows: each tile's text, the body's data-* attributes, and what does not fit the
 *  1920×1080 screen (text cut off in its box, anything outside the viewport, a scroll bar). */
async function readPage() {
  return page.evaluate(() => {
    const tiles = {};
    for (const el of document.querySelectorAll("[data-tile]")) tiles[el.dataset.tile] = el.textContent.trim();
    const layout = [];
    const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className && typeof el.className === "string" ? "." + el.className.trim().replace(/\s+/g, ".") : "") + " " + JSON.stringify(el.textContent.trim().slice(0, 40));
    for (const el of document.querySelectorAll("header, header *, .tile, .tile *, .chart h2, .chart h2 *")) {
      if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0) layout.push(`${name(el)}: content ${el.scrollWidth}px wide in ${el.clientWidth}px`);
      const r = el.getBoundingClientRect();
      if (r.width > 0 && (r.left < -1 || r.top < -1 || r.right > innerWidth + 1 || r.bottom > innerHeight + 1)) layout.push(`${name(el)}: outside the screen (${Math.round(r.left)},${Math.round(r.top)})–(${Math.round(r.right)},${Math.round(r.bottom)})`);
    }
    const d = document.documentElement;
    if (d.scrollWidth > innerWidth || d.scrollHeight > innerHeight) layout.push(`the page is ${d.scrollWidth}×${d.scrollHeight}, the screen ${innerWidth}×${innerHeight}`);
    return { tiles, data: { ...document.body.dataset }, status: document.getElementById("status")?.textContent ?? "", layout };
  });
}

const pctText = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");

/** The tile texts the API's figures call for (the same rounding as the page). */
function expected(api) {
  const t = api.tenants[tenant];
  const f = t.today;
  const acd = (t.queues || []).map((q) => q.acd).filter(Boolean);
  return {
    waiting: String(acd.reduce((a, q) => a + q.waiting, 0)),
    handled: String(f.answered),
    offered: String(f.offered),
    abandoned: String(f.abandoned),
    transferred: String(f.transfers),
    sl: pctText(f.service_level),
    "answer-rate": pctText(f.answer_rate),
    abandonment: pctText(f.ks_abandonment),
    "agents-ready": String(t.agents.ready),
    "agents-oncall": String(t.agents.reserved + t.agents.talking + t.agents.held),
    "agents-wrapup": String(t.agents.wrapup),
    "agents-notready": String(t.agents.not_ready),
    "agents-loggedin": String(t.agents.logged_in),
  };
}

function differences(tiles, want) {
  return Object.entries(want)
    .filter(([k, v]) => tiles[k] !== v)
    .map(([k, v]) => `${k}: tile ${JSON.stringify(tiles[k])}, API ${JSON.stringify(v)}`);
}

const same = (a, b) => JSON.stringify(expected(a)) === JSON.stringify(expected(b));

async function sample(name) {
  const t0 = Date.now();
  let tries = 0;
  let last = null;
  // The page hears queue.stats at once and polls /stats/live; the API's figures are refreshed once a
  // second. Read API, page, API again: when both API reads agree and the page shows them, that is a
  // settled sample. Otherwise try again (the figures were moving) for up to 8 s.
  while (true) {
    tries++;
    const before = await apiLive();
    const shown = await readPage();
    const after = await apiLive();
    const want = expected(after);
    const diff = differences(shown.tiles, want);
    last = { sample: name, agree: diff.length === 0 && same(before, after), tries, ms: Date.now() - t0, diff, ...shown, expected: want, api: after, errors };
    if (last.agree || Date.now() - t0 > 8000) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return last;
}

const t0 = Date.now();
await page.goto(url, { waitUntil: "load" });
// Ready: the CTI socket is authenticated and every tile shows a number (not the placeholder "–").
let ready = false;
while (Date.now() - t0 < 15000) {
  const s = await readPage();
  const numbers = ["waiting", "handled", "agents-ready"].every((k) => s.tiles[k] !== undefined && /\d/.test(s.tiles[k]));
  if (s.data.connected === "true" && numbers) {
    ready = true;
    break;
  }
  await new Promise((r) => setTimeout(r, 200));
}
say({ ready, ms: Date.now() - t0, ...(await readPage()), errors });
if (!ready) {
  await browser.close();
  process.exit(1);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, ...rest] = line.trim().split(" ");
  const a = rest.join(" ");
  try {
    if (cmd === "sample") say(await sample(a));
    else if (cmd === "shot") {
      const png = await page.screenshot({ type: "png", fullPage: false });
      writeFileSync(a, png);
      say({ shot: a, bytes: png.length, layout: (await readPage()).layout, errors });
    } else if (cmd === "quit") break;
    else if (cmd) say({ error: "unknown command " + JSON.stringify(cmd) });
  } catch (e) {
    say({ error: String(e && e.stack ? e.stack : e), errors });
  }
}
await browser.close();
process.exit(0);
