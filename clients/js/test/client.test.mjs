// Unit tests of the wsgate JS client with a fake WebSocket and mocked timers.
// Run: node --test clients/js/test/
import { describe, test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";

import { createClient, installGlobals, WsgateError, DEFAULT_PATH, FINAL_CLOSE_CODES, PHASES } from "../src/wsgate.mjs";
import { FakeWebSocket, flush, jwt } from "../testdata/fakes.mjs";

const AUTH = "Client/authentication";
const URL_ = "ws://edge.test/ws";
const T0 = 1_700_000_000_000; // mocked Date.now() at the start of each test

let clients = [];

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: T0 });
});

afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
  mock.timers.reset();
});

function newClient(options = {}) {
  const client = createClient({ url: URL_, WebSocket: FakeWebSocket, random: () => 0.5, ...options });
  clients.push(client);
  return client;
}

/** Records every client event as [name, detail]. */
function record(client, names = ["open", "authenticated", "close", "reconnecting", "error", "warning", "kicked"]) {
  const events = [];
  for (const name of names) client.addListener(name, (detail) => events.push([name, detail]));
  return events;
}

/** A client whose first socket is open and authenticated. */
async function authenticated(options) {
  const client = newClient(options);
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  await flush();
  ws.receive([AUTH, "ok"]);
  return { client, ws };
}

/** Frames sent by ws, without the authentication and heartbeat frames. */
function appFrames(ws) {
  return ws.frames.filter((f) => f[0] !== AUTH && f[0] !== "Client/ping");
}

describe("seed API: on, off, once, send", () => {
  test("details: arrays are spread, anything else is one argument", async () => {
    const { client, ws } = await authenticated();
    const calls = [];
    client.on("a", (...args) => calls.push(args));
    ws.receive(["a", [1, "two", { three: 3 }]]);
    ws.receive(["a", "text"]);
    ws.receive(["a", { k: "v" }]);
    ws.receive(["a"]);
    assert.deepEqual(calls, [[1, "two", { three: 3 }], ["text"], [{ k: "v" }], [null]]);
  });

  test("<action>:error goes to the error callbacks with (code, message)", async () => {
    const { client, ws } = await authenticated();
    const ok = [];
    const bad = [];
    client.on("hello", (m) => ok.push(m), (code, message) => bad.push([code, message]));
    ws.receive(["hello:error", [400, "No hello message:("]]);
    ws.receive(["hello", "hi"]);
    assert.deepEqual(bad, [[400, "No hello message:("]]);
    assert.deepEqual(ok, ["hi"]);
  });

  test("off removes only the given callback, or all of them", async () => {
    const { client, ws } = await authenticated();
    const log = [];
    const s1 = () => log.push("s1");
    const e1 = () => log.push("e1");
    const s2 = () => log.push("s2");
    client.on("x", s1, e1).on("x", s2);

    client.off("x", s1); // success only: e1 stays
    ws.receive(["x", null]);
    ws.receive(["x:error", [500, "boom"]]);
    assert.deepEqual(log, ["s2", "e1"]);

    log.length = 0;
    client.off("x", undefined, e1); // error only
    ws.receive(["x:error", [500, "boom"]]);
    ws.receive(["x", null]);
    assert.deepEqual(log, ["s2"]);

    log.length = 0;
    client.on("x", s1, e1).off("x"); // everything for the action
    ws.receive(["x", null]);
    ws.receive(["x:error", [500, "boom"]]);
    assert.deepEqual(log, []);
  });

  test("once fires for the first answer only, success or error", async () => {
    const { client, ws } = await authenticated();
    const log = [];
    client.once("a", (m) => log.push("ok " + m), (code) => log.push("err " + code));
    ws.receive(["a:error", [404, "nope"]]);
    ws.receive(["a", "late"]);
    client.once("b", (m) => log.push("b " + m));
    ws.receive(["b", 1]);
    ws.receive(["b", 2]);
    assert.deepEqual(log, ["err 404", "b 1"]);
  });

  test("off works on a once handler with the original callback", async () => {
    const { client, ws } = await authenticated();
    const log = [];
    const cb = (m) => log.push(m);
    client.once("a", cb).off("a", cb);
    ws.receive(["a", 1]);
    assert.deepEqual(log, []);
  });

  test("every seed method and addListener are chainable", async () => {
    const client = newClient();
    const f = () => {};
    assert.equal(client.on("a", f), client);
    assert.equal(client.once("a", f), client);
    assert.equal(client.off("a", f), client);
    assert.equal(client.send("a", 1), client);
    assert.equal(client.addListener("open", f), client);
    assert.equal(client.removeListener("open", f), client);
    assert.equal(client.close(), client);
  });

  test("a throwing callback does not stop the others and is reported", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["error"]);
    const log = [];
    client.on("a", () => {
      throw new Error("bug");
    });
    client.on("a", (m) => log.push(m));
    ws.receive(["a", 1]);
    assert.deepEqual(log, [1]);
    assert.equal(events.length, 1);
    assert.equal(events[0][1].error.message, "bug");
  });

  test("send rejects a bad action at once", () => {
    const client = newClient();
    assert.throws(() => client.send("a.b", 1), TypeError);
    assert.throws(() => client.send("", 1), TypeError);
    assert.throws(() => client.send(42, 1), TypeError);
  });
});

describe("authentication and the offline queue", () => {
  test("sends the token from the token option on open", async () => {
    const client = newClient({ token: "tok" });
    const events = record(client);
    await flush();
    const ws = FakeWebSocket.last();
    assert.equal(ws.url, URL_);
    ws.open();
    assert.deepEqual(ws.frames, [[AUTH, { token: "tok" }]]);
    ws.receive([AUTH, "ok"]);
    assert.equal(client.state, "authenticated");
    assert.deepEqual(
      events.map((e) => e[0]),
      ["open", "authenticated"],
    );
  });

  test("sends null without a token, so the edge uses the cookie", async () => {
    newClient();
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.frames, [[AUTH, null]]);
  });

  test("awaits getToken before opening the socket", async () => {
    let calls = 0;
    newClient({ getToken: async () => "fresh" + ++calls });
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.equal(calls, 1);
    assert.deepEqual(ws.frames, [[AUTH, { token: "fresh1" }]]);
  });

  test("queues application frames until ok, then flushes them in order", async () => {
    const client = newClient();
    client.send("a", 1).send("b", [2]);
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    client.send("c", { three: 3 });
    assert.deepEqual(appFrames(ws), []);
    ws.receive([AUTH, "ok"]);
    assert.deepEqual(appFrames(ws), [["a", 1], ["b", [2]], ["c", { three: 3 }]]);
    client.send("d");
    assert.deepEqual(appFrames(ws).at(-1), ["d", null]);
  });

  test("an unprompted ok and the answer to our frame authenticate once", async () => {
    const client = newClient();
    const events = record(client, ["authenticated"]);
    client.send("a", 1);
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    ws.receive([AUTH, "ok"]);
    assert.equal(events.length, 1);
    assert.deepEqual(appFrames(ws), [["a", 1]]);
  });

  test("a full queue drops the oldest frame with a warning", async () => {
    const client = newClient({ queueLimit: 2 });
    const events = record(client, ["warning"]);
    client.send("a", 1).send("b", 2).send("c", 3);
    assert.equal(events.length, 1);
    assert.equal(events[0][1].action, "a");
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    assert.deepEqual(appFrames(ws), [["b", 2], ["c", 3]]);
  });

  test("frames sent while disconnected wait for the next connection", async () => {
    const { client, ws } = await authenticated();
    ws.serverClose(1006);
    client.send("later", 1);
    mock.timers.tick(30_000);
    await flush();
    const ws2 = FakeWebSocket.last();
    assert.notEqual(ws2, ws);
    ws2.open();
    assert.deepEqual(appFrames(ws2), []);
    ws2.receive([AUTH, "ok"]);
    assert.deepEqual(appFrames(ws2), [["later", 1]]);
  });
});

describe("request", () => {
  test("resolves with the details of the reply carrying its ref", async () => {
    const { client, ws } = await authenticated();
    const seen = [];
    client.on("echo", (d) => seen.push(d));
    const p = client.request("echo", { n: 1 });
    const [action, details, ref] = appFrames(ws)[0];
    assert.equal(action, "echo");
    assert.deepEqual(details, { n: 1 });
    assert.ok(typeof ref === "string" && ref.length > 0 && ref.length <= 64);
    ws.receive(["echo", "other", "someone-else"]);
    ws.receive(["echo", { n: 1 }, ref]);
    ws.receive(["echo", "plain"]);
    assert.deepEqual(await p, { n: 1 });
    // A reply belongs to its request; a reply to another client's ref
    // reaches nobody; frames without a ref reach on() handlers.
    assert.deepEqual(seen, ["plain"]);
  });

  test("uses a fresh ref every time", async () => {
    const { client, ws } = await authenticated();
    client.request("a").catch(() => {});
    client.request("a").catch(() => {});
    const refs = appFrames(ws).map((f) => f[2]);
    assert.equal(new Set(refs).size, 2);
  });

  test("rejects on <action>:error with the code and message", async () => {
    const { client, ws } = await authenticated();
    const p = client.request("hello", "");
    const ref = appFrames(ws)[0][2];
    ws.receive(["hello:error", [400, "No hello message:("], ref]);
    await assert.rejects(p, (err) => {
      assert.ok(err instanceof WsgateError && err instanceof Error);
      assert.equal(err.code, 400);
      assert.equal(err.message, "No hello message:(");
      return true;
    });
  });

  test("rejects with 408 after the timeout (default 10 s)", async () => {
    const { client } = await authenticated();
    const p = client.request("slow", null);
    mock.timers.tick(9_999);
    let settled = false;
    p.catch(() => {}).finally(() => (settled = true));
    await flush();
    assert.equal(settled, false);
    mock.timers.tick(1);
    await assert.rejects(p, { code: 408 });
    const q = client.request("slow", null, { timeout: 50 });
    mock.timers.tick(50);
    await assert.rejects(q, { code: 408 });
  });

  test("is queued before authentication and sent after ok", async () => {
    const client = newClient();
    const p = client.request("echo", 7);
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(appFrames(ws), []);
    ws.receive([AUTH, "ok"]);
    const ref = appFrames(ws)[0][2];
    ws.receive(["echo", 7, ref]);
    assert.equal(await p, 7);
  });

  test("Client/error rejects the request with its ref, else is a non-fatal error event", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["error"]);
    const p = client.request("echo", 1);
    const ref = appFrames(ws)[0][2];
    ws.receive(["Client/error", [400, "bad frame"], ref]);
    await assert.rejects(p, { code: 400, message: "bad frame" });
    ws.receive(["Client/error", [400, "bad action"]]);
    assert.deepEqual(events.at(-1), ["error", { code: 400, message: "bad action", fatal: false }]);
    assert.equal(client.state, "authenticated");
  });

  test("rejects with 503 when the connection drops before the reply", async () => {
    const { client, ws } = await authenticated();
    const p = client.request("echo", 1);
    ws.serverClose(1006);
    await assert.rejects(p, { code: 503 });
  });
});

describe("reconnecting", () => {
  test("backoff: full jitter within min(30 s, 1 s * 2^attempt), reset after auth", async () => {
    let r = 0.999;
    const client = newClient({ random: () => r });
    const events = record(client, ["reconnecting"]);
    await flush();
    for (let i = 0; i < 8; i++) {
      FakeWebSocket.last().serverClose(1006);
      mock.timers.tick(30_000);
      await flush();
    }
    const delays = events.map((e) => e[1].delay);
    const bounds = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
    assert.deepEqual(
      events.map((e) => e[1].attempt),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    delays.forEach((d, i) => {
      assert.ok(d >= 0 && d < bounds[i], `delay ${d} of attempt ${i + 1} within [0, ${bounds[i]})`);
      assert.equal(d, Math.floor(0.999 * bounds[i]));
    });

    // A connection that stays up for stableAfter (10 s) starts the sequence again.
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    r = 0.5;
    mock.timers.tick(10_000);
    ws.serverClose(1012);
    assert.deepEqual(events.at(-1)[1], { attempt: 1, delay: 500 });
  });

  test("backoff with Math.random stays within bounds", async () => {
    const client = createClient({ url: URL_, WebSocket: FakeWebSocket });
    clients.push(client);
    const events = record(client, ["reconnecting"]);
    await flush();
    for (let i = 0; i < 10; i++) {
      FakeWebSocket.last().serverClose(1006);
      mock.timers.tick(30_000);
      await flush();
    }
    events.forEach(([, { attempt, delay }]) => {
      assert.ok(delay >= 0 && delay < Math.min(30_000, 1000 * 2 ** (attempt - 1)));
    });
  });

  test("waits for the delay before opening the next socket", async () => {
    const { ws } = await authenticated();
    ws.serverClose(1001);
    mock.timers.tick(499);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    mock.timers.tick(1);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  for (const code of [1000, 1001, 1006, 1008, 1009, 1011, 1012, 1013, 4408, 4429, 4500]) {
    test(`close ${code} reconnects`, async () => {
      const { client, ws } = await authenticated();
      const events = record(client);
      ws.serverClose(code, "r");
      assert.deepEqual(events[0], ["close", { code, reason: "r", willReconnect: true }]);
      assert.equal(events[1][0], "reconnecting");
      assert.equal(client.state, "reconnecting");
      mock.timers.tick(30_000);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 2);
    });
  }

  test("4001 fetches a new token and reconnects with it", async () => {
    let n = 0;
    const { client, ws } = await authenticated({ getToken: async () => "t" + ++n });
    assert.deepEqual(ws.frames[0], [AUTH, { token: "t1" }]);
    ws.serverClose(4001, "token expired");
    mock.timers.tick(30_000);
    await flush();
    const ws2 = FakeWebSocket.last();
    assert.notEqual(ws2, ws);
    ws2.open();
    assert.equal(n, 2);
    assert.deepEqual(ws2.frames[0], [AUTH, { token: "t2" }]);
    ws2.receive([AUTH, "ok"]);
    assert.equal(client.state, "authenticated");
  });

  test("a failing getToken is reported and retried with backoff", async () => {
    let fail = true;
    const client = newClient({
      getToken: async () => {
        if (fail) throw new Error("offline");
        return "tok";
      },
    });
    const events = record(client, ["error", "reconnecting"]);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.deepEqual(
      events.map((e) => e[0]),
      ["error", "reconnecting"],
    );
    assert.equal(events[0][1].fatal, false);
    fail = false;
    mock.timers.tick(1000);
    await flush();
    FakeWebSocket.last().open();
    assert.deepEqual(FakeWebSocket.last().frames[0], [AUTH, { token: "tok" }]);
  });

  for (const code of [4401, 4403]) {
    test(`close ${code} stops for good with error and close events`, async () => {
      const { client, ws } = await authenticated();
      const events = record(client);
      ws.serverClose(code, "refused");
      assert.deepEqual(events, [
        ["error", { code, message: "refused", closeCode: code, fatal: true }],
        ["close", { code, reason: "refused", willReconnect: false }],
      ]);
      assert.equal(client.state, "closed");
      mock.timers.tick(60_000);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 1);
    });
  }

  test("Client/authentication:error reaches the error event and handlers", async () => {
    const client = newClient({ token: "bad" });
    const events = record(client, ["error", "close"]);
    const seen = [];
    client.on(AUTH, null, (code, message) => seen.push([code, message]));
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH + ":error", [401, "token signature is invalid"]]);
    ws.serverClose(4401, "");
    assert.deepEqual(seen, [[401, "token signature is invalid"]]);
    assert.deepEqual(events[0], [
      "error",
      { code: 401, message: "token signature is invalid", closeCode: 4401, fatal: true },
    ]);
    assert.deepEqual(events[1], ["close", { code: 4401, reason: "", willReconnect: false }]);
  });

  test("Server/close stops for good with kicked and close events", async () => {
    const { client, ws } = await authenticated();
    const events = record(client);
    ws.receive(["Server/close", null]);
    ws.serverClose(1000, "");
    assert.deepEqual(events, [
      ["kicked", {}],
      ["close", { code: 1000, reason: "", willReconnect: false }],
    ]);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.state, "closed");
  });
});

describe("heartbeat", () => {
  test("pings every 25 s and stays up while pongs arrive", async () => {
    const { ws } = await authenticated();
    mock.timers.tick(25_000);
    assert.deepEqual(ws.frames.at(-1), ["Client/ping", null]);
    ws.receive(["Server/pong", null]);
    mock.timers.tick(25_000);
    assert.equal(ws.frames.filter((f) => f[0] === "Client/ping").length, 2);
    ws.receive(["Server/pong", null]);
    mock.timers.tick(20_000);
    assert.equal(ws.closedWith, null);
  });

  test("no pong within 10 s closes the socket and reconnects", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["close", "reconnecting"]);
    mock.timers.tick(25_000);
    mock.timers.tick(9_999);
    assert.equal(ws.closedWith, null);
    mock.timers.tick(1);
    assert.equal(ws.closedWith.code, 4000);
    assert.deepEqual(events[0], ["close", { code: 4000, reason: "heartbeat timeout", willReconnect: true }]);
    assert.equal(events[1][0], "reconnecting");
    mock.timers.tick(30_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe("token renewal", () => {
  test("a short token is renewed at 80 % of its life on the same socket", async () => {
    let n = 0;
    const getToken = async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 60, n: ++n });
    const { client, ws } = await authenticated({ getToken });
    const events = record(client);
    mock.timers.tick(47_999);
    await flush();
    assert.equal(n, 1);
    mock.timers.tick(1);
    await flush();
    assert.equal(n, 2);
    const auths = ws.frames.filter((f) => f[0] === AUTH);
    assert.equal(auths.length, 2);
    assert.notEqual(auths[1][1].token, auths[0][1].token);
    ws.receive(["Server/pong", null]);
    ws.receive([AUTH, "ok"]); // the renewal's answer: not a new authentication
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(events, []);
    // The renewed token is renewed in turn.
    mock.timers.tick(48_000);
    await flush();
    assert.equal(n, 3);
  });

  test("a long token is renewed 30 s before exp", async () => {
    let n = 0;
    const getToken = async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600, n: ++n });
    const { ws } = await authenticated({ getToken });
    // Keep the heartbeat happy while the hour passes.
    const pong = setInterval(() => ws.receive(["Server/pong", null]), 1000);
    mock.timers.tick(3_569_000);
    await flush();
    assert.equal(n, 1);
    mock.timers.tick(1_000);
    await flush();
    assert.equal(n, 2);
    assert.equal(ws.frames.filter((f) => f[0] === AUTH).length, 2);
    clearInterval(pong);
  });

  test("an expired token option is replaced by getToken before connecting", async () => {
    const old = jwt({ sub: "u", exp: Math.floor(T0 / 1000) - 1 });
    newClient({ token: old, getToken: async () => "new" });
    await flush();
    FakeWebSocket.last().open();
    assert.deepEqual(FakeWebSocket.last().frames[0], [AUTH, { token: "new" }]);
  });
});

describe("close", () => {
  test("stops the socket, reconnects and pending requests", async () => {
    const { client, ws } = await authenticated();
    const events = record(client);
    const p = client.request("a");
    client.close();
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
    assert.deepEqual(events, [["close", { code: 1000, reason: "closed by the client", willReconnect: false }]]);
    await assert.rejects(p, { code: 503 });
    await assert.rejects(client.request("b"), { code: 503 });
    mock.timers.tick(120_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(ws.frames.filter((f) => f[0] === "Client/ping").length, 0);
    assert.equal(client.state, "closed");
  });

  test("before the first socket exists, no socket is ever opened", async () => {
    const client = newClient({ getToken: async () => "t" });
    client.close();
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0);
  });

  test("leaves no timers behind (real timers)", async () => {
    mock.timers.reset();
    const { client, ws } = await authenticated({
      getToken: async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600 }),
    });
    client.request("x").catch(() => {});
    ws.serverClose(1006); // schedules a reconnect
    const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    assert.ok(before > 0);
    client.close();
    const after = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    assert.equal(after, 0);
  });
});

describe("url and globals", () => {
  test("http(s) URLs become ws(s); relative URLs need a page", () => {
    assert.equal(newClient({ url: "https://edge.test/ws" })._url, "wss://edge.test/ws");
    assert.equal(newClient({ url: "http://edge.test/x" })._url, "ws://edge.test/x");
    assert.throws(() => createClient({ url: "/ws", WebSocket: FakeWebSocket }), TypeError);
    assert.throws(() => createClient({ WebSocket: FakeWebSocket }), TypeError);
  });

  test("in a page the default URL is the page's host plus the path", () => {
    globalThis.location = { href: "https://app.example/some/page" };
    try {
      assert.equal(newClient({ url: undefined })._url, "wss://app.example" + DEFAULT_PATH);
      assert.equal(newClient({ url: "/other" })._url, "wss://app.example/other");
    } finally {
      delete globalThis.location;
    }
  });

  test("a socket that cannot be created stops the client, and listeners hear it", async () => {
    class Throwing {
      constructor() {
        throw new SyntaxError("bad url");
      }
    }
    const client = newClient({ WebSocket: Throwing });
    const events = record(client); // added after createClient: still in time
    await flush();
    assert.deepEqual(
      events.map((e) => e[0]),
      ["error", "close"],
    );
    assert.equal(events[0][1].fatal, true);
    assert.equal(events[1][1].willReconnect, false);
    assert.equal(client.state, "closed");
  });

  test("needs a WebSocket implementation", () => {
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    try {
      assert.throws(() => createClient({ url: URL_ }), /WebSocket/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test("installGlobals without data-cs-compat only exposes window.wsgate", () => {
    const win = { WebSocket: FakeWebSocket };
    installGlobals(win, fakeScript("https://edge.example/client.js", {}));
    assert.equal(typeof win.wsgate.createClient, "function");
    assert.equal(win.cs, undefined);
  });

  test("installGlobals with data-cs-compat connects cs.WebSockets to the script's edge", async () => {
    const win = { cs: { other: 1 } };
    const saved = globalThis.WebSocket;
    globalThis.WebSocket = FakeWebSocket;
    try {
      installGlobals(
        win,
        fakeScript("https://edge.example:8443/client.js", {
          "data-cs-compat": "",
          "data-token": "tok",
          "data-path": "/socket",
        }),
      );
    } finally {
      globalThis.WebSocket = saved;
    }
    clients.push(win.cs.WebSockets);
    assert.equal(win.cs.other, 1);
    await flush();
    const ws = FakeWebSocket.last();
    assert.equal(ws.url, "wss://edge.example:8443/socket");
    ws.open();
    assert.deepEqual(ws.frames, [[AUTH, { token: "tok" }]]);
  });
});

function fakeScript(src, attrs) {
  return {
    src,
    hasAttribute: (name) => Object.hasOwn(attrs, name),
    getAttribute: (name) => (Object.hasOwn(attrs, name) ? attrs[name] : null),
  };
}

// ---- the review's items (issue 15, items 12-16) --------------------------------

/** A page stand-in: online/offline on the window, visibility and resume on the document. */
function fakePage() {
  const win = new EventTarget();
  win.document = new EventTarget();
  win.document.visibilityState = "visible";
  return win;
}

describe("which closes stop the client (one table)", () => {
  test("FINAL_CLOSE_CODES lists exactly the codes DESIGN §2 calls final", () => {
    assert.deepEqual(FINAL_CLOSE_CODES, [4401, 4403]);
  });

  for (const [status, code] of [
    [503, 1013], // messaging or identity service unavailable
    [429, 1013], // per-user connection cap
  ]) {
    test(`Client/authentication:error ${status} then ${code} reconnects, with a non-fatal error`, async () => {
      const client = newClient({ token: "tok" });
      const events = record(client, ["error", "close", "reconnecting"]);
      await flush();
      const ws = FakeWebSocket.last();
      ws.open();
      ws.receive([AUTH + ":error", [status, "try later"]]);
      ws.serverClose(code, "");
      assert.deepEqual(events[0], ["error", { code: status, message: "try later", closeCode: code, fatal: false }]);
      assert.deepEqual(events[1], ["close", { code, reason: "", willReconnect: true }]);
      assert.equal(events[2][0], "reconnecting");
      mock.timers.tick(30_000);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 2);
    });
  }

  test("an authentication error without a close does not make a later 1012 final", async () => {
    const { client, ws } = await authenticated({ token: "tok" });
    const events = record(client, ["error", "close"]);
    ws.receive([AUTH + ":error", [400, "bad renewal"]]);
    assert.deepEqual(events[0], ["error", { code: 400, message: "bad renewal", fatal: false }]);
    ws.serverClose(1012, "draining");
    assert.deepEqual(events[1], ["close", { code: 1012, reason: "draining", willReconnect: true }]);
    mock.timers.tick(30_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("4001 with a fixed token and no getToken stops: the token cannot get younger", async () => {
    const { client, ws } = await authenticated({ token: "tok" });
    const events = record(client, ["error", "close"]);
    ws.serverClose(4001, "token expired");
    assert.deepEqual(events.at(-1), ["close", { code: 4001, reason: "token expired", willReconnect: false }]);
    assert.equal(events[0][1].fatal, true);
    assert.equal(client.state, "closed");
  });

  test("4001 with the cookie (no token) reconnects: the page may have renewed it", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["close"]);
    ws.serverClose(4001, "token expired");
    assert.deepEqual(events, [["close", { code: 4001, reason: "token expired", willReconnect: true }]]);
    assert.equal(client.state, "reconnecting");
  });
});

describe("backoff after a kick", () => {
  for (const code of [4429, 4500, 1013]) {
    test(`${code} right after ok backs off, and keeps backing off`, async () => {
      const client = newClient({ random: () => 0.999 });
      const events = record(client, ["reconnecting"]);
      for (let i = 0; i < 3; i++) {
        await flush();
        const ws = FakeWebSocket.last();
        ws.open();
        ws.receive([AUTH, "ok"]);
        ws.serverClose(code);
        mock.timers.tick(60_000);
      }
      // At least 2^3 s from the first kick, growing after each one.
      assert.deepEqual(
        events.map((e) => e[1].delay),
        [7992, 15984, 29970],
      );
    });
  }

  test("a close right after ok does not reset the backoff; a stable connection does", async () => {
    const client = newClient({ random: () => 0.999 });
    const events = record(client, ["reconnecting"]);
    for (let i = 0; i < 3; i++) {
      await flush();
      const ws = FakeWebSocket.last();
      ws.open();
      ws.receive([AUTH, "ok"]);
      mock.timers.tick(9_999); // not yet stable
      ws.serverClose(1012);
      mock.timers.tick(60_000);
    }
    assert.deepEqual(
      events.map((e) => e[1].attempt),
      [1, 2, 3],
    );
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    mock.timers.tick(10_000);
    ws.serverClose(1012);
    assert.deepEqual(events.at(-1)[1], { attempt: 1, delay: 999 });
  });
});

describe("timers and replies", () => {
  test("close() inside an authenticated listener stops every timer", async () => {
    const client = newClient({ getToken: async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 60 }) });
    client.addListener("authenticated", () => client.close());
    client.send("queued", 1);
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    assert.equal(client.state, "closed");
    mock.timers.tick(600_000);
    await flush();
    assert.deepEqual(ws.frames, [[AUTH, { token: ws.frames[0][1].token }]]);
    assert.deepEqual(ws.discarded, []);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test("close() inside an authenticated listener leaves no timers (real timers)", async () => {
    mock.timers.reset();
    const client = newClient({ getToken: async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600 }) });
    client.addListener("authenticated", () => client.close());
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    await flush(); // the fake's close event
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, 0);
  });

  test("a reply after the request's timeout reaches no handler", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["warning"]);
    const seen = [];
    client.on("slow", (d) => seen.push(d), (code) => seen.push(code));
    const p = client.request("slow", 1, { timeout: 100 });
    const ref = appFrames(ws)[0][2];
    mock.timers.tick(100);
    await assert.rejects(p, { code: 408 });
    ws.receive(["slow", "too late", ref]);
    ws.receive(["slow:error", [500, "too late"], ref]);
    assert.deepEqual(seen, []);
    assert.equal(events.length, 2);
    assert.match(events[0][1].message, /after its request ended/);
  });

  test("a reply with a ref this client never issued reaches no handler", async () => {
    const { client, ws } = await authenticated();
    const events = record(client, ["warning"]);
    const seen = [];
    client.on("echo", (d) => seen.push(d));
    ws.receive(["echo", "for another tab", "abc-1"]);
    ws.receive(["echo", "numeric ref", 7]);
    assert.deepEqual(seen, []);
    assert.equal(events.length, 2);
    assert.match(events[0][1].message, /did not make/);
  });

  test("refs come from crypto, not from the random option", async () => {
    const a = await authenticated();
    a.client.request("x").catch(() => {});
    const b = await authenticated();
    b.client.request("x").catch(() => {});
    const refA = appFrames(a.ws)[0][2];
    const refB = appFrames(b.ws)[0][2];
    assert.match(refA, /^[0-9a-f]{18}-1$/);
    assert.notEqual(refA, refB);
  });
});

/** A fresh token that expires in 60 s. */
const exp60 = () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 60, at: Date.now() });

describe("token renewal, continued", () => {
  test("a token fetched while disconnected is kept for the next connection", async () => {
    let n = 0;
    const { client, ws } = await authenticated({
      getToken: async () => (++n, exp60()),
      backoffBase: 20_000,
    });
    mock.timers.tick(47_500);
    ws.serverClose(1006); // reconnect in random(0, 20 s) * 0.5 = 10 s
    assert.equal(client.state, "reconnecting");
    mock.timers.tick(500); // the renewal is due (80 % of 60 s) while off line
    await flush();
    assert.equal(n, 2);
    mock.timers.tick(10_000);
    await flush();
    const ws2 = FakeWebSocket.last();
    assert.notEqual(ws2, ws);
    ws2.open();
    assert.equal(n, 2, "the kept token is used, getToken is not called again");
    const renewed = ws2.frames[0][1].token;
    assert.notEqual(renewed, ws.frames[0][1].token);
  });

  test("a failed renewal is retried with backoff before exp", async () => {
    let n = 0;
    let fail = false;
    const { client, ws } = await authenticated({
      getToken: async () => {
        n++;
        if (fail) throw new Error("token service down");
        return exp60();
      },
      random: () => 0.999,
    });
    const events = record(client, ["error"]);
    fail = true;
    mock.timers.tick(48_000);
    await flush();
    assert.equal(n, 2);
    assert.equal(events.length, 1);
    assert.equal(events[0][1].fatal, false);
    mock.timers.tick(999); // first retry after random * 1 s
    await flush();
    assert.equal(n, 3);
    fail = false;
    mock.timers.tick(1_998); // second retry after random * 2 s
    await flush();
    assert.equal(n, 4);
    const auths = ws.frames.filter((f) => f[0] === AUTH);
    assert.equal(auths.length, 2, "the renewed token went out on the live connection");
    assert.equal(client.state, "authenticated");
  });

  test("getToken is called one at a time", async () => {
    let n = 0;
    let release;
    const { ws } = await authenticated({
      getToken: () => {
        n++;
        if (n === 1) return exp60();
        return new Promise((resolve) => (release = () => resolve(exp60())));
      },
    });
    mock.timers.tick(48_000); // the renewal starts and hangs
    await flush();
    assert.equal(n, 2);
    ws.serverClose(4001); // the reconnect needs a token too: it waits for the same call
    mock.timers.tick(30_000);
    await flush();
    assert.equal(n, 2);
    assert.equal(FakeWebSocket.instances.length, 1);
    release();
    await flush();
    await flush();
    assert.equal(n, 2);
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe("silent losses and hidden tabs", () => {
  test("a final close reports the frames it drops", async () => {
    const client = newClient({ token: "tok" });
    const events = record(client, ["dropped", "close"]);
    client.send("a", 1);
    const p = client.request("b", [2]);
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.serverClose(4403, "origin");
    await assert.rejects(p, { code: 503 });
    assert.equal(events[0][0], "dropped");
    const { reason, frames } = events[0][1];
    assert.equal(reason, "refused by the server");
    assert.deepEqual(
      frames.map((f) => [f.action, f.details]),
      [
        ["a", 1],
        ["b", [2]],
      ],
    );
    assert.equal(typeof frames[1].ref, "string");
    assert.equal(events[1][0], "close");
  });

  test("a frame sent on a closing socket is queued, not lost", async () => {
    const { client, ws } = await authenticated();
    ws.readyState = FakeWebSocket.CLOSING; // the server started the closing handshake
    client.send("x", 1);
    ws.serverClose(1001);
    mock.timers.tick(30_000);
    await flush();
    const ws2 = FakeWebSocket.last();
    ws2.open();
    ws2.receive([AUTH, "ok"]);
    assert.deepEqual(ws.discarded, []);
    assert.deepEqual(appFrames(ws2), [["x", 1]]);
  });

  test("the tab becoming visible checks the link at once", async () => {
    const win = fakePage();
    const { client, ws } = await authenticated({ window: win, pingInterval: 60_000, pongTimeout: 1_000 });
    const events = record(client, ["close"]);
    mock.timers.tick(5_000);
    win.document.dispatchEvent(new Event("visibilitychange"));
    assert.deepEqual(ws.frames.at(-1), ["Client/ping", null]);
    mock.timers.tick(1_000); // no pong: the link is dead
    assert.deepEqual(events, [["close", { code: 4000, reason: "heartbeat timeout", willReconnect: true }]]);
  });

  test("a hidden tab does nothing on visibilitychange; offline probes the link", async () => {
    const win = fakePage();
    const { ws } = await authenticated({ window: win, pingInterval: 60_000 });
    win.document.visibilityState = "hidden";
    win.document.dispatchEvent(new Event("visibilitychange"));
    assert.equal(ws.frames.filter((f) => f[0] === "Client/ping").length, 0);
    win.dispatchEvent(new Event("offline"));
    assert.equal(ws.frames.filter((f) => f[0] === "Client/ping").length, 1);
  });

  test("online during the backoff reconnects at once", async () => {
    const win = fakePage();
    const { ws } = await authenticated({ window: win, backoffBase: 30_000 });
    ws.serverClose(1006);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    win.dispatchEvent(new Event("online"));
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("online does not cut short the backoff the server asked for", async () => {
    const win = fakePage();
    const { ws } = await authenticated({ window: win, backoffBase: 30_000 });
    ws.serverClose(4429);
    win.dispatchEvent(new Event("online"));
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test("waking a frozen tab renews a token whose renewal time passed", async () => {
    const win = fakePage();
    let n = 0;
    const { ws } = await authenticated({ window: win, getToken: async () => (++n, exp60()) });
    // Frozen (and hidden, as a browser freezes background tabs): the clock
    // moves, the timers do not run.
    win.document.visibilityState = "hidden";
    mock.timers.setTime(T0 + 50_000);
    await flush();
    assert.equal(n, 1);
    win.document.dispatchEvent(new Event("resume"));
    await flush();
    assert.equal(n, 2);
    assert.equal(ws.frames.filter((f) => f[0] === AUTH).length, 2);
    assert.deepEqual(ws.frames.at(-2), ["Client/ping", null]);
  });

  test("close() stops listening to the page", async () => {
    const win = fakePage();
    const { client, ws } = await authenticated({ window: win });
    client.close();
    win.document.dispatchEvent(new Event("visibilitychange"));
    win.dispatchEvent(new Event("online"));
    await flush();
    assert.equal(ws.frames.filter((f) => f[0] === "Client/ping").length, 0);
    assert.equal(FakeWebSocket.instances.length, 1);
  });
});

describe("the state machine", () => {
  test("a socket that does not open within openTimeout is given up and retried", async () => {
    const client = newClient({ openTimeout: 5_000 });
    const events = record(client, ["close", "reconnecting"]);
    await flush();
    const ws = FakeWebSocket.last();
    ws.holdClose = true; // a dead path: no close event either
    mock.timers.tick(4_999);
    assert.deepEqual(events, []);
    mock.timers.tick(1);
    assert.deepEqual(events[0], ["close", { code: 4000, reason: "opening timeout", willReconnect: true }]);
    assert.equal(events[1][0], "reconnecting");
    mock.timers.tick(30_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("no ok within openTimeout of the open is given up and retried", async () => {
    const client = newClient({ openTimeout: 5_000 });
    const events = record(client, ["close"]);
    await flush();
    const ws = FakeWebSocket.last();
    mock.timers.tick(4_000);
    ws.open(); // the timer starts again for the authentication
    mock.timers.tick(4_999);
    assert.deepEqual(events, []);
    mock.timers.tick(1);
    assert.deepEqual(events, [["close", { code: 4000, reason: "authenticating timeout", willReconnect: true }]]);
    assert.equal(ws.closedWith.code, 4000);
  });

  test("state events: token, opening, authenticating, live, backoff, closed", async () => {
    const client = newClient({ getToken: async () => "t" });
    const phases = [];
    client.addListener("state", ({ state, previous }) => phases.push(previous + ">" + state));
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive([AUTH, "ok"]);
    assert.equal(client.phase, "live");
    ws.serverClose(1006);
    client.close();
    assert.deepEqual(phases, ["token>opening", "opening>authenticating", "authenticating>live", "live>backoff", "backoff>closed"]);
    assert.ok(phases.every((p) => p.split(">").every((s) => PHASES.includes(s))));
  });
});
