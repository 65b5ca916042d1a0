// Tests of the classic script (/client.js) as the edge serves it: evaluated in
// a vm context standing in for a page that loads it with a <script> tag.
//
// The classic build is made by Go (jsclient.Classic). `go test` passes it in
// the file named by WSGATE_CLASSIC_JS; run directly with node --test, the test
// builds it with `go run ./cmd/wsgate-classic` (Go is required either way).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

import { FakeWebSocket, flush } from "../testdata/fakes.mjs";

const AUTH = "Client/authentication";
const moduleDir = fileURLToPath(new URL("..", import.meta.url));

let classic;

before(() => {
  if (process.env.WSGATE_CLASSIC_JS) {
    classic = readFileSync(process.env.WSGATE_CLASSIC_JS, "utf8");
    return;
  }
  // GOWORK=off: the helper needs nothing beyond this module, whatever the
  // workspace lists.
  classic = execFileSync("go", ["run", "./cmd/wsgate-classic"], {
    cwd: moduleDir,
    env: { ...process.env, GOWORK: "off" },
    encoding: "utf8",
  });
});

/** Runs the classic script in a fresh fake page; returns the page's global. */
function loadPage({ attrs = {}, src = "https://edge.example/client.js", cs, extra = {} } = {}) {
  FakeWebSocket.reset();
  const script = {
    src,
    hasAttribute: (name) => Object.hasOwn(attrs, name),
    getAttribute: (name) => (Object.hasOwn(attrs, name) ? attrs[name] : null),
  };
  const page = {
    document: { currentScript: script },
    location: { href: "https://app.example/page" },
    WebSocket: FakeWebSocket,
    alerts: [],
    // The Web APIs the client uses; a vm context only has the JS built-ins.
    URL,
    atob,
    crypto,
    console,
    setTimeout,
    clearTimeout,
    queueMicrotask,
  };
  page.alert = (message) => page.alerts.push(message);
  Object.assign(page, extra);
  if (cs) page.cs = cs;
  page.window = page;
  vm.createContext(page);
  vm.runInContext(classic, page, { filename: "client.js" });
  return page;
}

test("the classic script compiles as a script, without export", () => {
  assert.doesNotMatch(classic, /^\s*export\s/m);
  // Throws a SyntaxError on export, import or import.meta.
  new vm.Script(classic, { filename: "client.js" });
});

test("without data-cs-compat it only exposes window.wsgate", async () => {
  const page = loadPage();
  assert.equal(typeof page.wsgate.createClient, "function");
  assert.equal(page.cs, undefined);
  await flush();
  assert.equal(FakeWebSocket.instances.length, 0);
});

test("the seed example runs unchanged against cs.WebSockets", async () => {
  const page = loadPage({ attrs: { "data-cs-compat": "" }, cs: { Language: "kept" } });
  assert.equal(page.cs.Language, "kept");
  assert.equal(typeof page.wsgate.createClient, "function");

  // The seed README's example, verbatim.
  vm.runInContext(
    `
// Since everything is asynchronous - lets add handler first
cs.WebSockets.once('hello', function (message) {
	alert(message);
});
// Now send request to server
cs.WebSockets.send('hello', 'Hello, world!');
`,
    page,
  );

  await flush();
  const ws = FakeWebSocket.last();
  assert.equal(ws.url, "wss://edge.example/ws");
  ws.open();
  // No data-token: null, so the edge uses the cookie from the upgrade.
  assert.deepEqual(ws.frames, [[AUTH, null]]);
  ws.receive([AUTH, "ok"]);
  assert.deepEqual(ws.frames[1], ["hello", "Hello, world!"]);
  ws.receive(["hello", "Hello, world!"]);
  ws.receive(["hello", "again"]);
  assert.deepEqual(page.alerts, ["Hello, world!"]);
  page.cs.WebSockets.close();
});

test("data-token and data-path are used, http edges get ws://", async () => {
  const page = loadPage({
    src: "http://edge.local:8080/client.js",
    attrs: { "data-cs-compat": "", "data-token": "tok", "data-path": "/custom" },
  });
  await flush();
  const ws = FakeWebSocket.last();
  assert.equal(ws.url, "ws://edge.local:8080/custom");
  ws.open();
  assert.deepEqual(ws.frames, [[AUTH, { token: "tok" }]]);
  page.cs.WebSockets.close();
});

test("cs.WebSockets recovers: since on the reconnect, recovered event (classic build)", async () => {
  const page = loadPage({ attrs: { "data-cs-compat": "" } });
  const cs = page.cs.WebSockets;
  const events = [];
  cs.addListener("recovered", (d) => events.push(d));
  const got = [];
  cs.on("news", (d) => got.push(d));
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive([AUTH, "ok"]);
  ws.receive(["Server/recovery", { epoch: "e1", recovered: true, count: 0 }]);
  ws.receive(["news", "a", null, 5]);
  vm.runInContext("Math.random = () => 0;", page); // no reconnect delay
  ws.serverClose(1012);
  for (const deadline = Date.now() + 10_000; FakeWebSocket.instances.length < 2; ) {
    assert.ok(Date.now() < deadline, "no reconnect within 10 s");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const ws2 = FakeWebSocket.last();
  ws2.open();
  assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 5 } }]);
  ws2.receive([AUTH, "ok"]);
  ws2.receive(["Server/recovery", { epoch: "e1", recovered: true, count: 1 }]);
  ws2.receive(["news", "b", null, 6]);
  // Objects of the page's realm: compared as JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(events)), [{ recovered: true, count: 1, epoch: "e1" }]);
  assert.deepEqual(got, ["a", "b"]);
  cs.close();
});

test("the shared worker script (src/wsgate-worker.js) serves tabs with the classic build", async () => {
  const workerScript = readFileSync(new URL("../src/wsgate-worker.js", import.meta.url), "utf8");
  const code = workerScript.split("\n").filter((l) => l.trim() && !l.startsWith("//"));
  assert.equal(code.length, 2, "the worker is not two lines: " + code.join(" | "));
  FakeWebSocket.reset();
  const imported = [];
  let onConnect = null;
  const scope = {
    location: { href: "https://app.example/wsgate-worker.js" },
    WebSocket: FakeWebSocket,
    URL,
    atob,
    crypto,
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    queueMicrotask,
    addEventListener(type, fn) {
      if (type === "connect") onConnect = fn;
    },
  };
  scope.self = scope;
  scope.importScripts = (url) => {
    imported.push(url);
    vm.runInContext(classic, scope, { filename: "client.js" });
  };
  vm.createContext(scope);
  vm.runInContext(workerScript, scope, { filename: "wsgate-worker.js" });
  assert.deepEqual(imported, ["/client.js"]);
  assert.equal(typeof onConnect, "function");

  const { port1, port2 } = new MessageChannel();
  onConnect({ ports: [port2] });
  const got = [];
  port1.onmessage = (ev) => got.push(ev.data);
  port1.postMessage({ t: "hello", options: { url: "wss://edge.example/ws", token: "t", getToken: false } });
  for (let i = 0; i < 50 && FakeWebSocket.instances.length === 0; i++) await flush();
  const ws = FakeWebSocket.last();
  assert.equal(ws.url, "wss://edge.example/ws");
  ws.open();
  assert.deepEqual(ws.frames[0], [AUTH, { token: "t" }]);
  ws.receive([AUTH, "ok"]);
  ws.receive(["push", "to every tab"]);
  const push = () => got.find((m) => m.t === "frame" && m.action === "push");
  for (let i = 0; i < 50 && !push(); i++) await flush();
  assert.equal(got[0].t, "welcome");
  assert.deepEqual(push(), { t: "frame", action: "push", details: "to every tab" });
  port1.postMessage({ t: "bye" });
  for (let i = 0; i < 50 && ws.closedWith === null; i++) await flush();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
  port1.close();
});

test("data-shared and data-worker make cs.WebSockets a shared client", () => {
  const workers = [];
  class FakeSharedWorker {
    constructor(url, options) {
      const channel = new MessageChannel();
      this.port = channel.port1;
      this.other = channel.port2;
      workers.push({ url, name: options.name, worker: this });
    }
  }
  const page = loadPage({
    attrs: { "data-cs-compat": "", "data-shared": "", "data-worker": "/js/wsgate-worker.js" },
    extra: { SharedWorker: FakeSharedWorker, setInterval, clearInterval },
  });
  const client = page.cs.WebSockets;
  assert.equal(client.shared, true);
  assert.deepEqual(
    workers.map((w) => [w.url, w.name]),
    [["https://app.example/js/wsgate-worker.js", "wsgate wss://edge.example/ws"]],
  );
  client.close();
  workers[0].worker.other.close();
  assert.equal(FakeWebSocket.instances.length, 0);
});
