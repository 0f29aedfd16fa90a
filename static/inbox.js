/*
 * <novulite-inbox>: novulite's embeddable inbox, one file with no dependencies and no build step.
 *
 * Talks to novulite's Novu-compatible inbox API (/v1/inbox/...) and its socket (/ws), renders
 * inside a shadow root and is themed through the CSS custom properties listed in STYLE.
 * docs/inbox-widget.md describes the attributes, properties, events and accessibility behaviour.
 * All notification text is written with textContent, so payload text cannot inject markup.
 */
(() => {
  "use strict";

  const TAG = "novulite-inbox";
  const SCRIPT = document.currentScript;
  // The origin the script was loaded from, the default server when `server-url` is absent.
  const SCRIPT_ORIGIN = SCRIPT && SCRIPT.src ? new URL(SCRIPT.src, location.href).origin : location.origin;

  const PAGE_SIZE = 10;
  // The filter of the unread badge, the same as the one behind the socket's unread_count_changed frames.
  const UNREAD_FILTER = { read: false, archived: false, snoozed: false };
  // Close code the server uses to reject a socket (bad token, or a `since` it does not accept).
  const WS_CLOSE_POLICY_VIOLATION = 1008;

  // Each private --_name reads the public --novulite-name with its default, so a value set on
  // the element or on any ancestor applies. docs/inbox-widget.md lists the public names.
  const STYLE = `
    :host {
      --_font-family: var(--novulite-font-family, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
      --_font-size: var(--novulite-font-size, 14px);
      --_color-primary: var(--novulite-color-primary, #4f46e5);
      --_color-on-primary: var(--novulite-color-on-primary, #ffffff);
      --_color-background: var(--novulite-color-background, #ffffff);
      --_color-text: var(--novulite-color-text, #1f2937);
      --_color-muted: var(--novulite-color-muted, #4b5563);
      --_color-border: var(--novulite-color-border, #d1d5db);
      --_color-unread: var(--novulite-color-unread, #eef2ff);
      --_color-badge: var(--novulite-color-badge, #dc2626);
      --_color-on-badge: var(--novulite-color-on-badge, #ffffff);
      --_color-focus: var(--novulite-color-focus, #2563eb);
      --_radius: var(--novulite-radius, 8px);
      --_panel-width: var(--novulite-panel-width, 360px);
      --_panel-max-height: var(--novulite-panel-max-height, 480px);
      display: inline-block;
      position: relative;
      font-family: var(--_font-family);
      font-size: var(--_font-size);
      color: var(--_color-text);
    }
    *, *::before, *::after { box-sizing: border-box; }
    [hidden] { display: none !important; }
    button, a { font: inherit; }
    :focus-visible { outline: 3px solid var(--_color-focus); outline-offset: 2px; }
    .bell {
      position: relative; display: inline-flex; align-items: center; justify-content: center;
      width: 40px; height: 40px; padding: 0; cursor: pointer;
      border: 1px solid var(--_color-border); border-radius: var(--_radius);
      background: var(--_color-background); color: var(--_color-text);
    }
    .bell svg { width: 22px; height: 22px; }
    .badge {
      position: absolute; top: -6px; right: -6px; min-width: 20px; height: 20px; padding: 0 5px;
      border-radius: 10px; font-size: 12px; font-weight: 700; line-height: 20px; text-align: center;
      background: var(--_color-badge); color: var(--_color-on-badge);
    }
    .badge[data-count="0"] { display: none; }
    .panel {
      position: absolute; right: 0; top: calc(100% + 8px); z-index: 1000;
      width: min(var(--_panel-width), calc(100vw - 16px));
      max-height: var(--_panel-max-height); display: flex; flex-direction: column;
      background: var(--_color-background); color: var(--_color-text);
      border: 1px solid var(--_color-border); border-radius: var(--_radius);
      box-shadow: 0 10px 30px rgb(0 0 0 / 0.15);
    }
    .panel:focus { outline: none; }
    .panel:focus-visible { outline: 3px solid var(--_color-focus); }
    .header {
      display: flex; align-items: center; justify-content: space-between; gap: 8px;
      padding: 10px 12px; border-bottom: 1px solid var(--_color-border);
    }
    .title { margin: 0; font-size: 1.05em; }
    .status { margin: 0; padding: 6px 12px; color: var(--_color-muted); font-size: 0.9em; }
    .list { list-style: none; margin: 0; padding: 0; overflow-y: auto; }
    .item { border-bottom: 1px solid var(--_color-border); padding: 10px 12px; }
    .item[data-read="false"] { background: var(--_color-unread); }
    .main {
      display: block; width: 100%; padding: 0; text-align: left; cursor: pointer;
      border: 0; background: none; color: inherit;
    }
    .dot {
      display: inline-block; width: 8px; height: 8px; margin-right: 6px; border-radius: 50%;
      background: var(--_color-primary); vertical-align: middle;
    }
    .item[data-read="true"] .dot { visibility: hidden; }
    .subject { font-weight: 600; }
    .item[data-read="false"] .subject { font-weight: 800; }
    .body { display: block; margin-top: 2px; color: var(--_color-muted); white-space: pre-wrap;
      overflow-wrap: anywhere; }
    .time { display: block; margin-top: 4px; font-size: 0.8em; color: var(--_color-muted); }
    .actions { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-top: 8px; }
    .action, .secondary, .archive, .mark-all, .more {
      padding: 4px 10px; cursor: pointer; border-radius: calc(var(--_radius) / 2);
      border: 1px solid var(--_color-border); background: var(--_color-background);
      color: var(--_color-text);
    }
    .action.primary {
      background: var(--_color-primary); border-color: var(--_color-primary);
      color: var(--_color-on-primary);
    }
    .action[aria-disabled="true"] { opacity: 0.6; cursor: default; }
    .link { color: var(--_color-primary); }
    .archive { margin-left: auto; }
    .mark-all:disabled { opacity: 0.6; cursor: default; }
    .empty { margin: 0; padding: 24px 12px; text-align: center; color: var(--_color-muted); }
    .more { margin: 8px 12px; }
    .sr-only {
      position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; border: 0;
    }
  `;

  const BELL_PATH =
    "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66" +
    "A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z";

  let instances = 0;

  /** Create an element with a class name and optional text, set through textContent. */
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** Return `url` when it is an absolute http or https URL, else null, so javascript: and data: URLs never open. */
  function safeHttpUrl(url) {
    if (typeof url !== "string" || url === "") return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  /** Convert the raw message entity of a notification_received frame into the REST API's notification shape. */
  function fromRawMessage(raw) {
    const cta = raw.cta || {};
    const action = cta.action || {};
    const buttons = Array.isArray(action.buttons) ? action.buttons : [];
    const resultType = (action.result || {}).type;
    const toAction = (type) => {
      const button = buttons.find((candidate) => candidate && candidate.type === type);
      if (!button) return null;
      const converted = {
        label: button.content || "",
        isCompleted: action.status === "done" && resultType === type,
      };
      if (button.url) converted.redirect = { url: button.url, target: button.target || "_self" };
      return converted;
    };
    const redirect = cta.data && cta.data.url ? cta.data : null;
    const snoozedUntil = raw.snoozedUntil || null;
    return {
      id: raw._id,
      subject: raw.subject || null,
      body: raw.content || "",
      isRead: Boolean(raw.read),
      isSeen: Boolean(raw.seen),
      isArchived: Boolean(raw.archived),
      isSnoozed: snoozedUntil !== null && Date.parse(snoozedUntil) > Date.now(),
      createdAt: raw.createdAt,
      primaryAction: toAction("primary"),
      secondaryAction: toAction("secondary"),
      redirect,
      data: raw.data,
      tags: raw.tags || [],
      severity: raw.severity,
    };
  }

  /**
   * Return the delay before reconnect number `attempt` (0-based), in milliseconds: exponential
   * from `base`, capped at `max`, with "equal jitter" (half fixed, half random) so that many
   * widgets dropped at once do not reconnect in step.
   */
  function backoffDelay(attempt, base, max) {
    const capped = Math.min(max, base * 2 ** Math.min(attempt, 30));
    return capped / 2 + Math.random() * (capped / 2);
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  class NovuliteInbox extends HTMLElement {
    /** Reconnect delay before the first retry, in milliseconds, before jitter halves it at most. */
    static reconnectBaseMs = 500;
    /** Maximum reconnect delay, in milliseconds. */
    static reconnectMaxMs = 30000;

    static get observedAttributes() {
      return ["server-url", "application-identifier", "subscriber-id", "subscriber-hash", "context", "context-hash"];
    }

    constructor() {
      super();
      instances += 1;
      this._uid = `${TAG}-${instances}`;
      this._notifications = new Map(); // id -> notification, shown newest first
      this._token = null;
      this._socket = null;
      this._generation = 0; // incremented on every (re)start, so stale async work can tell it is stale
      this._attempt = 0;
      this._reconnectTimer = null;
      this._lastId = null; // newest message id seen, the socket's `since`
      this._hasMore = false;
      this._unreadCount = 0;
      this._countVersion = 0; // incremented by each count frame, so an older GET result is dropped
      this._connectedOnce = false;
      this._listLoaded = false; // set once the first page and count loaded, so retries only reconnect
      this._restartQueued = false;
      this._receivedDuringLoad = null;
      this._onDocumentClick = this._onDocumentClick.bind(this);
      this._render();
    }

    // --- public API -------------------------------------------------------------------------

    /** The unread count the badge shows. */
    get unreadCount() {
      return this._unreadCount;
    }

    /** The socket's state: "connecting", "open" or "closed". */
    get connectionState() {
      if (this._socket && this._socket.readyState === WebSocket.OPEN) return "open";
      if (this._socket && this._socket.readyState === WebSocket.CONNECTING) return "connecting";
      return "closed";
    }

    open() {
      if (!this._panel.hidden) return;
      this._panel.hidden = false;
      this._bell.setAttribute("aria-expanded", "true");
      this._panel.focus();
      document.addEventListener("click", this._onDocumentClick, true);
    }

    /** Close the panel; focus returns to the bell unless `returnFocus` is false. */
    close(returnFocus = true) {
      if (this._panel.hidden) return;
      this._panel.hidden = true;
      this._bell.setAttribute("aria-expanded", "false");
      document.removeEventListener("click", this._onDocumentClick, true);
      if (returnFocus) this._bell.focus();
    }

    toggle() {
      if (this._panel.hidden) this.open();
      else this.close();
    }

    /** Drop the socket and connect again at once, resuming after the newest message seen. */
    reconnect() {
      this._attempt = 0;
      this._clearReconnectTimer();
      if (this._socket) {
        const socket = this._socket;
        this._socket = null;
        socket.onclose = null;
        socket.close(1000, "reconnect");
      }
      this._connectSocket(this._generation);
    }

    // --- lifecycle --------------------------------------------------------------------------

    connectedCallback() {
      this._start();
    }

    disconnectedCallback() {
      this._stop();
      this.close(false);
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (oldValue === newValue || !this.isConnected || this._restartQueued) return;
      // Several attributes often change together; restart once after the current task.
      this._restartQueued = true;
      queueMicrotask(() => {
        this._restartQueued = false;
        if (this.isConnected) this._start();
      });
    }

    _config() {
      const serverUrl = (this.getAttribute("server-url") || SCRIPT_ORIGIN).replace(/\/+$/, "");
      const rawContext = this.getAttribute("context");
      let context;
      if (rawContext) {
        try {
          context = JSON.parse(rawContext);
        } catch (error) {
          throw new Error(`the context attribute is not valid JSON: ${error.message}`);
        }
      }
      return {
        serverUrl,
        applicationIdentifier: this.getAttribute("application-identifier") || "",
        subscriberId: this.getAttribute("subscriber-id") || "",
        subscriberHash: this.getAttribute("subscriber-hash") || undefined,
        context,
        contextHash: this.getAttribute("context-hash") || undefined,
      };
    }

    _stop() {
      this._generation += 1;
      this._clearReconnectTimer();
      if (this._socket) {
        const socket = this._socket;
        this._socket = null;
        socket.onclose = null;
        socket.close(1000, "widget removed");
      }
    }

    /** Open a session, load the list and counts, then connect; `retrying` keeps the backoff growing. */
    async _start(retrying = false) {
      this._stop();
      const generation = this._generation;
      this._token = null;
      this._lastId = null;
      this._connectedOnce = false;
      this._listLoaded = false;
      if (!retrying) this._attempt = 0;
      this._notifications.clear();
      this._renderList();
      try {
        this._settings = this._config();
      } catch (error) {
        this._reportError(error);
        return;
      }
      if (!this._settings.applicationIdentifier || !this._settings.subscriberId) {
        this._setStatus("Set the application-identifier and subscriber-id attributes.");
        return;
      }
      try {
        await this._loadFirstPage(generation);
        await this._refreshCount(generation);
        this._listLoaded = true;
        this._connectSocket(generation);
      } catch (error) {
        if (generation !== this._generation) return;
        this._reportError(error);
        if (!error.sessionRejected) this._scheduleReconnect(generation);
      }
    }

    // --- HTTP -------------------------------------------------------------------------------

    async _openSession() {
      const { serverUrl, applicationIdentifier, subscriberId, subscriberHash, context, contextHash } =
        this._settings;
      const body = { applicationIdentifier, subscriber: { subscriberId } };
      if (subscriberHash) body.subscriberHash = subscriberHash;
      if (context !== undefined) body.context = context;
      if (contextHash) body.contextHash = contextHash;
      const response = await fetch(`${serverUrl}/v1/inbox/session`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const payload = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = new HttpError(response.status, errorMessage(payload, response.status, "open a session"));
        // A rejected identifier or hash stays rejected, so retrying would only load the server.
        // 408 and 429 are transient and retried.
        error.sessionRejected = response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status);
        throw error;
      }
      this._token = payload.data.token;
      return this._token;
    }

    /** Call the inbox API with the session token; a 401 opens a new session and retries once. */
    async _api(method, path, body) {
      for (let attempt = 0; ; attempt += 1) {
        const token = this._token || (await this._openSession());
        const init = { method, headers: { Authorization: `Bearer ${token}` } };
        if (body !== undefined) {
          init.headers["Content-Type"] = "application/json";
          init.body = JSON.stringify(body);
        }
        const response = await fetch(`${this._settings.serverUrl}/v1/inbox${path}`, init);
        if (response.status === 401 && attempt === 0) {
          this._token = null;
          continue;
        }
        if (response.status === 204) return null;
        const payload = await response.json().catch(() => ({}));
        if (!response.ok) throw new HttpError(response.status, errorMessage(payload, response.status, `${method} ${path}`));
        return payload;
      }
    }

    async _loadFirstPage(generation) {
      const receivedDuringLoad = new Set();
      this._receivedDuringLoad = receivedDuringLoad;
      const page = await this._api("GET", `/notifications?limit=${PAGE_SIZE}&archived=false&snoozed=false`);
      if (generation !== this._generation) return;
      if (this._receivedDuringLoad === receivedDuringLoad) this._receivedDuringLoad = null;
      // The page replaces the list, except for socket messages that arrived while it loaded.
      const previous = this._notifications;
      this._notifications = new Map();
      for (const notification of page.data) this._notifications.set(notification.id, notification);
      for (const id of receivedDuringLoad) {
        if (!this._notifications.has(id) && previous.has(id)) this._notifications.set(id, previous.get(id));
      }
      if (page.data.length > 0) this._noteId(page.data[0].id);
      this._hasMore = Boolean(page.hasMore);
      this._renderList();
    }

    async _loadMore() {
      const generation = this._generation;
      const ids = [...this._notifications.keys()].sort();
      const query = `limit=${PAGE_SIZE}&archived=false&snoozed=false` + (ids.length ? `&after=${ids[0]}` : "");
      this._more.disabled = true;
      try {
        const page = await this._api("GET", `/notifications?${query}`);
        if (generation !== this._generation) return;
        for (const notification of page.data) {
          if (!this._notifications.has(notification.id)) this._notifications.set(notification.id, notification);
        }
        this._hasMore = Boolean(page.hasMore);
        this._renderList();
      } catch (error) {
        this._reportError(error);
      } finally {
        this._more.disabled = false;
      }
    }

    async _refreshCount(generation = this._generation) {
      const version = this._countVersion;
      const filters = encodeURIComponent(JSON.stringify([UNREAD_FILTER]));
      const payload = await this._api("GET", `/notifications/count?filters=${filters}`);
      // A count frame that arrived meanwhile is at least as new as this response.
      if (generation !== this._generation || version !== this._countVersion) return;
      this._setUnreadCount(payload.data[0].count);
    }

    // --- socket -----------------------------------------------------------------------------

    async _connectSocket(generation) {
      if (generation !== this._generation) return;
      let token;
      try {
        token = this._token || (await this._openSession());
      } catch (error) {
        if (generation !== this._generation) return;
        this._reportError(error);
        if (!error.sessionRejected) this._scheduleReconnect(generation);
        return;
      }
      if (generation !== this._generation) return;
      const url = new URL(`${this._settings.serverUrl}/ws`);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      url.searchParams.set("token", token);
      const resumeFrom = this._lastId;
      if (resumeFrom) url.searchParams.set("since", resumeFrom);
      const resuming = this._connectedOnce;
      const socket = new WebSocket(url.href);
      this._socket = socket;
      let opened = false;
      let rejected = null;

      socket.onmessage = (message) => {
        if (this._socket !== socket) return;
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return;
        }
        if (!opened && frame.event !== "error") {
          opened = true;
          this._onSocketOpened(generation, resuming, resumeFrom);
        }
        this._onFrame(frame, (error) => {
          rejected = error;
        });
      };
      socket.onclose = (event) => {
        if (this._socket !== socket) return;
        this._socket = null;
        if (event.code === WS_CLOSE_POLICY_VIOLATION || (rejected && rejected.statusCode === 401)) {
          // The token expired or the server rejected `since`, so open a new session. When
          // the resume point is rejected, connect without it, which reloads the list.
          this._token = null;
          if (rejected && (rejected.statusCode === 400 || rejected.statusCode === 404)) this._lastId = null;
        }
        this._dispatch("novulite-connection", { state: "closed", code: event.code });
        this._setStatus("Reconnecting…");
        this._scheduleReconnect(generation);
      };
    }

    _onSocketOpened(generation, resuming, resumeFrom) {
      this._attempt = 0;
      this._connectedOnce = true;
      this._setStatus("");
      this._dispatch("novulite-connection", { state: "open", resumed: Boolean(resuming && resumeFrom) });
      // Without a resume point the socket cannot replay messages created before it opened,
      // so reload the list. The count frames already came, but a reconnect fetches counts too.
      const reload = resumeFrom ? Promise.resolve() : this._loadFirstPage(generation);
      reload
        .then(() => (resuming ? this._refreshCount(generation) : undefined))
        .catch((error) => this._reportError(error));
    }

    _onFrame(frame, onRejected) {
      const data = frame.data || {};
      switch (frame.event) {
        case "notification_received":
          if (data.message) this._receive(fromRawMessage(data.message));
          break;
        case "unread_count_changed":
          this._countVersion += 1;
          this._setUnreadCount(data.unreadCount);
          break;
        case "replay_truncated":
          // The server skipped older missed messages, so reload them from the list endpoint.
          this._loadFirstPage(this._generation).catch((error) => this._reportError(error));
          break;
        case "error":
          onRejected(data);
          this._reportError(new HttpError(data.statusCode, data.message || "the inbox socket was rejected"));
          break;
        default:
          break; // unseen_count_changed and unknown events need nothing here
      }
    }

    _receive(notification) {
      if (!notification.id) return;
      this._noteId(notification.id);
      if (this._receivedDuringLoad) this._receivedDuringLoad.add(notification.id);
      const known = this._notifications.has(notification.id);
      if (notification.isArchived || notification.isSnoozed) {
        if (known) {
          this._notifications.delete(notification.id);
          this._renderList();
        }
        return;
      }
      this._notifications.set(notification.id, notification);
      this._renderList();
      if (known) return;
      this._announce(`New notification: ${notification.subject || notification.body}`);
      this._dispatch("novulite-notification", { notification });
    }

    _noteId(id) {
      if (this._lastId === null || id > this._lastId) this._lastId = id;
    }

    _scheduleReconnect(generation) {
      if (generation !== this._generation) return;
      this._clearReconnectTimer();
      const delay = backoffDelay(this._attempt, NovuliteInbox.reconnectBaseMs, NovuliteInbox.reconnectMaxMs);
      this._attempt += 1;
      this._dispatch("novulite-connection", { state: "reconnecting", attempt: this._attempt, delayMs: delay });
      this._reconnectTimer = setTimeout(() => {
        this._reconnectTimer = null;
        if (!this._listLoaded) {
          this._start(true);
        } else {
          this._connectSocket(generation);
        }
      }, delay);
    }

    _clearReconnectTimer() {
      if (this._reconnectTimer !== null) {
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
      }
    }

    // --- user actions -----------------------------------------------------------------------

    async _markRead(notification) {
      if (notification.isRead) return;
      await this._change(notification, "PATCH", `/notifications/${encodeURIComponent(notification.id)}/read`);
    }

    async _archive(notification) {
      const generation = this._generation;
      try {
        await this._api("PATCH", `/notifications/${encodeURIComponent(notification.id)}/archive`);
        if (generation !== this._generation) return;
        this._notifications.delete(notification.id);
        this._renderList();
        this._announce("Notification archived");
        await this._refreshCount(generation);
      } catch (error) {
        this._reportError(error);
      }
    }

    async _markAllRead() {
      const generation = this._generation;
      try {
        await this._api("POST", "/notifications/read", {});
        if (generation !== this._generation) return;
        for (const notification of this._notifications.values()) notification.isRead = true;
        this._renderList();
        this._announce("All notifications marked read");
        await this._refreshCount(generation);
      } catch (error) {
        this._reportError(error);
      }
    }

    async _complete(notification, actionType) {
      const action = notification[`${actionType}Action`];
      await this._change(notification, "PATCH", `/notifications/${encodeURIComponent(notification.id)}/complete`, {
        actionType,
      });
      this._dispatch("novulite-action", { notification: this._notifications.get(notification.id), actionType });
      const url = action && action.redirect ? safeHttpUrl(action.redirect.url) : null;
      if (url) openRedirect(url, action.redirect.target);
    }

    /** Send one change for a notification and show the notification the server returns. */
    async _change(notification, method, path, body) {
      const generation = this._generation;
      try {
        const payload = await this._api(method, path, body);
        if (generation !== this._generation) return;
        if (this._notifications.has(notification.id)) this._notifications.set(notification.id, payload.data);
        this._renderList();
        await this._refreshCount(generation);
      } catch (error) {
        this._reportError(error);
      }
    }

    // --- rendering --------------------------------------------------------------------------

    _render() {
      const root = this.attachShadow({ mode: "open" });
      const style = element("style");
      style.textContent = STYLE;

      const bell = element("button", "bell");
      bell.type = "button";
      bell.setAttribute("part", "bell");
      bell.setAttribute("aria-haspopup", "dialog");
      bell.setAttribute("aria-expanded", "false");
      bell.setAttribute("aria-controls", `${this._uid}-panel`);
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", "0 0 24 24");
      svg.setAttribute("aria-hidden", "true");
      svg.setAttribute("focusable", "false");
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", BELL_PATH);
      path.setAttribute("fill", "currentColor");
      svg.append(path);
      const badge = element("span", "badge", "0");
      badge.setAttribute("part", "badge");
      badge.setAttribute("aria-hidden", "true");
      badge.dataset.count = "0";
      bell.append(svg, badge);
      bell.addEventListener("click", () => this.toggle());

      const panel = element("section", "panel");
      panel.id = `${this._uid}-panel`;
      panel.hidden = true;
      panel.tabIndex = -1;
      panel.setAttribute("part", "panel");
      panel.setAttribute("role", "dialog");
      panel.setAttribute("aria-labelledby", `${this._uid}-title`);
      const header = element("div", "header");
      const title = element("h2", "title", "Notifications");
      title.id = `${this._uid}-title`;
      const markAll = element("button", "mark-all", "Mark all read");
      markAll.type = "button";
      markAll.addEventListener("click", () => this._markAllRead());
      header.append(title, markAll);
      const status = element("p", "status");
      status.hidden = true;
      const list = element("ul", "list");
      list.setAttribute("aria-labelledby", `${this._uid}-title`);
      const empty = element("p", "empty", "No notifications yet.");
      const more = element("button", "more", "Load more");
      more.type = "button";
      more.hidden = true;
      more.addEventListener("click", () => this._loadMore());
      panel.append(header, status, list, empty, more);
      root.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && !panel.hidden) {
          event.stopPropagation();
          this.close();
        }
      });

      const live = element("div", "sr-only live");
      live.setAttribute("aria-live", "polite");
      live.setAttribute("aria-atomic", "true");

      root.append(style, bell, panel, live);
      Object.assign(this, {
        _bell: bell,
        _badge: badge,
        _panel: panel,
        _markAll: markAll,
        _status: status,
        _list: list,
        _empty: empty,
        _more: more,
        _live: live,
      });
      this._setUnreadCount(0);
    }

    _renderList() {
      // Ids sort in creation order, so a descending id sort shows the newest first.
      const items = [...this._notifications.values()];
      items.sort(newestFirst);
      const focusedId = this._focusedItemId();
      this._list.replaceChildren(...items.map((notification) => this._renderItem(notification)));
      this._empty.hidden = items.length > 0;
      this._more.hidden = !this._hasMore;
      if (focusedId) {
        const [id, role] = focusedId;
        const target = this._list.querySelector(`li[data-id="${CSS.escape(id)}"] [data-role="${role}"]`);
        if (target) target.focus();
        else this._panel.focus();
      }
    }

    /** Return the id and role of the item control that has focus, so a re-render can restore it. */
    _focusedItemId() {
      const active = this.shadowRoot.activeElement;
      if (!active || !this._list.contains(active)) return null;
      const item = active.closest("li");
      return item ? [item.dataset.id, active.dataset.role] : null;
    }

    _renderItem(notification) {
      const item = element("li", "item");
      item.dataset.id = notification.id;
      item.dataset.read = String(Boolean(notification.isRead));
      item.setAttribute("part", "item");

      const main = element("button", "main");
      main.type = "button";
      main.dataset.role = "main";
      const state = element("span", "sr-only", notification.isRead ? "Read: " : "Unread: ");
      const dot = element("span", "dot");
      dot.setAttribute("aria-hidden", "true");
      main.append(dot, state);
      if (notification.subject) main.append(element("span", "subject", notification.subject));
      main.append(element("span", "body", notification.body));
      if (notification.createdAt) {
        const time = element("time", "time", formatTime(notification.createdAt));
        time.dateTime = notification.createdAt;
        main.append(time);
      }
      main.addEventListener("click", () => this._markRead(notification));
      item.append(main);

      const actions = element("div", "actions");
      for (const type of ["primary", "secondary"]) {
        const action = notification[`${type}Action`];
        if (!action) continue;
        const button = element("button", `action ${type}`, action.label);
        button.type = "button";
        button.dataset.role = type;
        if (action.isCompleted) {
          button.setAttribute("aria-disabled", "true");
          button.setAttribute("aria-pressed", "true");
        } else {
          button.addEventListener("click", () => this._complete(notification, type));
        }
        actions.append(button);
      }
      const redirect = notification.redirect ? safeHttpUrl(notification.redirect.url) : null;
      if (redirect) {
        const link = element("a", "link", "Open");
        link.href = redirect;
        link.dataset.role = "link";
        link.target = notification.redirect.target === "_blank" ? "_blank" : "_self";
        link.rel = "noopener noreferrer";
        link.addEventListener("click", () => this._markRead(notification));
        actions.append(link);
      }
      const archive = element("button", "archive", "Archive");
      archive.type = "button";
      archive.dataset.role = "archive";
      archive.setAttribute("aria-label", `Archive: ${notification.subject || notification.body}`);
      archive.addEventListener("click", () => this._archive(notification));
      actions.append(archive);
      item.append(actions);
      return item;
    }

    _setUnreadCount(count) {
      const value = Number.isFinite(count) ? Math.max(0, count) : 0;
      const changed = value !== this._unreadCount;
      this._unreadCount = value;
      this._badge.textContent = value > 99 ? "99+" : String(value);
      this._badge.dataset.count = String(value);
      this._bell.setAttribute("aria-label", `Notifications, ${value} unread`);
      this._markAll.disabled = value === 0;
      if (changed) this._dispatch("novulite-unread-count", { unreadCount: value });
    }

    _setStatus(text) {
      this._status.textContent = text;
      this._status.hidden = text === "";
    }

    _announce(text) {
      // Clearing first makes screen readers announce a repeated message too.
      this._live.textContent = "";
      requestAnimationFrame(() => {
        this._live.textContent = text;
      });
    }

    _reportError(error) {
      const message = error && error.message ? error.message : String(error);
      this._setStatus(`Inbox error: ${message}`);
      this._dispatch("novulite-error", { message, status: error && error.status });
    }

    _dispatch(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
    }

    _onDocumentClick(event) {
      if (!event.composedPath().includes(this)) this.close(false);
    }
  }

  function errorMessage(payload, status, what) {
    const detail = payload && (payload.message || (payload.error && payload.error.message));
    return `could not ${what} (HTTP ${status})${detail ? `: ${Array.isArray(detail) ? detail.join("; ") : detail}` : ""}`;
  }

  function newestFirst(a, b) {
    if (a.id === b.id) return 0;
    return a.id < b.id ? 1 : -1;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  function openRedirect(url, target) {
    if (target === "_blank") window.open(url, "_blank", "noopener,noreferrer");
    else window.location.assign(url);
  }

  if (!customElements.get(TAG)) customElements.define(TAG, NovuliteInbox);

  // One script tag can mount the widget: <script src=".../static/inbox.js" data-subscriber-id="..."
  // data-application-identifier="..." data-subscriber-hash="..." [data-target="#css-selector"]>.
  if (SCRIPT && SCRIPT.dataset.subscriberId) {
    const mount = () => {
      const widget = document.createElement(TAG);
      for (const name of NovuliteInbox.observedAttributes) {
        const key = name.replace(/-([a-z])/g, (_, letter) => letter.toUpperCase());
        if (SCRIPT.dataset[key] !== undefined) widget.setAttribute(name, SCRIPT.dataset[key]);
      }
      const target = SCRIPT.dataset.target ? document.querySelector(SCRIPT.dataset.target) : null;
      if (target) target.append(widget);
      else SCRIPT.after(widget);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
    else mount();
  }
})();
