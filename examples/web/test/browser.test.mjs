// The page in a real browser: Debian's headless Chromium, driven by playwright-core, calls a
// real authd over grpc-web from another origin. Nothing is mocked: this proves CORS, the
// preflight, grpc-web framing, trailers and the error details end to end.
//
//   npm run build && npm test          (AUTHD_BIN=<path> to use a given authd binary;
//                                       by default ../../target/debug/authd, built if missing)
//
// authd mails through a real SMTP server the test starts (aiosmtpd, run by
// ../../tests/api/fixtures/smtp_sink.py, the Rust tests' own), with PUBLIC_URL set to the
// page's origin: the verification and reset links the test opens are the ones in the mails
// that server received.
//
// Leaves in test-artifacts/: logged-in.png (the logged-in page), registration-errors.png,
// refused-origin.png, verified.png, verify-by-code.png, forgot-password.png,
// reset-password.png, password-reset.png, email-changed.png, totp-enrolment.png,
// two-step-login.png, passkeys.png and authd.log.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
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

const bea = {
  name: "Bea Hopper",
  email: `bea.${process.pid}@example.com`,
  location: "Arlington",
  password: "a stapled pony horse",
};
const newPassword = "new horse battery staple";

const cy = {
  name: "Cy Twombly",
  email: `cy.${process.pid}@example.com`,
  location: "Rome",
  password: "a blackboard of loops",
};

/** The bytes of an RFC 4648 base32 string (no padding), as authenticator apps read a key. */
function base32Bytes(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  return Buffer.from(bits.match(/.{8}/g).map((byte) => parseInt(byte, 2)));
}

/** The TOTP code (RFC 6238: HMAC-SHA-1, 6 digits, 30 s) of `secret`, `steps` steps from now. */
function totp(secret, steps = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30_000) + steps));
  const mac = createHmac("sha1", base32Bytes(secret)).update(counter).digest();
  const at = mac[19] & 0xf;
  const value = ((mac[at] & 0x7f) << 24) | (mac[at + 1] << 16) | (mac[at + 2] << 8) | mac[at + 3];
  return String(value % 1_000_000).padStart(6, "0");
}

/** A handle on everything started, so that `after` can stop it whatever failed. */
const started = { servers: [], dirs: [] };
let authdUrl;
let smtp;
/** What the page's origin serves as config.json: authd's address, once it is known. */
const pageConfig = {};
let allowedOrigin;
let refusedOrigin;
/** The page's origin for passkeys: WebAuthn takes http on localhost only, never 127.0.0.1. */
let passkeyOrigin;
/** authd's passkey settings, set once the page's port is known. */
const passkeyEnv = {};
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

/** A port nothing listens on right now. */
async function freePort() {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A real SMTP server (aiosmtpd) writing each message it receives to a directory as JSON. */
async function startSmtp() {
  const dir = mkdtempSync(join(tmpdir(), "authd-web-mail-"));
  started.dirs.push(dir);
  const port = await freePort();
  const script = join(repoRoot, "tests", "api", "fixtures", "smtp_sink.py");
  const sink = spawn("python3", [script, String(port), dir], { stdio: ["pipe", "pipe", "inherit"] });
  started.smtp = sink;
  process.once("exit", () => sink.kill("SIGKILL"));
  const exited = once(sink, "exit").then(([code, signal]) => {
    throw new Error(`the SMTP server exited (${code ?? signal}): is aiosmtpd installed (pip install aiosmtpd)?`);
  });
  const [line] = await Promise.race([once(createInterface({ input: sink.stdout }), "line"), exited]);
  assert.equal(line.trim(), "ready", "the SMTP server did not start");
  return { url: `smtp://127.0.0.1:${port}`, dir };
}

/** The mails received so far, oldest first. */
function mails() {
  return readdirSync(smtp.dir)
    .filter((name) => name.endsWith(".json"))
    .sort()
    .map((name) => JSON.parse(readFileSync(join(smtp.dir, name), "utf8")));
}

/** Waits for the `n`-th mail (1-based) to `to` whose subject contains `subject`. */
async function mailTo(to, subject, n = 1) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const found = mails().filter((m) => m.to.includes(to) && m.subject.includes(subject));
    if (found.length >= n) return found[n - 1];
    if (Date.now() > deadline) throw new Error(`no mail #${n} to ${to} about ${subject} within 20 s: ${JSON.stringify(mails())}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The link to `page` in a mail's text, checked to be the same in its HTML. */
function linkIn(mail, page) {
  const link = new RegExp(`https?://\\S+/${page}\\?token=[A-Za-z0-9_-]+`).exec(mail.text)?.[0];
  assert.ok(link, `no ${page} link in: ${mail.text}`);
  assert.ok(mail.html.includes(`href="${link}"`), `the HTML part links elsewhere: ${mail.html}`);
  return link;
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
    // The links in mail open the page on the allowed origin.
    SMTP_URL: smtp.url,
    PUBLIC_URL: origins[0],
    ...passkeyEnv,
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

describe("the account page in headless Chromium, over grpc-web from another origin", { timeout: 180_000 }, () => {
  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    assert.ok(existsSync(join(pageRoot, "dist", "main.js")), "dist/main.js is missing: run `npm run build` first");
    assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: apt-get install chromium`);
    smtp = await startSmtp();
    const allowed = await serveStatic(0, pageRoot, pageConfig);
    const refused = await serveStatic();
    started.servers.push(allowed, refused);
    allowedOrigin = origin(allowed);
    refusedOrigin = origin(refused);
    passkeyOrigin = `http://localhost:${allowed.address().port}`;
    Object.assign(passkeyEnv, { WEBAUTHN_ORIGIN: passkeyOrigin, PASSKEY_LOGIN: "true" });
    authdUrl = await startAuthd([allowedOrigin, passkeyOrigin]);
    pageConfig.authd = authdUrl;

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
    started.smtp?.stdin.end();
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

  it("verifies the address from the link in the verification mail; screenshot verified.png", async () => {
    const mail = await mailTo(ada.email, "Verify your email address");
    const link = linkIn(mail, "verify-email");
    assert.ok(link.startsWith(`${allowedOrigin}/verify-email?token=`), `the link does not open the page: ${link}`);
    // Opened as from a mail: no ?authd= on it, the page finds authd in config.json. Nothing
    // is verified before the click (a mail scanner opening the link verifies nothing).
    await page.goto(link);
    await page.locator("#verify-link-button").waitFor();
    assert.equal(await page.locator("#verify-form").isVisible(), false);
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    await fill("login", { email: ada.email, password: ada.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email-verified"), "no", "opening the link verified the address");
    // No request of the page's (its script, style, config.json, the calls to authd) carries
    // the token in a Referer.
    const referers = [];
    const collect = async (request) => referers.push((await request.headerValue("referer")) ?? "");
    page.on("request", collect);
    await page.goto(link);
    const status = await statusAfter(() => page.locator("#verify-link-button").click());
    page.off("request", collect);
    assert.ok(referers.length >= 3, `${referers.length} requests seen`);
    assert.deepEqual(referers.filter((r) => r.includes("token")), [], "a Referer carried the token");
    assert.equal(status, "Your email address is verified.");
    assert.equal(page.url(), `${allowedOrigin}/`, "the token stayed in the address bar");
    assert.equal(await page.locator("#login").isVisible(), true, "the login form is not shown");
    await page.screenshot({ path: join(artifacts, "verified.png"), fullPage: true });

    await fill("login", { email: ada.email, password: ada.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email-verified"), "yes");
    assert.equal(await statusAfter(() => page.locator("#logout").click()), "Logged out.");

    // The link works once.
    await page.goto(link);
    const again = await statusAfter(() => page.locator("#verify-link-button").click());
    assert.match(again, /^Verifying the address failed: .*token: is invalid, expired or already used/);
    assert.equal(await page.locator("#verify").isVisible(), true, "the code form is not offered");
  });

  it("verifies an address by the six-digit code of the mail; screenshot verify-by-code.png", async () => {
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    await fill("register", bea);
    assert.equal(
      await statusAfter(() => page.locator("#register-form button[type=submit]").click()),
      `Account created for ${bea.email}. You can log in now.`,
    );
    const mail = await mailTo(bea.email, "Verify your email address");
    const code = /code: (\d{6})/.exec(mail.text)?.[1];
    assert.ok(code, `no code in: ${mail.text}`);
    await page.locator("#to-verify").click();
    await page.waitForURL(`${allowedOrigin}/verify-email?authd=${encodeURIComponent(authdUrl)}`);
    await fill("verify", { email: bea.email, code: code === "000000" ? "111111" : "000000" });
    const wrong = await statusAfter(() => page.locator("#verify-form button[type=submit]").click());
    assert.match(wrong, /^Verifying the address failed: please correct the highlighted fields/);
    assert.match(await fieldError("verify", "code").innerText(), /wrong/);
    await page.screenshot({ path: join(artifacts, "verify-by-code.png"), fullPage: true });
    await fill("verify", { email: bea.email, code });
    assert.equal(
      await statusAfter(() => page.locator("#verify-form button[type=submit]").click()),
      "Your email address is verified.",
    );
    await fill("login", { email: bea.email, password: bea.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email-verified"), "yes");
    assert.equal(await statusAfter(() => page.locator("#logout").click()), "Logged out.");
  });

  let resetLink;

  it("forgot password → the reset mail's link → a new password, which ends the sessions; screenshots", async () => {
    // A session opened with the old password, whose access token must be refused afterwards.
    const getMe = (request) => request.url().endsWith("/authd.v1.UserService/GetMe");
    await fill("login", { email: ada.email, password: ada.password });
    const [profileCall] = await Promise.all([
      page.waitForRequest(getMe),
      page.locator("#login-form button[type=submit]").click(),
    ]);
    await page.locator("#status", { hasText: "Logged in." }).waitFor();
    const oldAccess = (await profileCall.allHeaders()).authorization?.replace(/^Bearer /, "");
    assert.ok(oldAccess);
    assert.equal(await getMeStatusFromPage(oldAccess), "0");
    // Loading the page again forgets its tokens; the session stays open on the server.
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);

    await page.locator("#to-forgot").click();
    await page.waitForURL(`${allowedOrigin}/forgot-password?authd=${encodeURIComponent(authdUrl)}`);
    assert.equal(await page.locator("#login").isVisible(), false);
    await fill("forgot", { email: ada.email });
    const asked = await statusAfter(() => page.locator("#forgot-form button[type=submit]").click());
    assert.equal(asked, `If ${ada.email} has an account, a mail with a link to choose a new password is on its way.`);
    await page.screenshot({ path: join(artifacts, "forgot-password.png"), fullPage: true });

    const mail = await mailTo(ada.email, "Reset your password");
    resetLink = linkIn(mail, "reset-password");
    assert.ok(resetLink.startsWith(`${allowedOrigin}/reset-password?token=`), `the link does not open the page: ${resetLink}`);
    await page.goto(resetLink);
    await page.locator("#reset-form").waitFor();
    assert.equal(page.url(), `${allowedOrigin}/reset-password`, "the token stayed in the address bar");
    // The password rules, next to the field.
    await fill("reset", { new_password: "short" });
    const refused = await statusAfter(() => page.locator("#reset-form button[type=submit]").click());
    assert.match(refused, /^Setting the new password failed: please correct the highlighted fields/);
    assert.match(await fieldError("reset", "new_password").innerText(), /8/);
    await page.screenshot({ path: join(artifacts, "reset-password.png"), fullPage: true });
    await fill("reset", { new_password: newPassword });
    const done = await statusAfter(() => page.locator("#reset-form button[type=submit]").click());
    assert.equal(done, "Your password was changed and every session of your account ended. Log in with the new password.");
    assert.equal(await page.locator("#login").isVisible(), true, "the login form is not shown");
    await page.screenshot({ path: join(artifacts, "password-reset.png"), fullPage: true });

    // The old password is refused, the new one logs in; the session opened before is over.
    await fill("login", { email: ada.email, password: ada.password });
    assert.match(
      await statusAfter(() => page.locator("#login-form button[type=submit]").click()),
      /Logging in failed: Invalid credentials/,
    );
    await fill("login", { email: ada.email, password: newPassword });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email"), ada.email);
    assert.equal(await getMeStatusFromPage(oldAccess), "16"); // UNAUTHENTICATED
    assert.equal(await statusAfter(() => page.locator("#logout").click()), "Logged out.");
  });

  it("refuses a reset link used once already", async () => {
    await page.goto(resetLink);
    await fill("reset", { new_password: "yet another horse battery" });
    const status = await statusAfter(() => page.locator("#reset-form button[type=submit]").click());
    assert.match(status, /^Setting the new password failed: .*token: is invalid, expired or already used/);
    assert.equal(await page.locator("#reset").isVisible(), true);
    // The password stays the one set before.
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    await fill("login", { email: ada.email, password: "yet another horse battery" });
    assert.match(
      await statusAfter(() => page.locator("#login-form button[type=submit]").click()),
      /Logging in failed: Invalid credentials/,
    );
  });

  it("changes the address: the link in the mail to the new one confirms it; screenshot email-changed.png", async () => {
    const newEmail = `bea.new.${process.pid}@example.com`;
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    assert.equal(await page.locator("#change-email-form").isVisible(), false, "offered while logged out");
    await fill("login", { email: bea.email, password: bea.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    await fill("change-email", { new_email: newEmail, current_password: "not the password" });
    const wrong = await statusAfter(() => page.locator("#change-email-form button[type=submit]").click());
    assert.match(wrong, /^Changing the email address failed: please correct the highlighted fields/);
    assert.notEqual(await fieldError("change-email", "current_password").innerText(), "");
    await fill("change-email", { new_email: newEmail, current_password: bea.password });
    assert.equal(
      await statusAfter(() => page.locator("#change-email-form button[type=submit]").click()),
      `A link to confirm the change is on its way to ${newEmail}; nothing changes until it is opened.`,
    );
    // The current address hears of it; the link goes to the new one.
    await mailTo(bea.email, "A change of your email address was asked for");
    const link = linkIn(await mailTo(newEmail, "Confirm your new email address"), "confirm-email-change");
    assert.ok(link.startsWith(`${allowedOrigin}/confirm-email-change?token=`), `the link does not open the page: ${link}`);
    // Opened in the same tab, as from a mail: the page forgets its session (which stays live).
    // Opening alone confirms nothing.
    await page.goto(link);
    await page.locator("#confirm-button").waitFor();
    const confirmed = await statusAfter(() => page.locator("#confirm-button").click());
    assert.equal(confirmed, "Your new email address is confirmed, and 0 other sessions of your account ended. Log in with it.");
    assert.equal(page.url(), `${allowedOrigin}/`, "the token stayed in the address bar");
    await page.screenshot({ path: join(artifacts, "email-changed.png"), fullPage: true });

    await fill("login", { email: bea.email, password: bea.password });
    assert.match(
      await statusAfter(() => page.locator("#login-form button[type=submit]").click()),
      /Logging in failed: Invalid credentials/,
    );
    await fill("login", { email: newEmail, password: bea.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email"), newEmail);
    assert.equal(await text("#profile-email-verified"), "yes");
  });

  it("takes no authd address but a loopback one from its URL, so a link cannot send passwords elsewhere", async () => {
    const elsewhere = "https://authd.evil.example";
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(elsewhere)}`);
    await page.locator("#status:not(:empty)").waitFor();
    assert.equal(await text("#status"), `Ignored ?authd=${elsewhere}: the page takes only an address on this machine from its URL.`);
    assert.equal(await text("#authd-url"), authdUrl, "not the configured authd");
    const calls = [];
    page.on("request", (request) => calls.push(request.url()));
    await fill("login", { email: ada.email, password: "typed into a phishing link" });
    const status = await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    assert.match(status, /Logging in failed: Invalid credentials/);
    assert.ok(calls.every((url) => !url.startsWith(elsewhere)), `the page called ${elsewhere}`);
    assert.ok(calls.some((url) => url.startsWith(`${authdUrl}/authd.v1.AuthService/Login`)), `${calls}`);
  });

  it("turns on two-step login with an authenticator app, then asks for its code; screenshots", async () => {
    await page.goto(`${allowedOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
    await fill("register", cy);
    assert.match(await statusAfter(() => page.locator("#register-form button[type=submit]").click()), /Account created/);
    await fill("login", { email: cy.email, password: cy.password });
    assert.equal(await statusAfter(() => page.locator("#login-form button[type=submit]").click()), "Logged in.");

    // Adding a factor takes the password.
    await fill("enroll-totp", { password: cy.password });
    const enrolled = await statusAfter(() => page.locator("#enroll-totp").click());
    assert.equal(enrolled, "Scan the QR code, then give the app's code.");
    const qrShown = await page.locator("#totp-qr").evaluate((img) => img.complete && img.naturalWidth > 0);
    assert.ok(qrShown, "the QR code did not render");
    const secret = await text("#totp-secret");
    assert.match(secret, /^[A-Z2-7]{32}$/);
    await page.screenshot({ path: join(artifacts, "totp-enrolment.png"), fullPage: true });
    const wrong = totp(secret) === "000000" ? "111111" : "000000";
    await fill("activate-totp", { code: wrong });
    const refused = await statusAfter(() => page.locator("#activate-totp-form button[type=submit]").click());
    assert.match(refused, /Turning on two-step login failed/);
    assert.equal(await fieldError("activate-totp", "code").innerText(), "is incorrect");
    await fill("activate-totp", { code: totp(secret) });
    const on = await statusAfter(() => page.locator("#activate-totp-form button[type=submit]").click());
    assert.equal(on, "Two-step login is on; 0 other sessions of your account ended.");
    const codes = await page.locator("#recovery-codes-list li").allInnerTexts();
    assert.equal(codes.length, 10);
    assert.ok(codes.every((code) => /^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/.test(code)), `${codes}`);
    assert.equal(await statusAfter(() => page.locator("#show-profile").click()), "Profile loaded.", "the new session works");

    await statusAfter(() => page.locator("#logout").click());
    await fill("login", { email: cy.email, password: cy.password });
    const asked = await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    assert.equal(asked, "Password accepted. Give the code of your authenticator app.");
    assert.equal(await text("#session"), "Not logged in.");
    assert.ok(await page.locator("#second-factor-form").isVisible());
    await fill("second-factor", { code: wrong });
    const wrongCode = await statusAfter(() => page.locator("#second-factor-form button[type=submit]").click());
    assert.equal(wrongCode, "Logging in failed: the code is incorrect.");
    // The next step's code: the activation used this one's.
    await fill("second-factor", { code: totp(secret, 1) });
    assert.equal(await statusAfter(() => page.locator("#second-factor-form button[type=submit]").click()), "Logged in.");
    assert.equal(await text("#profile-email"), cy.email);
    assert.equal(await page.locator("#second-factor-form").isVisible(), false);
    await page.screenshot({ path: join(artifacts, "two-step-login.png"), fullPage: true });

    // A recovery code works once, typed into the same field.
    await statusAfter(() => page.locator("#logout").click());
    await fill("login", { email: cy.email, password: cy.password });
    await statusAfter(() => page.locator("#login-form button[type=submit]").click());
    await fill("second-factor", { code: codes[0] });
    assert.equal(await statusAfter(() => page.locator("#second-factor-form button[type=submit]").click()), "Logged in.");
  });

  // Passkeys: Chromium's virtual authenticator (the DevTools WebAuthn domain) holds the passkey,
  // with a resident key and user verification, on a page of the localhost origin.
  it("enrols a passkey, then logs in with password and passkey, and with the passkey alone; passkeys.png", async () => {
    const dee = { name: "Dee Passkey", email: `dee.${process.pid}@example.com`, location: "Paris", password: "a lattice of quiet ferns" };
    const response = await fetch(`${authdUrl}/api/v1/register-user`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(dee),
    });
    assert.equal(response.status, 201, await response.text());
    const tab = await started.browser.newPage();
    const cdp = await started.browser.newCDPSession(tab);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        ctap2Version: "ctap2_1",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    const previous = page;
    page = tab;
    try {
      await tab.goto(`${passkeyOrigin}/?authd=${encodeURIComponent(authdUrl)}`);
      const logIn = async () => {
        await fill("login", { email: dee.email, password: dee.password });
        return statusAfter(() => tab.locator("#login-form button[type=submit]").click());
      };
      assert.equal(await logIn(), "Logged in.");

      // Enrolment: the password again, then the authenticator makes a resident passkey.
      await fill("passkey", { name: "Virtual key", password: dee.password });
      const added = await statusAfter(() => tab.locator("#passkey-form button[type=submit]").click());
      assert.match(added, /^Passkey added; other sessions ended\. Your recovery codes \(shown once\): (\S+ ){9}\S+$/);
      assert.equal(await text("#session-amr"), "Signed in with: pwd, hwk");
      const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
      assert.equal(credentials.length, 1);
      assert.equal(credentials[0].isResidentCredential, true, "the passkey is not discoverable");
      assert.equal(credentials[0].rpId, "localhost");
      const countAfterEnrolment = credentials[0].signCount;

      assert.equal(await statusAfter(() => tab.locator("#logout").click()), "Logged out.");
      // The password alone no longer logs in: the page offers the passkey for the challenge.
      assert.equal(await logIn(), "Password accepted. Give the code of your authenticator app, or use your passkey.");
      assert.equal(await text("#session"), "Not logged in.");
      const answered = await statusAfter(() => tab.locator("#passkey-answer").click());
      assert.equal(answered, "Logged in with your password and your passkey.");
      assert.equal(await text("#session-amr"), "Signed in with: pwd, hwk");
      assert.equal(await text("#profile-email"), dee.email);

      assert.equal(await statusAfter(() => tab.locator("#logout").click()), "Logged out.");
      const alone = await statusAfter(() => tab.locator("#passkey-login").click());
      assert.equal(alone, "Logged in with your passkey.");
      assert.equal(await text("#session-amr"), "Signed in with: hwk");
      assert.equal(await text("#profile-email"), dee.email);
      const after = (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials[0];
      assert.ok(after.signCount > countAfterEnrolment, `the counter did not move: ${after.signCount}`);
      await tab.screenshot({ path: join(artifacts, "passkeys.png"), fullPage: true });
    } finally {
      page = previous;
      await tab.close();
    }
  });
});
