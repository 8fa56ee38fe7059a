import type { Metadata } from "next";
import "./globals.css";

export const metadata: Metadata = {
  title: "cookiegate + Next.js",
  description: "httpOnly session cookie in the browser, Authorization: Bearer at the API",
};

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
