// Server-only helpers shared by the login and logout route handlers. Nothing here is imported by
// client code: the token exists in this process, in the backend, and in the browser's cookie jar,
// never in a script the page runs.
import type { NextRequest } from "next/server";

/** Where the backend API listens (the seed's BACKEND_URL). Server-side only. */
export const BACKEND_URL = process.env.BACKEND_URL ?? "http://127.0.0.1:8000";

/** The httpOnly session cookie cookiegate reads (its routes' `cookie = "auth_token"`). */
export const SESSION_COOKIE = "auth_token";

/** A readable cookie with the user's name, so the page shows `document.cookie` is not empty. */
export const HINT_COOKIE = "signed_in_as";

/**
 * `Secure` when the browser reached us over https: directly, or through a TLS-terminating proxy
 * that says so in `X-Forwarded-Proto`. COOKIE_SECURE=1 forces it (recommended in production).
 * Over plain http a Secure cookie would be dropped by the browser, so it is left off there.
 */
export function isHttps(request: NextRequest): boolean {
  if (process.env.COOKIE_SECURE === "1") return true;
  const forwarded = request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim();
  return (forwarded ?? request.nextUrl.protocol.replace(/:$/, "")) === "https";
}

/**
 * Refuses login and logout posted by another site or origin (login CSRF would sign the victim in
 * as the attacker). Browsers attach `Origin` to every cross-origin POST; it must name the host the
 * browser asked for, which a proxy in front (cookiegate, or any other) passes as
 * `X-Forwarded-Host`.
 */
export function isSameOrigin(request: NextRequest): boolean {
  const site = request.headers.get("sec-fetch-site");
  if (site && site !== "same-origin" && site !== "none") return false;
  const origin = request.headers.get("origin");
  if (!origin) return true;
  let originHost: string;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    return false; // "null" and other opaque origins
  }
  const hosts = [request.headers.get("x-forwarded-host"), request.headers.get("host")]
    .filter((h): h is string => !!h)
    .map((h) => h.split(",")[0].trim().toLowerCase());
  return hosts.includes(originHost);
}
