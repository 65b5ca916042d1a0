// wsgate JavaScript client: real-time WebSockets over wsgate edges.
//
// This file is the single source of truth. The edge serves it unchanged as the
// ES module /client.mjs, and as the classic script /client.js produced by the Go
// package jsclient (it drops the final `export {...}` statement, wraps the rest
// in an IIFE and calls installGlobals). So this file must stay free of `import`,
// `import.meta`, top-level `await`, and must keep exactly one `export {...}`
// statement, at its very end. No dependencies, browsers and Node >= 20.
//
// Wire protocol (DESIGN.md §2, §8): every frame is a JSON array text frame,
// [action, details], [action, details, ref], and from the edge
// [action, details, ref|null, seq] for a stored message (history on), from
// the client [action, details, ref|null, id] for a reliable send.
//
// Inside, the client is a state machine (see PHASES) that owns the socket,
// authentication, heartbeat and backoff; each timer belongs to a phase and
// ends with it. Frames out go through one ordered Outbox, replies come back
// through a RefRouter, and everything else reaches the on() handlers.
// With shared: true that Client runs in a SharedWorker (SharedHub) and each
// tab gets a SharedClient facade; see "the shared connection" below.

// The edge replaces this line with its configured WebSocket path when it serves
// the file (jsclient.Handler). Keep it exactly in this form.
const DEFAULT_PATH = "/ws";

// Close codes after which the client stops for good, whatever it holds: the
// server refused this client (DESIGN.md §2). Every other code reconnects.
// Kept on one line: a Go test reads it (jsclient.FinalCloseCodes).
const FINAL_CLOSE_CODES = [4401, 4403];

const AUTH = "Client/authentication";
const PING = "Client/ping";
const PONG = "Server/pong";
const SERVER_CLOSE = "Server/close";
const CLIENT_ERROR = "Client/error";
const RECOVERY = "Server/recovery";
const ACK = "Server/ack";
const ERROR_SUFFIX = ":error";

// Same rule the edge enforces; checking it here turns a typo into an
// immediate exception instead of a Client/error round trip (and a 1008 close
// on the second one).
const ACTION_RE = /^[A-Za-z0-9_\-/:]{1,128}$/;
// A message id for reliable delivery (DESIGN.md §8).
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

// How the client answers a close code (DESIGN.md §2); codes not listed
// reconnect with the usual backoff.
//   stop:  final, see FINAL_CLOSE_CODES.
//   token: 4001, the token expired: fetch a fresh one, then reconnect; final
//          only when the client has a fixed token and no getToken.
//   slow:  the server asked us to slow down (overloaded, rate limited, slow
//          consumer) or our frames broke a rule: reconnect, but back off at
//          least SLOW_ATTEMPT steps, even right after a healthy connection.
const CLOSE_TOKEN_EXPIRED = 4001;
const SLOW_CLOSE_CODES = [1002, 1003, 1007, 1008, 1009, 1013, 4429, 4500];
const SLOW_ATTEMPT = 3;
// Code we close with when the application heartbeat gets no answer, or the
// socket does not open or authenticate in time (browsers only let scripts
// use 1000 and 3000-4999).
const CLOSE_HEARTBEAT = 4000;

// The phases of a client. "state" events announce every change.
//   token          waiting for getToken before opening a socket
//   opening        the socket is being opened
//   authenticating open, Client/authentication sent, waiting for "ok"
//   live           authenticated: frames flow, heartbeat and renewal run
//   recovering     live, while the missed messages announced by Server/recovery arrive
//   backoff        waiting before the next attempt
//   closed         stopped for good
const PHASES = ["token", "opening", "authenticating", "live", "recovering", "backoff", "closed"];

// setTimeout stores delays as a signed 32-bit number of milliseconds; a longer
// delay fires at once, so long waits are done in steps of at most this.
const MAX_TIMER_DELAY = 0x7fffffff;

const DEFAULTS = {
  queueLimit: 1000, // application frames kept while not authenticated
  requestTimeout: 10000, // ms, default timeout of request()
  backoffBase: 1000, // ms, first reconnect delay bound
  backoffMax: 30000, // ms, cap of the reconnect delay bound
  stableAfter: 10000, // ms a connection must stay up before the backoff starts again
  openTimeout: 15000, // ms to open the socket, and again to get "ok", before giving up on it
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

/**
 * Creates a client and starts connecting at once (like the seed's
 * cs.WebSockets). With shared: true the connection lives in a SharedWorker
 * that all of the origin's tabs share, where the browser has SharedWorker;
 * elsewhere (Chrome for Android, Safari before 16) each tab connects itself.
 */
function createClient(options) {
  options = options || {};
  if (options.shared) {
    const SW = options.SharedWorker !== undefined ? options.SharedWorker : globalThis.SharedWorker;
    if (typeof SW === "function") {
      try {
        return new SharedClient(options, SW);
      } catch (err) {
        // A worker URL of another origin (SecurityError): connect here.
        console.warn("wsgate: no shared worker (" + err + "), this tab connects itself");
      }
    }
  }
  return new Client(options);
}

// Endpoint is what every client offers a page, whoever owns the socket: the
// on() handlers of actions and the listeners of events.
class Endpoint {
  constructor() {
    this._handlers = new Map(); // action -> [{success, error, once, dead}]
    this._listeners = new Map(); // event -> Set of functions
  }

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

  // ---- events ------------------------------------------------------------

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
}

class Client extends Endpoint {
  constructor(options) {
    super();
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

    // In a shared worker, application frames go to the tabs instead of on() handlers.
    this._sink = typeof options[FRAME_SINK] === "function" ? options[FRAME_SINK] : null;
    this._outbox = new Outbox(openStore(options, this._url, (message) => this._emit("warning", { message })));
    this._router = new RefRouter();

    this._phase = "token";
    this._phaseTimers = new Map(); // name -> timeout id, all ended by the next phase
    this._clientTimers = new Map(); // name -> timeout id, ended by close only (token renewal)
    this._attempt = 0; // backoff steps since the last stable connection
    this._ws = null;
    this._conn = 0; // bumped per socket; stale async work compares it
    this._closing = null; // per connection: {kicked, authError}
    this._needFreshToken = false;
    this._tokenFetch = null; // the one getToken call in flight
    this._renewAttempt = 0;
    this._refreshDue = null; // Date.now() at which the token is to be renewed
    this._slow = false; // the current backoff follows a "slow" close code
    // Recovery (DESIGN.md §8): the history stream's epoch and the seq of the
    // last stored message received; sent as since when reconnecting.
    this._epoch = null;
    this._seq = null;
    this._sinceSent = false; // per connection
    this._announced = false; // per connection: its first Server/recovery came
    this._replayLeft = 0; // messages Server/recovery announced that did not arrive yet

    this._wake = () => this._onWake();
    this._visibility = () => {
      const doc = (this._options.window || globalThis).document;
      if (doc && doc.visibilityState !== "hidden") this._onWake();
    };
    this._offline = () => this._probe();
    this._watchPage(true);
    this._scheduleRefresh();

    // Deferred so that listeners added right after createClient() see
    // every event, including a failure to open the first socket.
    queueMicrotask(() => this._connect());
  }

  /**
   * Connection state as the seed API knew it: "connecting",
   * "authenticated", "reconnecting" or "closed". See phase for the detail.
   */
  get state() {
    switch (this._phase) {
      case "live":
      case "recovering":
        return "authenticated";
      case "closed":
        return "closed";
      case "backoff":
        return "reconnecting";
      default:
        return this._attempt > 0 ? "reconnecting" : "connecting";
    }
  }

  /** The state machine's phase: one of PHASES. */
  get phase() {
    return this._phase;
  }

  /** Whether the connection is shared with other tabs (false: this tab's own). */
  get shared() {
    return false;
  }

  // ---- seed API: cs.WebSockets ------------------------------------------

  /**
   * Sends [action, details]; with {reliable: true} (and optionally the id to
   * use) it sends [action, details, null, id] and keeps the frame until the
   * edge acknowledges it, resending it after a reconnect.
   */
  send(action, details, options) {
    const id = messageId(options);
    this._enqueue({ action, details, id, data: encode(action, details, id === undefined ? undefined : null, id) });
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
    const ref = this._router.newRef();
    let data, id;
    try {
      id = messageId(options);
      data = encode(action, details, ref, id);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._phase === "closed") {
      return Promise.reject(new WsgateError(503, "wsgate: client is closed"));
    }
    const timeout = options && typeof options.timeout === "number" ? options.timeout : this._options.requestTimeout;
    return new Promise((resolve, reject) => {
      const entry = { action, data, details, ref, id };
      this._router.wait(ref, resolve, reject, Math.min(timeout, MAX_TIMER_DELAY), () => {
        // Do not send later a request nobody waits for any more; a reliable
        // one is still delivered, only its reply is no longer awaited.
        if (id === undefined) this._outbox.remove(entry);
        return new WsgateError(408, `wsgate: no reply to ${action} within ${timeout} ms`);
      });
      this._enqueue(entry);
    });
  }

  /** Stops everything: socket, timers, reconnects; rejects pending requests. */
  close() {
    if (this._phase === "closed") return this;
    this._stop("closed by the client", true);
    this._emit("close", { code: 1000, reason: "closed by the client", willReconnect: false });
    return this;
  }

  // ---- the state machine -------------------------------------------------

  // Enters phase: ends the timers of the phase left, then tells listeners.
  // live and recovering are one connection: their timers go on.
  _enter(phase) {
    const previous = this._phase;
    const connected = (p) => p === "live" || p === "recovering";
    if (!(connected(previous) && connected(phase))) {
      for (const id of this._phaseTimers.values()) clearTimeout(id);
      this._phaseTimers.clear();
    }
    this._phase = phase;
    if (previous !== phase) this._emit("state", { state: phase, previous });
  }

  // Starts a timer that belongs to the current phase: entering any phase
  // (the same one again included) ends it.
  _phaseTimer(name, delay, fn) {
    if (this._phase === "closed") return;
    const old = this._phaseTimers.get(name);
    if (old !== undefined) clearTimeout(old);
    const id = setTimeout(() => {
      if (this._phaseTimers.get(name) !== id) return;
      this._phaseTimers.delete(name);
      fn();
    }, delay);
    this._phaseTimers.set(name, id);
  }

  _clearPhaseTimer(name) {
    const id = this._phaseTimers.get(name);
    if (id === undefined) return;
    clearTimeout(id);
    this._phaseTimers.delete(name);
  }

  // Starts a timer that lives until close(): token renewal spans connections.
  _clientTimer(name, delay, fn) {
    this._clearClientTimer(name);
    if (this._phase === "closed") return;
    const id = setTimeout(() => {
      if (this._clientTimers.get(name) !== id) return;
      this._clientTimers.delete(name);
      fn();
    }, delay);
    this._clientTimers.set(name, id);
  }

  _clearClientTimer(name) {
    const id = this._clientTimers.get(name);
    if (id === undefined) return;
    clearTimeout(id);
    this._clientTimers.delete(name);
  }

  // ---- connection lifecycle ----------------------------------------------

  async _connect() {
    if (this._phase === "closed") return;
    this._enter("token");
    const conn = ++this._conn;
    // Fetch the token before opening the socket: the edge closes
    // connections that stay unauthenticated for too long (4408).
    if (this._getToken && (this._needFreshToken || !this._token || tokenExpired(this._token))) {
      try {
        await this._fetchToken();
      } catch (err) {
        if (conn !== this._conn || this._phase !== "token") return;
        this._emit("error", { code: 0, message: "wsgate: getToken failed", error: err, fatal: false });
        this._scheduleReconnect(false);
        return;
      }
      if (conn !== this._conn || this._phase !== "token") return;
      this._needFreshToken = false; // getToken had its chance
    }

    let ws;
    try {
      ws = new this._WebSocket(this._socketUrl());
    } catch (err) {
      // A malformed URL or a forbidden port: retrying cannot help.
      this._stop("cannot open the WebSocket");
      this._emit("error", { code: 0, message: "wsgate: cannot open " + this._url, error: err, fatal: true });
      this._emit("close", { code: 1006, reason: "cannot open the WebSocket", willReconnect: false });
      return;
    }
    this._ws = ws;
    this._closing = { kicked: false, authError: null };
    this._enter("opening");
    this._openTimer();
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
    // An error event is always followed by a close event; handle it there.
    ws.onerror = null;
  }

  // A socket that neither opens nor fails (a dead path, a peer that took the
  // connection and never answered) would hold the phase forever: give up on
  // it and reconnect.
  _openTimer() {
    const phase = this._phase;
    this._phaseTimer("open", this._options.openTimeout, () => this._abort(CLOSE_HEARTBEAT, phase + " timeout"));
  }

  _onOpen(ws) {
    if (ws !== this._ws) return;
    this._enter("authenticating");
    this._openTimer();
    this._emit("open", { url: this._url });
    if (ws !== this._ws) return; // a listener closed the client
    // With null the edge uses the cookie (or token) that came with the upgrade.
    this._sendNow([AUTH, this._authDetails()]);
  }

  // The URL of the next socket. With a position it carries ?since= too: an
  // edge that authenticates the upgrade itself (its cookie, or a token in
  // the URL) recovers before it reads any frame, so the since of
  // Client/authentication would come too late (DESIGN.md §8).
  _socketUrl() {
    const since = this._since();
    if (since === null) return this._url;
    const u = new URL(this._url);
    u.searchParams.set("since", since.epoch + ":" + since.seq);
    return u.href;
  }

  // Where to resume the stream: null before the first Server/recovery.
  _since() {
    return this._epoch === null ? null : { epoch: this._epoch, seq: this._seq === null ? 0 : this._seq };
  }

  // The first Client/authentication of a connection: the token unless the
  // upgrade's cookie is to be used, and where to resume the stream.
  _authDetails() {
    const details = {};
    if (this._token) details.token = this._token;
    const since = this._since();
    this._sinceSent = since !== null;
    this._announced = false;
    if (since !== null) details.since = since;
    return Object.keys(details).length ? details : null;
  }

  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
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
    const ref = frame.length > 2 ? frame[2] : null;
    const seq = frame.length > 3 ? frame[3] : null;
    if (action === ACK || action === ACK + ERROR_SUFFIX) {
      // The ref position holds the id of a reliable send; not a reply.
      this._onAck(ref, details, action !== ACK);
      return;
    }
    if (typeof seq === "number" && !this._position(seq, action)) return;

    switch (action) {
      case AUTH:
        if (details === "ok") this._onAuthenticated(ws);
        break;
      case AUTH + ERROR_SUFFIX:
        this._onAuthError(details);
        break;
      case PONG:
        this._clearPhaseTimer("pong");
        break;
      case SERVER_CLOSE:
        // The close that follows must not be answered by a reconnect.
        this._closing.kicked = true;
        this._emit("kicked", {});
        break;
      case CLIENT_ERROR:
        this._emit("error", { code: errorCode(details), message: errorMessage(details), fatal: false });
        break;
      case RECOVERY:
        this._onRecovery(details);
        break;
    }
    if (ws !== this._ws) return; // a listener closed the client

    // A frame with a ref is a reply: it goes to its request, or nowhere.
    if (ref !== null && ref !== undefined) {
      const late = this._router.settle(ref, action, details);
      if (late) {
        this._emit("warning", {
          message:
            late === "late"
              ? "wsgate: ignored a reply that came after its request ended (" + action + ")"
              : "wsgate: ignored a reply to a request this client did not make (" + action + ")",
          action,
        });
      }
      return;
    }
    this._dispatch(action, details);
  }

  _onAuthenticated(ws) {
    if (this._phase === "live" || this._phase === "recovering") {
      // The answer to a token renewal on this connection.
      this._renewAttempt = 0;
      return;
    }
    if (this._phase !== "authenticating") return;
    this._enter("live");
    this._phaseTimer("stable", this._options.stableAfter, () => {
      this._attempt = 0;
    });
    this._schedulePing();
    this._emit("authenticated", {});
    if (ws !== this._ws) return; // a listener closed the client
    this._flush();
  }

  // ["Server/ack", {duplicate, durable}, id] or ["Server/ack:error",
  // [code, message], id]: the frame with id is stored (or refused) and
  // leaves the outbox. An id nothing waits for (a resend acked twice, or
  // another tab's) is ignored.
  _onAck(id, details, failed) {
    const entry = typeof id === "string" ? this._outbox.ack(id) : null;
    if (!entry) return;
    if (failed) {
      const code = errorCode(details);
      const message = errorMessage(details);
      if (entry.ref !== undefined) this._router.fail(entry.ref, new WsgateError(code, message, details));
      this._emit("failed", { id, action: entry.action, details: entry.details, code, message });
      return;
    }
    const d = details && typeof details === "object" ? details : {};
    this._emit("acked", {
      id,
      action: entry.action,
      details: entry.details,
      duplicate: d.duplicate === true,
      durable: d.durable === true,
    });
  }

  // Server/recovery {epoch, recovered, count, seq}, right after "ok": the
  // stream's incarnation, how many missed messages follow, and the
  // position the connection starts from. A later one on the same
  // connection says that what it was sent may have a gap: the stream was
  // recreated under it, or the edge could not replay what came while it
  // was cut from NATS.
  _onRecovery(details) {
    if (!details || typeof details !== "object" || typeof details.epoch !== "string") {
      this._emit("warning", { message: "wsgate: ignored a malformed Server/recovery" });
      return;
    }
    const later = this._announced;
    this._announced = true;
    // Unless this is the recovery of our own position, or a later word on
    // the epoch we are in, the connection starts from the edge's: a later
    // reconnect then recovers what this connection misses even if no stored
    // message ever reached it.
    const ours = details.epoch === this._epoch && (later || (this._sinceSent && details.recovered === true));
    if (!ours) {
      this._seq = Number.isSafeInteger(details.seq) && details.seq >= 0 ? details.seq : null;
    }
    this._epoch = details.epoch;
    const count = typeof details.count === "number" && details.count > 0 ? details.count : 0;
    if (this._sinceSent || (later && details.recovered !== true)) {
      this._sinceSent = false;
      this._emit("recovered", { recovered: details.recovered === true, count, epoch: details.epoch });
    }
    if (count > 0 && this._phase === "live") {
      this._replayLeft = count;
      this._enter("recovering");
    }
  }

  // Takes the seq of a stored message: false for a duplicate (a seq not
  // past the last one; per connection seq strictly increases, and a
  // recovery replays only what came after since).
  _position(seq, action) {
    const repeated = this._seq !== null && seq <= this._seq;
    if (!repeated) this._seq = seq;
    if (this._phase === "recovering" && --this._replayLeft <= 0) this._enter("live");
    if (repeated) {
      this._emit("warning", { message: "wsgate: ignored a repeated message (" + action + ", seq " + seq + ")", action });
      return false;
    }
    return true;
  }

  _onAuthError(details) {
    if (this._phase === "live" || this._phase === "recovering") {
      // A renewal was refused; the connection goes on until the edge
      // closes it (4001 at exp, when a fresh token is fetched again).
      this._emit("error", { code: errorCode(details), message: errorMessage(details), fatal: false });
      return;
    }
    // Whether this stops the client is decided by the close that follows.
    this._closing.authError = details;
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._dropConnection();
    const closing = this._closing;
    reason = reason || "";
    const rule = this._closeRule(code, closing);
    if (rule !== "reconnect" && rule !== "slow") {
      const authError = closing.authError;
      this._stop(rule === "kicked" ? "kicked by the server" : "refused by the server");
      if (rule !== "kicked") {
        this._emit("error", {
          code: authError ? errorCode(authError) : code,
          message: authError ? errorMessage(authError) : reason || "wsgate: refused by the server",
          closeCode: code,
          fatal: true,
        });
      }
      this._emit("close", { code, reason, willReconnect: false });
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED) this._needFreshToken = true;
    if (closing.authError) {
      this._emit("error", {
        code: errorCode(closing.authError),
        message: errorMessage(closing.authError),
        closeCode: code,
        fatal: false,
      });
    }
    this._emit("close", { code, reason, willReconnect: true });
    if (this._phase === "closed") return; // a listener closed the client
    this._scheduleReconnect(rule === "slow");
  }

  // The decision table: "reconnect", "slow", "stop" or "kicked".
  _closeRule(code, closing) {
    if (closing.kicked) return "kicked";
    if (FINAL_CLOSE_CODES.includes(code)) return "stop";
    if (code === CLOSE_TOKEN_EXPIRED) {
      // A fixed token cannot get younger; a cookie (no token) may have been renewed.
      return this._token && !this._getToken ? "stop" : "reconnect";
    }
    if (SLOW_CLOSE_CODES.includes(code)) return "slow";
    return "reconnect";
  }

  // Detaches the current socket and fails the requests it carried: their
  // replies would go to this connection only, which is gone. Reliable
  // frames not acknowledged on it are sent again on the next one.
  _dropConnection() {
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this._outbox.connectionLost();
    this._router.connectionLost();
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

  // Stops for good: every timer, the socket, the pending requests, and the
  // frames not sent yet (reported in a "dropped" event, and each reliable
  // one in a "failed" event). keepStored: close() by the application leaves
  // the persisted reliable frames in storage for the next client.
  _stop(reason, keepStored) {
    this._enter("closed");
    this._conn++;
    for (const id of this._clientTimers.values()) clearTimeout(id);
    this._clientTimers.clear();
    this._watchPage(false);
    this._router.failAll(new WsgateError(503, "wsgate: client is closed"));
    const dropped = this._outbox.clear(keepStored === true);
    const ws = this._dropConnection();
    if (ws) {
      try {
        ws.close(1000, "closed by the client");
      } catch {
        // Already closing.
      }
    }
    if (dropped.length) {
      this._emit("dropped", { reason, frames: dropped.map((e) => frameOf(e)) });
      for (const e of dropped) if (e.id !== undefined) this._failed(e, 503, "wsgate: " + reason);
    }
  }

  _scheduleReconnect(slow) {
    if (this._phase === "closed") return;
    // Exponential backoff with full jitter: spreads the reconnects of many
    // clients after an edge goes away.
    if (slow) this._attempt = Math.max(this._attempt, SLOW_ATTEMPT);
    const bound = Math.min(this._options.backoffMax, this._options.backoffBase * 2 ** this._attempt);
    const delay = Math.floor(this._random() * bound);
    this._attempt++;
    this._slow = slow;
    this._enter("backoff");
    this._emit("reconnecting", { attempt: this._attempt, delay });
    if (this._phase !== "backoff") return; // a listener closed the client
    this._phaseTimer("reconnect", delay, () => this._connect());
  }

  // ---- heartbeat ---------------------------------------------------------

  _schedulePing() {
    this._phaseTimer("ping", this._options.pingInterval, () => {
      this._ping();
      this._schedulePing();
    });
  }

  // Sends a ping and expects a pong within pongTimeout.
  _ping() {
    this._sendNow([PING, null]);
    if (!this._phaseTimers.has("pong")) {
      this._phaseTimer("pong", this._options.pongTimeout, () => this._abort(CLOSE_HEARTBEAT, "heartbeat timeout"));
    }
  }

  // Checks the link now rather than at the next ping: after the tab was
  // hidden or frozen (timers throttled) or the network changed.
  _probe() {
    if (this._phase !== "live" && this._phase !== "recovering") return;
    this._ping();
    this._schedulePing();
  }

  // ---- page lifecycle ----------------------------------------------------

  // Watches the page's visibility, freeze/resume and the network (browsers
  // only; the window option stands in for tests).
  _watchPage(on) {
    const win = this._options.window || globalThis;
    const doc = win && win.document;
    const method = on ? "addEventListener" : "removeEventListener";
    if (win && typeof win[method] === "function") {
      win[method]("online", this._wake);
      win[method]("offline", this._offline);
    }
    if (doc && typeof doc[method] === "function") {
      doc[method]("visibilitychange", this._visibility);
      doc[method]("resume", this._wake);
    }
  }

  // The tab is visible again, was resumed (even while hidden), or the
  // network came back: timers may have been throttled or frozen, so look at
  // everything now.
  _onWake() {
    this._checkToken();
    if (this._phase === "backoff" && !this._slow) {
      this._connect();
      return;
    }
    this._probe();
  }

  // ---- token renewal -----------------------------------------------------

  // Calls getToken, one call at a time: concurrent callers share the call.
  // Resolves true when it gave another token (kept even while disconnected:
  // the next connection uses it); null means "no token, use the cookie".
  _fetchToken() {
    if (this._tokenFetch) return this._tokenFetch;
    const old = this._token;
    const p = (async () => {
      try {
        const token = (await this._getToken()) || null;
        if (this._phase === "closed" || token === old) return false;
        this._token = token;
        this._needFreshToken = false;
        this._scheduleRefresh();
        return true;
      } finally {
        this._tokenFetch = null;
      }
    })();
    this._tokenFetch = p;
    return p;
  }

  // Plans the renewal of the current token: 30 s before exp for long
  // tokens, at 80 % of the remaining life for short ones.
  _scheduleRefresh() {
    this._renewAttempt = 0;
    this._refreshDue = null;
    this._clearClientTimer("refresh");
    const exp = tokenExp(this._token);
    if (!this._getToken || exp === null) return;
    const remaining = exp * 1000 - Date.now();
    this._refreshDue = Date.now() + Math.max(0, Math.max(remaining - this._options.refreshBefore, remaining * 0.8));
    this._refreshAt(this._refreshDue);
  }

  _refreshAt(due) {
    const delay = Math.max(0, due - Date.now());
    if (delay > MAX_TIMER_DELAY) {
      this._clientTimer("refresh", MAX_TIMER_DELAY, () => this._refreshAt(due));
      return;
    }
    this._clientTimer("refresh", delay, () => this._renew());
  }

  // On wake: a renewal whose timer a frozen or throttled tab held back runs now.
  _checkToken() {
    if (this._refreshDue !== null && this._refreshDue <= Date.now() && !this._tokenFetch) {
      this._clearClientTimer("refresh");
      this._renew();
    }
  }

  async _renew() {
    const before = this._token;
    let renewed;
    try {
      renewed = await this._fetchToken();
    } catch (err) {
      if (this._phase === "closed") return;
      this._emit("error", { code: 0, message: "wsgate: getToken failed", error: err, fatal: false });
      this._retryRenew();
      return;
    }
    if (this._phase === "closed") return;
    if (!renewed) {
      this._refreshDue = null; // the same token again: the edge closes with 4001 at exp
      return;
    }
    // Renews the identity on the live connection; the edge answers "ok".
    // Off line, the token waits for the next connection.
    const live = this._phase === "live" || this._phase === "recovering";
    if (this._token && this._token !== before && live) {
      this._sendNow([AUTH, { token: this._token }]);
    }
  }

  // A failed renewal is tried again with backoff while the token is valid;
  // after exp the edge closes with 4001 and the reconnect fetches a token.
  _retryRenew() {
    const exp = tokenExp(this._token);
    if (exp === null) return;
    const remaining = exp * 1000 - Date.now();
    if (remaining <= 0) return;
    const bound = Math.min(this._options.backoffMax, this._options.backoffBase * 2 ** this._renewAttempt);
    this._renewAttempt++;
    const delay = Math.min(Math.floor(this._random() * bound), remaining);
    this._clientTimer("refresh", delay, () => this._renew());
  }

  // ---- frames out --------------------------------------------------------

  _enqueue(entry) {
    if (this._phase === "closed") {
      this._emit("warning", { message: "wsgate: client is closed, dropped " + entry.action, action: entry.action });
      if (entry.ref !== undefined) this._router.fail(entry.ref, new WsgateError(503, "wsgate: client is closed"));
      if (entry.id !== undefined) this._failed(entry, 503, "wsgate: client is closed");
      return;
    }
    this._outbox.push(entry);
    // A closing socket silently discards what it is given, so only an open,
    // authenticated one gets frames directly; the rest wait for the next "ok".
    if (this._canWrite() && this._outbox.unsent() === 1) {
      this._flush();
      return;
    }
    if (this._outbox.length > this._options.queueLimit) {
      const dropped = this._outbox.shift();
      this._emit("warning", {
        message: "wsgate: offline queue full, dropped the oldest frame (" + dropped.action + ")",
        action: dropped.action,
      });
      if (dropped.ref !== undefined) {
        this._router.fail(dropped.ref, new WsgateError(503, "wsgate: dropped from the full offline queue"));
      }
      if (dropped.id !== undefined) this._failed(dropped, 503, "wsgate: dropped from the full offline queue");
    }
  }

  _failed(entry, code, message) {
    this._emit("failed", { id: entry.id, action: entry.action, details: entry.details, code, message });
  }

  _canWrite() {
    const live = this._phase === "live" || this._phase === "recovering";
    return live && this._ws !== null && this._ws.readyState === 1; /* OPEN */
  }

  _flush() {
    for (const entry of this._outbox.unsentEntries()) {
      if (!this._canWrite()) return;
      this._ws.send(entry.data);
      this._outbox.written(entry);
      // A reliable request is resent after a reconnect: its reply may still come.
      if (entry.ref !== undefined && entry.id === undefined) this._router.sent(entry.ref);
    }
  }

  _sendNow(frame) {
    const ws = this._ws;
    if (ws && ws.readyState === 1 /* OPEN */) ws.send(JSON.stringify(frame));
  }

  // ---- frames in ---------------------------------------------------------

  _dispatch(action, details) {
    if (this._sink) this._sink(action, details);
    else super._dispatch(action, details);
  }

}

// ---- the shared connection ---------------------------------------------------

// With shared: true one Client, the core, runs in a SharedWorker and owns
// the socket; each tab holds a SharedClient, a facade with the full API,
// joined to the worker by a MessagePort (the link). The worker's SharedHub
// serves the tabs. Messages, tab -> worker (field t):
//   hello {options, lock?}          join; the first tab's options make the core;
//                                   lock: a Web Lock the tab holds while it lives
//   send {action, details, id?}     id: a reliable send
//   request {rid, action, details, id?, timeout?}
//   token {n, token} | {n, error}   the answer to token?
//   wake                            the tab became visible or was resumed
//   ping {hidden}                   heartbeat, every HEARTBEAT ms and at
//                                   each visibility change
//   bye                             the tab leaves: close(), pagehide
// worker -> tab:
//   welcome {phase, state}          the answer to hello
//   event {event, detail, phase, state}  a core event; acked and failed go
//                                   to the tab that sent the frame only
//   frame {action, details}         an application frame, to every tab
//   reply {rid, value} | {rid, error: {code, message, details}}
//   token? {n}                      call getToken; one tab is asked
//   who                             the worker dropped this tab (pings
//                                   missed): say hello again
// A tab whose Web Lock the worker gets (the tab closed, crashed or was
// discarded) is dropped; without Web Locks, a tab that misses
// HEARTBEAT_MISSES pings in a row (a hidden tab, whose timers a browser may
// run once a minute, HEARTBEAT_MISSES minutes). When no tab is left, the
// core closes the connection.
const HEARTBEAT = 5000;
const HEARTBEAT_MISSES = 3;
const HIDDEN_HEARTBEAT = 60000;
const SHARED_EVENTS = [
  "state", "open", "authenticated", "close", "reconnecting", "error",
  "warning", "kicked", "recovered", "acked", "failed", "dropped",
];
// ms a tab waits for the worker's first welcome before it connects itself.
const WELCOME_TIMEOUT = 10000;
// The default URL of the worker script, resolved against the page.
const DEFAULT_WORKER = "/wsgate-worker.js";
// The Client option through which a hub takes the application frames.
const FRAME_SINK = Symbol("wsgate frame sink");

// The options a tab can pass to the worker: plain data, no functions.
function sharedOptions(options, url) {
  const o = { url, getToken: options.getToken === true || typeof options.getToken === "function" };
  if (typeof options.token === "string" && options.token) o.token = options.token;
  if (typeof options.persist === "string" || options.persist === true) o.persist = options.persist;
  for (const key of Object.keys(DEFAULTS)) {
    if (typeof options[key] === "number") o[key] = options[key];
  }
  return o;
}

/**
 * SharedClient is a tab's client whose connection lives in a SharedWorker.
 * It keeps the on() handlers and event listeners of this tab; the worker
 * keeps the socket, the outbox and the token. If the worker script fails to
 * load, the tab runs the same hub itself (a connection of its own).
 */
class SharedClient extends Endpoint {
  constructor(options, SharedWorkerClass) {
    super();
    this._url = resolveUrl(options.url);
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._hello = { t: "hello", options: sharedOptions(options, this._url) };
    this._phase = "token";
    this._state = "connecting";
    this._welcomed = false; // the first welcome came
    this._ready = false; // the current link said welcome: messages can flow
    this._left = false; // this tab left the shared connection, or it stopped for good
    this._buffer = []; // messages waiting for the welcome
    this._pending = new Map(); // rid -> {resolve, reject}
    this._rid = 0;
    this._local = null; // the in-tab hub when the worker failed to load
    this._options = options;
    // A Web Lock held while the tab lives: the worker asks for it too and
    // gets it the moment the tab closes, crashes or is discarded. hello
    // waits until the tab holds it.
    this._unlock = null;
    this._locked = Promise.resolve();
    const locks = globalThis.navigator && globalThis.navigator.locks;
    if (locks && typeof locks.request === "function") {
      const name = "wsgate-tab-" + randomId(12);
      this._hello.lock = name;
      this._locked = new Promise((granted) => {
        locks
          .request(name, () => {
            granted();
            return new Promise((release) => (this._unlock = release));
          })
          .catch(() => {
            delete this._hello.lock;
            granted();
          });
      });
    }

    const base = globalThis.location && globalThis.location.href;
    const script = base ? new URL(options.worker || DEFAULT_WORKER, base).href : options.worker || DEFAULT_WORKER;
    // One worker per edge URL, and per user when the token tells (its sub):
    // a tab never joins a connection made with another user's token.
    const claims = tokenClaims(options.token);
    const sub = claims && typeof claims.sub === "string" ? " " + claims.sub : "";
    this._worker = new SharedWorkerClass(script, { name: "wsgate " + this._url + sub });
    this._worker.onerror = () => this._workerFailed(script);
    // A worker whose script threw (say importScripts could not reach the
    // edge) never answers, and its page gets no error event.
    this._welcomeTimer = setTimeout(() => this._workerFailed(script), WELCOME_TIMEOUT);
    this._link(this._worker.port);

    this._beat = setInterval(() => this._post({ t: "ping", hidden: this._hidden() }), HEARTBEAT);
    this._pagehide = () => this._post({ t: "bye" }, true);
    this._pageshow = (ev) => {
      if (ev && ev.persisted) this._post(this._hello, true); // back from the bfcache
    };
    this._wake = () => {
      const hidden = this._hidden();
      this._post({ t: "ping", hidden });
      if (!hidden) this._post({ t: "wake" });
    };
    this._win = options.window || globalThis;
    this._watchPage(true);
  }

  // Whether the page is hidden: its timers may then be throttled to one a
  // minute (Chrome's intensive throttling), and the worker waits longer.
  _hidden() {
    const doc = this._win && this._win.document;
    return !!doc && doc.visibilityState === "hidden";
  }

  get state() {
    return this._state;
  }

  get phase() {
    return this._phase;
  }

  /** Whether the connection is shared with other tabs. */
  get shared() {
    return this._local === null;
  }

  send(action, details, options) {
    const id = messageId(options);
    const frame = JSON.parse(encode(action, details, undefined, id));
    if (this._phase === "closed") {
      this._emit("warning", { message: "wsgate: client is closed, dropped " + action, action });
      if (id !== undefined) {
        this._emit("failed", { id, action, details, code: 503, message: "wsgate: client is closed" });
      }
      return this;
    }
    this._post({ t: "send", action, details: frame[1], id });
    return this;
  }

  request(action, details, options) {
    let frame, id;
    try {
      id = messageId(options);
      frame = JSON.parse(encode(action, details, undefined, id));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._phase === "closed") {
      return Promise.reject(new WsgateError(503, "wsgate: client is closed"));
    }
    const rid = ++this._rid;
    const timeout = options && typeof options.timeout === "number" ? options.timeout : undefined;
    return new Promise((resolve, reject) => {
      this._pending.set(rid, { resolve, reject });
      this._post({ t: "request", rid, action, details: frame[1], id, timeout });
    });
  }

  /** Leaves the shared connection; the worker closes it when no tab is left. */
  close() {
    if (this._left) return this;
    this._post({ t: "bye" }, true);
    const previous = this._phase;
    // Sends that waited for the worker's welcome never left this tab.
    const unsent = this._ready ? [] : this._buffer.filter((m) => m.t === "send" || m.t === "request");
    this._buffer = [];
    this._unlink();
    this._phase = "closed";
    this._state = "closed";
    if (previous !== "closed") this._emit("state", { state: "closed", previous });
    if (unsent.length) {
      this._emit("dropped", { reason: "closed by the client", frames: unsent.map((m) => frameOf(m)) });
      for (const m of unsent) if (m.id !== undefined) this._emit("failed", { id: m.id, action: m.action, details: m.details, code: 503, message: "wsgate: closed by the client" });
    }
    this._emit("close", { code: 1000, reason: "closed by the client", willReconnect: false });
    return this;
  }

  // Ends this tab's part: no more messages either way, the lock and the
  // page watch let go, and the requests still waiting rejected.
  _unlink() {
    this._left = true;
    clearInterval(this._beat);
    clearTimeout(this._welcomeTimer);
    if (this._unlock) this._unlock();
    this._watchPage(false);
    this._port.onmessage = null;
    this._port.close();
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) p.reject(new WsgateError(503, "wsgate: client is closed"));
  }

  _link(port) {
    this._port = port;
    this._ready = false;
    port.onmessage = (ev) => this._onMessage(ev.data);
    if (typeof port.start === "function") port.start();
    this._locked.then(() => {
      if (this._port === port && this._phase !== "closed") port.postMessage(this._hello);
    });
  }

  // Posts m, or keeps it until the link's welcome; now: post at once.
  _post(m, now) {
    if (this._left) return;
    if (this._ready || now) this._port.postMessage(m);
    else this._buffer.push(m);
  }

  // The worker script did not load (a 404, a syntax error): this tab runs
  // the hub itself, and sends what it kept to it.
  _workerFailed(script) {
    clearTimeout(this._welcomeTimer);
    if (this._local || this._phase === "closed") return;
    this._emit("warning", { message: "wsgate: the shared worker " + script + " failed, this tab connects itself" });
    if (this._phase === "closed") return;
    const channel = new MessageChannel();
    this._local = new SharedHub({ WebSocket: this._options.WebSocket, random: this._options.random });
    this._local.attach(channel.port2);
    this._port.onmessage = null;
    this._port.close();
    this._link(channel.port1);
  }

  _onMessage(m) {
    if (!m || typeof m !== "object" || this._left) return;
    switch (m.t) {
      case "welcome":
        this._onWelcome(m);
        break;
      case "event":
        this._onEvent(m);
        break;
      case "frame":
        this._dispatch(m.action, m.details);
        break;
      case "reply":
        this._onReply(m);
        break;
      case "token?":
        this._giveToken(m.n);
        break;
      case "who":
        this._port.postMessage(this._hello);
        break;
    }
  }

  // The answer to hello: sends what waited, and brings this tab's state up
  // to the shared connection's. A tab that joins a live connection sees
  // open and authenticated, as a tab with its own socket would.
  _onWelcome(m) {
    clearTimeout(this._welcomeTimer);
    this._ready = true;
    const buffer = this._buffer;
    this._buffer = [];
    for (const b of buffer) this._port.postMessage(b);
    const first = !this._welcomed;
    this._welcomed = true;
    const previous = this._phase;
    this._phase = m.phase;
    this._state = m.state;
    if (previous !== m.phase) this._emit("state", { state: m.phase, previous });
    if (first && (m.phase === "live" || m.phase === "recovering")) {
      this._emit("open", { url: this._url });
      this._emit("authenticated", {});
    }
  }

  _onEvent(m) {
    this._phase = m.phase;
    this._state = m.state;
    let detail = m.detail;
    if (detail && detail.error && typeof detail.error === "object" && !(detail.error instanceof Error)) {
      const err = new Error(detail.error.message);
      err.name = detail.error.name;
      detail = { ...detail, error: err };
    }
    this._emit(m.event, detail);
    // The shared connection stopped for good (refused, kicked): as a
    // client of its own would, this tab is closed; the worker let go of
    // every tab, and starts afresh for the next one that joins.
    if (m.event === "close" && detail && detail.willReconnect === false && !this._left) this._unlink();
  }

  _onReply(m) {
    const p = this._pending.get(m.rid);
    if (!p) return;
    this._pending.delete(m.rid);
    if (m.error) p.reject(new WsgateError(m.error.code, m.error.message, m.error.details));
    else p.resolve(m.value);
  }

  async _giveToken(n) {
    try {
      if (!this._getToken) throw new Error("wsgate: this tab has no getToken");
      const token = await this._getToken();
      this._post({ t: "token", n, token: token || null }, true);
    } catch (err) {
      this._post({ t: "token", n, error: String((err && err.message) || err) }, true);
    }
  }

  _watchPage(on) {
    const win = this._win;
    const doc = win && win.document;
    const method = on ? "addEventListener" : "removeEventListener";
    if (win && typeof win[method] === "function") {
      win[method]("pagehide", this._pagehide);
      win[method]("pageshow", this._pageshow);
      win[method]("online", this._wake);
    }
    if (doc && typeof doc[method] === "function") {
      doc[method]("visibilitychange", this._wake);
      doc[method]("resume", this._wake);
    }
  }
}

/**
 * SharedHub serves the tabs of a shared worker: it makes the core with the
 * first tab's options, forwards frames and events to the tabs, routes
 * replies and acks to the tab that asked, asks one tab for tokens, drops
 * tabs that stop pinging, and closes the core when no tab is left.
 * options: WebSocket and random for the core (tests).
 */
class SharedHub {
  constructor(options) {
    options = options || {};
    this._WebSocket = options.WebSocket;
    this._random = options.random;
    this._tabs = new Map(); // port -> {seen, getToken}
    this._strangers = new Map(); // port -> messages of a dropped tab, kept until its hello
    this._core = null;
    this._sweep = null;
    this._owners = new Map(); // message id of a reliable frame -> port of its tab
    this._asks = new Map(); // n -> {resolve, reject, port}: getToken calls
    this._n = 0;
  }

  /** The number of tabs joined. */
  get tabs() {
    return this._tabs.size;
  }

  /** The core Client, or null while no tab is joined. */
  get core() {
    return this._core;
  }

  attach(port) {
    port.onmessage = (ev) => this._onMessage(port, ev.data);
    if (typeof port.start === "function") port.start();
  }

  _onMessage(port, m) {
    if (!m || typeof m !== "object") return;
    if (m.t === "hello") {
      this._join(port, m.options && typeof m.options === "object" ? m.options : {}, m.lock);
      return;
    }
    const tab = this._tabs.get(port);
    if (!tab) {
      if (m.t === "bye") {
        this._strangers.delete(port);
        return;
      }
      // A dropped tab that still lives: it says hello again, then what it sent meanwhile runs.
      if (!this._strangers.has(port)) {
        this._strangers.set(port, []);
        port.postMessage({ t: "who" });
      }
      if (m.t !== "ping") this._strangers.get(port).push(m);
      return;
    }
    tab.seen = Date.now();
    if (m.t === "ping") tab.hidden = m.hidden === true;
    switch (m.t) {
      case "send":
        this._send(port, m);
        break;
      case "request":
        this._request(port, m);
        break;
      case "token":
        this._tokenAnswer(m);
        break;
      case "wake":
        this._core._onWake();
        break;
      case "bye":
        this._leave(port);
        break;
    }
  }

  _join(port, options, lock) {
    let tab = this._tabs.get(port);
    if (!tab) {
      tab = { seen: 0, getToken: false, hidden: false, lock: null };
      this._tabs.set(port, tab);
    }
    this._watchLock(port, tab, lock);
    tab.seen = Date.now();
    tab.getToken = options.getToken === true;
    if (!this._core) this._start(options);
    const core = this._core;
    port.postMessage({ t: "welcome", phase: core.phase, state: core.state });
    const kept = this._strangers.get(port) || [];
    this._strangers.delete(port);
    for (const m of kept) this._onMessage(port, m);
  }

  // Waits for the tab's Web Lock: granted when the tab is gone, however it
  // went. A tab so watched is not dropped for missed pings: a frozen tab
  // lives on, and gets what it missed when it resumes.
  _watchLock(port, tab, lock) {
    const locks = globalThis.navigator && globalThis.navigator.locks;
    if (typeof lock !== "string" || tab.lock === lock || !locks || typeof locks.request !== "function") return;
    tab.lock = lock;
    locks
      .request(lock, () => {
        if (this._tabs.get(port) === tab) this._leave(port);
      })
      .catch(() => {
        tab.lock = null;
      });
  }

  _start(options) {
    const o = sharedOptions(options, options.url);
    delete o.getToken;
    if (options.getToken === true) o.getToken = () => this._askToken();
    if (this._WebSocket) o.WebSocket = this._WebSocket;
    if (this._random) o.random = this._random;
    o[FRAME_SINK] = (action, details) => this._broadcast({ t: "frame", action, details });
    const core = new Client(o);
    this._core = core;
    for (const event of SHARED_EVENTS) core.addListener(event, (detail) => this._onEvent(core, event, detail));
    this._sweep = setInterval(() => this._dropSilent(), HEARTBEAT);
  }

  _onEvent(core, event, detail) {
    if (detail && detail.error !== undefined) {
      const e = detail.error;
      detail = { ...detail, error: { name: (e && e.name) || "Error", message: String((e && e.message) || e) } };
    }
    const m = { t: "event", event, detail, phase: core.phase, state: core.state };
    if ((event === "acked" || event === "failed") && detail && this._owners.has(detail.id)) {
      // Only to the tab that sent it: one that left (or was dropped and
      // has not rejoined) is not told, and neither is any other.
      const port = this._owners.get(detail.id);
      this._owners.delete(detail.id);
      if (this._tabs.has(port)) port.postMessage(m);
      return;
    }
    this._broadcast(m);
    if (event === "close" && detail && detail.willReconnect === false && core === this._core) this._ended();
  }

  // The core stopped for good (refused, kicked): its tabs were told and are
  // closed; the next tab that joins starts a new connection.
  _ended() {
    this._core = null;
    clearInterval(this._sweep);
    this._sweep = null;
    this._tabs.clear();
    this._owners.clear();
    for (const ask of this._asks.values()) ask.reject(new Error("wsgate: the connection stopped"));
    this._asks.clear();
  }

  _broadcast(m) {
    for (const port of this._tabs.keys()) port.postMessage(m);
  }

  _send(port, m) {
    const reliable = typeof m.id === "string";
    if (reliable) this._owners.set(m.id, port);
    try {
      this._core.send(m.action, m.details, reliable ? { reliable: true, id: m.id } : undefined);
    } catch (err) {
      port.postMessage({ t: "event", event: "warning", detail: { message: String(err.message) }, phase: this._core.phase, state: this._core.state });
    }
  }

  _request(port, m) {
    const options = {};
    if (typeof m.timeout === "number") options.timeout = m.timeout;
    if (typeof m.id === "string") {
      options.reliable = true;
      options.id = m.id;
      this._owners.set(m.id, port);
    }
    this._core.request(m.action, m.details, options).then(
      (value) => port.postMessage({ t: "reply", rid: m.rid, value }),
      (err) => {
        const error = { code: typeof err.code === "number" ? err.code : 0, message: String(err.message) };
        if (err.details !== undefined) error.details = err.details;
        port.postMessage({ t: "reply", rid: m.rid, error });
      },
    );
  }

  // The core's getToken: asks the tab heard from last among those with a
  // getToken; the core calls it once at a time (Client._fetchToken).
  _askToken() {
    return new Promise((resolve, reject) => {
      const n = ++this._n;
      this._asks.set(n, { resolve, reject, port: null });
      this._ask(n);
    });
  }

  _ask(n) {
    const ask = this._asks.get(n);
    let best = null;
    for (const [port, tab] of this._tabs) {
      if (tab.getToken && (best === null || tab.seen > this._tabs.get(best).seen)) best = port;
    }
    if (best === null) {
      this._asks.delete(n);
      ask.reject(new Error("wsgate: no open tab has getToken"));
      return;
    }
    ask.port = best;
    best.postMessage({ t: "token?", n });
  }

  _tokenAnswer(m) {
    const ask = this._asks.get(m.n);
    if (!ask) return;
    this._asks.delete(m.n);
    if (typeof m.error === "string") ask.reject(new Error(m.error));
    else ask.resolve(typeof m.token === "string" ? m.token : null);
  }

  _leave(port) {
    if (!this._tabs.delete(port)) return;
    // Its reliable frames stay its own (_owners): a dropped tab that rejoins
    // on the same port is told their fate; otherwise nobody is.
    if (this._tabs.size === 0) {
      const core = this._core;
      this._core = null;
      clearInterval(this._sweep);
      this._sweep = null;
      this._owners.clear();
      for (const ask of this._asks.values()) ask.reject(new Error("wsgate: every tab left"));
      this._asks.clear();
      core.close();
      return;
    }
    // A getToken call the leaving tab was to answer goes to another tab.
    for (const [n, ask] of this._asks) if (ask.port === port) this._ask(n);
  }

  // Drops the tabs that missed HEARTBEAT_MISSES pings: crashed, killed or
  // discarded without a pagehide.
  _dropSilent() {
    const now = Date.now();
    for (const [port, tab] of [...this._tabs]) {
      if (tab.lock) continue;
      if (tab.seen < now - (tab.hidden ? HIDDEN_HEARTBEAT : HEARTBEAT) * HEARTBEAT_MISSES) this._leave(port);
    }
  }
}

/**
 * Serves a SharedWorker's tabs; the worker script is
 *   importScripts("https://edge.example.com/client.js");
 *   wsgate.serveSharedWorker(self);
 * scope is the worker's global (its "connect" events); options as SharedHub's.
 */
function serveSharedWorker(scope, options) {
  const hub = new SharedHub(options);
  scope.addEventListener("connect", (ev) => hub.attach(ev.ports[0]));
  return hub;
}

// ---- the outbox --------------------------------------------------------------

// Outbox holds, in order, the application frames not written yet, and the
// reliable ones (with an id) written but not acknowledged yet: those are
// written again on the next connection. Entries: {action, details, data
// (the encoded frame), ref?, id?, sent}. With a store, reliable entries are
// also kept in storage until acknowledged.
class Outbox {
  constructor(store) {
    this._entries = [];
    this._store = store;
    if (store) {
      for (const entry of store.load()) {
        entry.sent = false;
        this._entries.push(entry);
      }
    }
  }

  get length() {
    return this._entries.length;
  }

  push(entry) {
    entry.sent = false;
    this._entries.push(entry);
    if (this._store && entry.id !== undefined) this._store.put(entry);
  }

  shift() {
    const entry = this._entries.shift();
    this._forget(entry);
    return entry;
  }

  remove(entry) {
    const i = this._entries.indexOf(entry);
    if (i >= 0) this._entries.splice(i, 1);
    this._forget(entry);
  }

  // Removes and returns the entry with id, or null.
  ack(id) {
    const entry = this._entries.find((e) => e.id === id);
    if (!entry) return null;
    this.remove(entry);
    return entry;
  }

  unsent() {
    let n = 0;
    for (const e of this._entries) if (!e.sent) n++;
    return n;
  }

  unsentEntries() {
    return this._entries.filter((e) => !e.sent);
  }

  // entry went out: a reliable one waits for its ack, any other leaves.
  written(entry) {
    if (entry.id !== undefined) entry.sent = true;
    else this.remove(entry);
  }

  // The socket is gone: unacknowledged reliable frames go out again.
  connectionLost() {
    for (const e of this._entries) e.sent = false;
  }

  // Empties the outbox; returns what it drops. keepStored: the stored
  // entries stay in storage and are not returned.
  clear(keepStored) {
    const all = this._entries;
    this._entries = [];
    const dropped = [];
    for (const e of all) {
      if (keepStored && this._store && e.id !== undefined) continue;
      this._forget(e);
      dropped.push(e);
    }
    return dropped;
  }

  _forget(entry) {
    if (this._store && entry && entry.id !== undefined) this._store.delete(entry);
  }
}

// Store keeps reliable frames in a Web Storage (localStorage), one item per
// frame, so that tabs sharing it never overwrite each other's frames: two
// tabs that load the same frame both send it, and the edge recognises the
// resend by its id (Server/ack duplicate: true).
class Store {
  constructor(storage, prefix, warn) {
    this._storage = storage;
    this._prefix = prefix;
    this._warn = warn;
    this._n = 0;
  }

  put(entry) {
    const record = { action: entry.action, details: entry.details === undefined ? null : entry.details };
    record.id = entry.id;
    record.t = Date.now();
    record.n = ++this._n;
    try {
      this._storage.setItem(this._prefix + entry.id, JSON.stringify(record));
    } catch (err) {
      this._warn("wsgate: cannot persist a reliable frame (" + entry.action + "): " + err);
    }
  }

  delete(entry) {
    try {
      this._storage.removeItem(this._prefix + entry.id);
    } catch {
      // Storage gone: nothing left to delete.
    }
  }

  // Returns the stored frames, oldest first, as outbox entries. A stored
  // request is sent as a plain reliable frame: nobody waits for its reply.
  load() {
    const records = [];
    try {
      for (let i = 0; i < this._storage.length; i++) {
        const key = this._storage.key(i);
        if (key === null || !key.startsWith(this._prefix)) continue;
        try {
          records.push(JSON.parse(this._storage.getItem(key)));
        } catch {
          this._warn("wsgate: ignored an unreadable persisted frame " + key);
        }
      }
    } catch (err) {
      this._warn("wsgate: cannot read the persisted frames: " + err);
      return [];
    }
    records.sort((a, b) => a.t - b.t || a.n - b.n);
    const entries = [];
    for (const r of records) {
      try {
        entries.push({ action: r.action, details: r.details, id: r.id, data: encode(r.action, r.details, null, r.id) });
      } catch {
        this._warn("wsgate: ignored an invalid persisted frame " + JSON.stringify(r.action));
      }
    }
    return entries;
  }
}

// The store for the persist option (true: keyed by the URL; a string: that
// name), or null. storage defaults to localStorage.
function openStore(options, url, warn) {
  if (!options.persist) return null;
  const storage = options.storage || globalThis.localStorage;
  if (!storage || typeof storage.setItem !== "function") {
    warn("wsgate: persist needs localStorage (or the storage option); the outbox is kept in memory only");
    return null;
  }
  const name = typeof options.persist === "string" ? options.persist : url;
  return new Store(storage, "wsgate:outbox:" + name + ":", warn);
}

// ---- the ref router ----------------------------------------------------------

// RefRouter gives each request a ref and routes replies: a reply goes to its
// request only. Refs are random per client (crypto) plus a counter, so a
// reply meant for another tab of the user is never taken for ours.
class RefRouter {
  constructor() {
    this._prefix = randomId(9) + "-";
    this._counter = 0;
    this._pending = new Map(); // ref -> {resolve, reject, timer, sent}
  }

  newRef() {
    return this._prefix + (++this._counter).toString(36);
  }

  // Waits for the reply to ref; onTimeout returns the error to reject with.
  wait(ref, resolve, reject, timeout, onTimeout) {
    const entry = { resolve, reject, timer: null, sent: false };
    entry.timer = setTimeout(() => {
      this._pending.delete(ref);
      reject(onTimeout());
    }, timeout);
    this._pending.set(ref, entry);
  }

  sent(ref) {
    const entry = this._pending.get(ref);
    if (entry) entry.sent = true;
  }

  // Settles the request of ref; returns null when it did, "late" for a ref
  // this client issued whose request has ended, "unknown" for another ref.
  settle(ref, action, details) {
    const entry = this._pending.get(ref);
    if (!entry) {
      return typeof ref === "string" && ref.startsWith(this._prefix) ? "late" : "unknown";
    }
    this._pending.delete(ref);
    clearTimeout(entry.timer);
    if (action.endsWith(ERROR_SUFFIX) || action === CLIENT_ERROR) {
      entry.reject(new WsgateError(errorCode(details), errorMessage(details), details));
    } else {
      entry.resolve(details);
    }
    return null;
  }

  fail(ref, err) {
    const entry = this._pending.get(ref);
    if (!entry) return;
    this._pending.delete(ref);
    clearTimeout(entry.timer);
    entry.reject(err);
  }

  // Requests written on a lost connection get no reply: fail them.
  connectionLost() {
    for (const [ref, entry] of this._pending) {
      if (entry.sent) this.fail(ref, new WsgateError(503, "wsgate: connection lost before the reply"));
    }
  }

  failAll(err) {
    for (const ref of [...this._pending.keys()]) this.fail(ref, err);
  }
}

// ---- helpers ---------------------------------------------------------------

function encode(action, details, ref, id) {
  if (typeof action !== "string" || !ACTION_RE.test(action)) {
    throw new TypeError("wsgate: bad action " + JSON.stringify(action) + " (1-128 of A-Z a-z 0-9 _ - / :)");
  }
  const frame = [action, details === undefined ? null : details];
  if (ref !== undefined || id !== undefined) frame.push(ref === undefined ? null : ref);
  if (id !== undefined) frame.push(id);
  // Serialize now: the caller may change the object after send() returns,
  // and an unserializable value should fail in the caller's stack.
  return JSON.stringify(frame);
}

// The public description of an outbox entry, for "dropped" events.
function frameOf(entry) {
  const f = { action: entry.action, details: entry.details === undefined ? null : entry.details };
  if (entry.ref !== undefined) f.ref = entry.ref;
  if (entry.id !== undefined) f.id = entry.id;
  return f;
}

// The message id of a send or request: undefined unless options.reliable;
// options.id when given (1-64 of A-Z a-z 0-9 _ -), else 128 random bits.
function messageId(options) {
  if (!options || options.reliable !== true) return undefined;
  if (options.id === undefined) return randomId(16);
  if (typeof options.id !== "string" || !ID_RE.test(options.id)) {
    throw new TypeError("wsgate: bad message id " + JSON.stringify(options.id) + " (1-64 of A-Z a-z 0-9 _ -)");
  }
  return options.id;
}

// Returns n random bytes as hex, from crypto.getRandomValues.
function randomId(n) {
  const bytes = new Uint8Array(n);
  globalThis.crypto.getRandomValues(bytes);
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
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
  const claims = tokenClaims(token);
  return claims && typeof claims.exp === "number" ? claims.exp : null;
}

// Returns the claims of a JWT, or null when the token is not a JWT.
function tokenClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const claims = JSON.parse(atob(b64));
    return claims && typeof claims === "object" ? claims : null;
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
  win.wsgate = Object.assign(win.wsgate || {}, { createClient, WsgateError, serveSharedWorker });
  if (!script || !script.hasAttribute || !script.hasAttribute("data-cs-compat")) return;
  const base = win.location && win.location.href;
  const src = new URL(script.src || script.getAttribute("src"), base);
  const scheme = src.protocol === "https:" ? "wss:" : "ws:";
  const path = script.getAttribute("data-path") || DEFAULT_PATH;
  const token = script.getAttribute("data-token") || null;
  win.cs = win.cs || {};
  const shared = script.hasAttribute("data-shared");
  const worker = script.getAttribute("data-worker") || undefined;
  win.cs.WebSockets = createClient({ url: scheme + "//" + src.host + path, token, shared, worker });
}

export { createClient, installGlobals, serveSharedWorker, WsgateError, DEFAULT_PATH, FINAL_CLOSE_CODES, PHASES };
