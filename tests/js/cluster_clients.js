// Official socket.io-client sockets for tests/test_cluster_multiprocess.py, driven over
// stdin/stdout JSON lines: {id, cmd: "connect", url} -> {index, sid};
// {cmd: "join", index, room}; {cmd: "received", index} -> [[event, ...args], ...].
// Every "q" event is answered with "ack:<sid>"; every other event is recorded.
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const sockets = [];
const received = [];
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const commands = {
  connect(c) {
    return new Promise((resolve, reject) => {
      const socket = io(c.url, { transports: c.transports || ["websocket"], reconnection: false, forceNew: true });
      const index = sockets.length;
      sockets.push(socket);
      received.push([]);
      socket.onAny((event, ...args) => {
        const last = args[args.length - 1];
        if (typeof last === "function") args.pop();
        if (event === "q" && typeof last === "function") {
          last(`ack:${socket.id}`);
          return;
        }
        received[index].push([event, ...args.map((a) => (Buffer.isBuffer(a) ? { $bin: a.toString("base64") } : a))]);
      });
      socket.on("disconnect", (reason) => received[index].push(["$disconnect", reason]));
      socket.once("connect", () => resolve({ index, sid: socket.id }));
      socket.once("connect_error", (e) => reject(e));
    });
  },
  async join(c) {
    return await sockets[c.index].emitWithAck("join", c.room);
  },
  async received(c) {
    return received[c.index];
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
out({ ready: true });
