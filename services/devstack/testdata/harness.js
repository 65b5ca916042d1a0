// Test harness for browser_test.go: starts one wsgate client (window.client)
// and records its events and the frames it gets in window.rec, so that the
// test can poll them. Uses window.wsgate: set by /client.js (client.html), or
// by the module page from /client.mjs (module.html).
"use strict";

window.rec = { events: [], frames: [], tokenCalls: 0 };

// startClient(opts): opts.url, opts.token, opts.actions (actions to record),
// opts.tokenURL (getToken fetches a fresh token there), opts.staleFirst
// (the first getToken call returns opts.token again: no renewal on the live
// connection, so the edge closes with 4001 at exp), opts.backoffBase,
// opts.backoffMax, opts.pingInterval, opts.pongTimeout, opts.random (a
// fixed jitter in [0, 1)). Without token and tokenURL the edge uses the
// cookie.
window.startClient = function (opts) {
  const options = {
    url: opts.url,
    token: opts.token,
    backoffBase: opts.backoffBase || 100,
    backoffMax: opts.backoffMax || 500,
  };
  for (const key of ["pingInterval", "pongTimeout"]) {
    if (opts[key]) options[key] = opts[key];
  }
  if (typeof opts.random === "number") options.random = () => opts.random;
  if (opts.tokenURL) {
    options.getToken = async function () {
      rec.tokenCalls++;
      if (opts.staleFirst && rec.tokenCalls === 1) return opts.token;
      const res = await fetch(opts.tokenURL, { cache: "no-store" });
      if (!res.ok) throw new Error("token endpoint answered " + res.status);
      return res.text();
    };
  }
  const client = window.wsgate.createClient(options);
  ["open", "authenticated", "close", "reconnecting", "error", "warning", "kicked", "dropped"].forEach(function (name) {
    client.addListener(name, function (detail) {
      const e = { event: name, at: Date.now() };
      for (const key of ["code", "reason", "willReconnect", "message", "attempt", "delay"]) {
        if (detail && detail[key] !== undefined) e[key] = detail[key];
      }
      rec.events.push(e);
    });
  });
  (opts.actions || []).forEach(function (action) {
    client.on(
      action,
      function (...args) { rec.frames.push({ action: action, args: args }); },
      function (...args) { rec.frames.push({ action: action + ":error", args: args }); },
    );
  });
  window.client = client;
  return true;
};

// count(name): how many times the event fired.
window.count = function (name) {
  return rec.events.filter(function (e) { return e.event === name; }).length;
};

// received(action): the first argument of every recorded frame of action.
window.received = function (action) {
  return rec.frames.filter(function (f) { return f.action === action; }).map(function (f) { return f.args[0]; });
};
