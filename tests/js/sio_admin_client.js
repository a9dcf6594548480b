// socket.io-client (Node) speaking the Admin UI protocol (@socket.io/admin-ui 0.5) to the
// server of tests/test_socketio_admin.py, as the dashboard does:
//   1. wrong password -> connect_error "invalid credentials"
//   2. username/password -> "session", "config", "all_sockets", then "server_stats"
//   3. a second connection with {sessionId} only is accepted
//   4. operations: join (every socket of "/" joins "vip"), emit ("/", "vip", "hello", 1),
//      leave, _disconnect ("/chat", false, "lobby"); the events they cause are collected
// Usage: node sio_admin_client.js '{"url", "username", "password"}'. Prints one JSON line.
'use strict';
const { io } = require('socket.io-client');

const config = JSON.parse(process.argv[2] || '{}');
const cap = setTimeout(() => fail(new Error('timeout (40 s cap)')), 40000);
const opened = [];

function fail(err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  for (const s of opened) s.disconnect();
  process.exit(1);
}

function connect(auth) {
  const socket = io(config.url + '/admin', { auth, transports: ['websocket'], reconnection: false, forceNew: true });
  opened.push(socket);
  const seen = [];
  socket.onAny((event, ...args) => seen.push([event, ...args]));
  const ready = new Promise((resolve, reject) => {
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', reject);
  });
  return { socket, seen, ready };
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// the first event of `seen` from index `from` on matching `predicate` (seen keeps growing)
async function until(seen, predicate, what, from = 0) {
  for (let i = 0; i < 200; i++) {
    const found = seen.slice(from).find(predicate);
    if (found) return found;
    await wait(50);
  }
  throw new Error(`never saw ${what}`);
}

async function main() {
  const out = { ok: true };
  const bad = connect({ username: config.username, password: 'wrong' });
  out.refused = await bad.ready.then(() => 'accepted', (err) => err.message);

  const admin = connect({ username: config.username, password: config.password });
  await admin.ready;
  const session = await until(admin.seen, (e) => e[0] === 'session', 'session');
  out.config = (await until(admin.seen, (e) => e[0] === 'config', 'config'))[1];
  out.all_sockets = (await until(admin.seen, (e) => e[0] === 'all_sockets', 'all_sockets'))[1];
  out.server_stats = (await until(admin.seen, (e) => e[0] === 'server_stats', 'server_stats'))[1];

  const again = connect({ sessionId: session[1] });
  await again.ready;
  out.session_reused = true;
  again.socket.disconnect();

  const mark = admin.seen.length;
  admin.socket.emit('join', '/', 'vip');
  await until(admin.seen, (e) => e[0] === 'room_joined' && e[2] === 'vip', 'room_joined vip', mark);
  admin.socket.emit('emit', '/', 'vip', 'hello', 1);
  await wait(300);
  admin.socket.emit('leave', '/', 'vip');
  await until(admin.seen, (e) => e[0] === 'room_left' && e[2] === 'vip', 'room_left vip', mark);
  admin.socket.emit('_disconnect', '/chat', false, 'lobby');
  await until(admin.seen, (e) => e[0] === 'socket_disconnected' && e[1] === '/chat', 'socket_disconnected', mark);
  // a later server_stats with the aggregated events of the period
  const later = admin.seen.length;
  out.stats_after = (await until(admin.seen, (e) => e[0] === 'server_stats', 'server_stats again', later))[1];
  out.events = admin.seen.slice(mark).filter((e) => e[0] !== 'server_stats');
  clearTimeout(cap);
  admin.socket.disconnect();
  console.log(JSON.stringify(out));
}

main().catch(fail);
