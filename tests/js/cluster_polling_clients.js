// Official socket.io-client sockets for tests/test_cluster_polling.py (behind a
// round-robin balancer), driven over stdin/stdout JSON lines {id, cmd, ...}:
// {cmd: "run", url, clients, n, window, transports} -> one report per client:
//   n acked "up" events (at most `window` unanswered; acks must equal i, in order),
//   then "down": the server emits n acked "down" events, which must arrive 0..n-1.
// {cmd: "steadyStart", url, clients, transports} starts sockets (reconnection on) that
//   call "echo" in a loop; {cmd: "steadyReport"} stops them and reports per socket the
//   Engine.IO ids of its connections and its disconnect reasons.
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function connect(url, transports, reconnection) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports, reconnection, forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 1000 });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (e) => { if (!reconnection) reject(e); });
  });
}

async function runOne(c) {
  const socket = await connect(c.url, c.transports, false);
  const report = { engineIds: [socket.io.engine.id], upErrors: [], downErrors: [], disconnects: [] };
  const disconnects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  let expected = 0;
  socket.on("down", (i, ack) => {
    if (i !== expected) report.downErrors.push(`down ${i} while expecting ${expected}`);
    expected = i + 1;
    ack(i);
  });
  let next = 0;
  let acked = 0;
  await new Promise((resolve) => {
    let inflight = 0;
    const pump = () => {
      while (inflight < c.window && next < c.n) {
        const i = next++;
        inflight++;
        socket.timeout(60000).emit("up", i, (err, v) => {
          inflight--;
          if (err) report.upErrors.push(`up ${i}: ${err.message}`);
          else if (v !== i) report.upErrors.push(`ack ${v} for ${i}`);
          else if (v !== acked) report.upErrors.push(`ack ${v} out of order (expected ${acked})`);
          acked = (v === acked) ? acked + 1 : acked;
          if (acked + report.upErrors.length >= c.n && inflight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const down = await socket.timeout(300000).emitWithAck("down", c.n, c.window);
  report.serverDownErrors = down.errors;
  report.downReceived = expected;
  report.server = await socket.timeout(30000).emitWithAck("upErrors");
  report.transport = socket.io.engine.transport.name;
  report.disconnects = [...disconnects];  // not the one disconnect() below adds
  socket.disconnect();
  return report;
}

let steady = [];
const commands = {
  async run(c) {
    return await Promise.all(Array.from({ length: c.clients }, () => runOne(c)));
  },
  async steadyStart(c) {
    const started = await Promise.all(Array.from({ length: c.clients }, async () => {
      const socket = await connect(c.url, c.transports, true);
      const s = { socket, engineIds: [socket.io.engine.id], disconnects: [], ok: 0, errors: 0, stop: false };
      socket.on("connect", () => s.engineIds.push(socket.io.engine.id));
      socket.on("disconnect", (reason) => s.disconnects.push(reason));
      (async () => {
        let i = 0;
        while (!s.stop) {
          if (!socket.connected) { await new Promise((r) => setTimeout(r, 50)); continue; }
          try {
            const v = await socket.timeout(5000).emitWithAck("echo", i);
            if (v[0] === i) s.ok++; else s.errors++;
          } catch (e) { s.errors++; }
          i++;
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      return s;
    }));
    steady.push(...started);
    return started.map((s) => s.engineIds[0]);
  },
  async steadyReport(c) {
    const report = steady.map((s) => ({ engineIds: [...s.engineIds], disconnects: [...s.disconnects], ok: s.ok, errors: s.errors,
      connected: s.socket.connected, transport: s.socket.io.engine ? s.socket.io.engine.transport.name : null }));
    for (const s of steady) { s.stop = true; s.socket.disconnect(); }
    return report;
  },
};

out({ ready: true });
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
