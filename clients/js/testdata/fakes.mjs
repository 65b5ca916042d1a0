// Test doubles for the JS client tests. Kept outside test/ because node --test
// runs every file under a test/ directory as a test file.

/**
 * A WebSocket stand-in driven by the test: open(), receive(), serverClose().
 * It behaves as a browser's does where the client depends on it: send()
 * throws while connecting and silently discards frames once closing; close()
 * makes it closing, and the close event follows asynchronously (unless the
 * test holds it, as a dead network would).
 */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  /** Every socket created since the last reset(), oldest first. */
  static instances = [];

  static reset() {
    FakeWebSocket.instances = [];
  }

  static last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = []; // raw text frames
    this.closedWith = null; // {code, reason} when the client called close()
    this.discarded = []; // frames sent while closing or closed, dropped as a browser does
    this.holdClose = false; // true: close() never leads to a close event
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  /** Frames the client sent, parsed. */
  get frames() {
    return this.sent.map((s) => JSON.parse(s));
  }

  send(data) {
    if (this.readyState === FakeWebSocket.CONNECTING) throw new Error("InvalidStateError: still in CONNECTING state");
    if (this.readyState !== FakeWebSocket.OPEN) {
      this.discarded.push(data);
      return;
    }
    this.sent.push(data);
  }

  close(code, reason) {
    if (this.readyState === FakeWebSocket.CLOSING || this.readyState === FakeWebSocket.CLOSED) return;
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSING;
    if (this.holdClose) return;
    // The closing handshake: the server echoes the code, then the event fires.
    setImmediate(() => this.serverClose(code === undefined ? 1005 : code, reason || ""));
  }

  // ---- driven by the test ----

  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({ type: "open" });
  }

  receive(frame) {
    this.onmessage?.({ type: "message", data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  serverClose(code, reason = "") {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ type: "close", code, reason, wasClean: code !== 1006 });
  }
}

/** Lets pending promise callbacks (and queued microtasks) run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Builds an unsigned JWT-shaped token with the given claims. */
export function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return b64({ alg: "HS256", typ: "JWT" }) + "." + b64(claims) + ".sig";
}

/** A Web Storage (localStorage) stand-in over a Map. */
export class FakeStorage {
  constructor() {
    this.map = new Map();
  }

  get length() {
    return this.map.size;
  }

  key(i) {
    return [...this.map.keys()][i] ?? null;
  }

  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }

  setItem(key, value) {
    this.map.set(key, String(value));
  }

  removeItem(key) {
    this.map.delete(key);
  }
}
