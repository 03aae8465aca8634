// The account page: register, log in, see the profile, refresh the session, log out, all
// over grpc-web from another origin than authd's. Tokens live in this module's memory only
// (never in storage), so closing or reloading the page forgets them.
//
// The same page has a view per link that authd mails (PUBLIC_URL set to where the page is
// served): /verify-email?token=… verifies (or takes the mail's six-digit code),
// /reset-password?token=… sets a new password, /confirm-email-change?token=… confirms a new
// address, and /forgot-password asks for a reset mail. The path picks the view. A link's
// token is used on a click, never on opening: mail scanners follow links, and some run
// their scripts; one must not verify an address, or confirm a change, for whoever asked.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AuthService, type TokenResponse } from "./gen/authd/v1/auth_pb.js";
import { FactorService } from "./gen/authd/v1/factors_pb.js";
import { UserService, type User } from "./gen/authd/v1/user_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

const views = ["forgot-password", "reset-password", "verify-email", "confirm-email-change"] as const;
type View = "home" | (typeof views)[number];
const isView = (name: string): name is View => name === "home" || (views as readonly string[]).includes(name);

const here = new URL(location.href);
const lastSegment = here.pathname.split("/").pop() ?? "";
let view: View = isView(lastSegment) ? lastSegment : "home";
/** Where the views live: the page's directory (`/` for `/verify-email`, `/` or `/account/`). */
const base = new URL(".", here);
/** Whether `url` is an http(s) address on this machine. */
function isLoopback(url: string): boolean {
  try {
    const { protocol, hostname } = new URL(url);
    return /^https?:$/.test(protocol) && ["127.0.0.1", "localhost", "[::1]"].includes(hostname);
  } catch {
    return false;
  }
}
// `?authd=` is taken only for an authd on this machine (trying the page by hand, the test):
// anyone can write a link to the page, and one with `?authd=https://elsewhere` would have the
// page send the passwords typed into it there.
const askedAuthd = here.searchParams.get("authd");
/** `?authd=` as given on the page's URL, if taken; kept on the links between views. */
const givenAuthd = askedAuthd !== null && isLoopback(askedAuthd) ? askedAuthd : null;

// A token from a mail's link is read once and dropped from the address at once, so that it
// stays out of the history, bookmarks and any Referer (index.html also sets no-referrer).
const linkToken = here.searchParams.get("token") ?? "";
if (here.searchParams.has("token")) {
  here.searchParams.delete("token");
  history.replaceState(null, "", here);
}

/** authd's address from config.json beside the page (`{"authd": "http://host:port"}`), if any. */
async function configuredAuthd(): Promise<string | undefined> {
  try {
    const response = await fetch(new URL("config.json", base), { cache: "no-store" });
    if (!response.ok) return undefined;
    const config: unknown = await response.json();
    const url = (config as { authd?: unknown } | null)?.authd;
    return typeof url === "string" && url ? url : undefined;
  } catch {
    return undefined;
  }
}

/**
 * authd's address: `?authd=http://127.0.0.1:port` on the page's URL (a loopback address
 * only), else config.json's (a link from a mail carries no `?authd=`), else authd's default.
 */
const authdUrl = givenAuthd ?? (await configuredAuthd()) ?? "http://127.0.0.1:8000";
const transport = createGrpcWebTransport({ baseUrl: authdUrl, defaultTimeoutMs: 15_000 });
const users = createClient(UserService, transport);
const auth = createClient(AuthService, transport);
const factors = createClient(FactorService, transport);

let tokens: TokenResponse | undefined;
/** The challenge of a login whose password was right, waiting for its second factor. */
let challenge: string | undefined;
/** The TOTP enrolment waiting for its first code. */
let enrolledFactor: string | undefined;

const byId = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as T;
};
const registerForm = byId<HTMLFormElement>("register-form");
const loginForm = byId<HTMLFormElement>("login-form");
const showProfileButton = byId<HTMLButtonElement>("show-profile");
const refreshButton = byId<HTMLButtonElement>("refresh");
const logoutButton = byId<HTMLButtonElement>("logout");
const forgotForm = byId<HTMLFormElement>("forgot-form");
const resetForm = byId<HTMLFormElement>("reset-form");
const verifyForm = byId<HTMLFormElement>("verify-form");
const resendButton = byId<HTMLButtonElement>("resend");
const changeEmailForm = byId<HTMLFormElement>("change-email-form");
const verifyLink = byId("verify-link");
const confirmButton = byId<HTMLButtonElement>("confirm-button");
const secondFactorForm = byId<HTMLFormElement>("second-factor-form");
const enrollTotpForm = byId<HTMLFormElement>("enroll-totp-form");
const activateTotpForm = byId<HTMLFormElement>("activate-totp-form");

/** The address of `target`'s view, keeping `?authd=` when the page was given one. */
function viewUrl(target: View): URL {
  const url = new URL(target === "home" ? "." : target, base);
  if (givenAuthd) url.searchParams.set("authd", givenAuthd);
  return url;
}

for (const link of document.querySelectorAll<HTMLAnchorElement>("a[data-view]")) {
  const target = link.dataset.view ?? "";
  if (isView(target)) link.href = viewUrl(target).href;
}

/** Moves to `target`'s view without loading the page again (the tokens in memory stay). */
function showView(target: View): void {
  view = target;
  history.replaceState(null, "", viewUrl(target));
  showSession();
}

byId("authd-url").textContent = authdUrl;

function say(message: string, kind: "ok" | "error"): void {
  const status = byId("status");
  status.textContent = message;
  status.className = kind;
}

function bearer(): HeadersInit {
  return tokens ? { authorization: `${tokens.tokenType || "Bearer"} ${tokens.accessToken}` } : {};
}

function field(form: HTMLFormElement, name: string): string {
  const control = form.elements.namedItem(name);
  return control instanceof HTMLInputElement || control instanceof HTMLTextAreaElement ? control.value : "";
}

function clearFieldErrors(form: HTMLFormElement): void {
  for (const slot of form.querySelectorAll<HTMLElement>(".field-error")) {
    slot.textContent = "";
    const control = form.elements.namedItem(slot.dataset.field ?? "");
    if (control instanceof HTMLElement) control.removeAttribute("aria-invalid");
  }
}

/** Shows `message` under the form's control named `name`; false when the form has none. */
function showFieldError(form: HTMLFormElement, name: string, message: string): boolean {
  const slot = form.querySelector<HTMLElement>(`.field-error[data-field="${CSS.escape(name)}"]`);
  const control = form.elements.namedItem(name);
  if (!slot || !(control instanceof HTMLElement)) return false;
  slot.textContent = message;
  slot.id ||= `${form.id}-${name}-error`;
  control.setAttribute("aria-invalid", "true");
  control.setAttribute("aria-describedby", slot.id);
  return true;
}

/** Turns any failure into what a person can act on; field errors go next to their fields. */
function showError(action: string, reason: unknown, form?: HTMLFormElement): void {
  const error = ConnectError.from(reason);
  if (error.code === Code.InvalidArgument && form) {
    // authd names each bad field in a google.rpc.BadRequest detail, one violation per field.
    const violations = error.findDetails(BadRequestSchema).flatMap((detail) => detail.fieldViolations);
    const unplaced = violations.filter((v) => !showFieldError(form, v.field, v.description));
    if (violations.length > 0) {
      const rest = unplaced.map((v) => `${v.field}: ${v.description}`).join("; ");
      // Nothing highlighted (a bad token from a link is no field of the form): just say why.
      const ask = unplaced.length < violations.length ? " please correct the highlighted fields." : "";
      say(`${action} failed:${ask}${rest ? ` ${rest}` : ""}`, "error");
      return;
    }
  }
  if (error.code === Code.AlreadyExists && form && showFieldError(form, "email", error.rawMessage)) {
    say(`${action} failed: ${error.rawMessage}`, "error");
    return;
  }
  if (error.code === Code.Unknown && error.cause instanceof TypeError) {
    // fetch() rejects without detail when the network fails or CORS refuses this origin.
    say(
      `${action} failed: could not reach authd at ${authdUrl} (it is down, or it does not allow ` +
        `this page's origin ${location.origin}; see CORS_ALLOWED_ORIGINS).`,
      "error",
    );
    return;
  }
  const hint = error.code === Code.Unauthenticated ? " (log in again)" : "";
  say(`${action} failed: ${error.rawMessage || Code[error.code]}${hint}`, "error");
}

function showSession(): void {
  const session = byId("session");
  session.textContent = tokens
    ? `Logged in. The access token is valid for ${Math.round(Number(tokens.expiresIn) / 60)} minutes.`
    : "Not logged in.";
  refreshButton.disabled = !tokens;
  changeEmailForm.hidden = !tokens;
  if (!tokens) clearFieldErrors(changeEmailForm);
  byId("factors").hidden = !tokens;
  if (!tokens) {
    byId("totp-enrolment").hidden = true;
    byId("recovery-codes").hidden = true;
  }
  secondFactorForm.hidden = Boolean(tokens) || !challenge;
  logoutButton.disabled = !tokens;
  // Each section shows in its view; logged in, the login and registration forms are no use:
  // hide them, and whatever they last complained about.
  for (const section of document.querySelectorAll<HTMLElement>("section[data-views]")) {
    section.hidden = !(section.dataset.views ?? "").split(" ").includes(view);
  }
  for (const form of [loginForm, registerForm]) {
    const section = byId(form.id.replace(/-form$/, ""));
    section.hidden ||= Boolean(tokens);
    if (tokens) clearFieldErrors(form);
  }
  showPasskeys();
}

function showProfile(user: User | undefined): void {
  byId("profile").hidden = !user;
  const text = (id: string, value: string) => (byId(id).textContent = value);
  text("profile-name", user?.name ?? "");
  text("profile-email", user?.email ?? "");
  text("profile-email-verified", user ? (user.emailVerified ? "yes" : "no") : "");
  text("profile-location", user?.location ?? "");
  text("profile-about", user?.about ?? "—");
  text("profile-user-id", user ? String(user.userId) : "");
  text("profile-created-at", user?.createdAt ? timestampDate(user.createdAt).toLocaleString() : "");
}

async function loadProfile(): Promise<boolean> {
  try {
    showProfile(await users.getMe({}, { headers: bearer() }));
    return true;
  } catch (reason) {
    showProfile(undefined);
    showError("Showing the profile", reason);
    return false;
  }
}

registerForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(registerForm);
  const about = field(registerForm, "about");
  try {
    const { user } = await users.registerUser({
      name: field(registerForm, "name"),
      email: field(registerForm, "email"),
      location: field(registerForm, "location"),
      about: about.trim() ? about : undefined,
      password: field(registerForm, "password"),
    });
    registerForm.reset();
    byId<HTMLInputElement>("login-email").value = user?.email ?? "";
    say(`Account created for ${user?.email ?? "you"}. You can log in now.`, "ok");
  } catch (reason) {
    showError("Registration", reason, registerForm);
  }
});

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(loginForm);
  try {
    tokens = await auth.login({ email: field(loginForm, "email"), password: field(loginForm, "password") });
    loginForm.reset();
    showSession();
    if (await loadProfile()) say("Logged in.", "ok");
  } catch (reason) {
    // The right password of an account with two-step login: a challenge, to answer with a code.
    const error = ConnectError.from(reason);
    const info = error.findDetails(ErrorInfoSchema).find((i) => i.reason === "SECOND_FACTOR_REQUIRED");
    if (error.code === Code.Unauthenticated && info?.metadata.challenge) {
      challenge = info.metadata.challenge;
      loginForm.reset();
      showSession();
      byId<HTMLInputElement>("second-factor-code").focus();
      passkeyMethods = (info.metadata.methods ?? "").split(",");
      showPasskeys();
      const orPasskey = passkeyMethods.includes("passkey") ? ", or use your passkey" : "";
      say(`Password accepted. Give the code of your authenticator app${orPasskey}.`, "ok");
      return;
    }
    showError("Logging in", reason, loginForm);
  }
});

secondFactorForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(secondFactorForm);
  if (!challenge) return;
  const code = field(secondFactorForm, "code").trim();
  // Six digits are the app's code; anything else is taken for a recovery code.
  const answer = /^\d{3} ?\d{3}$/.test(code)
    ? { case: "totpCode" as const, value: code }
    : { case: "recoveryCode" as const, value: code };
  try {
    tokens = await auth.completeLogin({ challenge, answer });
    challenge = undefined;
    secondFactorForm.reset();
    showSession();
    if (await loadProfile()) say("Logged in.", "ok");
  } catch (reason) {
    const error = ConnectError.from(reason);
    if (error.code === Code.InvalidArgument) {
      // The code's field is `totp_code` or `recovery_code`: this form has one field for both.
      const why = error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations)[0]?.description;
      showFieldError(secondFactorForm, "code", why ?? error.rawMessage);
      say(`Logging in failed: the code ${why ?? "is refused"}.`, "error");
      return;
    }
    if (error.code === Code.Unauthenticated) {
      // The challenge expired or was used up: start over with the password.
      challenge = undefined;
      showSession();
    }
    showError("Logging in", reason);
  }
});

enrollTotpForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(enrollTotpForm);
  try {
    // Adding a factor takes the password (authd asks a user who has one for a recent proof
    // with it instead: a login with it within 10 minutes serves).
    const password = field(enrollTotpForm, "password");
    const enrolment = await factors.enrollTotp({ name: "", password }, { headers: bearer() });
    enrollTotpForm.reset();
    enrolledFactor = enrolment.factorId;
    // The SVG as an image: its markup is never put into the page.
    byId<HTMLImageElement>("totp-qr").src = `data:image/svg+xml;base64,${btoa(enrolment.qrSvg)}`;
    byId("totp-secret").textContent = enrolment.secret;
    byId("totp-enrolment").hidden = false;
    byId("recovery-codes").hidden = true;
    say("Scan the QR code, then give the app's code.", "ok");
  } catch (reason) {
    showError("Setting up the authenticator", reason, enrollTotpForm);
  }
});

activateTotpForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(activateTotpForm);
  if (!enrolledFactor) return;
  try {
    const activated = await factors.activateTotp(
      { factorId: enrolledFactor, code: field(activateTotpForm, "code") },
      { headers: bearer() },
    );
    // Every session of the account ended, this one too: go on with the new one's tokens.
    tokens = activated.tokens;
    enrolledFactor = undefined;
    activateTotpForm.reset();
    byId("totp-enrolment").hidden = true;
    const list = byId("recovery-codes-list");
    list.replaceChildren(
      ...activated.recoveryCodes.map((code) => {
        const item = document.createElement("li");
        item.textContent = code;
        return item;
      }),
    );
    byId("recovery-codes").hidden = activated.recoveryCodes.length === 0;
    showSession();
    say(`Two-step login is on; ${activated.sessionsEnded} other sessions of your account ended.`, "ok");
  } catch (reason) {
    showError("Turning on two-step login", reason, activateTotpForm);
  }
});

showProfileButton.addEventListener("click", async () => {
  if (await loadProfile()) say("Profile loaded.", "ok");
});

refreshButton.addEventListener("click", async () => {
  if (!tokens) return;
  try {
    tokens = await auth.refreshToken({ refreshToken: tokens.refreshToken });
    showSession();
    say("Session refreshed: new access and refresh tokens.", "ok");
  } catch (reason) {
    // A refused refresh token ends the session for good: forget it.
    tokens = undefined;
    showSession();
    showError("Refreshing the session", reason);
  }
});

logoutButton.addEventListener("click", async () => {
  try {
    await auth.logout({}, { headers: bearer() });
    say("Logged out.", "ok");
  } catch (reason) {
    showError("Logging out", reason);
  } finally {
    tokens = undefined;
    challenge = undefined;
    showSession();
    showProfile(undefined);
  }
});

forgotForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(forgotForm);
  const email = field(forgotForm, "email");
  try {
    // The same answer whether the address has an account or not.
    await auth.requestPasswordReset({ email });
    forgotForm.reset();
    say(`If ${email.trim()} has an account, a mail with a link to choose a new password is on its way.`, "ok");
  } catch (reason) {
    showError("Asking for a reset link", reason, forgotForm);
  }
});

changeEmailForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(changeEmailForm);
  const newEmail = field(changeEmailForm, "new_email");
  try {
    await users.changeEmail(
      { newEmail, currentPassword: field(changeEmailForm, "current_password") },
      { headers: bearer() },
    );
    changeEmailForm.reset();
    say(`A link to confirm the change is on its way to ${newEmail.trim()}; nothing changes until it is opened.`, "ok");
  } catch (reason) {
    showError("Changing the email address", reason, changeEmailForm);
  }
});

const noResetToken = "This page works from the link in a password reset mail: ask for a new one.";

resetForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(resetForm);
  if (!linkToken) {
    say(noResetToken, "error");
    return;
  }
  try {
    await auth.resetPassword({ token: linkToken, newPassword: field(resetForm, "new_password") });
    resetForm.reset();
    tokens = undefined;
    showProfile(undefined);
    showView("home");
    say("Your password was changed and every session of your account ended. Log in with the new password.", "ok");
  } catch (reason) {
    showError("Setting the new password", reason, resetForm);
  }
});

/** Runs a verification; on success, back to the account page saying so. */
async function verify(how: () => Promise<unknown>): Promise<void> {
  try {
    await how();
    verifyForm.reset();
    showView("home");
    say("Your email address is verified.", "ok");
  } catch (reason) {
    // A spent or expired link: the code, or a new mail, is what is left.
    verifyLink.hidden = true;
    verifyForm.hidden = false;
    showError("Verifying the address", reason, verifyForm);
  }
}

byId("verify-link-button").addEventListener("click", () => verify(() => users.verifyEmail({ token: linkToken })));

verifyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(verifyForm);
  const email = field(verifyForm, "email");
  await verify(() => users.verifyEmail({ email, code: field(verifyForm, "code").trim() }));
});

resendButton.addEventListener("click", async () => {
  clearFieldErrors(verifyForm);
  const email = field(verifyForm, "email");
  try {
    await users.resendVerificationEmail({ email });
    say(`If ${email.trim()} has an account not verified yet, a new mail is on its way.`, "ok");
  } catch (reason) {
    showError("Sending a new mail", reason, verifyForm);
  }
});

async function confirmEmailChange(): Promise<void> {
  try {
    const { sessionsEnded } = await users.confirmEmailChange({ token: linkToken });
    showView("home");
    const ended = sessionsEnded === 1n ? "1 other session" : `${sessionsEnded} other sessions`;
    say(`Your new email address is confirmed, and ${ended} of your account ended. Log in with it.`, "ok");
  } catch (reason) {
    showError("Confirming the new address", reason);
  }
}

confirmButton.addEventListener("click", confirmEmailChange);

// --- Passkeys (WebAuthn) ---------------------------------------------------------------------
// authd sends webauthn-rs's options as JSON ({"publicKey": {...}}), which the browser parses
// with PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON; the
// credential goes back as JSON.stringify(credential.toJSON()).

const passkeyForm = byId<HTMLFormElement>("passkey-form");
const passkeyChallenge = byId("passkey-challenge");
/** What may answer the login's `challenge` (its `methods`), while one waits. */
let passkeyMethods: string[] = [];

const webauthnJson = PublicKeyCredential as unknown as {
  parseCreationOptionsFromJSON(options: unknown): PublicKeyCredentialCreationOptions;
  parseRequestOptionsFromJSON(options: unknown): PublicKeyCredentialRequestOptions;
};

function credentialJson(credential: Credential | null): string {
  if (!credential) throw new Error("the browser gave no passkey");
  return JSON.stringify((credential as unknown as { toJSON(): unknown }).toJSON());
}

async function createPasskey(optionsJson: string): Promise<string> {
  const { publicKey } = JSON.parse(optionsJson) as { publicKey: unknown };
  return credentialJson(await navigator.credentials.create({ publicKey: webauthnJson.parseCreationOptionsFromJSON(publicKey) }));
}

async function getPasskey(optionsJson: string): Promise<string> {
  const { publicKey } = JSON.parse(optionsJson) as { publicKey: unknown };
  return credentialJson(await navigator.credentials.get({ publicKey: webauthnJson.parseRequestOptionsFromJSON(publicKey) }));
}

/** What the session's access token says it proved (its `amr`, RFC 8176), shown on the page. */
function showPasskeys(): void {
  passkeyForm.hidden = !tokens;
  byId("passkey-login").hidden = Boolean(tokens);
  passkeyChallenge.hidden = Boolean(tokens) || !challenge || !passkeyMethods.includes("passkey");
  let amr: string[] = [];
  try {
    const payload = tokens?.accessToken.split(".")[1];
    if (payload) amr = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))).amr ?? [];
  } catch {
    amr = [];
  }
  byId("session-amr").textContent = tokens ? `Signed in with: ${amr.join(", ")}` : "";
}

async function signedInWith(tokensGot: TokenResponse | undefined, message: string): Promise<void> {
  tokens = tokensGot;
  challenge = undefined;
  passkeyMethods = [];
  loginForm.reset();
  showSession();
  if (await loadProfile()) say(message, "ok");
}

byId("passkey-answer").addEventListener("click", async () => {
  const answering = challenge;
  if (!answering) return;
  try {
    const { optionsJson } = await auth.startPasskeyChallenge({ challenge: answering });
    const credential = await getPasskey(optionsJson);
    const answer = { case: "passkeyCredential" as const, value: credential };
    const got = await auth.completeLogin({ challenge: answering, answer });
    await signedInWith(got, "Logged in with your password and your passkey.");
  } catch (reason) {
    showError("Answering with the passkey", reason);
  }
});

byId("passkey-login").addEventListener("click", async () => {
  try {
    const { ceremonyId, optionsJson } = await auth.startPasskeyLogin({});
    const credential = await getPasskey(optionsJson);
    await signedInWith(await auth.finishPasskeyLogin({ ceremonyId, credential }), "Logged in with your passkey.");
  } catch (reason) {
    showError("Logging in with a passkey", reason);
  }
});

passkeyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(passkeyForm);
  try {
    const { optionsJson } = await factors.startPasskeyRegistration(
      { password: field(passkeyForm, "password") },
      { headers: bearer() },
    );
    const credential = await createPasskey(optionsJson);
    const added = await factors.finishPasskeyRegistration(
      { name: field(passkeyForm, "name"), credential },
      { headers: bearer() },
    );
    passkeyForm.reset();
    // Adding a factor ends every session: go on in the new one.
    tokens = added.tokens;
    showSession();
    const codes = added.recoveryCodes.length ? ` Your recovery codes (shown once): ${added.recoveryCodes.join(" ")}` : "";
    say(`Passkey added; other sessions ended.${codes}`, "ok");
  } catch (reason) {
    showError("Adding a passkey", reason, passkeyForm);
  }
});

showSession();
// Opened from a link, a view offers its button; without the link's token it says where to get one.
verifyLink.hidden = !linkToken;
verifyForm.hidden = Boolean(linkToken);
confirmButton.hidden = !linkToken;
if (view === "confirm-email-change" && !linkToken) {
  say("This page works from the link in the mail sent to the new address.", "error");
} else if (view === "reset-password" && !linkToken) {
  say(noResetToken, "error");
}
if (askedAuthd !== null && !givenAuthd) {
  say(`Ignored ?authd=${askedAuthd}: the page takes only an address on this machine from its URL.`, "error");
}
