// End-to-end checks of the JS client in Node, without a browser: the client
// source itself (clients/js/src/wsgate.mjs) with Node's built-in WebSocket,
// against the edges, dispatcher and NATS that node_e2e_test.go starts. Run it
// through `go test -run TestNode ./services/devstack/`; the test passes:
//
//   WSGATE_EDGE1, WSGATE_EDGE2  ws:// URLs of the two edges
//   WSGATE_PROXY                ws:// URL of the proxy in front of edge1
//   WSGATE_CONTROL              http:// URL of the test's control endpoints:
//     GET  /token?user=u                   a fresh token for u
//     POST /control/stop-edge1             SIGTERM edge1, wait until it exits
//     POST /control/route-to-edge2         the proxy now forwards to edge2
//     POST /control/kick?user=u            publish ws.ctl.close.user.u
//     POST /control/push?user=u&text=t     publish ["push", t] to u
//     GET  /control/auth-events?user=u&quiet=ms
//          how many Client/authentication events u has, after ms without one
//
// Node 20 needs --experimental-websocket; Node 22 and later have WebSocket.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "../../../clients/js/src/wsgate.mjs";

if (typeof globalThis.WebSocket !== "function") {
  console.error("node-e2e: no global WebSocket; run Node 20 with --experimental-websocket, or Node 22+");
  process.exit(2);
}

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`node-e2e: ${name} is not set; run this file through go test (services/devstack/node_e2e_test.go)`);
    process.exit(2);
  }
  return v;
}
const EDGE1 = env("WSGATE_EDGE1");
const EDGE2 = env("WSGATE_EDGE2");
const PROXY = env("WSGATE_PROXY");
const CONTROL = env("WSGATE_CONTROL");
const TIMEOUT = 10000; // ms, like edgetest.Timeout

async function control(path, method = "POST") {
  const res = await fetch(CONTROL + path, { method });
  const body = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${body}`);
  return body;
}

// Every client is closed at the end, so that nothing keeps Node running.
const clients = new Set();
after(() => {
  for (const c of clients) c.close();
});

function open(url, user) {
  const client = createClient({
    url,
    getToken: () => control("/token?user=" + user, "GET"),
    backoffBase: 100,
    backoffMax: 500,
    // A connection attempt that hangs while edge1 shuts down (seen under
    // load: no open, no close) is given up well within a request's 10 s.
    openTimeout: 2000,
  });
  clients.add(client);
  return client;
}

// The next client event matching pred.
function next(client, event, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.removeListener(event, listener);
      reject(new Error(`no ${event} event within ${TIMEOUT} ms`));
    }, TIMEOUT);
    const listener = (detail) => {
      if (!pred(detail)) return;
      clearTimeout(timer);
      client.removeListener(event, listener);
      resolve(detail);
    };
    client.addListener(event, listener);
  });
}

// The details of the next frame of action, or [code, message] of action:error
// (rejecting).
function frame(client, action) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      client.off(action, ok, fail);
    };
    const ok = (...args) => (done(), resolve(args.length === 1 ? args[0] : args));
    const fail = (code, message) => (done(), reject(Object.assign(new Error(message), { code })));
    const timer = setTimeout(() => (done(), reject(new Error(`no ${action} within ${TIMEOUT} ms`))), TIMEOUT);
    client.on(action, ok, fail);
  });
}

// promise, or a rejection after TIMEOUT.
function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${TIMEOUT} ms`)), TIMEOUT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Waits until every client has authenticated.
async function authenticated(...list) {
  await Promise.all(list.map((c) => (c.state === "authenticated" ? null : next(c, "authenticated"))));
}

test("hello goes to every connection of the user, on both edges", async () => {
  const a = open(EDGE1, "nina");
  const b = open(EDGE2, "nina");
  await authenticated(a, b);
  const got = [frame(a, "hello"), frame(b, "hello")];
  a.send("hello", "Hello, world!");
  assert.deepEqual(await Promise.all(got), ["Hello, world!", "Hello, world!"]);

  const errors = [frame(a, "hello"), frame(b, "hello")].map((p) => p.then(
    () => assert.fail("hello resolved"),
    (err) => [err.code, err.message],
  ));
  b.send("hello", "");
  assert.deepEqual(await Promise.all(errors), [[400, "No hello message:("], [400, "No hello message:("]]);
  a.close();
  b.close();
});

test("request resolves with the reply carrying its ref and rejects on :error", async () => {
  const a = open(EDGE2, "oscar");
  await authenticated(a);
  assert.deepEqual(await a.request("echo", { n: 1, list: [1, 2] }), { n: 1, list: [1, 2] });
  await assert.rejects(a.request("chat/send", { text: "" }), { name: "WsgateError", code: 400, message: "text is empty" });
  await assert.rejects(a.request("nobody/listens", 1, { timeout: 200 }), { name: "WsgateError", code: 408 });
  a.close();
});

test("after edge1 stops, the client reconnects through the proxy and flushes its queue", async () => {
  const c = open(PROXY, "olga");
  const witness = open(EDGE2, "olga"); // another tab of the user
  await authenticated(c, witness);
  const hellos = [];
  let gotBoth;
  const both = new Promise((resolve) => (gotBoth = resolve));
  witness.on("hello", (h) => hellos.push(h) === 2 && gotBoth());

  const closed = next(c, "close", (d) => d.code === 1012 && d.willReconnect);
  await control("/control/stop-edge1");
  await closed;
  assert.equal(c.state, "reconnecting"); // edge1 is gone; the proxy still points at it
  c.send("hello", "offline 1");
  c.send("hello", "offline 2");
  const echo = c.request("echo", "offline 3");

  const back = next(c, "authenticated");
  await control("/control/route-to-edge2");
  await back;
  assert.equal(await echo, "offline 3");
  await within(both, "the two hellos at the other tab");
  // Handlers run concurrently, so they may come back in either order.
  assert.deepEqual(hellos.sort(), ["offline 1", "offline 2"]);

  const pushed = frame(c, "push");
  await control("/control/push?user=olga&text=" + encodeURIComponent("after the reconnection"));
  assert.equal(await pushed, "after the reconnection");
  c.close();
  witness.close();
});

test("close by user: kicked, then no reconnection", async () => {
  const d = open(EDGE2, "pia");
  await authenticated(d);
  const kicked = next(d, "kicked");
  const closed = next(d, "close");
  await control("/control/kick?user=pia");
  await kicked;
  const ev = await closed;
  assert.equal(ev.code, 1000);
  assert.equal(ev.willReconnect, false);
  // 1.5 s is 15 times the largest first reconnect delay (backoffBase 100 ms).
  assert.equal((await control("/control/auth-events?user=pia&quiet=1500", "GET")).trim(), "1");
  assert.equal(d.state, "closed");
});
