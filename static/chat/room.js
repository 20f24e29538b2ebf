// Live updates for the room page: one WebSocket to /ws/ that speaks the
// protocol of messaging/consumers.py and messaging/frames.py.
//
// Plain script, no build step. The page renders the newest messages itself
// and hands over, in the #room-config JSON, the room id, the WebSocket path,
// the highest seq it shows and the translated words this script displays.
//
// Ordering rests on the server's gapless per-room seq: a message with
// seq == lastSeq + 1 is appended, a higher one means something was missed
// and a `sync` after lastSeq fetches it, a lower one is a duplicate. Sends
// carry a client_id the server deduplicates on, so a send is simply repeated
// after a reconnect until it is acknowledged.
(function () {
  "use strict";

  const configElement = document.getElementById("room-config");
  if (!configElement) return;
  const config = JSON.parse(configElement.textContent);
  if (!config.live) {
    // An archive page (?before=) has no socket; it only shows its times in
    // the reader's time zone, with the date since they are older messages.
    document.querySelectorAll("time.message-time").forEach((time) => {
      const moment = new Date(time.dateTime);
      if (Number.isNaN(moment.getTime())) return;
      time.textContent = moment.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      time.title = moment.toLocaleString();
    });
    return;
  }

  const words = config.strings;
  const roomId = config.room;
  const me = config.me;

  const roomElement = document.getElementById("room");
  const list = document.getElementById("messages");
  const scroller = document.getElementById("message-scroller");
  const form = document.getElementById("send-form");
  const textarea = document.getElementById("message-body");
  const sendButton = document.getElementById("send-button");
  const errorBox = document.getElementById("send-error");
  const statusBox = document.getElementById("connection-status");
  const leftBanner = document.getElementById("left-banner");

  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const MAX_SEND_ATTEMPTS = 5;
  const BOTTOM_SLACK_PX = 40;
  // Close codes of messaging/consumers.py after which reconnecting is futile.
  const CLOSE_LOGGED_OUT = 4001;
  const CLOSE_DEACTIVATED = 4003;

  const state = {
    lastSeq: highestShownSeq(config.lastSeq),
    socket: null,
    connected: false, // true from `hello` until the socket closes
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    pongTimer: null,
    syncing: false,
    syncAgain: false,
    member: true,
    stopped: false,
    // client_id -> {clientId, body, element, attempts, acked}; an entry
    // stays until its message is placed in the list or the send fails.
    outbox: new Map(),
  };

  // ---- Identifiers and time -------------------------------------------

  function newClientId() {
    // crypto.randomUUID exists only in secure contexts (https, localhost).
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const bytes = new Uint8Array(16);
    if (window.crypto && typeof window.crypto.getRandomValues === "function") {
      window.crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  function showLocalTime(timeElement, iso) {
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return;
    const today = moment.toDateString() === new Date().toDateString();
    const options = today
      ? { hour: "2-digit", minute: "2-digit" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    timeElement.dateTime = iso;
    timeElement.textContent = moment.toLocaleString(undefined, options);
    timeElement.title = moment.toLocaleString();
  }

  // ---- The message list -----------------------------------------------

  function highestShownSeq(fallback) {
    let highest = Number(fallback) || 0;
    list.querySelectorAll(".message[data-seq]").forEach((item) => {
      highest = Math.max(highest, Number(item.dataset.seq));
    });
    return highest;
  }

  function atBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < BOTTOM_SLACK_PX;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  function messageParts(authorName, body) {
    const meta = document.createElement("div");
    meta.className = "message-meta";
    const author = document.createElement("span");
    author.className = "message-author";
    author.textContent = authorName;
    const time = document.createElement("time");
    time.className = "message-time";
    meta.append(author, " ", time);
    const text = document.createElement("div");
    text.className = "message-body";
    // textContent, never innerHTML: a body is text, whatever it looks like.
    text.textContent = body;
    return { meta, time, text };
  }

  function fillMessage(item, message) {
    const author = message.author || {};
    const parts = messageParts(author.display_name || "", message.body);
    showLocalTime(parts.time, message.created_at);
    item.className = author.id === me.id ? "message mine" : "message";
    item.id = "message-" + message.id;
    item.dataset.seq = String(message.seq);
    item.dataset.id = message.id;
    item.dataset.clientId = message.client_id;
    item.dataset.authorId = author.id == null ? "" : String(author.id);
    item.replaceChildren(parts.meta, parts.text);
  }

  function pendingElement(entry) {
    const item = document.createElement("li");
    item.className = "message mine pending";
    item.dataset.clientId = entry.clientId;
    const parts = messageParts(me.displayName, entry.body);
    const status = document.createElement("span");
    status.className = "message-status";
    status.textContent = words.sending;
    parts.meta.append(" ", status);
    item.append(parts.meta, parts.text);
    return item;
  }

  function markFailed(entry) {
    entry.element.classList.remove("pending");
    entry.element.classList.add("failed");
    const status = entry.element.querySelector(".message-status");
    if (status) status.textContent = words.notSent;
  }

  // Place one stored message. `fromSync` marks a message from a sync batch,
  // which lists every message after the seq asked for: a hole in it is a
  // message that no longer exists, not one still to come.
  function accept(message, fromSync) {
    if (!message || message.room !== roomId) return;
    const seq = message.seq;
    if (seq <= state.lastSeq) return; // already shown
    if (seq > state.lastSeq + 1 && !fromSync) {
      requestSync();
      return;
    }
    const stick = atBottom();
    const entry = message.author && message.author.id === me.id ? state.outbox.get(message.client_id) : undefined;
    let item;
    if (entry) {
      state.outbox.delete(entry.clientId);
      item = entry.element;
    } else {
      item = document.createElement("li");
    }
    fillMessage(item, message);
    // Stored messages stay in seq order above the ones still being sent.
    list.insertBefore(item, list.querySelector(":scope > .message:not([data-seq])"));
    state.lastSeq = seq;
    roomElement.dataset.lastSeq = String(seq);
    const empty = document.getElementById("no-messages");
    if (empty) empty.remove();
    if (stick || entry) scrollToBottom();
  }

  // ---- The send box ---------------------------------------------------

  function showError(detail) {
    if (!errorBox) return;
    errorBox.textContent = detail || words.unknownError;
    errorBox.hidden = false;
  }

  function clearError() {
    if (!errorBox) return;
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function setComposerEnabled(enabled) {
    if (textarea) textarea.disabled = !enabled;
    if (sendButton) sendButton.disabled = !enabled;
  }

  function transmit(entry) {
    if (!state.connected || entry.acked || !state.outbox.has(entry.clientId)) return;
    entry.attempts += 1;
    sendFrame({ type: "message.send", room: roomId, body: entry.body, client_id: entry.clientId });
  }

  function submit(event) {
    event.preventDefault();
    if (!state.member || state.stopped) return;
    const body = textarea.value;
    if (!body.trim()) return;
    const entry = { clientId: newClientId(), body, element: null, attempts: 0, acked: false };
    entry.element = pendingElement(entry);
    state.outbox.set(entry.clientId, entry);
    list.appendChild(entry.element);
    scrollToBottom();
    textarea.value = "";
    clearError();
    // Queued while disconnected: `hello` sends it after the reconnect.
    transmit(entry);
  }

  function onSendError(frame, entry) {
    if (frame.code === "not_member") {
      setLeft();
      return;
    }
    if (frame.retryable && entry.attempts < MAX_SEND_ATTEMPTS) {
      // Nothing was stored; the same client_id goes again after a pause.
      const seconds = typeof frame.retry_after === "number" ? frame.retry_after : 2 ** entry.attempts / 2;
      if (frame.code === "rate_limited") showError(frame.detail);
      setTimeout(() => transmit(entry), Math.max(250, seconds * 1000));
      return;
    }
    state.outbox.delete(entry.clientId);
    if (!textarea.value) {
      // Give the text back so it can be fixed (too long, say) and resent.
      entry.element.remove();
      textarea.value = entry.body;
    } else {
      markFailed(entry);
    }
    showError(frame.detail);
  }

  // ---- Membership -----------------------------------------------------

  function setLeft() {
    if (!state.member) return;
    state.member = false;
    leftBanner.textContent = words.notMember;
    leftBanner.hidden = false;
    roomElement.dataset.member = "false";
    setComposerEnabled(false);
    state.outbox.forEach((entry) => markFailed(entry));
    state.outbox.clear();
  }

  function setMember() {
    if (state.member) return;
    state.member = true;
    leftBanner.hidden = true;
    roomElement.dataset.member = "true";
    setComposerEnabled(!state.stopped);
  }

  // ---- The socket -----------------------------------------------------

  function setStatus(key) {
    if (!statusBox) return;
    statusBox.dataset.state = key;
    statusBox.textContent = words[key];
  }

  function sendFrame(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
    }
  }

  function requestSync() {
    if (!state.connected || !state.member) return;
    if (state.syncing) {
      state.syncAgain = true;
      return;
    }
    state.syncing = true;
    state.syncAgain = false;
    sendFrame({ type: "sync", room: roomId, after_seq: state.lastSeq });
  }

  function onSyncBatch(frame) {
    if (frame.room !== roomId) return;
    state.syncing = false;
    frame.messages.forEach((message) => accept(message, true));
    if (frame.has_more || state.syncAgain) requestSync();
  }

  function onHello(frame) {
    state.connected = true;
    state.attempt = 0;
    setStatus("connected");
    const summary = frame.rooms.find((room) => room.id === roomId);
    if (!summary) {
      setLeft();
      return;
    }
    setMember();
    if (summary.last_seq > state.lastSeq) requestSync();
    state.outbox.forEach((entry) => transmit(entry));
  }

  function onError(frame) {
    const entry = frame.client_id ? state.outbox.get(frame.client_id) : undefined;
    if (entry) {
      onSendError(frame, entry);
      return;
    }
    if (frame.code === "not_member") {
      setLeft();
      return;
    }
    if (state.syncing && !frame.client_id) {
      // Only sync and ping go without a client_id; try the sync again.
      state.syncing = false;
      if (frame.retryable) setTimeout(requestSync, 1000);
    }
    showError(frame.detail);
  }

  function onFrame(event) {
    clearTimeout(state.pongTimer);
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    switch (frame.type) {
      case "hello":
        onHello(frame);
        break;
      case "message.new":
        accept(frame.message, false);
        break;
      case "message.ack": {
        const entry = state.outbox.get(frame.client_id);
        if (entry) entry.acked = true;
        accept(frame.message, false);
        break;
      }
      case "sync.batch":
        onSyncBatch(frame);
        break;
      case "room.joined":
        if (frame.room && frame.room.id === roomId) {
          setMember();
          requestSync();
        }
        break;
      case "room.left":
        if (frame.room === roomId) setLeft();
        break;
      case "error":
        onError(frame);
        break;
      case "pong":
        break;
      default:
        break;
    }
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + config.wsPath;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.stopped) return;
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    socket.onmessage = (event) => {
      if (socket === state.socket) onFrame(event);
    };
    socket.onclose = (event) => {
      if (socket !== state.socket) return;
      lost();
      if (event.code === CLOSE_LOGGED_OUT || event.code === CLOSE_DEACTIVATED) {
        state.stopped = true;
        setStatus("loggedOut");
        setComposerEnabled(false);
        return;
      }
      scheduleReconnect();
    };
  }

  function lost() {
    state.socket = null;
    state.connected = false;
    state.syncing = false;
    clearTimeout(state.pongTimer);
  }

  // A socket can die without a close event (a closed laptop lid, a lost
  // route), so a ping without a pong within PONG_TIMEOUT_MS replaces it.
  function drop() {
    const socket = state.socket;
    if (!socket) return;
    socket.onmessage = null;
    socket.onclose = null;
    socket.close();
    lost();
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.stopped) return;
    setStatus("reconnecting");
    clearTimeout(state.reconnectTimer);
    // Exponential backoff with jitter, so a restarted server is not met
    // by every client at the same instant.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
    state.attempt += 1;
    state.reconnectTimer = setTimeout(connect, ceiling / 2 + Math.random() * (ceiling / 2));
  }

  function ping() {
    if (!state.connected) return;
    sendFrame({ type: "ping" });
    clearTimeout(state.pongTimer);
    state.pongTimer = setTimeout(drop, PONG_TIMEOUT_MS);
  }

  // ---- Start ----------------------------------------------------------

  list.querySelectorAll("time.message-time").forEach((time) => showLocalTime(time, time.dateTime));
  scrollToBottom();

  form.addEventListener("submit", submit);
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  // Without a network the socket is dead even before its close event
  // arrives. Back online, reconnect at once instead of after the backoff.
  window.addEventListener("offline", drop);
  window.addEventListener("online", () => {
    if (state.stopped) return;
    drop();
    state.attempt = 0;
    connect();
  });
  state.pingTimer = setInterval(ping, PING_EVERY_MS);

  setStatus("connecting");
  connect();
})();
