// The account page: register, log in, see the profile, refresh the session, log out, all
// over grpc-web from another origin than authd's. Tokens live in this module's memory only
// (never in storage), so closing or reloading the page forgets them.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AuthService, type TokenResponse } from "./gen/authd/v1/auth_pb.js";
import { UserService, type User } from "./gen/authd/v1/user_pb.js";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

/** authd's address: `?authd=http://host:port` on the page's URL, else authd's default. */
const authdUrl = new URL(location.href).searchParams.get("authd") ?? "http://127.0.0.1:8000";
const transport = createGrpcWebTransport({ baseUrl: authdUrl, defaultTimeoutMs: 15_000 });
const users = createClient(UserService, transport);
const auth = createClient(AuthService, transport);

let tokens: TokenResponse | undefined;

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
      say(`${action} failed: please correct the highlighted fields.${rest ? ` ${rest}` : ""}`, "error");
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
  logoutButton.disabled = !tokens;
  // Logged in, the forms are no use: hide them, and whatever they last complained about.
  for (const form of [loginForm, registerForm]) {
    byId(form.id.replace(/-form$/, "")).hidden = Boolean(tokens);
    if (tokens) clearFieldErrors(form);
  }
}

function showProfile(user: User | undefined): void {
  byId("profile").hidden = !user;
  const text = (id: string, value: string) => (byId(id).textContent = value);
  text("profile-name", user?.name ?? "");
  text("profile-email", user?.email ?? "");
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
    showError("Logging in", reason, loginForm);
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
    showSession();
    showProfile(undefined);
  }
});

showSession();
