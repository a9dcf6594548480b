// Headless Debian chromium (playwright-core) loading a page whose only client code is
// <script src="/socket.io/socket.io.js"> served by the server under test, then an inline
// script that connects and exchanges an event (window.__sioResult). Takes a screenshot.
// Usage: node sio_script_page.js <page-url> <screenshot.png>. Prints one JSON line: the
// page's result plus the script responses the page received and console errors; exit
// status 0 only when the page finished without error. Hard cap 50 s.
'use strict';
const { chromium } = require('playwright-core');

const [pageUrl, screenshot] = process.argv.slice(2);
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout (50 s cap)' })); process.exit(2); }, 50000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  let result;
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 320 } });
    const consoleErrors = [];
    const scripts = [];
    page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
    page.on('pageerror', (err) => consoleErrors.push(String(err)));
    page.on('response', (response) => {
      if (response.url().includes('/socket.io/socket.io')) {
        const headers = response.headers();
        scripts.push({ url: response.url(), status: response.status(), type: headers['content-type'],
          etag: headers.etag, encoding: headers['content-encoding'] || null });
      }
    });
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.__sioResult !== undefined, null, { timeout: 40000 });
    result = await page.evaluate(() => window.__sioResult);
    result.status = await page.evaluate(() => document.getElementById('status').textContent);
    result.heading = await page.evaluate(() => document.querySelector('h1').textContent);
    result.scripts = scripts;
    result.consoleErrors = consoleErrors;
    result.ioLoaded = await page.evaluate(() => typeof window.io === 'function');
    if (screenshot) await page.screenshot({ path: screenshot });
  } finally {
    await browser.close();
    clearTimeout(cap);
  }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
