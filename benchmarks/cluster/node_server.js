// Node socket.io in a Redis cluster for benchmarks/cluster: node node_server.js PORT REDIS_URL KIND
// (KIND "streams": @socket.io/redis-streams-adapter; "sharded": @socket.io/redis-adapter's
// createShardedAdapter). The handlers of benchmarks/socketio/node_server.js.
"use strict";
const http = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");

async function main() {
  const [port, url, kind] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
  const pub = createClient({ url });
  await pub.connect();
  let adapter;
  if (kind === "streams") {
    adapter = require("@socket.io/redis-streams-adapter").createAdapter(pub);
  } else {
    const sub = pub.duplicate();
    await sub.connect();
    adapter = require("@socket.io/redis-adapter").createShardedAdapter(pub, sub);
  }
  const httpServer = http.createServer();
  const io = new Server(httpServer, { serveClient: false, adapter });
  io.on("connection", (socket) => {
    socket.join("bench");
    socket.on("echo", (...args) => {
      const ack = args.pop();
      if (typeof ack === "function") ack(...args);
    });
    socket.on("bcast", (data) => io.to("bench").emit("tick", data));
  });
  httpServer.listen(port, "127.0.0.1", 8192, () => process.stdout.write("ready\n"));
}
main();
