// Encodes/decodes cluster messages with the very encoders the Node adapters use, for
// tests/test_socketio_cluster.py. stdin: one JSON request; stdout: one JSON answer.
// Binary travels as {"$bin": "<base64>"}.
"use strict";
const msgpack = require("@msgpack/msgpack");
const notepack = require("notepack.io");

function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (typeof value.$bin === "string") return Buffer.from(value.$bin, "base64");
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = revive(v);
    return out;
  }
  return value;
}
function mark(value) {
  if (value instanceof Uint8Array) return { $bin: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(mark);
  if (value === undefined) return null;
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = mark(v);
    return out;
  }
  return value;
}
function hasBinary(obj) {
  if (!obj || typeof obj !== "object") return false;
  if (obj instanceof ArrayBuffer || ArrayBuffer.isView(obj)) return true;
  if (Array.isArray(obj)) return obj.some(hasBinary);
  return Object.values(obj).some(hasBinary);
}
// The stream entry encoding of @socket.io/redis-streams-adapter (RedisStreamsAdapter#encode).
function streamEncode(message) {
  const raw = { uid: message.uid, nsp: message.nsp, type: message.type.toString() };
  if (message.data) {
    raw.data = hasBinary(message.data)
      ? Buffer.from(msgpack.encode(message.data)).toString("base64")
      : JSON.stringify(message.data);
  }
  return raw;
}
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const req = JSON.parse(input);
  const out = {};
  if (req.encode) {
    const m = revive(req.encode);
    out.msgpack = Buffer.from(msgpack.encode(m)).toString("base64");
    out.notepack = Buffer.from(notepack.encode(m)).toString("base64");
    out.json = JSON.stringify(m);
    out.stream = streamEncode(m);
  }
  if (req.decode) {
    const d = req.decode;
    if (d.msgpack) out.msgpack = mark(msgpack.decode(Buffer.from(d.msgpack, "base64")));
    if (d.sharded) {
      const raw = Buffer.from(d.sharded, "base64");
      out.sharded = mark(raw[0] === 0x7b ? JSON.parse(raw.toString()) : notepack.decode(raw));
    }
    if (d.stream) {
      const r = d.stream;
      const m = { uid: r.uid, nsp: r.nsp, type: parseInt(r.type, 10) };
      if (r.data) m.data = r.data.startsWith("{") ? JSON.parse(r.data) : msgpack.decode(Buffer.from(r.data, "base64"));
      out.stream = mark(m);
    }
  }
  process.stdout.write(JSON.stringify(out));
});
