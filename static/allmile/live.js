/* Allmile live stream client: numbered messages over a WebSocket, with
 * reconnect, duplicate dropping, gap filling from the database (after_seq) and
 * a polling fallback. Live messages are hints; the database is the truth. */
(function () {
  "use strict";

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function api(method, url, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
      headers["Idempotency-Key"] = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
    }
    const response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error("HTTP " + response.status);
      error.status = response.status; error.data = data;
      throw error;
    }
    return data;
  }

  class LiveStream {
    /* path: "/ws/dashboard/"; lastSeq: the snapshot's number; onMessage(msg)
     * for numbered messages in order; onOther(msg) for the rest; onState(s). */
    constructor({ path, lastSeq, onMessage, onOther, onState, catchUpUrl, resumeEverySeconds }) {
      this.path = path;
      this.lastSeq = lastSeq || 0;
      this.onMessage = onMessage || (() => {});
      this.onOther = onOther || (() => {});
      this.onState = onState || (() => {});
      this.catchUpUrl = catchUpUrl || null;
      this.resumeEvery = (resumeEverySeconds || 5) * 1000;
      this.retryMs = 500;
      this.socket = null;
      this.watches = [];
      this.pollTimer = null;
    }

    connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const url = scheme + location.host + this.path + "?after_seq=" + this.lastSeq;
      let socket;
      try { socket = new WebSocket(url); } catch (e) { this._fallback(); return; }
      this.socket = socket;
      this.onState("connecting");
      socket.onopen = () => {
        this.retryMs = 500;
        this.onState("live");
        this._stopPolling();
        this.watches.forEach((w) => socket.send(JSON.stringify(w)));
        clearInterval(this.resumeTimer);
        // A cheap "anything I missed?" so a dropped last message is not missed for long.
        this.resumeTimer = setInterval(() => this.send({ type: "resume", after_seq: this.lastSeq }), this.resumeEvery);
      };
      socket.onmessage = (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch (e) { return; }
        if (message.type === "message" && typeof message.seq === "number") {
          this._numbered(message);
        } else if (message.type === "reload") {
          location.reload();
        } else {
          this.onOther(message);
        }
      };
      socket.onclose = () => {
        clearInterval(this.resumeTimer);
        this.onState("reconnecting");
        this._fallback();
        setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      };
    }

    send(message) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(message));
        return true;
      }
      return false;
    }

    watch(message) {
      this.watches.push(message);
      this.send(message);
    }

    _numbered(message) {
      if (message.seq <= this.lastSeq) return; // duplicate (replay overlap, re-publish)
      if (message.seq > this.lastSeq + 1 && this.catchUpUrl) {
        // The server fills gaps itself; this is the belt to its braces.
        this.catchUp();
        return;
      }
      this.lastSeq = message.seq;
      this.onMessage(message);
    }

    async catchUp() {
      if (!this.catchUpUrl) return;
      if (this._catchingUp) {
        // A gap seen while a fetch is in flight: that fetch may have been read
        // before the missing numbers existed, so fetch once more after it.
        this._catchUpAgain = true;
        return;
      }
      this._catchingUp = true;
      try {
        for (let round = 0; round < 20; round++) {
          this._catchUpAgain = false;
          const page = await api("GET", this.catchUpUrl + "?after_seq=" + this.lastSeq + "&limit=500");
          // Pages are gap-free from the database: apply the next number only.
          page.messages.forEach((m) => { if (m.seq === this.lastSeq + 1) { this.lastSeq = m.seq; this.onMessage(m); } });
          if (!page.has_more && !this._catchUpAgain) break;
        }
      } catch (e) { /* next round */ } finally { this._catchingUp = false; }
    }

    _fallback() {
      if (this.pollTimer || !this.catchUpUrl) return;
      this.pollTimer = setInterval(() => this.catchUp(), 3000);
    }

    _stopPolling() {
      // No catch-up here: the socket was opened with ?after_seq, so the server
      // replays what was missed; fetching it over HTTP too doubles the work of
      // every reconnecting dashboard just when the server is busiest.
      if (this.pollTimer) { clearInterval(this.pollTimer); this.pollTimer = null; }
    }
  }

  window.Allmile = Object.assign(window.Allmile || {}, { LiveStream, api, csrfToken });
})();
