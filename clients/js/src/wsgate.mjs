// wsgate JavaScript client: real-time WebSockets over wsgate edges.
//
// This file is the single source of truth. The edge serves it unchanged as the
// ES module /client.mjs, and as the classic script /client.js produced by the Go
// package jsclient (it drops the final `export {...}` statement, wraps the rest
// in an IIFE and calls installGlobals). So this file must stay free of `import`,
// `import.meta`, top-level `await`, and must keep exactly one `export {...}`
// statement, at its very end. No dependencies, browsers and Node >= 20.
//
// Wire protocol (DESIGN.md §2): every frame is a JSON array text frame,
// [action, details] or [action, details, ref], in both directions.

// The edge replaces this line with its configured WebSocket path when it serves
// the file (jsclient.Handler). Keep it exactly in this form.
const DEFAULT_PATH = "/ws";

const AUTH = "Client/authentication";
const PING = "Client/ping";
const PONG = "Server/pong";
const SERVER_CLOSE = "Server/close";
const CLIENT_ERROR = "Client/error";
const ERROR_SUFFIX = ":error";

// Same rule the edge enforces; checking it here turns a typo into an
// immediate exception instead of a Client/error round trip (and a 1008 close
// on the second one).
const ACTION_RE = /^[A-Za-z0-9_\-/:]{1,128}$/;

// Close codes after which reconnecting cannot help: the server said no.
const FATAL_CLOSE_CODES = new Set([4401, 4403]);
const CLOSE_TOKEN_EXPIRED = 4001;
// Code we close with when the application heartbeat gets no answer
// (browsers only let scripts use 1000 and 3000-4999).
const CLOSE_HEARTBEAT = 4000;

// setTimeout stores delays as a signed 32-bit number of milliseconds; a longer
// delay fires at once, so long waits are done in steps of at most this.
const MAX_TIMER_DELAY = 0x7fffffff;

const DEFAULTS = {
  queueLimit: 1000, // application frames kept while not authenticated
  requestTimeout: 10000, // ms, default timeout of request()
  backoffBase: 1000, // ms, first reconnect delay bound
  backoffMax: 30000, // ms, cap of the reconnect delay bound
  pingInterval: 25000, // ms between Client/ping frames while authenticated
  pongTimeout: 10000, // ms to wait for Server/pong before reconnecting
  refreshBefore: 30000, // ms before the token's exp to renew it
};

/** Error used to reject request() promises; `code` is an HTTP-like status. */
class WsgateError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = "WsgateError";
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/** Creates a client and starts connecting at once (like the seed's cs.WebSockets). */
function createClient(options) {
  return new Client(options || {});
}

class Client {
  constructor(options) {
    this._options = { ...DEFAULTS, ...options };
    for (const key of Object.keys(DEFAULTS)) {
      if (typeof this._options[key] !== "number" || !(this._options[key] >= 0)) {
        this._options[key] = DEFAULTS[key];
      }
    }
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("wsgate: no WebSocket implementation; pass one as the WebSocket option");
    }
    this._url = resolveUrl(options.url);
    this._token = options.token || null;
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._random = typeof options.random === "function" ? options.random : Math.random;

    this._handlers = new Map(); // action -> [{success, error, once, dead}]
    this._listeners = new Map(); // event -> Set of functions
    this._queue = []; // [{data, ref}] application frames waiting for "ok"
    this._pending = new Map(); // ref -> {resolve, reject, timer, sent}
    // Refs are unique per client, and the random prefix keeps them distinct
    // between tabs in case a server sends a reply to all tabs of a user.
    this._refPrefix = Math.floor(this._random() * 36 ** 6).toString(36) + "-";
    this._refCounter = 0;

    this._state = "connecting";
    this._stopped = false; // close() was called or the server refused us for good
    this._attempt = 0; // reconnect attempts since the last successful authentication
    this._generation = 0; // bumped per connection; stale async work compares it
    this._ws = null;
    this._authenticated = false; // per connection
    this._connFlags = {}; // per connection: kicked, authError
    this._timers = { reconnect: null, ping: null, pong: null, refresh: null };
    this._needFreshToken = false;

    // Deferred so that listeners added right after createClient() see
    // every event, including a failure to open the first socket.
    queueMicrotask(() => this._connect());
  }

  /** Current state: "connecting", "authenticated", "reconnecting" or "closed". */
  get state() {
    return this._state;
  }

  // ---- seed API: cs.WebSockets ------------------------------------------

  on(action, success, error) {
    return this._addHandler(action, success, error, false);
  }

  once(action, success, error) {
    return this._addHandler(action, success, error, true);
  }

  off(action, success, error) {
    const list = this._handlers.get(action);
    if (!list) return this;
    for (const h of list) {
      if (!success && !error) {
        h.dead = true;
        continue;
      }
      if (success && h.success === success) h.success = null;
      if (error && h.error === error) h.error = null;
      if (!h.success && !h.error) h.dead = true;
    }
    const alive = list.filter((h) => !h.dead);
    if (alive.length) this._handlers.set(action, alive);
    else this._handlers.delete(action);
    return this;
  }

  send(action, details) {
    this._enqueue(encode(action, details, undefined), undefined, action);
    return this;
  }

  // ---- modern API --------------------------------------------------------

  /**
   * Sends [action, details, ref] and resolves with the details of the reply
   * that carries the same ref; rejects with a WsgateError on <action>:error
   * (code and message from the server), on timeout (408) and when the
   * connection or the client goes away before the answer (503).
   */
  request(action, details, options) {
    const ref = this._refPrefix + ++this._refCounter;
    let data;
    try {
      data = encode(action, details, ref);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._stopped) {
      return Promise.reject(new WsgateError(503, "wsgate: client is closed"));
    }
    const timeout = options && typeof options.timeout === "number" ? options.timeout : this._options.requestTimeout;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, sent: false };
      entry.timer = setTimeout(() => {
        this._pending.delete(ref);
        // Do not send later a request nobody waits for any more.
        this._queue = this._queue.filter((q) => q.ref !== ref);
        reject(new WsgateError(408, `wsgate: no reply to ${action} within ${timeout} ms`));
      }, Math.min(timeout, MAX_TIMER_DELAY));
      this._pending.set(ref, entry);
      this._enqueue(data, ref, action);
    });
  }

  /** Subscribes to a client event (see wsgate.d.ts for the list). */
  addListener(event, listener) {
    if (typeof listener !== "function") return this;
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return this;
  }

  removeListener(event, listener) {
    const set = this._listeners.get(event);
    if (set) set.delete(listener);
    return this;
  }

  /** Stops everything: socket, timers, reconnects; rejects pending requests. */
  close() {
    if (this._state === "closed") return this;
    this._stop();
    this._state = "closed";
    this._emit("close", { code: 1000, reason: "closed by the client", willReconnect: false });
    return this;
  }

  // ---- connection lifecycle ----------------------------------------------

  async _connect() {
    if (this._stopped) return;
    const generation = ++this._generation;
    this._state = this._attempt > 0 ? "reconnecting" : "connecting";
    try {
      // Fetch the token before opening the socket: the edge closes
      // connections that stay unauthenticated for too long (4408).
      if (this._getToken && (this._needFreshToken || !this._token || tokenExpired(this._token))) {
        const token = await this._getToken();
        if (generation !== this._generation) return;
        this._token = token || null;
        this._needFreshToken = false;
      }
    } catch (err) {
      if (generation !== this._generation) return;
      this._emit("error", { code: 0, message: "wsgate: getToken failed", error: err, fatal: false });
      this._scheduleReconnect();
      return;
    }

    let ws;
    try {
      ws = new this._WebSocket(this._url);
    } catch (err) {
      // A malformed URL or a forbidden port: retrying cannot help.
      this._stop();
      this._state = "closed";
      this._emit("error", { code: 0, message: "wsgate: cannot open " + this._url, error: err, fatal: true });
      this._emit("close", { code: 1006, reason: "cannot open the WebSocket", willReconnect: false });
      return;
    }
    this._ws = ws;
    this._authenticated = false;
    this._connFlags = { kicked: false, authError: null };
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
    // An error event is always followed by a close event; handle it there.
    ws.onerror = null;
  }

  _onOpen(ws) {
    if (ws !== this._ws) return;
    this._emit("open", { url: this._url });
    // With null the edge uses the cookie (or token) that came with the upgrade.
    this._sendNow([AUTH, this._token ? { token: this._token } : null]);
  }

  _onMessage(ev) {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      this._emit("warning", { message: "wsgate: ignored a frame that is not JSON" });
      return;
    }
    if (!Array.isArray(frame) || typeof frame[0] !== "string") {
      this._emit("warning", { message: "wsgate: ignored a frame that is not [action, details, ref?]" });
      return;
    }
    const action = frame[0];
    const details = frame.length > 1 ? frame[1] : null;
    const ref = frame.length > 2 ? frame[2] : undefined;

    switch (action) {
      case AUTH:
        if (details === "ok") this._onAuthenticated();
        break;
      case AUTH + ERROR_SUFFIX:
        this._connFlags.authError = details;
        break;
      case PONG:
        this._clearTimer("pong");
        break;
      case SERVER_CLOSE:
        // The close that follows must not be answered by a reconnect.
        this._connFlags.kicked = true;
        this._emit("kicked", {});
        break;
      case CLIENT_ERROR:
        this._emit("error", { code: errorCode(details), message: errorMessage(details), fatal: false });
        break;
    }

    if (ref !== undefined && ref !== null && this._pending.has(ref)) {
      this._settle(ref, action, details);
      return;
    }
    this._dispatch(action, details);
  }

  _onAuthenticated() {
    if (this._authenticated) {
      // The answer to a token renewal on this connection.
      this._scheduleRefresh();
      return;
    }
    this._authenticated = true;
    this._attempt = 0;
    this._state = "authenticated";
    this._emit("authenticated", {});
    this._flush();
    this._schedulePing();
    this._scheduleRefresh();
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._dropConnection();
    const flags = this._connFlags;
    reason = reason || "";
    let fatal = null;
    if (flags.kicked) {
      fatal = { code, message: "wsgate: the server closed the connection (Server/close)", kicked: true };
    } else if (FATAL_CLOSE_CODES.has(code) || flags.authError) {
      fatal = {
        code: flags.authError ? errorCode(flags.authError) : code,
        message: flags.authError ? errorMessage(flags.authError) : reason || "wsgate: refused by the server",
        closeCode: code,
      };
    }
    if (fatal) {
      this._stop();
      this._state = "closed";
      if (!fatal.kicked) {
        this._emit("error", { code: fatal.code, message: fatal.message, closeCode: fatal.closeCode, fatal: true });
      }
      this._emit("close", { code, reason, willReconnect: false });
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED) this._needFreshToken = true;
    this._emit("close", { code, reason, willReconnect: true });
    this._scheduleReconnect();
  }

  // Detaches the current socket and fails the requests it carried: their
  // replies would go to this connection only, which is gone.
  _dropConnection() {
    const ws = this._ws;
    this._ws = null;
    this._authenticated = false;
    this._clearTimer("ping");
    this._clearTimer("pong");
    this._clearTimer("refresh");
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    for (const [ref, entry] of this._pending) {
      if (entry.sent) this._fail(ref, new WsgateError(503, "wsgate: connection lost before the reply"));
    }
    return ws;
  }

  // Closes our side without waiting for the close handshake: on a dead
  // network the close event can take minutes.
  _abort(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing; nothing to do.
    }
    this._onClose(ws, code, reason);
  }

  _stop() {
    this._stopped = true;
    this._generation++;
    this._clearTimer("reconnect");
    for (const ref of [...this._pending.keys()]) {
      this._fail(ref, new WsgateError(503, "wsgate: client is closed"));
    }
    this._queue = [];
    const ws = this._dropConnection();
    if (ws) {
      try {
        ws.close(1000, "closed by the client");
      } catch {
        // Already closing.
      }
    }
  }

  _scheduleReconnect() {
    if (this._stopped) return;
    // Exponential backoff with full jitter: spreads the reconnects of many
    // clients after an edge goes away.
    const bound = Math.min(this._options.backoffMax, this._options.backoffBase * 2 ** this._attempt);
    const delay = Math.floor(this._random() * bound);
    this._attempt++;
    this._state = "reconnecting";
    this._emit("reconnecting", { attempt: this._attempt, delay });
    this._setTimer("reconnect", delay, () => this._connect());
  }

  // ---- heartbeat and token renewal ---------------------------------------

  _schedulePing() {
    this._setTimer("ping", this._options.pingInterval, () => {
      this._sendNow([PING, null]);
      if (this._timers.pong === null) {
        this._setTimer("pong", this._options.pongTimeout, () => this._abort(CLOSE_HEARTBEAT, "heartbeat timeout"));
      }
      this._schedulePing();
    });
  }

  _scheduleRefresh() {
    this._clearTimer("refresh");
    const exp = tokenExp(this._token);
    if (!this._getToken || exp === null) return;
    const remaining = exp * 1000 - Date.now();
    // 30 s before exp for long tokens, at 80 % of the remaining life for short ones.
    const delay = Math.max(0, Math.max(remaining - this._options.refreshBefore, remaining * 0.8));
    if (delay > MAX_TIMER_DELAY) {
      this._setTimer("refresh", MAX_TIMER_DELAY, () => this._scheduleRefresh());
      return;
    }
    this._setTimer("refresh", delay, () => this._refreshToken());
  }

  async _refreshToken() {
    const generation = this._generation;
    const old = this._token;
    let token;
    try {
      token = await this._getToken();
    } catch (err) {
      // Not fatal: if the token does expire the edge closes with 4001 and
      // we fetch a token again before reconnecting.
      this._emit("error", { code: 0, message: "wsgate: getToken failed", error: err, fatal: false });
      return;
    }
    if (generation !== this._generation || !this._authenticated) return;
    // The same token again would only make us ask again and again until exp.
    if (!token || token === old) return;
    this._token = token;
    // Renews the identity on the live connection; the edge answers "ok".
    this._sendNow([AUTH, { token }]);
  }

  // ---- frames out --------------------------------------------------------

  _enqueue(data, ref, action) {
    if (this._stopped) {
      this._emit("warning", { message: "wsgate: client is closed, dropped " + action, action });
      if (ref !== undefined) this._fail(ref, new WsgateError(503, "wsgate: client is closed"));
      return;
    }
    // A closing socket silently discards what it is given, so only an open,
    // authenticated one gets frames directly; the rest wait for the next "ok".
    if (this._authenticated && this._ws.readyState === 1 /* OPEN */ && this._queue.length === 0) {
      this._write(data, ref);
      return;
    }
    this._queue.push({ data, ref, action });
    if (this._queue.length > this._options.queueLimit) {
      const dropped = this._queue.shift();
      this._emit("warning", {
        message: "wsgate: offline queue full, dropped the oldest frame (" + dropped.action + ")",
        action: dropped.action,
      });
      if (dropped.ref !== undefined) {
        this._fail(dropped.ref, new WsgateError(503, "wsgate: dropped from the full offline queue"));
      }
    }
  }

  _flush() {
    const queue = this._queue;
    this._queue = [];
    for (const item of queue) this._write(item.data, item.ref);
  }

  _write(data, ref) {
    this._ws.send(data);
    const entry = ref !== undefined ? this._pending.get(ref) : undefined;
    if (entry) entry.sent = true;
  }

  _sendNow(frame) {
    const ws = this._ws;
    if (ws && ws.readyState === 1 /* OPEN */) ws.send(JSON.stringify(frame));
  }

  // ---- frames in ---------------------------------------------------------

  _addHandler(action, success, error, once) {
    success = typeof success === "function" ? success : null;
    error = typeof error === "function" ? error : null;
    if (!action || (!success && !error)) return this;
    const list = this._handlers.get(action) || [];
    list.push({ success, error, once, dead: false });
    this._handlers.set(action, list);
    return this;
  }

  _dispatch(action, details) {
    const isError = action.endsWith(ERROR_SUFFIX);
    const name = isError ? action.slice(0, -ERROR_SUFFIX.length) : action;
    const list = this._handlers.get(name);
    if (!list) return;
    // Seed rule: an array is spread into arguments, anything else is one.
    const args = Array.isArray(details) ? details : [details];
    for (const h of list.slice()) {
      if (h.dead) continue; // removed by an earlier callback of this frame
      const callback = isError ? h.error : h.success;
      if (h.once) {
        // once() ends at the first answer, success or error, even when it
        // has no callback for that kind of answer.
        h.dead = true;
        this._handlers.set(name, this._handlers.get(name).filter((x) => !x.dead));
        if (this._handlers.get(name).length === 0) this._handlers.delete(name);
      }
      if (!callback) continue;
      try {
        callback(...args);
      } catch (err) {
        this._reportCallbackError(err);
      }
    }
  }

  _settle(ref, action, details) {
    const entry = this._pending.get(ref);
    this._pending.delete(ref);
    clearTimeout(entry.timer);
    if (action.endsWith(ERROR_SUFFIX) || action === CLIENT_ERROR) {
      entry.reject(new WsgateError(errorCode(details), errorMessage(details), details));
    } else {
      entry.resolve(details);
    }
  }

  _fail(ref, err) {
    const entry = this._pending.get(ref);
    if (!entry) return;
    this._pending.delete(ref);
    clearTimeout(entry.timer);
    entry.reject(err);
  }

  // ---- events and timers -------------------------------------------------

  _emit(event, detail) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(detail);
      } catch (err) {
        // A faulty listener must not break the connection logic; "error"
        // listeners that throw go to the console to avoid a loop.
        if (event === "error") console.error(err);
        else this._reportCallbackError(err);
      }
    }
  }

  _reportCallbackError(err) {
    if (this._listeners.has("error") && this._listeners.get("error").size > 0) {
      this._emit("error", { code: 0, message: "wsgate: a callback threw", error: err, fatal: false });
    } else {
      console.error(err);
    }
  }

  _setTimer(name, delay, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, delay);
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }
}

// ---- helpers ---------------------------------------------------------------

function encode(action, details, ref) {
  if (typeof action !== "string" || !ACTION_RE.test(action)) {
    throw new TypeError("wsgate: bad action " + JSON.stringify(action) + " (1-128 of A-Z a-z 0-9 _ - / :)");
  }
  const frame = [action, details === undefined ? null : details];
  if (ref !== undefined) frame.push(ref);
  // Serialize now: the caller may change the object after send() returns,
  // and an unserializable value should fail in the caller's stack.
  return JSON.stringify(frame);
}

// Resolves url against the page (http -> ws, https -> wss); without url in a
// browser it is the page's host plus DEFAULT_PATH.
function resolveUrl(url) {
  const base = globalThis.location && globalThis.location.href;
  if (!url && !base) throw new TypeError("wsgate: the url option is required outside a browser");
  let u;
  try {
    u = new URL(url || DEFAULT_PATH, base);
  } catch {
    throw new TypeError("wsgate: bad url " + JSON.stringify(url) + " (use an absolute ws:// or wss:// URL)");
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

function errorCode(details) {
  return Array.isArray(details) && typeof details[0] === "number" ? details[0] : 0;
}

function errorMessage(details) {
  if (Array.isArray(details) && details.length > 1) return String(details[1]);
  return typeof details === "string" ? details : "wsgate: error";
}

// Returns the exp claim (seconds) of a JWT, or null when the token is not a
// JWT or has no exp. The signature is not checked: the edge does that.
function tokenExp(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const claims = JSON.parse(atob(b64));
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

function tokenExpired(token) {
  const exp = tokenExp(token);
  return exp !== null && exp * 1000 <= Date.now();
}

/**
 * Classic-script bootstrap, called by /client.js with (window,
 * document.currentScript): exposes window.wsgate = {createClient} and, when
 * the tag has data-cs-compat, creates window.cs.WebSockets connected to the
 * edge that served the script, as CleverStyle pages expect.
 */
function installGlobals(win, script) {
  win.wsgate = Object.assign(win.wsgate || {}, { createClient, WsgateError });
  if (!script || !script.hasAttribute || !script.hasAttribute("data-cs-compat")) return;
  const base = win.location && win.location.href;
  const src = new URL(script.src || script.getAttribute("src"), base);
  const scheme = src.protocol === "https:" ? "wss:" : "ws:";
  const path = script.getAttribute("data-path") || DEFAULT_PATH;
  const token = script.getAttribute("data-token") || null;
  win.cs = win.cs || {};
  win.cs.WebSockets = createClient({ url: scheme + "//" + src.host + path, token });
}

export { createClient, installGlobals, WsgateError, DEFAULT_PATH };
