// Headless Debian chromium (driven by playwright-core) running the browser's own
// WebSocket against a volleyio server. Usage: node browser.js <http-page-url> <ws-url>
// Prints one JSON line with what the page observed. Hard cap 40 s.
'use strict';
const { chromium } = require('playwright-core');

const [pageUrl, wsUrl] = process.argv.slice(2);
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 40000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: process.env.IGNORE_CERT_ERRORS === '1' });
    const page = await context.newPage();
    await page.goto(pageUrl);
    const result = await page.evaluate(async (url) => {
      const out = { protocol: null, extensions: null, echoes: [], close: null, origin: location.origin };
      const ws = new WebSocket(url, ['chat.v1']);
      ws.binaryType = 'arraybuffer';
      const queue = [];
      let waiter = null;
      ws.onmessage = (ev) => {
        let item;
        if (typeof ev.data === 'string') item = { binary: false, text: ev.data };
        else {
          const b = new Uint8Array(ev.data);
          let sum = 0; for (const x of b) sum = (sum + x) % 65536;
          item = { binary: true, length: b.length, sum, hex: b.length <= 64 ? Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('') : null };
        }
        if (waiter) { const w = waiter; waiter = null; w(item); } else queue.push(item);
      };
      const next = () => new Promise((r) => { if (queue.length) r(queue.shift()); else waiter = r; });
      const closed = new Promise((r) => { ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean }); });
      const opened = await new Promise((r) => { ws.onopen = () => r(true); ws.onerror = () => r(false); });
      if (!opened) { out.close = await closed; return out; }
      out.protocol = ws.protocol;
      out.extensions = ws.extensions;
      ws.send('héllo ✓ from chromium');
      out.echoes.push(await next());
      ws.send(new Uint8Array([0, 1, 2, 255]));
      out.echoes.push(await next());
      const big = new Uint8Array(1000000);
      for (let i = 0; i < big.length; i++) big[i] = i % 251;
      ws.send(big);
      out.echoes.push(await next());
      ws.send('y'.repeat(20000));
      out.echoes.push(await next());
      ws.send('server-ping');   // the server pings the browser; the browser answers by itself
      out.echoes.push(await next());
      ws.send('server-close');  // the server closes with 4001
      out.close = await closed;
      return out;
    }, wsUrl);
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
    clearTimeout(cap);
  }
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
