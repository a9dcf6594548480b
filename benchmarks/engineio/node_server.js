// Node engine.io echo server for benchmarks/engineio: node node_server.js PORT
// (run.py sets NODE_PATH to tests/js/node_modules). Defaults otherwise: pingInterval 25 s,
// pingTimeout 20 s, maxHttpBufferSize 1e6, perMessageDeflate off, both transports.
"use strict";
// ws loads bufferutil / utf-8-validate by itself when installed, unless WS_NO_BUFFER_UTIL /
// WS_NO_UTF_8_VALIDATE are set (benchmarks' "-purejs" rows). Fail loudly when the fast
// configuration was asked for and the add-on cannot load, so a row's label cannot lie.
if (!process.env.WS_NO_BUFFER_UTIL) {
  try { require("bufferutil"); } catch (e) {
    process.stderr.write("bufferutil not loadable: " + e.message + "\n"); process.exit(1);
  }
}
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
