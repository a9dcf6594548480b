// Node socket.io server for benchmarks/socketio: node node_server.js PORT
// (run.py sets NODE_PATH to tests/js/node_modules). The same handlers as servers.py:
// every client joins room "bench" on connect; "echo" acks its arguments back;
// "bcast" emits "tick" with its argument to room "bench". Defaults otherwise
// (pingInterval 25 s, pingTimeout 20 s, perMessageDeflate off, both transports).
"use strict";
// ws loads bufferutil / utf-8-validate by itself when installed, unless WS_NO_BUFFER_UTIL /
// WS_NO_UTF_8_VALIDATE are set (benchmarks' "-purejs" rows). Fail loudly when the fast
// configuration was asked for and the add-on cannot load, so a row's label cannot lie.
if (!process.env.WS_NO_BUFFER_UTIL) {
  try { require("bufferutil"); } catch (e) {
    process.stderr.write("bufferutil not loadable: " + e.message + "\n"); process.exit(1);
  }
}
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });
io.on("connection", (socket) => {
  socket.join("bench");
  socket.on("echo", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
  socket.on("bcast", (data) => {
    io.to("bench").emit("tick", data);
  });
});
httpServer.listen(port, "127.0.0.1", 8192, () => {
  process.stdout.write("ready\n");
});
