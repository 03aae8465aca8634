// The page in a real browser: Debian's headless Chromium, driven by playwright-core, calls a
// real authd over grpc-web from another origin. Nothing is mocked: this proves CORS, the
// preflight, grpc-web framing, trailers and the error details end to end.
//
//   npm run build && npm test          (AUTHD_BIN=<path> to use a given authd binary;
//                                       by default ../../target/debug/authd, built if missing)
//
// Leaves in test-artifacts/: logged-in.png (the logged-in page), registration-errors.png,
// refused-origin.png and authd.log.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { pageRoot, serveStatic } from "./static-server.mjs";

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
const artifacts = join(pageRoot, "test-artifacts");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
// Without the background-networking flags Chromium stalls on this closed network.
const chromiumFlags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const ada = {
  name: "Ada Lovelace",
  email: `ada.${process.pid}@example.com`,
  location: "London",
  about: "Analyst of the Analytical Engine",
  password: "correct horse battery",
};

/** A handle on everything started, so that `after` can stop it whatever failed. */
const started = { servers: [], dirs: [] };
let authdUrl;
let allowedOrigin;
let refusedOrigin;
let page;
const authdLog = [];

function authdBinary() {
  const binary = process.env.AUTHD_BIN ?? join(repoRoot, "target", "debug", "authd");
  if (!existsSync(binary)) {
    const build = spawnSync("cargo", ["build", "--bin", "authd"], { cwd: repoRoot, stdio: "inherit" });
    assert.equal(build.status, 0, "cargo build --bin authd failed");
  }
  return binary;
}

/** Starts authd on a free port, allowing `origins`; resolves to its base URL once it listens. */
async function startAuthd(origins) {
  const dataDir = mkdtempSync(join(tmpdir(), "authd-web-data-"));
  started.dirs.push(dataDir);
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name === "DATABASE_URL" || name.startsWith("DB_")) delete env[name];
  }
  Object.assign(env, {
    LISTEN_ADDR: "127.0.0.1:0",
    DATA_DIR: dataDir,
    CORS_ALLOWED_ORIGINS: origins.join(","),
    LOG_FORMAT: "json",
    RUST_LOG: "info",
  });
  // Its working directory is the empty data directory, so no stray `.env` is read.
  const authd = spawn(authdBinary(), ["serve"], { cwd: dataDir, env, stdio: ["ignore", "pipe", "pipe"] });
  started.authd = authd;
  // Should the test process die before `after` runs, authd must not outlive it.
  process.once("exit", () => authd.kill("SIGKILL"));
  const exited = once(authd, "exit").then(([code, signal]) => {
    throw new Error(`authd exited (${code ?? signal}) before listening:\n${authdLog.join("\n")}`);
  });
  createInterface({ input: authd.stderr }).on("line", (line) => authdLog.push(line));
  const listening = new Promise((resolve) => {
    createInterface({ input: authd.stdout }).on("line", (line) => {
      authdLog.push(line);
      try {
        const event = JSON.parse(line);
        if (event.message === "authd listening") resolve(`http://${event.addr}`);
      } catch {
        // not a JSON log line
      }
    });
  });
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`authd did not listen within 20 s:\n${authdLog.join("\n")}`)), 20_000).unref(),
  );
  return Promise.race([listening, exited, timeout]);
}

async function stopAuthd() {
  const authd = started.authd;
  if (!authd || authd.exitCode !== null || authd.signalCode !== null) return;
  const exited = once(authd, "exit");
  authd.kill("SIGTERM");
  const killer = setTimeout(() => authd.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(killer);
}

const origin = (server) => `http://127.0.0.1:${server.address().port}`;
const text = (selector) => page.locator(selector).innerText();
const fieldError = (form, field) => page.locator(`#${form}-form .field-error[data-field="${field}"]`);

async function fill(form, values) {
  for (const [name, value] of Object.entries(values)) {
    await page.locator(`#${form}-${name}`).fill(value);
  }
}

/** The status line once it says something new. */
async function statusAfter(action) {
  await page.evaluate(() => {
    document.getElementById("status").textContent = "";
  });
  await action();
  await page.locator("#status:not(:empty)").waitFor();
  return text("#status");
}

/** GetMe sent from the page's origin with the given access token, by hand: the grpc-status. */
function getMeStatusFromPage(accessToken) {
  return page.evaluate(
    async ({ url, accessToken }) => {
      const response = await fetch(`${url}/authd.v1.UserService/GetMe`, {
        method: "POST",
        headers: {
          "content-type": "application/grpc-web+proto",
          "x-grpc-web": "1",
          authorization: `Bearer ${accessToken}`,
        },
        body: new Uint8Array([0, 0, 0, 0, 0]), // one uncompressed frame holding an empty GetMeRequest
      });
      const inHeaders = response.headers.get("grpc-status");
      if (inHeaders !== null) return inHeaders;
      // Otherwise the status is in the trailer frame (flag 0x80) at the end of the body.
      const body = new TextDecoder().decode(await response.arrayBuffer());
      return /grpc-status:\s*(\d+)/.exec(body)?.[1] ?? null;
    },
    { url: authdUrl, accessToken },
  );
}

describe("the account page in headless Chromium, over grpc-web from another origin", { timeout: 90_000 }, () => {
  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    assert.ok(existsSync(join(pageRoot, "dist", "main.js")), "dist/main.js is missing: run `npm run build` first");
    assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: apt-get install chromium`);
    const allowed = await serveStatic();
    const refused = await serveStatic();
    started.servers.push(allowed, refused);
    allowedOrigin = origin(allowed);
    refusedOrigin = origin(refused);
    authdUrl = await startAuthd([allowedOrigin]);

    const userDataDir = mkdtempSync(join(tmpdir(), "authd-web-chromium-"));
    started.dirs.push(userDataDir);
    started.browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: chromiumFlags,
      viewport: { width: 1000, height: 900 },
    });
    started.browser.setDefaultTimeout(15_000);
    page = started.browser.pages()[0] ?? (await started.browser.newPage());
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    assert.equal(await text("#authd-url"), authdUrl);
    assert.notEqual(new URL(allowedOrigin).port, new URL(authdUrl).port, "the page and authd share an origin");
  });

  after(async () => {
    await started.browser?.close().catch(() => {});
    await stopAuthd();
    await Promise.all(started.servers.map((server) => new Promise((resolve) => server.close(resolve))));
    for (const dir of started.dirs) rmSync(dir, { recursive: true, force: true });
    if (existsSync(artifacts)) writeFileSync(join(artifacts, "authd.log"), `${authdLog.join("\n")}\n`);
  });

  it("shows each bad field's message next to that field", async () => {
    await fill("register", { name: "Ada", email: "not-an-email", location: "  ", password: "short" });
    const status = await statusAfter(() => page.locator("#register-form button[type=submit]").click());
    assert.match(status, /Registration failed: please correct the highlighted fields/);
    for (const field of ["email", "location", "password"]) {
      assert.notEqual(await fieldError("register", field).innerText(), "", `no message next to ${field}`);
      assert.equal(await page.locator(`#register-${field}`).getAttribute("aria-invalid"), "true");
    }
    assert.match(await fieldError("register", "password").innerText(), /8/);
    assert.equal(await fieldError("register", "name").innerText(), "", "name was fine");
    assert.equal(await page.locator("#register-name").getAttribute("aria-invalid"), null);
    await page.screenshot({ path: join(artifacts, "registration-errors.png"), fullPage: true });
  });

  it("registers, clearing the field errors", async () => {
    await fill("register", ada);
    const status = await statusAfter(() => page.locator("#register-form button[type=submit]").click());
    assert.equal(status, `Account created for ${ada.email}. You can log in now.`);
    assert.equal(await page.locator("#register-form .field-error:not(:empty)").count(), 0);
  });

  it("says under the email field when the address is taken", async () => {
    await fill("register", ada);
    const status = await statusAfter(() => page.locator("#register-form button[type=submit]").click());
    assert.match(status, /Email already registered/);
    assert.match(await fieldError("register", "email").innerText(), /Email already registered/);
  });

  it("refuses a wrong password", async () => {
    await fill("login", { email: ada.email, password: "not the password" });
    const status = await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    assert.match(status, /Logging in failed: Invalid credentials/);
    assert.equal(await text("#session"), "Not logged in.");
  });

  it("logs in and shows the profile; screenshot in test-artifacts/logged-in.png", async () => {
    await fill("login", { email: ada.email, password: ada.password });
    const status = await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    assert.equal(status, "Logged in.");
    assert.match(await text("#session"), /^Logged in\. The access token is valid for 15 minutes\.$/);
    assert.equal(await text("#profile-name"), ada.name);
    assert.equal(await text("#profile-email"), ada.email);
    assert.equal(await text("#profile-location"), ada.location);
    assert.equal(await text("#profile-about"), ada.about);
    assert.match(await text("#profile-user-id"), /^\d+$/);
    assert.notEqual(await text("#profile-created-at"), "");
    assert.equal(await page.locator("#login").isVisible(), false, "the login form is still shown");
    assert.equal(await page.locator("#register").isVisible(), false, "the register form is still shown");
    await page.screenshot({ path: join(artifacts, "logged-in.png"), fullPage: true });
  });

  let accessBeforeLogout;

  it("refreshes the session and still shows the profile with the new access token", async () => {
    const tokenOf = async (request) => (await request.allHeaders()).authorization?.replace(/^Bearer /, "");
    const getMe = (request) => request.url().endsWith("/authd.v1.UserService/GetMe");
    const [before] = await Promise.all([page.waitForRequest(getMe), page.locator("#show-profile").click()]);
    // Let that load finish: its status would otherwise land after the refresh's.
    await page.locator("#status", { hasText: "Profile loaded." }).waitFor();
    const refreshed = await statusAfter(() => page.locator("#refresh").click());
    assert.equal(refreshed, "Session refreshed: new access and refresh tokens.");
    const [afterRefresh] = await Promise.all([page.waitForRequest(getMe), page.locator("#show-profile").click()]);
    await page.locator("#status", { hasText: "Profile loaded." }).waitFor();
    assert.equal(await text("#profile-email"), ada.email);
    accessBeforeLogout = await tokenOf(afterRefresh);
    assert.ok(accessBeforeLogout);
    assert.notEqual(accessBeforeLogout, await tokenOf(before), "the access token was not replaced");
  });

  it("logs out; then the profile call fails, even with the old access token", async () => {
    const status = await statusAfter(() => page.locator("#logout").click());
    assert.equal(status, "Logged out.");
    assert.equal(await text("#session"), "Not logged in.");
    assert.equal(await page.locator("#profile").isVisible(), false);
    assert.equal(await page.locator("#refresh").isDisabled(), true);
    assert.equal(await page.locator("#login").isVisible(), true, "the login form is not back");

    const profile = await statusAfter(() => page.locator("#show-profile").click());
    assert.match(profile, /^Showing the profile failed: Not authenticated.*\(log in again\)$/);
    // The session ended on the server, not just in the page: its access token is refused.
    assert.equal(await getMeStatusFromPage(accessBeforeLogout), "16"); // UNAUTHENTICATED
  });

  it("is refused by the browser when served from an origin authd does not allow", async () => {
    const corsErrors = [];
    page.on("console", (message) => {
      if (/blocked by CORS policy/.test(message.text())) corsErrors.push(message.text());
    });
    await page.goto(`${refusedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    await fill("login", { email: ada.email, password: ada.password });
    const status = await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    assert.match(status, /^Logging in failed: could not reach authd at .* does not allow this page's origin/);
    assert.equal(await text("#session"), "Not logged in.");
    await page.screenshot({ path: join(artifacts, "refused-origin.png"), fullPage: true });
    await assert.rejects(getMeStatusFromPage("whatever"), /Failed to fetch/);
    assert.ok(corsErrors.some((error) => error.includes(refusedOrigin)), `no CORS error in the console: ${corsErrors}`);
    // While the allowed origin still gets through.
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    const profile = await statusAfter(() => page.locator("#show-profile").click());
    assert.match(profile, /Not authenticated/);
  });
});
