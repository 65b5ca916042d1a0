// Unit tests of recovery (DESIGN.md §8): the client tracks the stream's epoch
// and the last seq of stored messages, sends `since` when it reconnects, and
// emits `recovered`. Frames as the edge sends them with history on.
import { describe, test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "../src/wsgate.mjs";
import { FakeWebSocket, flush } from "../testdata/fakes.mjs";

const AUTH = "Client/authentication";
const RECOVERY = "Server/recovery";
const URL_ = "ws://edge.test/ws";

let clients = [];

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_700_000_000_000 });
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

/** Opens the next socket of client, answers ok, then the given frames. */
async function connect(client, ...frames) {
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive([AUTH, "ok"]);
  for (const f of frames) ws.receive(f);
  return ws;
}

/** Drops the connection and lets the reconnect delay pass. */
function drop(ws, code = 1012) {
  ws.serverClose(code);
  mock.timers.tick(30_000);
}

describe("recovery", () => {
  test("sends since with the epoch and the last seq on every reconnect, beside the token", async () => {
    const client = newClient({ token: "tok" });
    const got = [];
    client.on("news", (d) => got.push(d));
    const ws1 = await connect(
      client,
      [RECOVERY, { epoch: "e1", recovered: true, count: 0 }],
      ["news", "a", null, 7],
      ["news", "b", null, 9],
    );
    assert.deepEqual(ws1.frames[0], [AUTH, { token: "tok" }], "the first connection has no position");
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 1 }], ["news", "c", null, 12]);
    assert.deepEqual(ws2.frames[0], [AUTH, { token: "tok", since: { epoch: "e1", seq: 9 } }]);
    drop(ws2);
    const ws3 = await connect(client);
    assert.deepEqual(ws3.frames[0], [AUTH, { token: "tok", since: { epoch: "e1", seq: 12 } }]);
    assert.deepEqual(got, ["a", "b", "c"]);
  });

  test("with the cookie, since goes alone", async () => {
    const client = newClient();
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }], ["news", 1, null, 3]);
    assert.deepEqual(ws1.frames[0], [AUTH, null]);
    drop(ws1);
    const ws2 = await connect(client);
    assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 3 } }]);
  });

  test("a reconnect's URL carries ?since= too: an edge that authenticates the upgrade (cookie) recovers before reading a frame", async () => {
    const client = newClient({ url: URL_ + "?room=5&since=stale:1" });
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }], ["news", 1, null, 3]);
    assert.equal(ws1.url, URL_ + "?room=5&since=stale:1", "the first socket has no position of its own");
    drop(ws1);
    const ws2 = await connect(client);
    assert.equal(new URL(ws2.url).searchParams.get("since"), "e1:3");
    assert.equal(new URL(ws2.url).searchParams.get("room"), "5", "the URL's own parameters are kept");
  });

  test("emits recovered with {recovered, count} when it asked to recover", async () => {
    const client = newClient();
    const events = [];
    client.addListener("recovered", (d) => events.push(d));
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }], ["news", 1, null, 3]);
    assert.deepEqual(events, [], "nothing to recover on the first connection");
    drop(ws1);
    await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 2 }]);
    assert.deepEqual(events, [{ recovered: true, count: 2, epoch: "e1" }]);
  });

  test("recovered: false for a new epoch, whose positions start afresh", async () => {
    const client = newClient();
    const events = [];
    const got = [];
    client.addListener("recovered", (d) => events.push(d));
    client.on("news", (d) => got.push(d));
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }], ["news", "old", null, 500]);
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e2", recovered: false, count: 0 }], ["news", "new", null, 1]);
    assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 500 } }]);
    assert.deepEqual(events, [{ recovered: false, count: 0, epoch: "e2" }]);
    assert.deepEqual(got, ["old", "new"], "seq 1 of the new epoch is not taken for an old one");
    drop(ws2);
    const ws3 = await connect(client);
    assert.deepEqual(ws3.frames[0], [AUTH, { since: { epoch: "e2", seq: 1 } }]);
  });

  test("a live connection told recovered: false (stream recreated, or a failed catch-up) emits recovered", async () => {
    const client = newClient();
    const events = [];
    const got = [];
    client.addListener("recovered", (d) => events.push(d));
    client.on("news", (d) => got.push(d));
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: false, count: 0, seq: 4 }], ["news", "a", null, 5]);
    assert.deepEqual(events, [], "a first connection asked for nothing");
    // The edge could not replay what came while it was cut from NATS: same
    // epoch, the position is kept.
    ws1.receive([RECOVERY, { epoch: "e1", recovered: false, count: 0 }]);
    assert.deepEqual(events, [{ recovered: false, count: 0, epoch: "e1" }]);
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 1 }], ["news", "b", null, 9]);
    assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 5 } }]);
    // The stream was recreated: its sequences start again.
    ws2.receive([RECOVERY, { epoch: "e2", recovered: false, count: 0 }]);
    ws2.receive(["news", "c", null, 1]);
    assert.deepEqual(events.slice(1), [
      { recovered: true, count: 1, epoch: "e1" },
      { recovered: false, count: 0, epoch: "e2" },
    ]);
    assert.deepEqual(got, ["a", "b", "c"], "seq 1 of the new epoch is not taken for a repeat");
    drop(ws2);
    const ws3 = await connect(client);
    assert.deepEqual(ws3.frames[0], [AUTH, { since: { epoch: "e2", seq: 1 } }]);
  });

  test("an epoch without any stored message yet recovers from its start", async () => {
    const client = newClient();
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }]);
    drop(ws1);
    const ws2 = await connect(client);
    assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 0 } }]);
  });

  test("a connection that got nothing stored keeps the position the edge announced", async () => {
    const client = newClient();
    const got = [];
    client.on("news", (d) => got.push(d));
    // A first connection: recovered false (nothing asked), the stream at 40.
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: false, count: 0, seq: 40 }]);
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 1, seq: 40 }], ["news", "missed", null, 41]);
    assert.deepEqual(ws2.frames[0], [AUTH, { since: { epoch: "e1", seq: 40 } }], "not seq 0: that would ask for the whole stream");
    assert.deepEqual(got, ["missed"]);
    // Not recovered (the limits dropped what it missed): the new start, not
    // the old position, is what the next reconnect asks for.
    drop(ws2);
    const ws3 = await connect(client, [RECOVERY, { epoch: "e1", recovered: false, count: 0, seq: 900 }]);
    assert.deepEqual(ws3.frames[0], [AUTH, { since: { epoch: "e1", seq: 41 } }]);
    drop(ws3);
    const ws4 = await connect(client);
    assert.deepEqual(ws4.frames[0], [AUTH, { since: { epoch: "e1", seq: 900 } }]);
  });

  test("the phase is recovering until the announced messages arrived", async () => {
    const client = newClient();
    const phases = [];
    client.addListener("state", ({ state }) => phases.push(state));
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }]);
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 2 }]);
    assert.equal(client.phase, "recovering");
    assert.equal(client.state, "authenticated");
    client.send("while-recovering", 1);
    assert.deepEqual(ws2.frames.at(-1), ["while-recovering", 1], "frames flow while recovering");
    ws2.receive(["news", 1, null, 4]);
    assert.equal(client.phase, "recovering");
    ws2.receive(["news", 2, null, 5]);
    assert.equal(client.phase, "live");
    assert.deepEqual(phases.slice(-3), ["live", "recovering", "live"]);
    // The heartbeat of the connection kept running through the phases.
    mock.timers.tick(25_000);
    assert.deepEqual(ws2.frames.at(-1), ["Client/ping", null]);
  });

  test("a repeated message in the replay still counts: the phase does not stick at recovering", async () => {
    const client = newClient();
    const ws1 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }], ["news", 1, null, 4]);
    drop(ws1);
    const ws2 = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 2 }]);
    ws2.receive(["news", "again", null, 4]);
    ws2.receive(["news", 2, null, 5]);
    assert.equal(client.phase, "live");
  });

  test("a frame whose seq is not past the last one is a duplicate: dropped", async () => {
    const client = newClient();
    const got = [];
    client.on("news", (d) => got.push(d));
    const ws = await connect(client, [RECOVERY, { epoch: "e1", recovered: true, count: 0 }]);
    ws.receive(["news", "a", null, 4]);
    ws.receive(["news", "a again", null, 4]);
    ws.receive(["news", "older", null, 3]);
    ws.receive(["news", "unstored"]); // conn.* replies have no seq
    ws.receive(["news", "b", null, 5]);
    assert.deepEqual(got, ["a", "unstored", "b"]);
  });

  test("cs.WebSockets (installGlobals) recovers the same way", async () => {
    const { installGlobals } = await import("../src/wsgate.mjs");
    const win = {};
    const saved = globalThis.WebSocket;
    globalThis.WebSocket = FakeWebSocket;
    try {
      installGlobals(win, {
        src: "https://edge.example/client.js",
        hasAttribute: (n) => n === "data-cs-compat",
        getAttribute: () => null,
      });
    } finally {
      globalThis.WebSocket = saved;
    }
    const cs = win.cs.WebSockets;
    clients.push(cs);
    const events = [];
    cs.addListener("recovered", (d) => events.push(d));
    const ws1 = await connect(cs, [RECOVERY, { epoch: "e9", recovered: true, count: 0 }], ["hello", "x", null, 41]);
    drop(ws1);
    await connect(cs, [RECOVERY, { epoch: "e9", recovered: true, count: 0 }]);
    assert.deepEqual(FakeWebSocket.last().frames[0], [AUTH, { since: { epoch: "e9", seq: 41 } }]);
    assert.deepEqual(events, [{ recovered: true, count: 0, epoch: "e9" }]);
  });
});
