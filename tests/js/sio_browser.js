// Headless Debian chromium (playwright-core) loading sio_page.html from the server under
// test: the page uses socket.io-client's browser bundle and reports what it did.
// Usage: node sio_browser.js <page-url>. Prints one JSON line (the page's result, plus
// console errors); exit status 0 only when the page finished without error. Hard cap 50 s.
'use strict';
const { chromium } = require('playwright-core');

const [pageUrl] = process.argv.slice(2);
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout (50 s cap)' })); process.exit(2); }, 50000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  let result;
  try {
    const page = await browser.newPage();
    const consoleErrors = [];
    page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
    page.on('pageerror', (err) => consoleErrors.push(String(err)));
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.__sioResult !== undefined, null, { timeout: 40000 });
    result = await page.evaluate(() => window.__sioResult);
    result.consoleErrors = consoleErrors;
    result.bundleLoaded = await page.evaluate(() => typeof window.io === 'function');
  } finally {
    await browser.close();
    clearTimeout(cap);
  }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
