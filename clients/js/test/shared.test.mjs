// Unit tests of the shared connection (createClient({shared: true})): tabs
// (SharedClient) and the worker's hub (serveSharedWorker) joined by real
// MessageChannel ports; only the SharedWorker constructor and the WebSocket
// are stand-ins. Timers and Date are mocked; port messages are not.
import { describe, test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";

import { createClient, serveSharedWorker, WsgateError } from "../src/wsgate.mjs";
import { FakeWebSocket, jwt } from "../testdata/fakes.mjs";

const AUTH = "Client/authentication";
const ACK = "Server/ack";
const RECOVERY = "Server/recovery";
const URL_ = "ws://edge.test/ws";
const T0 = 1_700_000_000_000;

let tabs = [];
let hubs = [];

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: T0 });
});

afterEach(async () => {
  // The hubs (the tabs' own ones too) take the tabs' bye before the timers
  // are reset: a late clearInterval would hit a timer of the next test
  // (mocked timer ids restart).
  const all = [...hubs, ...tabs.map((t) => t._local).filter(Boolean)];
  for (const t of tabs) t.close();
  tabs = [];
  await until("every hub empty", () => all.every((h) => h.tabs === 0));
  hubs = [];
  mock.timers.reset();
});

/** Lets port messages and promise callbacks run. */
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function until(what, cond) {
  for (let i = 0; i < 100; i++) {
    if (cond()) return;
    await settle();
  }
  assert.fail("timed out waiting for " + what);
}

/** Moves the mocked clock by ms, a second at a time, letting messages flow. */
async function advance(ms) {
  for (let done = 0; done < ms; done += 1000) {
    mock.timers.tick(Math.min(1000, ms - done));
    await settle();
  }
}

/**
 * A browser with one shared worker: its hub, and the SharedWorker class the
 * tabs use. failing: the worker script does not load (an error event, and
 * nothing listens on the port).
 */
function browser({ failing = false } = {}) {
  const scope = {
    listener: null,
    addEventListener(type, fn) {
      if (type === "connect") this.listener = fn;
    },
  };
  const hub = serveSharedWorker(scope, { WebSocket: FakeWebSocket, random: () => 0.5 });
  hubs.push(hub);
  class FakeSharedWorker {
    constructor(url, options) {
      this.url = url;
      this.name = options.name;
      this.onerror = null;
      const channel = new MessageChannel();
      this.port = channel.port1;
      if (failing) {
        setImmediate(() => {
          channel.port2.close();
          this.onerror?.({ type: "error" });
        });
      } else {
        scope.listener({ ports: [channel.port2] });
      }
    }
  }
  return { hub, SharedWorker: FakeSharedWorker };
}

/** navigator.locks for exclusive locks: request(name, callback), queued per name. */
class FakeLocks {
  constructor() {
    this.held = new Set();
    this.waiting = new Map(); // name -> [grant functions]
  }

  request(name, callback) {
    return new Promise((resolve, reject) => {
      const grant = () => {
        this.held.add(name);
        Promise.resolve()
          .then(() => callback({ name }))
          .then(resolve, reject)
          .finally(() => {
            this.held.delete(name);
            const next = (this.waiting.get(name) || []).shift();
            if (next) next();
          });
      };
      if (this.held.has(name)) {
        if (!this.waiting.has(name)) this.waiting.set(name, []);
        this.waiting.get(name).push(grant);
      } else {
        grant();
      }
    });
  }
}

function openTab(b, options = {}) {
  // No socket heartbeat: the tests move the clock by minutes without pongs.
  const tab = createClient({
    url: URL_, token: "t", shared: true, SharedWorker: b.SharedWorker, pingInterval: 3_600_000, ...options,
  });
  tabs.push(tab);
  return tab;
}

/** Opens n tabs and authenticates their one socket. */
async function liveTabs(b, n, options) {
  const list = [];
  const before = FakeWebSocket.instances.length;
  for (let i = 0; i < n; i++) list.push(openTab(b, options));
  await until("a socket", () => FakeWebSocket.instances.length === before + 1);
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive([AUTH, "ok"]);
  await until("every tab authenticated", () => list.every((t) => t.state === "authenticated"));
  return { list, ws };
}

function recordFrames(tab, action) {
  const got = [];
  tab.on(action, (d) => got.push(d));
  return got;
}

describe("shared connection", () => {
  test("tabs share one socket; user frames reach every tab; each reply only the tab that asked", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 3);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(ws.frames[0], [AUTH, { token: "t" }]);
    assert.ok(list.every((t) => t.shared && t.phase === "live"));

    const pushes = list.map((t) => recordFrames(t, "push"));
    const echoes = list.map((t) => recordFrames(t, "echo"));
    ws.receive(["push", "for the user"]);
    await until("the push in every tab", () => pushes.every((p) => p.length === 1));
    assert.deepEqual(pushes, [["for the user"], ["for the user"], ["for the user"]]);

    const p0 = list[0].request("echo", "zero");
    const p1 = list[1].request("echo", "one");
    const p2 = list[2].request("boom", null).catch((err) => err);
    await until("three requests", () => ws.frames.filter((f) => f.length === 3).length === 3);
    const [r0, r1, r2] = ws.frames.filter((f) => f.length === 3).map((f) => f[2]);
    assert.equal(new Set([r0, r1, r2]).size, 3);
    ws.receive(["echo", "one", r1]); // out of order
    ws.receive(["echo", "zero", r0]);
    ws.receive(["boom:error", [400, "bad boom"], r2]);
    assert.equal(await p0, "zero");
    assert.equal(await p1, "one");
    const err = await p2;
    assert.ok(err instanceof WsgateError);
    assert.equal(err.code, 400);
    assert.equal(err.message, "bad boom");
    await settle();
    assert.deepEqual(echoes, [[], [], []], "a reply reached on() handlers");
  });

  test("closing tabs one by one keeps the others working; the last close closes the socket", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 3);
    const pushes = list.map((t) => recordFrames(t, "push"));
    list[0].close();
    await until("tab 0 gone", () => b.hub.tabs === 2);
    assert.equal(list[0].state, "closed");
    await assert.rejects(list[0].request("echo", 1), (err) => err.code === 503);
    ws.receive(["push", 1]);
    await until("the push", () => pushes[1].length === 1 && pushes[2].length === 1);
    assert.deepEqual(pushes[0], []);
    const echo = list[1].request("echo", "still here");
    await until("the request", () => ws.frames.some((f) => f[0] === "echo"));
    ws.receive(["echo", "still here", ws.frames.find((f) => f[0] === "echo")[2]]);
    assert.equal(await echo, "still here");

    list[1].close();
    await until("tab 1 gone", () => b.hub.tabs === 1);
    assert.equal(ws.closedWith, null, "the socket closed while a tab is left");
    list[2].close();
    await until("the socket closed", () => ws.closedWith !== null);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
    assert.equal(b.hub.core, null);

    // A tab opened later starts a new connection.
    await liveTabs(b, 1);
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("a tab joining a live connection sees open and authenticated", async () => {
    const b = browser();
    await liveTabs(b, 1);
    const late = openTab(b);
    const events = [];
    for (const e of ["state", "open", "authenticated"]) late.addListener(e, () => events.push(e));
    await until("authenticated", () => late.state === "authenticated");
    assert.deepEqual(events, ["state", "open", "authenticated"]);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test("token renewal asks one tab once, and renews on the shared socket", async () => {
    const b = browser();
    const calls = [0, 0, 0];
    const token = jwt({ sub: "u", exp: Math.floor(T0 / 1000) + 60 });
    const fresh = jwt({ sub: "u", exp: Math.floor(T0 / 1000) + 3600 });
    const list = [];
    for (let i = 0; i < 3; i++) {
      list.push(openTab(b, { token, getToken: async () => (calls[i]++, fresh) }));
    }
    await until("a socket", () => FakeWebSocket.instances.length === 1);
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    // 80 % of the 60 s left.
    await advance(49_000);
    assert.equal(calls[0] + calls[1] + calls[2], 1, "getToken calls " + calls);
    assert.deepEqual(ws.frames.filter((f) => f[0] === AUTH), [[AUTH, { token }], [AUTH, { token: fresh }]]);
    assert.equal(b.hub.tabs, 3, "a pinging tab was dropped");
  });

  test("getToken that the asked tab cannot answer (it left) goes to another tab", async () => {
    const b = browser();
    const token = jwt({ sub: "u", exp: Math.floor(T0 / 1000) + 60 });
    const fresh = jwt({ sub: "u", exp: Math.floor(T0 / 1000) + 3600 });
    let release;
    const a = openTab(b, { token, getToken: () => new Promise((resolve) => (release = resolve)) });
    let calls = 0;
    const c = openTab(b, { token, getToken: async () => (calls++, fresh) });
    await until("a socket", () => FakeWebSocket.instances.length === 1);
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    await advance(49_000);
    // Both tabs were heard of at the same (mocked) time: the first is asked, and hangs.
    assert.equal(typeof release, "function");
    assert.equal(calls, 0);
    a.close();
    await until("c asked", () => calls === 1);
    await until("the renewal", () => ws.frames.filter((f) => f[0] === AUTH).length === 2);
  });

  test("a tab that stops pinging is dropped; when it speaks again it rejoins", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 2);
    clearInterval(list[0]._beat); // as a crashed or frozen tab
    await advance(20_000);
    assert.equal(b.hub.tabs, 1);
    list[0].send("hello", "back");
    await until("the frame of the rejoined tab", () => ws.frames.some((f) => f[0] === "hello"));
    assert.deepEqual(ws.frames.find((f) => f[0] === "hello"), ["hello", "back"]);
    assert.equal(b.hub.tabs, 2);

    clearInterval(list[0]._beat);
    clearInterval(list[1]._beat);
    await advance(20_000);
    assert.equal(b.hub.tabs, 0);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
  });

  test("a hidden tab (timers throttled to one a minute) is dropped after 3 minutes, not 15 s", async () => {
    const b = browser();
    const doc = { visibilityState: "visible", addEventListener() {}, removeEventListener() {} };
    const win = { document: doc, addEventListener() {}, removeEventListener() {} };
    const { list, ws } = await liveTabs(b, 1, { window: win });
    doc.visibilityState = "hidden";
    await advance(5000); // one ping that says hidden
    clearInterval(list[0]._beat); // then nothing, as under intensive throttling
    await advance(60_000);
    assert.equal(b.hub.tabs, 1);
    assert.equal(ws.closedWith, null);
    await advance(130_000);
    assert.equal(b.hub.tabs, 0);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
  });

  test("with Web Locks a tab is dropped the moment it dies, and never for missed pings", async () => {
    const locks = new FakeLocks();
    const saved = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    Object.defineProperty(globalThis, "navigator", { value: { locks }, configurable: true, writable: true });
    try {
      const b = browser();
      const { list, ws } = await liveTabs(b, 2);
      assert.equal(locks.held.size, 2, "each tab holds its lock");
      clearInterval(list[0]._beat);
      clearInterval(list[1]._beat);
      await advance(30_000); // a frozen tab: no pings, still alive
      assert.equal(b.hub.tabs, 2);
      // Tab 0 crashes: no bye, its lock is released by the browser.
      list[0]._port.onmessage = null;
      list[0]._unlock();
      await until("tab 0 dropped", () => b.hub.tabs === 1);
      assert.equal(ws.closedWith, null);
      list[1].close();
      await until("the socket closed", () => ws.closedWith !== null);
      tabs = tabs.filter((t) => t !== list[0]); // its page is gone
      list[0]._port.close();
    } finally {
      if (saved) Object.defineProperty(globalThis, "navigator", saved);
      else delete globalThis.navigator;
    }
  });

  test("acked and failed go to the tab that sent the reliable frame", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 2);
    const acked = [[], []];
    const failed = [[], []];
    list.forEach((t, i) => {
      t.addListener("acked", (d) => acked[i].push(d.id));
      t.addListener("failed", (d) => failed[i].push([d.id, d.code]));
    });
    list[0].send("note", 1, { reliable: true, id: "m1" });
    list[1].send("note", 2, { reliable: true, id: "m2" });
    await until("two reliable frames", () => ws.frames.filter((f) => f[0] === "note").length === 2);
    assert.deepEqual(ws.frames.filter((f) => f[0] === "note"), [["note", 1, null, "m1"], ["note", 2, null, "m2"]]);
    ws.receive([ACK, { duplicate: false, durable: true }, "m1"]);
    ws.receive([ACK + ":error", [413, "too big"], "m2"]);
    await until("the ack and the failure", () => acked[0].length === 1 && failed[1].length === 1);
    await settle();
    assert.deepEqual(acked, [["m1"], []]);
    assert.deepEqual(failed, [[], [["m2", 413]]]);
  });

  test("the fate of a reliable frame whose tab left is told to no other tab", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 2);
    const told = [];
    for (const event of ["acked", "failed"]) list[1].addListener(event, (d) => told.push([event, d.id]));
    list[0].send("note", 1, { reliable: true, id: "m1" });
    await until("the reliable frame", () => ws.frames.some((f) => f[0] === "note"));
    list[0].close();
    await until("tab 0 gone", () => b.hub.tabs === 1);
    ws.receive([ACK + ":error", [503, "not stored"], "m1"]);
    list[1].send("note", 2, { reliable: true, id: "m2" });
    await until("the second frame", () => ws.frames.filter((f) => f[0] === "note").length === 2);
    ws.receive([ACK, { duplicate: false, durable: true }, "m2"]);
    await until("tab 1's own ack", () => told.length > 0);
    await settle();
    assert.deepEqual(told, [["acked", "m2"]]);
  });

  test("a tab closed before the worker answered reports what it could not send", async () => {
    const b = browser();
    const tab = openTab(b);
    const events = [];
    for (const event of ["dropped", "failed", "close"]) tab.addListener(event, (d) => events.push([event, d]));
    tab.send("early", 1);
    tab.send("note", 2, { reliable: true, id: "r1" });
    tab.close();
    assert.deepEqual(events.map((e) => e[0]), ["dropped", "failed", "close"]);
    assert.deepEqual(events[0][1], {
      reason: "closed by the client",
      frames: [{ action: "early", details: 1 }, { action: "note", details: 2, id: "r1" }],
    });
    assert.equal(events[1][1].id, "r1");
    await settle();
    assert.equal(FakeWebSocket.instances.length, 0, "nothing reached a socket");
  });

  test("a final close (kick) closes every tab, rejects their requests, and the next tab connects afresh", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 2);
    const closes = [[], []];
    list.forEach((t, i) => t.addListener("close", (d) => closes[i].push(d.willReconnect)));
    let rejected = null;
    list[0].request("slow", 1).catch((err) => (rejected = err));
    await until("the request", () => ws.frames.some((f) => f[0] === "slow"));
    ws.receive(["Server/close", null]);
    ws.serverClose(1000);
    await until("both tabs told", () => closes.every((c) => c.length === 1));
    assert.deepEqual(closes, [[false], [false]]);
    await until("the pending request rejected", () => rejected !== null);
    assert.ok(rejected instanceof WsgateError && rejected.code === 503, "rejected with 503");
    assert.ok(list.every((t) => t.phase === "closed"));
    assert.equal(b.hub.core, null, "the worker let go of the stopped connection");
    assert.equal(b.hub.tabs, 0);
    list[0].close(); // a closed tab's close does nothing more
    // The user signs in again: a new tab makes a new connection, and works.
    const { list: again, ws: ws2 } = await liveTabs(b, 1);
    assert.notEqual(ws2, ws);
    const pushes = recordFrames(again[0], "push");
    ws2.receive(["push", "hello again"]);
    await until("the push", () => pushes.length === 1);
  });

  test("recovery runs in the worker: since on the reconnect, recovered in every tab", async () => {
    const b = browser();
    const { list, ws } = await liveTabs(b, 2);
    const pushes = list.map((t) => recordFrames(t, "news"));
    const recovered = [0, 0];
    const closes = [];
    list.forEach((t, i) => t.addListener("recovered", () => recovered[i]++));
    list[0].addListener("close", (d) => closes.push(d));
    ws.receive([RECOVERY, { epoch: "e1", recovered: true, count: 0 }]);
    ws.receive(["news", "a", null, 5]);
    ws.serverClose(1006);
    await until("the close in the tab", () => closes.length === 1);
    assert.equal(closes[0].willReconnect, true);
    await advance(2000);
    await until("a second socket", () => FakeWebSocket.instances.length === 2);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    assert.deepEqual(ws2.frames[0], [AUTH, { token: "t", since: { epoch: "e1", seq: 5 } }]);
    ws2.receive([AUTH, "ok"]);
    ws2.receive([RECOVERY, { epoch: "e1", recovered: true, count: 1 }]);
    ws2.receive(["news", "b", null, 6]);
    await until("b in both tabs", () => pushes.every((p) => p.length === 2));
    assert.deepEqual(pushes, [["a", "b"], ["a", "b"]]);
    assert.deepEqual(recovered, [1, 1]);
  });

  test("when the worker script fails to load, the tab connects itself and keeps what it sent", async () => {
    const b = browser({ failing: true });
    const tab = openTab(b, { WebSocket: FakeWebSocket });
    const warnings = [];
    tab.addListener("warning", (d) => warnings.push(d.message));
    const echo = tab.request("echo", "early");
    await until("a socket", () => FakeWebSocket.instances.length === 1);
    assert.equal(tab.shared, false);
    assert.match(warnings[0], /shared worker .*failed/);
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    await until("the request", () => ws.frames.some((f) => f[0] === "echo"));
    ws.receive(["echo", "early", ws.frames.find((f) => f[0] === "echo")[2]]);
    assert.equal(await echo, "early");
    assert.equal(b.hub.tabs, 0, "the failing worker got a tab");
  });

  test("a worker that never answers (its script threw): the tab connects itself after 10 s", async () => {
    class SilentSharedWorker {
      constructor() {
        const channel = new MessageChannel();
        this.port = channel.port1;
        this.other = channel.port2; // nobody listens
        this.onerror = null;
        silent.push(this);
      }
    }
    const silent = [];
    const tab = createClient({ url: URL_, token: "t", shared: true, SharedWorker: SilentSharedWorker, WebSocket: FakeWebSocket });
    tabs.push(tab);
    tab.send("early", 1);
    await advance(9000);
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(tab.shared, true);
    await advance(1000);
    await until("a socket", () => FakeWebSocket.instances.length === 1);
    assert.equal(tab.shared, false);
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    await until("the early frame", () => ws.frames.some((f) => f[0] === "early"));
    silent[0].other.close();
  });

  test("tabs with tokens of two users get two workers, tabs of one user one", () => {
    const names = [];
    class NamingSharedWorker {
      constructor(url, options) {
        names.push(options.name);
        const channel = new MessageChannel();
        this.port = channel.port1;
        channel.port2.close();
      }
    }
    for (const sub of ["alice", "bob", "alice"]) {
      const tab = createClient({ url: URL_, token: jwt({ sub }), shared: true, SharedWorker: NamingSharedWorker });
      tab.close();
    }
    createClient({ url: URL_, token: "opaque", shared: true, SharedWorker: NamingSharedWorker }).close();
    assert.deepEqual(names, [
      "wsgate " + URL_ + " alice", "wsgate " + URL_ + " bob", "wsgate " + URL_ + " alice", "wsgate " + URL_,
    ]);
  });

  test("without SharedWorker, shared: true gives each tab its own connection", async () => {
    const a = createClient({ url: URL_, token: "t", shared: true, WebSocket: FakeWebSocket });
    const c = createClient({ url: URL_, token: "t", shared: true, WebSocket: FakeWebSocket });
    tabs.push(a, c);
    assert.equal(a.shared, false);
    await settle();
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});
