#!/usr/bin/env node
// Helper of bench/websocket.sh, Node only (raw TCP, no library):
//
//   node bench/websocket.mjs echo PORT           a WebSocket echo server on 127.0.0.1:PORT
//                                                (RFC 6455 handshake, frames echoed unmasked)
//   node bench/websocket.mjs latency HOST:PORT PATH N
//                                                one socket, N small messages one after the other;
//                                                prints JSON {"p50_us","p99_us","n"}
//   node bench/websocket.mjs idle HOST:PORT PATH N
//                                                opens N sockets (each with its own cookie), prints
//                                                "open N" once all are open, holds them until stdin
//                                                closes
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';

const [command, ...args] = process.argv.slice(2);
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

if (command === 'echo') {
  net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    let open = false;
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!open) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const key = /sec-websocket-key: *(\S+)/i.exec(buf.subarray(0, end).toString())?.[1] ?? '';
        const accept = createHash('sha1').update(key + GUID).digest('base64');
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        buf = buf.subarray(end + 4);
        open = true;
      }
      while (buf.length >= 6) {
        const len = buf[1] & 0x7f; // small frames only
        if (buf.length < 6 + len) return;
        const mask = buf.subarray(2, 6);
        const payload = Buffer.from(buf.subarray(6, 6 + len));
        for (let i = 0; i < len; i++) payload[i] ^= mask[i % 4];
        socket.write(Buffer.concat([Buffer.from([buf[0], len]), payload]));
        buf = buf.subarray(6 + len);
      }
    });
    socket.on('error', () => {});
  }).listen(Number(args[0]), '127.0.0.1');
} else {
  const [hostPort, path, n] = args;
  const [host, port] = hostPort.split(':');
  const connect = (cookie) => new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host, () => {
      socket.setNoDelay(true);
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n`
        + `Origin: http://${hostPort}\r\nCookie: auth_token=${cookie}\r\n\r\n`);
    });
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      if (!head.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) {
        reject(new Error(head.subarray(0, end).toString()));
        return;
      }
      resolve(socket);
    };
    socket.on('data', onData);
    socket.on('error', reject);
  });
  const frame = (text) => {
    const payload = Buffer.from(text);
    const mask = randomBytes(4);
    const out = Buffer.alloc(6 + payload.length);
    out[0] = 0x81;
    out[1] = 0x80 | payload.length;
    mask.copy(out, 2);
    for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i % 4];
    return out;
  };
  if (command === 'latency') {
    const socket = await connect('bench-token');
    const message = frame('ping 0123456789');
    const times = [];
    let pending;
    let got = 0;
    socket.on('data', (chunk) => {
      got += chunk.length;
      if (got >= 17 && pending) { got -= 17; const done = pending; pending = null; done(); }
    });
    for (let i = 0; i < Number(n); i++) {
      const started = process.hrtime.bigint();
      await new Promise((resolve) => { pending = resolve; socket.write(message); });
      times.push(Number(process.hrtime.bigint() - started) / 1000);
    }
    socket.destroy();
    times.sort((a, b) => a - b);
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    console.log(JSON.stringify({ p50_us: Math.round(at(0.5)), p99_us: Math.round(at(0.99)), n: times.length }));
  } else if (command === 'idle') {
    const sockets = [];
    for (let i = 0; i < Number(n); i += 200) {
      const batch = await Promise.all(Array.from({ length: Math.min(200, Number(n) - i) },
        (_, j) => connect(`idle-${i + j}`)));
      sockets.push(...batch);
    }
    console.log(`open ${sockets.length}`);
    process.stdin.resume();
    process.stdin.on('end', () => { sockets.forEach((s) => s.destroy()); process.exit(0); });
  } else {
    console.error('usage: websocket.mjs echo PORT | latency HOST:PORT PATH N | idle HOST:PORT PATH N');
    process.exit(2);
  }
}
