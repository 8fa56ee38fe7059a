// Shape 2, "Next.js in front": the browser talks to `next start`, which rewrites the API paths to
// cookiegate (COOKIEGATE_URL). Shape 1, "cookiegate in front", leaves COOKIEGATE_URL unset:
// cookiegate then answers /api/proxy and /api/chatkit itself and sends everything else here.
//
// Rewrites are compiled into the build (.next/routes-manifest.json): set COOKIEGATE_URL for
// `next build`, not only for `next start`.
import type { NextConfig } from "next";

const cookiegate = process.env.COOKIEGATE_URL?.replace(/\/+$/, "");

const nextConfig: NextConfig = {
  poweredByHeader: false,
  // Next.js gzips responses itself by default, and its gzip stream holds proxied server-sent
  // events back until the stream ends (measured: README.md, "Measured SSE behaviour"). In shape 2
  // set NEXT_COMPRESS=0 (read when `next start` starts) and let your edge proxy compress.
  compress: process.env.NEXT_COMPRESS !== "0",
  async rewrites() {
    if (!cookiegate) return [];
    return {
      // beforeFiles: these paths never reach a page or route handler of this app.
      beforeFiles: [
        { source: "/api/proxy/:path*", destination: `${cookiegate}/api/proxy/:path*` },
        { source: "/api/chatkit", destination: `${cookiegate}/api/chatkit` },
      ],
      afterFiles: [],
      fallback: [],
    };
  },
};

export default nextConfig;
