// Type declarations of the wsgate JavaScript client (/client.mjs and /client.js).
// Source: src/wsgate.mjs. Wire protocol: DESIGN.md §2.

/** Any JSON value: the details of a frame. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** Called with the frame's details; an array is spread into arguments (seed rule). */
export type SuccessCallback = (...details: any[]) => void;

/** Called for `<action>:error` frames with the details `[code, message]` spread: `(code, message)`. */
export type ErrorCallback = (code: number, message: string, ...rest: any[]) => void;

/** Connection state, see {@link WsgateClient.state}. */
export type ClientState = "connecting" | "authenticated" | "reconnecting" | "closed";

/**
 * The phase of the client's state machine, see {@link WsgateClient.phase}:
 * `token` (waiting for getToken before opening), `opening`, `authenticating`
 * (open, waiting for `ok`), `live`, `recovering` (live, while missed messages
 * arrive), `backoff` (waiting before the next attempt), `closed` (for good).
 */
export type ClientPhase = "token" | "opening" | "authenticating" | "live" | "recovering" | "backoff" | "closed";

/** A frame the client discarded without sending it (see the `dropped` event). */
export interface DroppedFrame {
  action: string;
  details: JSONValue;
  /** The ref of a request (its promise was rejected with 503). */
  ref?: string;
  /** The message id of a reliable frame (a `failed` event follows). */
  id?: string;
}

/** Options of send(). */
export interface SendOptions {
  /**
   * Deliver at least once (DESIGN.md §8): the frame gets a message id, stays
   * in the outbox until the edge's `Server/ack` (event `acked`) or
   * `Server/ack:error` (event `failed`), and is resent with the same id after
   * a reconnect; the edge recognises a resend by its id.
   */
  reliable?: boolean;
  /** The message id to use with `reliable` (1-64 of `A-Z a-z 0-9 _ -`, unique per user); default 128 random bits. */
  id?: string;
}

/** Options of request(). */
export interface RequestOptions extends SendOptions {
  /** ms to wait for the reply (408 after it); default the client's requestTimeout. */
  timeout?: number;
}

export interface ClientOptions {
  /**
   * WebSocket URL; http(s) is turned into ws(s) and relative URLs are resolved
   * against the page. Default in a browser: `ws(s)://<location.host>/ws` (the
   * edge that serves the script puts its configured path in place of `/ws`).
   * Required in Node.
   */
  url?: string;
  /** A token (JWT) sent in the first `Client/authentication` frame. */
  token?: string;
  /**
   * Returns a fresh token. Called before connecting when there is no token or
   * it has expired, after close code 4001, and shortly before a JWT's `exp`
   * (30 s before, or at 80 % of the remaining life for short tokens) to renew
   * the identity on the live connection.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** WebSocket class to use; default `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocket;
  /** Application frames kept while not authenticated; the oldest is dropped beyond it. Default 1000. */
  queueLimit?: number;
  /** Default timeout of `request()`, ms. Default 10000. */
  requestTimeout?: number;
  /** Reconnect backoff: delay = random(0, min(backoffMax, backoffBase * 2^attempt)), ms. Default 1000. */
  backoffBase?: number;
  /** Cap of the reconnect backoff bound, ms. Default 30000. */
  backoffMax?: number;
  /**
   * A connection must stay authenticated this long before the backoff starts
   * again from its first step (a connection closed sooner, e.g. kicked with
   * 4429 right after `ok`, keeps backing off), ms. Default 10000.
   */
  stableAfter?: number;
  /**
   * ms to wait for the socket to open, and then again for the edge's `ok`;
   * past it the attempt is given up (close code 4000, reason "opening
   * timeout" or "authenticating timeout") and the client reconnects. Default 15000.
   */
  openTimeout?: number;
  /** Interval of `Client/ping` frames while authenticated, ms. Default 25000. */
  pingInterval?: number;
  /** Wait for `Server/pong` before closing the socket (code 4000) and reconnecting, ms. Default 10000. */
  pongTimeout?: number;
  /** Renew a long-lived JWT this long before its `exp`, ms. Default 30000. */
  refreshBefore?: number;
  /**
   * Keep unacknowledged reliable frames in storage (one item each) so that
   * they are resent after a page reload: `true` keys them by the URL, a string
   * by that name. close() leaves them stored for the next client with the same
   * key; a final close (refused, kicked) deletes them. Default off.
   */
  persist?: boolean | string;
  /** The Web Storage for `persist`; default `globalThis.localStorage`. */
  storage?: Pick<Storage, "length" | "key" | "getItem" | "setItem" | "removeItem">;
  /** Random source in [0, 1) for the backoff jitter (tests). Default `Math.random`. Refs and ids use `crypto.getRandomValues`. */
  random?: () => number;
  /**
   * Whose events tell the client that the page woke up: `online`/`offline` on
   * it and `visibilitychange`/`resume` on its `document` (checks the link and
   * the token's exp at once, and cuts a reconnect delay short unless the
   * server asked to slow down). Default `globalThis` in a browser.
   */
  window?: EventTarget & { document?: EventTarget & { visibilityState?: string } };
  /**
   * Share one connection between all of the origin's tabs: it lives in a
   * SharedWorker (one per `url`), each tab keeps the whole API. The first
   * tab's options make the connection; `getToken` is asked of one open tab
   * at a time. `persist` has no localStorage in a worker (frames stay in the
   * worker's memory). Without SharedWorker (Chrome for Android, Safari
   * before 16) each tab connects itself, as without `shared`; so does a
   * tab whose worker script fails to load (a `warning` event says so).
   * Default false.
   */
  shared?: boolean;
  /**
   * URL of the shared worker script, resolved against the page; it must be
   * of the page's origin (see the README). Default `/wsgate-worker.js`.
   */
  worker?: string;
  /** SharedWorker class to use with `shared` (tests); default `globalThis.SharedWorker`. */
  SharedWorker?: new (url: string, options: { name: string }) => SharedWorker;
}

/** Error rejecting `request()` promises. */
export class WsgateError extends Error {
  constructor(code: number, message: string, details?: JSONValue);
  /**
   * The code from the server's `[code, message]` error details, or
   * 408 (no reply in time), 503 (connection lost before the reply, dropped
   * from the full offline queue, or the client is closed).
   */
  code: number;
  /** The error frame's details, when the error came from the server. */
  details?: JSONValue;
}

/** Details of the events, by event name. */
export interface ClientEvents {
  /** The socket opened; the `Client/authentication` frame is sent right after the listeners ran. */
  open: { url: string };
  /** The edge accepted the connection; queued frames are flushed. Once per connection. */
  authenticated: {};
  /**
   * The socket closed. `willReconnect` false means the client stopped for good
   * (close() was called, a close code in FINAL_CLOSE_CODES (4401, 4403), 4001
   * with a fixed token and no getToken, or a `Server/close` kick); otherwise a
   * `reconnecting` event follows. A heartbeat timeout is reported as code 4000,
   * reason "heartbeat timeout".
   */
  close: { code: number; reason: string; willReconnect: boolean };
  /** A reconnect is scheduled: `attempt` counts from 1 since the last stable connection, `delay` in ms. */
  reconnecting: { attempt: number; delay: number };
  /**
   * Something went wrong. `fatal: true` comes with a final close (`code` is the
   * server's error code from `Client/authentication:error` when one came,
   * e.g. 401, else the close code; `closeCode` is the close code), and when the
   * WebSocket cannot be created. Non-fatal: `Client/error` frames from the edge
   * (the client sent a bad frame), a `Client/authentication:error` followed by
   * a close that reconnects (e.g. 503 then 1013) or answering a renewal, a
   * failing getToken, a callback that threw (`error` holds it).
   */
  error: { code: number; message: string; fatal: boolean; closeCode?: number; error?: unknown };
  /**
   * Not an error, but worth knowing: a frame dropped from the full offline
   * queue or after close(), a malformed frame, a reply that came after its
   * request ended or carries a ref this client never issued (such replies
   * reach no handler).
   */
  warning: { message: string; action?: string };
  /** The state machine moved from `previous` to `state`. */
  state: { state: ClientPhase; previous: ClientPhase };
  /**
   * The client stopped for good with frames it had not sent: they are lost,
   * and listed here in order. `reason`: "refused by the server", "kicked by
   * the server", "closed by the client" or "cannot open the WebSocket".
   */
  dropped: { reason: string; frames: DroppedFrame[] };
  /**
   * After a reconnect that asked to resume the stream (history on, DESIGN.md
   * §8): `recovered` true means every message missed since the last one
   * received follows (`count` of them, in order, before live ones);
   * false means completeness cannot be promised (new `epoch`, or messages
   * already dropped by the history limits): reload the application's state.
   * Also emitted, with `recovered` false, on a live connection whose stream
   * was recreated or whose edge could not replay what came while it was cut
   * from NATS.
   */
  recovered: { recovered: boolean; count: number; epoch: string };
  /** The edge stored a reliable frame (`Server/ack`); `durable` false: no inbound stream, published at most once. */
  acked: { id: string; action: string; details: JSONValue; duplicate: boolean; durable: boolean };
  /**
   * A reliable frame will never be acknowledged: `Server/ack:error` (the
   * server's code, e.g. 503), or dropped (503: full outbox, final close,
   * sent after the client stopped).
   */
  failed: { id: string; action: string; details: JSONValue; code: number; message: string };
  /** The edge sent `["Server/close", null]`: the connection was closed on purpose; no reconnect. A `close` event follows. */
  kicked: {};
}

export type ClientEventName = keyof ClientEvents;

/**
 * The client: the seed `cs.WebSockets` API (on/off/once/send) plus request(),
 * events and close(). Server actions use on/off/once; client events use
 * addListener/removeListener.
 */
export interface WsgateClient {
  /** Current connection state. */
  readonly state: ClientState;
  /** Current phase of the state machine (announced by `state` events). */
  readonly phase: ClientPhase;
  /** Whether the connection is the shared worker's (`shared` option), false when this tab owns it. */
  readonly shared: boolean;

  /** Adds callbacks for frames with `action` (success) and `action:error` (error). Either may be omitted. */
  on(action: string, success?: SuccessCallback | null, error?: ErrorCallback | null): this;
  /**
   * Removes callbacks: `off(action)` removes all of them for the action;
   * `off(action, success)` or `off(action, null, error)` only the given one.
   */
  off(action: string, success?: SuccessCallback | null, error?: ErrorCallback | null): this;
  /** Like on(), removed after the first success or error frame for the action. */
  once(action: string, success?: SuccessCallback | null, error?: ErrorCallback | null): this;
  /**
   * Sends `[action, details]`; queued (in order) until the connection is
   * authenticated. Throws a TypeError for an action that is not 1–128 of
   * `A-Z a-z 0-9 _ - / :`, or for details JSON.stringify cannot encode.
   */
  send(action: string, details?: JSONValue, options?: SendOptions): this;
  /**
   * Sends `[action, details, ref]` and resolves with the details of the reply
   * carrying the same ref (such a reply is not passed to on() callbacks).
   * Rejects with a WsgateError on `action:error` (server code and message),
   * after `timeout` ms (408, default 10000), or when the connection drops
   * before the reply or the client is closed (503). With `reliable` the
   * frame is `[action, details, ref, id]` and a lost connection does not
   * reject: it is resent with the same ref and id; `Server/ack:error` rejects
   * with its code; after a timeout it is still delivered.
   */
  request<T = any>(action: string, details?: JSONValue, options?: RequestOptions): Promise<T>;

  /** Subscribes to a client event. */
  addListener<K extends ClientEventName>(event: K, listener: (detail: ClientEvents[K]) => void): this;
  /** Unsubscribes from a client event. */
  removeListener<K extends ClientEventName>(event: K, listener: (detail: ClientEvents[K]) => void): this;

  /** Closes the socket for good: stops timers and reconnects, rejects pending requests (503). */
  close(): this;
}

/** Creates a client; it starts connecting at once. */
export function createClient(options?: ClientOptions): WsgateClient;

/**
 * Classic-script bootstrap (called by /client.js): sets `win.wsgate` and, when
 * `script` has `data-cs-compat`, `win.cs.WebSockets` connected to the script's
 * origin (`data-path` overrides the path, `data-token` gives the token,
 * `data-shared` shares it between tabs, `data-worker` is the worker's URL).
 */
export function installGlobals(win: object, script: HTMLScriptElement | null): void;

/**
 * Runs the shared connection in a SharedWorker: the whole worker script is
 * `importScripts("https://edge.example.com/client.js"); wsgate.serveSharedWorker(self);`.
 * A tab is dropped when its Web Lock is released (it closed, crashed or was
 * discarded); without Web Locks, when it misses 3 pings of 5 s (a hidden tab:
 * 3 minutes), and it rejoins when it speaks again. The connection closes when
 * no tab is left.
 */
export function serveSharedWorker(scope: EventTarget): unknown;

/** The WebSocket path used when no url is given, as set by the edge that served the file. */
export const DEFAULT_PATH: string;

/** Close codes after which the client never reconnects (DESIGN.md §2): 4401, 4403. */
export const FINAL_CLOSE_CODES: readonly number[];

/** Every phase of the state machine, in the order of a first connection. */
export const PHASES: readonly ClientPhase[];

// Globals set by the classic script /client.js.
declare global {
  interface Window {
    wsgate: { createClient: typeof createClient; WsgateError: typeof WsgateError; serveSharedWorker: typeof serveSharedWorker };
    /** Set by <script src=".../client.js" data-cs-compat>: the seed's cs.WebSockets. */
    cs?: { WebSockets?: WsgateClient; [member: string]: unknown };
  }
}
