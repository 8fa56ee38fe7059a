// POST /api/auth/login: what a Better Auth or Auth.js callback does. The credentials go to the
// backend server to server; the token it issues goes straight into an httpOnly cookie and is never
// part of a response body the page could read.
import { NextRequest, NextResponse } from "next/server";
import { BACKEND_URL, HINT_COOKIE, SESSION_COOKIE, isHttps, isSameOrigin } from "@/lib/session";

type TokenResponse = { access_token: string; token_type: string; expires_in: number };

export async function POST(request: NextRequest) {
  if (!isSameOrigin(request)) {
    return NextResponse.json({ error: "cross-origin login refused" }, { status: 403 });
  }
  const input = (await request.json().catch(() => null)) as
    | { username?: unknown; password?: unknown }
    | null;
  const username = typeof input?.username === "string" ? input.username : "";
  const password = typeof input?.password === "string" ? input.password : "";

  let issued: Response;
  try {
    issued = await fetch(new URL("/auth/token", BACKEND_URL), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
      cache: "no-store",
    });
  } catch {
    return NextResponse.json({ error: "login service unreachable" }, { status: 502 });
  }
  if (issued.status === 401) {
    return NextResponse.json({ error: "wrong user name or password" }, { status: 401 });
  }
  if (!issued.ok) {
    return NextResponse.json({ error: "login failed" }, { status: 502 });
  }
  const token = (await issued.json()) as TokenResponse;

  const secure = isHttps(request);
  const response = NextResponse.json({ user: username });
  response.cookies.set(SESSION_COOKIE, token.access_token, {
    httpOnly: true, // no script can read it: document.cookie never shows it
    secure,
    sameSite: "lax", // not sent on cross-site POSTs, fetches or frames
    path: "/",
    maxAge: token.expires_in,
  });
  response.cookies.set(HINT_COOKIE, username, {
    httpOnly: false, // deliberately readable: it holds no secret
    secure,
    sameSite: "lax",
    path: "/",
    maxAge: token.expires_in,
  });
  response.headers.set("cache-control", "no-store");
  return response;
}
