// Node engine.io echo server for benchmarks/engineio: node node_server.js PORT
// (run.py sets NODE_PATH to tests/js/node_modules). Defaults otherwise: pingInterval 25 s,
// pingTimeout 20 s, maxHttpBufferSize 1e6, perMessageDeflate off, both transports.
"use strict";
const engine = require("engine.io");
const http = require("http");

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const server = engine.attach(httpServer, { path: "/engine.io/" });
server.on("connection", (socket) => {
  socket.on("message", (data) => socket.send(data));
});
httpServer.listen(port, "127.0.0.1", 8192, () => {
  process.stdout.write("ready\n");
});
