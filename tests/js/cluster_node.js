// A Node socket.io server in a Redis cluster, for tests/test_cluster_*.py.
// argv[2]: JSON {port, redisUrl, adapter: "streams"|"sharded", name, cluster?: [urls]}.
// Prints {"ready": port, "uid": ...} once listening; then takes JSON commands on stdin,
// one per line {id, cmd, ...}, and answers {id, result} or {id, error} on stdout.
"use strict";
const { Server } = require("socket.io");
const { createClient, createCluster } = require("redis");
const readline = require("readline");

const config = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function mark(value) {
  if (value instanceof Uint8Array) return { $bin: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(mark);
  if (value && typeof value === "object") {
    const o = {};
    for (const [k, v] of Object.entries(value)) o[k] = mark(v);
    return o;
  }
  return value;
}
function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (typeof value.$bin === "string") return Buffer.from(value.$bin, "base64");
    const o = {};
    for (const [k, v] of Object.entries(value)) o[k] = revive(v);
    return o;
  }
  return value;
}

async function main() {
  const makeClient = () =>
    config.cluster
      ? createCluster({ rootNodes: config.cluster.map((url) => ({ url })) })
      : createClient({ url: config.redisUrl });
  const pub = makeClient();
  pub.on("error", () => {});
  await pub.connect();
  let adapter;
  if (config.adapter === "streams") {
    const { createAdapter } = require("@socket.io/redis-streams-adapter");
    adapter = createAdapter(pub, { blockTimeInMs: 1000 });
  } else {
    const { createShardedAdapter } = require("@socket.io/redis-adapter");
    const sub = pub.duplicate();
    sub.on("error", () => {});
    await sub.connect();
    adapter = createShardedAdapter(pub, sub);
  }
  const io = new Server(config.port, { adapter, cors: { origin: "*" } });
  const name = config.name || "node";

  io.on("connection", (socket) => {
    socket.data.server = name;
    socket.on("whoami", (cb) => cb(socket.id));
    socket.on("join", (room, cb) => {
      socket.join(room);
      cb(socket.id);
    });
  });
  io.on("hello", (value, cb) => {
    if (typeof cb === "function") cb(`${name}:${value}`);
  });
  const serverSideLog = [];
  io.on("note", (...args) => serverSideLog.push(mark(args)));

  const commands = {
    async emit(c) {
      let op = io;
      if (c.to) op = op.to(c.to);
      if (c.except) op = op.except(c.except);
      if (c.local) op = op.local;
      op.emit(c.event, ...revive(c.args || []));
      return true;
    },
    async emitMany(c) {
      for (let i = 0; i < c.count; i++) io.to(c.to).emit(c.event, c.sender, i);
      return true;
    },
    async fetchSockets(c) {
      let op = io;
      if (c.to) op = op.in(c.to);
      const sockets = await op.fetchSockets();
      return sockets.map((s) => ({ id: s.id, rooms: [...s.rooms].sort(), data: s.data }));
    },
    async socketsJoin(c) {
      io.in(c.to).socketsJoin(c.rooms);
      return true;
    },
    async socketsLeave(c) {
      io.in(c.to).socketsLeave(c.rooms);
      return true;
    },
    async disconnectSockets(c) {
      io.in(c.to).disconnectSockets(!!c.close);
      return true;
    },
    async serverSideEmit(c) {
      io.serverSideEmit(c.event, ...revive(c.args || []));
      return true;
    },
    async serverSideEmitWithAck(c) {
      return mark(await io.serverSideEmitWithAck(c.event, ...revive(c.args || [])));
    },
    async gather(c) {
      let op = io.timeout(c.timeout || 5000);
      if (c.to) op = op.to(c.to);
      return mark(await op.emitWithAck(c.event, ...revive(c.args || [])));
    },
    async serverSideLog() {
      return serverSideLog;
    },
    async rooms(c) {
      const s = io.sockets.sockets.get(c.sid);
      return s ? [...s.rooms].sort() : null;
    },
    async serverCount() {
      return await io.of("/").adapter.serverCount();
    },
  };

  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", async (line) => {
    if (!line.trim()) return;
    const c = JSON.parse(line);
    try {
      out({ id: c.id, result: await commands[c.cmd](c) });
    } catch (e) {
      out({ id: c.id, error: String(e && e.message ? e.message : e) });
    }
  });
  rl.on("close", () => process.exit(0));
  out({ ready: config.port, uid: io.of("/").adapter.uid });
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
