// Headless Debian chromium (driven by playwright-core) using the demo page of
// `python -m volleyio`: two pages chat with each other through the Socket.IO server.
// Usage: node demo_browser.js <websocket|polling> <page-url> <screenshot.png>
//   websocket: both pages must end on the "websocket" transport;
//   polling:   the WebSocket upgrade is blocked on the way (the test's proxy answers 400),
//              so each page must see its upgrade fail and stay on "polling".
// Prints one JSON line with what the pages showed. Hard cap 60 s.
'use strict';
const { chromium } = require('playwright-core');

const [mode, pageUrl, screenshot] = process.argv.slice(2);
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 60000);
const WAIT = { timeout: 25000 };

async function logTexts(page) {
  return page.$$eval('#log li', (items) => items.map((li) => li.textContent));
}

async function counters(page) {
  return page.evaluate(() => {
    const out = {};
    for (const dd of document.querySelectorAll('dd')) out[dd.id] = dd.textContent;
    return out;
  });
}

async function say(page, name, text) {
  await page.fill('#name', name);
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1040, height: 640 } });
    const alice = await context.newPage();
    const bob = await context.newPage();
    const consoleErrors = [];
    for (const page of [alice, bob]) {
      page.on('pageerror', (err) => consoleErrors.push(String(err)));
      await page.goto(pageUrl);
      await page.waitForFunction(() => window.volleyioDemo && window.volleyioDemo.connects > 0, null, WAIT);
    }
    if (mode === 'websocket') {
      for (const page of [alice, bob]) {
        await page.waitForFunction(() => document.getElementById('transport').textContent === 'websocket', null, WAIT);
      }
    } else {
      // The upgrade was attempted and refused: only then is "still polling" meaningful.
      for (const page of [alice, bob]) {
        await page.waitForFunction(() => window.volleyioDemo.upgradeErrors > 0, null, WAIT);
      }
    }
    await say(alice, 'alice', `hello bob over ${mode}`);
    await bob.waitForFunction((t) => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes(t)),
      `hello bob over ${mode}`, WAIT);
    await say(bob, 'bob', 'hi alice');
    await alice.waitForFunction(() => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('hi alice')),
      null, WAIT);
    // The counters arrive once a second; wait until they show both pages on the transport.
    await alice.waitForFunction((m) => document.getElementById('clients').textContent === '2'
      && document.getElementById(m).textContent === '2'
      && Number(document.getElementById('messages_in').textContent) >= 2, mode, WAIT);
    await alice.screenshot({ path: screenshot });
    const result = {
      transports: [],
      observed: [],
      logs: [await logTexts(alice), await logTexts(bob)],
      counters: await counters(alice),
      upgradeNotice: await alice.textContent('#upgrade'),
      consoleErrors,
    };
    for (const page of [alice, bob]) {
      result.transports.push(await page.textContent('#transport'));
      result.observed.push(await page.evaluate(() => window.volleyioDemo));
    }
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
    clearTimeout(cap);
  }
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
