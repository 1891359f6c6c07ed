/* The customer tracking page: render the allow-listed view, then keep it live
 * over /ws/track/<token>/, falling back to polling the JSON twin. */
(function () {
  "use strict";
  const root = document.getElementById("track");
  const token = root.dataset.token;
  let view = JSON.parse(document.getElementById("track-data").textContent);
  let lastSeq = (view.live && view.live.seq) || 0;
  let driverMap = null, driverMarker = null;

  function fmtTime(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function fmtDay(iso) {
    const d = new Date(iso), today = new Date();
    const tomorrow = new Date(today.getTime() + 86400000);
    if (d.toDateString() === today.toDateString()) return "today";
    if (d.toDateString() === tomorrow.toDateString()) return "tomorrow";
    return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
  }
  function text(id, value) { document.getElementById(id).textContent = value; }
  function show(id, visible) { document.getElementById(id).hidden = !visible; }

  function render(v) {
    view = v;
    root.dataset.status = v.status;
    text("status-label", v.status_label);
    text("status-text", v.status_text);
    if (v.eta_window) {
      text("eta-window", fmtDay(v.eta_window.start) + ", " + fmtTime(v.eta_window.start) + " – " + fmtTime(v.eta_window.end));
    }
    show("eta-card", !!v.eta_window);
    show("delay", !!v.is_delayed);
    show("next-card", !!v.next_step);
    text("next-step", v.next_step || "");
    const pod = v.proof_of_delivery;
    show("pod-card", !!pod);
    if (pod) {
      text("pod", "Delivered " + fmtDay(pod.delivered_at) + " at " + fmtTime(pod.delivered_at) +
        (pod.received_by ? ", received by " + pod.received_by : "") +
        (pod.has_signature ? " (signed)" : "") + (pod.has_photo ? " · photo taken" : ""));
    }
    const list = document.getElementById("milestones");
    list.innerHTML = "";
    v.milestones.forEach((m) => {
      const item = document.createElement("li");
      item.className = (m.done ? "done" : "") + (m.key === "attempt_failed" ? " failed" : "");
      item.dataset.key = m.key;
      const label = document.createElement("span");
      label.textContent = m.label;
      item.appendChild(label);
      if (m.at) {
        const time = document.createElement("time");
        time.textContent = fmtDay(m.at) + " " + fmtTime(m.at);
        item.appendChild(time);
      }
      list.appendChild(item);
    });
    renderDriver(v.driver);
  }

  function renderDriver(driver) {
    show("driver-card", !!driver);
    if (!driver) return;
    text("driver-name", driver.first_name + " is on the way");
    if (!driver.position) return;
    moveDriver(driver.position.latitude, driver.position.longitude);
  }

  function moveDriver(lat, lng) {
    if (!window.L) return;
    if (!driverMap) {
      driverMap = L.map("driver-map", { zoomControl: false, attributionControl: !!root.dataset.tileUrl }).setView([lat, lng], 14);
      if (root.dataset.tileUrl) L.tileLayer(root.dataset.tileUrl, { maxZoom: 19, attribution: "© OpenStreetMap contributors" }).addTo(driverMap);
      driverMarker = L.circleMarker([lat, lng], { radius: 9, color: "#fff", weight: 2, fillColor: "#1f6feb", fillOpacity: 1 }).addTo(driverMap);
    } else {
      driverMarker.setLatLng([lat, lng]);
      driverMap.panTo([lat, lng]);
    }
  }

  // ---- live: socket first, polling when it is down
  let pollTimer = null, retryMs = 1000;
  function setLive(state) { const el = document.getElementById("live"); el.dataset.state = state; el.textContent = state === "live" ? "live" : "updating…"; }

  async function poll() {
    try {
      const response = await fetch("/api/v1/track/" + encodeURIComponent(token) + "/", { headers: { Accept: "application/json" } });
      if (response.ok) { const v = await response.json(); lastSeq = Math.max(lastSeq, v.live.seq); render(v); }
    } catch (e) { /* keep polling */ }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let socket;
    try { socket = new WebSocket(scheme + location.host + "/ws/track/" + encodeURIComponent(token) + "/?after_seq=" + lastSeq); }
    catch (e) { startPolling(); return; }
    socket.onopen = () => { retryMs = 1000; setLive("live"); stopPolling(); };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.type === "shipment") { lastSeq = Math.max(lastSeq, message.seq || 0); render(message.shipment); }
      else if (message.type === "position" && view.driver) { moveDriver(message.position.latitude, message.position.longitude); }
    };
    socket.onclose = () => {
      setLive("polling");
      startPolling();
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    };
  }
  function startPolling() { if (!pollTimer) pollTimer = setInterval(poll, ((view.live && view.live.poll_seconds) || 15) * 1000); }
  function stopPolling() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }

  render(view);
  connect();
  window.AllmileTrack = { render, get view() { return view; } };
})();
