// The JS client when its edge dies by SIGKILL: run it through
// `go test -run TestEdgeKill9_JSClientReconnectsByItself ./services/devstack/`
// (edgekill_test.go), which passes:
//
//   WSGATE_PROXY    ws:// URL of the proxy in front of edge1
//   WSGATE_TOKEN    a token of the user "jill"
//   WSGATE_CONTROL  http:// URL of the test's control endpoints:
//     POST /control/kill-edge1        SIGKILL edge1; the proxy then forwards to edge2
//     POST /control/push?text=t       publish ["push", t] to jill
//
// Node 20 needs --experimental-websocket; Node 22 and later have WebSocket.
import assert from "node:assert/strict";
import { createClient } from "../../../clients/js/src/wsgate.mjs";

const TIMEOUT = 10000; // ms, like edgetest.Timeout

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`node-kill: ${name} is not set; run this file through go test (services/devstack/edgekill_test.go)`);
    process.exit(2);
  }
  return v;
}
const PROXY = env("WSGATE_PROXY");
const TOKEN = env("WSGATE_TOKEN");
const CONTROL = env("WSGATE_CONTROL");

async function control(path) {
  const res = await fetch(CONTROL + path, { method: "POST" });
  const body = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${body}`);
}

// The next client event, rejecting after TIMEOUT.
function next(client, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.removeListener(event, listener);
      reject(new Error(`no ${event} event within ${TIMEOUT} ms`));
    }, TIMEOUT);
    const listener = (detail) => {
      clearTimeout(timer);
      client.removeListener(event, listener);
      resolve(detail);
    };
    client.addListener(event, listener);
  });
}

// The details of the next frame of action, rejecting after TIMEOUT.
function frame(client, action) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(action, ok);
      reject(new Error(`no ${action} within ${TIMEOUT} ms`));
    }, TIMEOUT);
    const ok = (details) => {
      clearTimeout(timer);
      client.off(action, ok);
      resolve(details);
    };
    client.on(action, ok);
  });
}

const c = createClient({ url: PROXY, token: TOKEN, backoffBase: 100, backoffMax: 500 });
try {
  await next(c, "authenticated");
  const closed = next(c, "close");
  const back = next(c, "authenticated"); // the next one: after the reconnection
  const started = Date.now();
  await control("/control/kill-edge1");
  const ev = await closed;
  assert.equal(ev.code, 1006, "close code of a killed edge");
  assert.equal(ev.willReconnect, true);
  await back;
  console.log(`reconnected ${Date.now() - started} ms after the kill request`);

  const pushed = frame(c, "push");
  await control("/control/push?text=" + encodeURIComponent("after the kill"));
  assert.equal(await pushed, "after the kill");
  assert.deepEqual(await c.request("echo", { n: 1 }), { n: 1 });
} finally {
  c.close();
}
