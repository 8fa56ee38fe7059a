import type { NextConfig } from "next";

// The seed's route handler, built and served as-is (`next build && next start`).
const nextConfig: NextConfig = {};

export default nextConfig;
