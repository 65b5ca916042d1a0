// wsgate demo page. Plain script, no build step; uses window.wsgate from
// /client.js. All text from users or the server goes through textContent.
//
// document.body.dataset.state, for automated tests: "signed-out", then the
// client's "connecting" | "authenticated" | "reconnecting" | "closed".
"use strict";

(function () {
  const USER_RE = /^[A-Za-z0-9_@+=~:-]{1,64}$/;
  const ROOM_PREFIX = "room-"; // the handlers join users to rooms named room-<name> only
  const MAX_LOG_ITEMS = 300; // keep long sessions from growing the DOM forever

  const $ = (id) => document.getElementById(id);
  const el = {
    session: $("session"),
    userName: $("user-name"),
    state: $("state"),
    logout: $("logout-btn"),
    banner: $("banner"),
    loginPanel: $("login-panel"),
    loginForm: $("login-form"),
    loginUser: $("login-user"),
    loginBtn: $("login-btn"),
    loginError: $("login-error"),
    app: $("app"),
    chatForm: $("chat-form"),
    chatInput: $("chat-input"),
    chatLog: $("chat-log"),
    chatError: $("chat-error"),
    helloForm: $("hello-form"),
    helloInput: $("hello-input"),
    helloLog: $("hello-log"),
    pmForm: $("pm-form"),
    pmTo: $("pm-to"),
    pmInput: $("pm-input"),
    pmLog: $("pm-log"),
    onlineList: $("online-list"),
    onlineError: $("online-error"),
    roomForm: $("room-form"),
    roomName: $("room-name"),
    roomLeave: $("room-leave"),
    roomList: $("room-list"),
    roomSendForm: $("room-send-form"),
    roomInput: $("room-input"),
    roomError: $("room-error"),
    roomLog: $("room-log"),
  };

  let client = null;
  let user = "";
  let online = new Set(); // users in group "demo" now, as presence says
  let rooms = new Set(); // rooms this user is in

  // ---- sign in -------------------------------------------------------------

  // Asks the dev server for a token for `name`: {token, ws_url}.
  async function fetchToken(name) {
    const res = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: name }),
    });
    if (!res.ok) {
      const text = (await res.text()).trim();
      throw new Error(text || "token request failed (" + res.status + ")");
    }
    return res.json();
  }

  el.loginForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = el.loginUser.value.trim();
    if (!USER_RE.test(name)) {
      el.loginError.textContent = "1–64 characters: letters, digits and _ @ + = ~ : -";
      el.loginUser.focus();
      return;
    }
    el.loginError.textContent = "";
    el.loginBtn.disabled = true;
    try {
      const first = await fetchToken(name);
      start(name, first);
    } catch (err) {
      el.loginError.textContent = "Cannot sign in: " + err.message;
    } finally {
      el.loginBtn.disabled = false;
    }
  });

  el.logout.addEventListener("click", () => {
    if (client) client.close();
    client = null;
    el.app.hidden = true;
    el.session.hidden = true;
    el.loginPanel.hidden = false;
    hideBanner();
    setState("signed-out", "signed out");
    el.loginUser.focus();
  });

  // ---- connection ------------------------------------------------------------

  function start(name, first) {
    user = name;
    for (const log of [el.chatLog, el.helloLog, el.pmLog, el.roomLog]) log.replaceChildren();
    el.chatError.textContent = "";
    el.onlineError.textContent = "";
    el.roomError.textContent = "";
    online = new Set([name]);
    rooms = new Set();
    renderOnline();
    renderRooms();
    hideBanner();

    client = window.wsgate.createClient({
      url: first.ws_url,
      // The first token saves a round trip; getToken renews it before it
      // expires and after the edge closes with 4001.
      token: first.token,
      getToken: async () => (await fetchToken(name)).token,
    });
    wire(client);

    el.userName.textContent = name;
    el.session.hidden = false;
    el.loginPanel.hidden = true;
    el.app.hidden = false;
    setState("connecting", "connecting");
    el.chatInput.focus();
  }

  function wire(c) {
    // Events of a client the user signed out of must not touch the page.
    const live = (fn) => (detail) => {
      if (c === client) fn(detail);
    };
    let reconnecting = 0;
    c.addListener("open", live(() => {
      if (!reconnecting) setState("connecting", "connecting");
    }));
    c.addListener("authenticated", live(() => {
      reconnecting = 0;
      hideBanner();
      setState("authenticated", "authenticated");
      // Watch user events (this connection only, until it closes), then ask
      // who is online: the pushes keep the list current from there. Done at
      // every (re)connection, since events missed while away are not replayed.
      c.send("presence/watch", null);
    }));
    c.addListener("reconnecting", live(({ attempt, delay }) => {
      reconnecting = attempt;
      setState("reconnecting", "reconnecting (attempt " + attempt + ")");
      el.state.title = "next try in " + Math.round(delay / 100) / 10 + " s";
    }));
    c.addListener("close", live(({ code, willReconnect }) => {
      if (!willReconnect) setState("closed", "closed");
      el.state.title = "last close code " + code;
    }));
    c.addListener("kicked", live(() => showBanner("The server closed this connection. Sign in again to reconnect.")));
    c.addListener("error", live((e) => {
      if (e.fatal) showBanner("Connection refused: " + e.message);
      else console.warn("wsgate:", e.message, e.error || "");
    }));
    c.addListener("warning", live((w) => console.warn("wsgate:", w.message)));

    // (b) chat room
    c.on("chat/message", (m) => {
      appendEntry(el.chatLog, {
        who: m && m.from,
        text: m && m.text,
        ts: m && m.ts,
        own: m && m.from === user,
      });
    });
    c.on("chat/send", null, (code, message) => {
      el.chatError.textContent = "Not sent: " + message + " (" + code + ")";
    });

    // (c) the seed's hello round trip
    c.on("hello", (...details) => {
      appendEntry(el.helloLog, { who: "hello", text: details.map(format).join(" "), own: true });
    }, (code, message) => {
      appendEntry(el.helloLog, { who: "hello:error " + code, text: message, error: true });
    });

    // (d) private messages: ours come back as an echo, others' arrive
    c.on("chat/private", (m) => {
      const own = m && m.from === user;
      appendEntry(el.pmLog, {
        who: own ? "you → " + m.to : (m && m.from) + " → you",
        text: m && m.text,
        ts: m && m.ts,
        own,
      });
    }, (code, message) => {
      appendEntry(el.pmLog, { who: "error " + code, text: message, error: true });
    });

    // (e) who is online: watching first, so no event falls between the
    // answer to presence/who and the pushes
    c.on("presence/watch", () => c.send("presence/who", null), (code, message) => {
      el.onlineError.textContent = "Presence: " + message + " (" + code + ")";
    });
    c.on("presence/who", (a) => {
      el.onlineError.textContent = "";
      if (a && Array.isArray(a.members)) online = new Set(a.members.concat([user]));
      if (a && Array.isArray(a.rooms)) rooms = new Set(a.rooms);
      renderOnline();
      renderRooms();
    }, (code, message) => {
      el.onlineError.textContent = "Presence: " + message + " (" + code + ")";
    });
    c.on("presence/online", (ev) => {
      if (!ev || typeof ev.user !== "string") return;
      online.add(ev.user);
      renderOnline();
      // Our own user's online event: ask again, in case the first answer
      // came before the presence service saw the others.
      if (ev.user === user) c.send("presence/who", null);
    });
    c.on("presence/offline", (ev) => {
      if (!ev || typeof ev.user !== "string" || ev.user === user) return;
      online.delete(ev.user);
      renderOnline();
    });

    // (f) rooms: the answers to room/join and room/leave, and what rooms send
    const roomError = (code, message) => {
      el.roomError.textContent = message + " (" + code + ")";
    };
    c.on("room/join", (ev) => roomChanged(ev, true), roomError);
    c.on("room/leave", (ev) => roomChanged(ev, false), roomError);
    c.on("room/send", null, roomError);
    c.on("room/joined", (ev) => {
      if (ev && ev.user === user) roomChanged(ev, true);
      else if (ev) appendEntry(el.roomLog, { who: ev.room, text: ev.user + " joined" });
    });
    c.on("room/left", (ev) => {
      if (ev && ev.user === user) roomChanged(ev, false);
      else if (ev) appendEntry(el.roomLog, { who: ev.room, text: ev.user + " left" });
    });
    c.on("room/message", (m) => {
      if (!m) return;
      appendEntry(el.roomLog, { who: (m.from || "anonymous") + " → " + m.room, text: m.text, ts: m.ts, own: m.from === user });
    });
  }

  // roomChanged records that this user joined or left ev.room; the answer
  // and the room's own event both arrive, so only a change is logged.
  function roomChanged(ev, joined) {
    if (!ev || typeof ev.room !== "string" || rooms.has(ev.room) === joined) return;
    if (joined) rooms.add(ev.room);
    else rooms.delete(ev.room);
    el.roomError.textContent = "";
    appendEntry(el.roomLog, { who: ev.room, text: joined ? "you joined" : "you left", own: true });
    renderRooms();
  }

  // ---- panels ----------------------------------------------------------------

  el.chatForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el.chatInput.value.trim();
    if (!text || !client) return;
    el.chatError.textContent = "";
    client.send("chat/send", { text });
    el.chatInput.value = "";
  });

  el.helloForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!client) return;
    // Empty on purpose is allowed: the server answers hello:error.
    client.send("hello", el.helloInput.value);
    el.helloInput.value = "";
  });

  el.pmForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!client) return;
    const to = el.pmTo.value.trim();
    const text = el.pmInput.value.trim();
    if (!USER_RE.test(to)) {
      appendEntry(el.pmLog, { who: "error", text: "Recipient: 1–64 of letters, digits and _ @ + = ~ : -", error: true });
      return;
    }
    if (!text) {
      appendEntry(el.pmLog, { who: "error", text: "Write a message first", error: true });
      return;
    }
    client.send("chat/private", { to, text });
    el.pmInput.value = "";
  });

  // The room named in the room input: "5" means "room-5".
  function roomName() {
    const name = el.roomName.value.trim();
    return name.startsWith(ROOM_PREFIX) ? name : ROOM_PREFIX + name;
  }

  el.roomForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!client) return;
    el.roomError.textContent = "";
    client.send("room/join", { room: roomName() });
  });

  el.roomLeave.addEventListener("click", () => {
    if (!client) return;
    el.roomError.textContent = "";
    client.send("room/leave", { room: roomName() });
  });

  el.roomSendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el.roomInput.value.trim();
    if (!text || !client) return;
    el.roomError.textContent = "";
    client.send("room/send", { room: roomName(), text });
    el.roomInput.value = "";
  });

  // ---- rendering -------------------------------------------------------------

  // renderOnline lists the online users, sorted, each with data-user.
  function renderOnline() {
    const items = [...online].sort().map((u) => {
      const li = document.createElement("li");
      li.dataset.user = u;
      li.textContent = u === user ? u + " (you)" : u;
      if (u === user) li.classList.add("own");
      return li;
    });
    el.onlineList.replaceChildren(...items);
  }

  function renderRooms() {
    el.roomList.textContent = rooms.size ? [...rooms].sort().join(", ") : "none";
  }

  function setState(state, label) {
    document.body.dataset.state = state;
    el.state.textContent = label;
  }

  function showBanner(text) {
    el.banner.textContent = text;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.banner.textContent = "";
  }

  // Appends one message to a log, as text only.
  function appendEntry(log, { who, text, ts, own = false, error = false }) {
    const li = document.createElement("li");
    if (own) li.classList.add("own");
    if (error) li.classList.add("error");

    const meta = document.createElement("div");
    meta.className = "meta";
    const whoEl = document.createElement("span");
    whoEl.className = "who";
    whoEl.textContent = format(who);
    meta.append(whoEl);
    const time = formatTime(ts);
    if (time) {
      const timeEl = document.createElement("time");
      timeEl.textContent = time;
      if (typeof ts === "string") timeEl.dateTime = ts;
      meta.append(timeEl);
    }

    const body = document.createElement("div");
    body.className = "text";
    body.textContent = format(text);

    li.append(meta, body);
    // Follow new messages only when the reader is already at the bottom.
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(li);
    while (log.children.length > MAX_LOG_ITEMS) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function format(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // ts may be an RFC 3339 string or epoch milliseconds.
  function formatTime(ts) {
    if (ts === undefined || ts === null || ts === "") return "";
    const d = new Date(ts);
    return isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  if (!window.wsgate) {
    el.loginBtn.disabled = true;
    el.loginError.textContent = "The wsgate client (/client.js) did not load.";
  }
})();
