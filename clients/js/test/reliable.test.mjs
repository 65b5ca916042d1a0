// Unit tests of reliable sends (DESIGN.md §8): a frame with a message id stays
// in the outbox until ["Server/ack", {duplicate, durable}, id] (or
// Server/ack:error), and is resent with the same id after a reconnect; with
// persist it survives a reload. Frames as the edge sends them.
import { describe, test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "../src/wsgate.mjs";
import { FakeStorage, FakeWebSocket, flush } from "../testdata/fakes.mjs";

const AUTH = "Client/authentication";
const ACK = "Server/ack";
const URL_ = "ws://edge.test/ws";
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

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

function record(client, names = ["acked", "failed", "dropped"]) {
  const events = [];
  for (const name of names) client.addListener(name, (detail) => events.push([name, detail]));
  return events;
}

/** Opens the next socket of client and answers ok. */
async function connect(client) {
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive([AUTH, "ok"]);
  return ws;
}

function appFrames(ws) {
  return ws.frames.filter((f) => f[0] !== AUTH && f[0] !== "Client/ping");
}

function drop(ws, code = 1006) {
  ws.serverClose(code);
  mock.timers.tick(30_000);
}

describe("reliable sends", () => {
  test("send with reliable gives the frame an id and keeps it until Server/ack", async () => {
    const client = newClient();
    const events = record(client);
    const ws = await connect(client);
    client.send("order", { n: 1 }, { reliable: true });
    const [frame] = appFrames(ws);
    assert.equal(frame.length, 4);
    assert.deepEqual(frame.slice(0, 3), ["order", { n: 1 }, null]);
    const id = frame[3];
    assert.match(id, ID_RE);
    ws.receive([ACK, { duplicate: false, durable: true }, id]);
    assert.deepEqual(events, [["acked", { id, action: "order", details: { n: 1 }, duplicate: false, durable: true }]]);
    drop(ws);
    const ws2 = await connect(client);
    assert.deepEqual(appFrames(ws2), [], "an acknowledged frame is not resent");
  });

  test("an unacknowledged frame is resent with the same id, in order, after a reconnect", async () => {
    const client = newClient();
    const ws = await connect(client);
    client.send("a", 1, { reliable: true });
    client.send("b", 2); // at-most-once: not resent
    client.send("c", 3, { reliable: true, id: "my-id_3" });
    const id = appFrames(ws)[0][3];
    drop(ws);
    client.send("d", 4);
    const ws2 = await connect(client);
    assert.deepEqual(appFrames(ws2), [
      ["a", 1, null, id],
      ["c", 3, null, "my-id_3"],
      ["d", 4],
    ]);
    ws2.receive([ACK, { duplicate: true, durable: true }, id]);
    ws2.receive([ACK, { duplicate: false, durable: false }, "my-id_3"]);
    drop(ws2);
    const ws3 = await connect(client);
    assert.deepEqual(appFrames(ws3), []);
  });

  test("reliable frames sent while disconnected go out after ok, with their ids", async () => {
    const client = newClient();
    client.send("early", 1, { reliable: true });
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(appFrames(ws), []);
    ws.receive([AUTH, "ok"]);
    assert.equal(appFrames(ws)[0][0], "early");
    assert.match(appFrames(ws)[0][3], ID_RE);
  });

  test("Server/ack:error fails the frame: failed event, not resent", async () => {
    const client = newClient();
    const events = record(client);
    const ws = await connect(client);
    client.send("order", 1, { reliable: true, id: "x1" });
    ws.receive([ACK + ":error", [503, "inbound stream unavailable"], "x1"]);
    assert.deepEqual(events, [
      ["failed", { id: "x1", action: "order", details: 1, code: 503, message: "inbound stream unavailable" }],
    ]);
    drop(ws);
    const ws2 = await connect(client);
    assert.deepEqual(appFrames(ws2), []);
  });

  test("acks reach no on() handler; unknown ids are ignored", async () => {
    const client = newClient();
    const events = record(client, ["acked", "failed", "warning"]);
    const seen = [];
    client.on(ACK, (d) => seen.push(d), (c) => seen.push(c));
    const ws = await connect(client);
    ws.receive([ACK, { duplicate: false, durable: true }, "not-ours"]);
    ws.receive([ACK + ":error", [503, "x"], "not-ours"]);
    assert.deepEqual(seen, []);
    assert.deepEqual(events, []);
  });

  test("a bad id is refused at once", () => {
    const client = newClient();
    assert.throws(() => client.send("a", 1, { reliable: true, id: "a.b" }), TypeError);
    assert.throws(() => client.send("a", 1, { reliable: true, id: "x".repeat(65) }), TypeError);
    assert.throws(() => client.send("a", 1, { reliable: true, id: 7 }), TypeError);
  });

  test("ids are fresh for every send", async () => {
    const client = newClient();
    const ws = await connect(client);
    for (let i = 0; i < 20; i++) client.send("a", i, { reliable: true });
    const ids = appFrames(ws).map((f) => f[3]);
    assert.equal(new Set(ids).size, 20);
  });
});

describe("reliable requests", () => {
  test("resolve with the reply; survive a lost connection, resent with the same ref and id", async () => {
    const client = newClient();
    const ws = await connect(client);
    const p = client.request("pay", { amount: 5 }, { reliable: true, timeout: 60_000 });
    const plain = client.request("echo", 1);
    const [action, details, ref, id] = appFrames(ws)[0];
    assert.deepEqual([action, details], ["pay", { amount: 5 }]);
    assert.match(id, ID_RE);
    drop(ws);
    await assert.rejects(plain, { code: 503 });
    const ws2 = await connect(client);
    assert.deepEqual(appFrames(ws2), [["pay", { amount: 5 }, ref, id]]);
    ws2.receive([ACK, { duplicate: false, durable: true }, id]);
    ws2.receive(["pay", { ok: true }, ref]);
    assert.deepEqual(await p, { ok: true });
  });

  test("reject with the code of Server/ack:error", async () => {
    const client = newClient();
    const ws = await connect(client);
    const p = client.request("pay", 1, { reliable: true, id: "p1" });
    ws.receive([ACK + ":error", [503, "stream unavailable"], "p1"]);
    await assert.rejects(p, { code: 503, message: "stream unavailable" });
  });

  test("after a timeout the frame is still delivered; only the reply is not awaited", async () => {
    const client = newClient();
    const events = record(client);
    client.request("pay", 1, { reliable: true, id: "p2", timeout: 100 }).catch(() => {});
    mock.timers.tick(100);
    const ws = await connect(client);
    assert.deepEqual(appFrames(ws)[0].slice(0, 2), ["pay", 1]);
    ws.receive([ACK, { duplicate: false, durable: true }, "p2"]);
    assert.equal(events[0][0], "acked");
  });
});

describe("losing reliable frames is never silent", () => {
  test("a final close fails every unacknowledged reliable frame", async () => {
    const client = newClient();
    const events = record(client);
    const ws = await connect(client);
    client.send("a", 1, { reliable: true, id: "r1" });
    ws.serverClose(4403);
    assert.equal(events[0][0], "dropped");
    assert.deepEqual(events[0][1].frames, [{ action: "a", details: 1, id: "r1" }]);
    assert.deepEqual(events[1], ["failed", { id: "r1", action: "a", details: 1, code: 503, message: "wsgate: refused by the server" }]);
  });

  test("a full outbox fails the reliable frame it drops", async () => {
    const client = newClient({ queueLimit: 1 });
    const events = record(client, ["failed"]);
    client.send("a", 1, { reliable: true, id: "q1" });
    client.send("b", 2);
    assert.deepEqual(events[0][1].id, "q1");
  });
});

describe("persist", () => {
  test("the outbox survives a reload: the next client resends with the same id", async () => {
    const storage = new FakeStorage();
    const first = newClient({ persist: true, storage });
    const ws = await connect(first);
    first.send("a", 1, { reliable: true, id: "k1" });
    first.send("b", 2); // not reliable: not persisted
    first.send("c", { x: 3 }, { reliable: true, id: "k2" });
    ws.receive([ACK, { duplicate: false, durable: true }, "k1"]);
    assert.equal(storage.length, 1);
    // The page goes away without a word (a reload): first is never closed.

    FakeWebSocket.reset();
    const second = newClient({ persist: true, storage });
    const events = record(second);
    const ws2 = await connect(second);
    assert.deepEqual(appFrames(ws2), [["c", { x: 3 }, null, "k2"]]);
    ws2.receive([ACK, { duplicate: true, durable: true }, "k2"]);
    assert.deepEqual(events, [["acked", { id: "k2", action: "c", details: { x: 3 }, duplicate: true, durable: true }]]);
    assert.equal(storage.length, 0);
  });

  test("frames are kept in order, per persist name, and close() leaves them stored", async () => {
    const storage = new FakeStorage();
    const a = newClient({ persist: "app", storage });
    for (let i = 0; i < 3; i++) a.send("n", i, { reliable: true, id: "n" + i });
    const other = newClient({ persist: "other", storage });
    other.send("o", 0, { reliable: true, id: "o0" });
    const events = record(a);
    a.close();
    assert.deepEqual(events, [], "close() drops nothing that is stored");
    other.close();

    FakeWebSocket.reset();
    const b = newClient({ persist: "app", storage });
    const ws = await connect(b);
    assert.deepEqual(appFrames(ws), [
      ["n", 0, null, "n0"],
      ["n", 1, null, "n1"],
      ["n", 2, null, "n2"],
    ]);
  });

  test("a final close clears the stored frames", async () => {
    const storage = new FakeStorage();
    const client = newClient({ persist: true, storage });
    const ws = await connect(client);
    client.send("a", 1, { reliable: true });
    assert.equal(storage.length, 1);
    ws.serverClose(4401);
    assert.equal(storage.length, 0);
  });

  test("unusable storage warns and keeps the outbox in memory", async () => {
    const storage = new FakeStorage();
    storage.setItem = () => {
      throw new Error("QuotaExceededError");
    };
    const client = newClient({ persist: true, storage });
    const events = record(client, ["warning"]);
    const ws = await connect(client);
    client.send("a", 1, { reliable: true, id: "m1" });
    assert.match(events[0][1].message, /cannot persist/);
    drop(ws);
    const ws2 = await connect(client);
    assert.deepEqual(appFrames(ws2), [["a", 1, null, "m1"]]);
  });
});
