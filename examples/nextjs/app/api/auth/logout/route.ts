// POST /api/auth/logout: revokes the token at the backend (best effort) and clears both cookies.
import { NextRequest, NextResponse } from "next/server";
import { BACKEND_URL, HINT_COOKIE, SESSION_COOKIE, isHttps, isSameOrigin } from "@/lib/session";

export async function POST(request: NextRequest) {
  if (!isSameOrigin(request)) {
    return NextResponse.json({ error: "cross-origin logout refused" }, { status: 403 });
  }
  const token = request.cookies.get(SESSION_COOKIE)?.value;
  if (token) {
    await fetch(new URL("/auth/revoke", BACKEND_URL), {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      cache: "no-store",
    }).catch(() => undefined); // the cookie is cleared either way
  }
  const response = NextResponse.json({ user: null });
  const secure = isHttps(request);
  for (const name of [SESSION_COOKIE, HINT_COOKIE]) {
    response.cookies.set(name, "", {
      httpOnly: name === SESSION_COOKIE,
      secure,
      sameSite: "lax",
      path: "/",
      maxAge: 0,
    });
  }
  response.headers.set("cache-control", "no-store");
  return response;
}
