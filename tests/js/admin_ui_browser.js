// The Socket.IO Admin UI's own page (@socket.io/admin-ui ui/dist, served on loopback by the
// test) in headless Debian chromium (playwright-core), logging in to a server and reading
// its dashboard: the test (tests/test_socketio_admin.py) checks the texts; screenshots are
// written to config.shots when given.
//
// Usage: node admin_ui_browser.js '{"uiUrl", "serverUrl", "username", "password", "shots"?}'
// Prints one JSON line: {"ok": true, "pages": {name: visible text}, "errors": [...]}, or
// {"error": ...}. Requests that leave loopback (the page's web fonts) are aborted. Cap 80 s.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const config = JSON.parse(process.argv[2] || '{}');
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout (80 s cap)' })); process.exit(2); }, 80000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const out = { ok: true, pages: {}, errors: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on('pageerror', (err) => out.errors.push(String(err)));
    await page.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === '127.0.0.1' || url.hostname === 'localhost') return route.continue();
      return route.abort();
    });
    const shot = async (name) => {
      if (config.shots) {
        fs.mkdirSync(config.shots, { recursive: true });
        await page.screenshot({ path: path.join(config.shots, `${name}.png`), fullPage: true });
      }
    };
    await page.goto(config.uiUrl);
    // The connection dialog (no server remembered yet).
    await page.getByLabel('Server URL').fill(config.serverUrl);
    if (config.badPassword) {
      await page.getByLabel('Username').fill(config.username);
      await page.getByLabel('Password').fill(config.badPassword);
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.getByText('Invalid credentials').waitFor({ timeout: 15000 });
      out.refused = true;
      await shot('0-refused');
    }
    await page.getByLabel('Username').fill(config.username);
    await page.getByLabel('Password').fill(config.password);
    await shot('1-login');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByLabel('Server URL').waitFor({ state: 'hidden', timeout: 15000 });
    // Let a few server_stats arrive (every 2 s by default; the test sets a shorter period).
    await page.waitForTimeout(config.settle || 2500);
    out.pages.dashboard = await page.innerText('body');
    await shot('2-dashboard');
    for (const [name, hash, expect] of [
      ['sockets', '#/sockets/', config.expectSocket],
      ['rooms', '#/rooms/', config.expectRoom],
      ['clients', '#/clients/', null],
      ['servers', '#/servers/', config.expectServer],
      ['events', '#/events/', null],
    ]) {
      await page.goto(config.uiUrl + hash);
      if (expect) await page.getByText(expect).first().waitFor({ timeout: 15000 });
      else await page.waitForTimeout(1000);
      out.pages[name] = await page.innerText('body');
      await shot(`3-${name}`);
    }
    if (config.expectSocket && config.socketNsp) {
      // The detail page of one socket (its handshake, rooms, transport)
      await page.goto(`${config.uiUrl}#/n/${encodeURIComponent(config.socketNsp)}/sockets/${config.expectSocket}`);
      await page.getByText(config.expectSocket).first().waitFor({ timeout: 15000 });
      await page.waitForTimeout(500);
      out.pages.socket = await page.innerText('body');
      await shot('4-socket');
    }
  } catch (err) {
    out.ok = false;
    out.error = String(err && err.stack ? err.stack : err);
  } finally {
    await browser.close();
    clearTimeout(cap);
  }
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
