/* The dispatcher dashboard: a snapshot from the database, then numbered live
 * messages applied on top (see live.js). */
(function () {
  "use strict";
  const { LiveStream, api } = window.Allmile;

  const MILE_COLORS = { first: "#1f6feb", middle: "#8250df", last: "#1a7f37", return: "#d4660b" };
  const STOP_COLORS = { pending: "#8c959f", arrived: "#d4a72c", completed: "#1a7f37", failed: "#cf222e", skipped: "#24292f" };
  const state = { routes: new Map(), drivers: new Map(), exceptions: new Map(), jobId: null };

  // ---------------------------------------------------------------- map
  const mapElement = document.getElementById("map");
  const map = L.map(mapElement, { zoomControl: true, preferCanvas: true }).setView([43.72, 7.25], 11);
  const tileUrl = mapElement.dataset.tileUrl;
  if (tileUrl) {
    L.tileLayer(tileUrl, { maxZoom: 19, attribution: "© OpenStreetMap contributors" }).addTo(map);
  } else {
    mapElement.classList.add("offline"); // no tiles: a plain grid, everything else still drawn
  }
  const layers = { hubs: L.layerGroup().addTo(map), routes: L.layerGroup().addTo(map),
                   proposed: L.layerGroup().addTo(map), drivers: L.layerGroup().addTo(map) };

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function drawHubs(hubs) {
    layers.hubs.clearLayers();
    const bounds = [];
    hubs.forEach((hub) => {
      const icon = L.divIcon({ className: "hub-icon", html: "<span>" + hub.code + "</span>", iconSize: null });
      L.marker([hub.lat, hub.lng], { icon, title: hub.name }).addTo(layers.hubs)
        .bindTooltip(hub.name + (hub.cutoff_times.length ? " · departures " + hub.cutoff_times.join(", ") : ""));
      bounds.push([hub.lat, hub.lng]);
    });
    return bounds;
  }

  function drawRoute(route, layer, { proposed = false } = {}) {
    const points = [];
    if (route.hub) points.push(route.hub);
    route.stops.forEach((s) => points.push([s.lat, s.lng]));
    if (route.hub && route.mile !== "middle") points.push(route.hub);
    const line = L.polyline(points, {
      color: MILE_COLORS[route.mile] || "#57606a", weight: proposed ? 3 : 4, opacity: proposed ? 0.9 : 0.7,
      dashArray: route.mile === "middle" ? "10 6" : (proposed ? "4 6" : null),
      className: "route-line route-" + route.id,
    }).addTo(layer);
    line.bindTooltip("Route " + route.id + " · " + route.mile + " · " + route.status +
      (route.driver ? " · " + route.driver.name : "") +
      (route.delay_seconds ? " · " + Math.round(route.delay_seconds / 60) + " min late" : ""));
    const markers = new Map();
    route.stops.forEach((stop) => {
      const marker = L.circleMarker([stop.lat, stop.lng], {
        radius: 6, color: "#fff", weight: 1.5, fillOpacity: 1,
        fillColor: STOP_COLORS[stop.status] || STOP_COLORS.pending,
      }).addTo(layer);
      marker.bindTooltip(stopText(route, stop));
      markers.set(stop.id, marker);
    });
    return { line, markers };
  }

  function stopText(route, stop) {
    return "#" + stop.sequence + " " + stop.kind + " · " + stop.status +
      " · planned " + fmtTime(stop.planned_arrival) + " · ETA " + fmtTime(stop.eta) +
      (stop.shipment_ids.length ? " · shipments " + stop.shipment_ids.join(", ") : "");
  }

  function drawRoutes(routes) {
    layers.routes.clearLayers();
    state.routes.clear();
    routes.forEach((route) => state.routes.set(route.id, { route, drawn: drawRoute(route, layers.routes) }));
    document.body.dataset.routeCount = String(routes.length);
  }

  function driverIcon(name) {
    return L.divIcon({ className: "driver-icon", html: "<span><b class=\"van\"></b>" + (name || "") + "</span>", iconSize: null });
  }

  function moveDriver(id, name, lat, lng) {
    let marker = state.drivers.get(id);
    if (!marker) {
      marker = L.marker([lat, lng], { icon: driverIcon(name), zIndexOffset: 1000 }).addTo(layers.drivers);
      state.drivers.set(id, marker);
    } else {
      marker.setLatLng([lat, lng]);
    }
  }

  // ---------------------------------------------------------------- panels
  function pct(value) { return value === null || value === undefined ? "–" : Math.round(value * 100) + "%"; }

  function renderKpis(k) {
    document.getElementById("kpi-date").textContent = k.date;
    document.getElementById("kpi-total").textContent = k.shipments_total;
    document.getElementById("kpi-ontime").textContent = pct(k.on_time_rate);
    document.getElementById("kpi-first").textContent = pct(k.first_attempt_rate);
    document.getElementById("kpi-eta").textContent = pct(k.eta_accuracy.within_15_min_rate);
    document.getElementById("kpi-exceptions").textContent = k.exceptions_open;
    document.getElementById("kpi-risk").textContent = k.at_risk;
    const messages = k.notifications || {};
    document.getElementById("kpi-messages").textContent = pct(messages.delivery_rate);
    document.getElementById("kpi-rating").textContent =
      messages.average_rating === null || messages.average_rating === undefined ? "–" : messages.average_rating + " / 5";
    renderMileChart(k.shipments_by_mile_status);
  }

  const STATUS_ORDER = ["planned", "picked_up", "at_hub", "in_transit", "out_for_delivery",
                        "delivery_failed", "delivered", "returning", "returned", "cancelled"];
  const STATUS_COLORS = { planned: "#afb8c1", picked_up: "#54aeff", at_hub: "#8250df", in_transit: "#a475f9",
    out_for_delivery: "#2da44e", delivery_failed: "#cf222e", delivered: "#116329", returning: "#d4660b",
    returned: "#953800", cancelled: "#57606a" };

  function renderMileChart(byMile) {
    // One stacked bar per mile: a chart reads better than twenty numbers here.
    const chart = document.getElementById("mile-chart");
    const miles = ["first", "middle", "last", "return"].filter((m) => byMile[m]);
    const max = Math.max(1, ...miles.map((m) => Object.values(byMile[m]).reduce((a, b) => a + b, 0)));
    chart.innerHTML = miles.map((mile) => {
      const counts = byMile[mile];
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      const segments = STATUS_ORDER.filter((s) => counts[s]).map((s) =>
        '<i title="' + s.replace(/_/g, " ") + ": " + counts[s] + '" style="width:' + (100 * counts[s] / max) +
        "%;background:" + STATUS_COLORS[s] + '"></i>').join("");
      return '<div class="bar-row"><span class="label">' + mile + '</span><span class="stack">' + segments +
        '</span><span class="n">' + total + "</span></div>";
    }).join("") || '<p class="muted">No shipments today.</p>';
  }

  function escapeHtml(text) {
    return String(text === null || text === undefined ? "" : text).replace(/[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function renderExceptions() {
    const list = document.getElementById("exceptions");
    const items = [...state.exceptions.values()].filter((e) => e.status !== "resolved")
      .sort((a, b) => b.raised_at.localeCompare(a.raised_at));
    document.getElementById("exception-count").textContent = items.length ? "(" + items.length + ")" : "";
    if (!items.length) { list.innerHTML = '<li class="empty">None open.</li>'; return; }
    list.innerHTML = items.map((e) =>
      '<li class="exception sev-' + e.severity + '" data-exception-id="' + e.id + '">' +
      '<div><span class="badge">' + escapeHtml(e.severity) + "</span> <b>" + escapeHtml(e.title) + "</b>" +
      (e.status === "acknowledged" ? ' <span class="ack">acknowledged</span>' : "") + "</div>" +
      "<p>" + escapeHtml(e.detail) + "</p>" +
      '<p class="action">→ ' + escapeHtml(e.suggested_action) + "</p>" +
      '<p class="muted">' + e.shipment_ids.length + " shipment(s): " +
      e.shipment_ids.slice(0, 8).map((id) => '<a href="/dashboard/shipments/' + id + '/">#' + id + "</a>").join(" ") + "</p>" +
      (e.status === "open" ? '<button data-act="acknowledge">Acknowledge</button> ' : "") +
      '<button data-act="resolve">Resolve</button></li>').join("");
  }

  document.getElementById("exceptions").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-act]");
    if (!button) return;
    const id = button.closest("[data-exception-id]").dataset.exceptionId;
    button.disabled = true;
    try {
      const updated = await api("POST", "/api/v1/exceptions/" + id + "/" + button.dataset.act + "/", {});
      state.exceptions.set(updated.id, updated);
      renderExceptions();
    } catch (e) { button.disabled = false; alert("Could not " + button.dataset.act + ": " + (e.data && e.data.detail || e.message)); }
  });

  function feed(text, kind) {
    const list = document.getElementById("feed");
    const item = document.createElement("li");
    item.className = "feed-" + (kind || "info");
    item.innerHTML = '<time>' + new Date().toLocaleTimeString() + "</time> " + text;
    list.prepend(item);
    while (list.children.length > 40) list.lastChild.remove();
  }

  // ---------------------------------------------------------------- live messages
  const STOP_STATUS_AFTER = { arrived: "arrived", picked_up: "completed", delivered: "completed",
                              delivery_failed: "failed", hub_scan_in: "completed" };

  function setStopStatus(routeId, stopId, status) {
    const entry = state.routes.get(routeId);
    if (!entry || !status) return false;
    const stop = entry.route.stops.find((x) => x.id === stopId);
    const marker = entry.drawn.markers.get(stopId);
    if (!stop || !marker) return false;
    stop.status = status;
    marker.setStyle({ fillColor: STOP_COLORS[status] || STOP_COLORS.pending });
    marker.setTooltipContent(stopText(entry.route, stop));
    return true;
  }

  let refreshTimer = null;
  function refreshSoon() {
    // Stop colours and KPIs come from the database: re-read them, at most every 2 s.
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        const snap = await api("GET", "/api/v1/dashboard/snapshot/");
        drawRoutes(snap.routes);
        renderKpis(snap.kpis);
      } catch (e) { /* next message retries */ }
    }, 5000);
  }

  function onMessage(message) {
    const p = message.payload || {};
    switch (message.kind) {
      case "driver.position": {
        const known = [...state.routes.values()].find((r) => r.route.driver && r.route.driver.id === p.driver_id);
        moveDriver(p.driver_id, known ? known.route.driver.name : "driver " + p.driver_id, p.latitude, p.longitude);
        break;
      }
      case "route.etas": {
        const entry = state.routes.get(p.route_id);
        if (entry) {
          p.stops.forEach((s) => {
            const stop = entry.route.stops.find((x) => x.id === s.id);
            if (stop) stop.eta = s.eta;
            setStopStatus(p.route_id, s.id, s.status);
          });
          entry.route.delay_seconds = p.delay_seconds;
        }
        break;
      }
      case "shipment.event": {
        feed('<a href="/dashboard/shipments/' + p.shipment_id + '/">' + escapeHtml(p.reference) + "</a> " +
          escapeHtml(p.event_type) + " · " + escapeHtml(p.status) + (p.is_at_risk ? " · at risk" : ""),
          p.is_at_risk ? "warn" : "info");
        const d = p.details || {};
        // A driver's stop event says which stop it was: recolour it in place;
        // anything else that moves a leg is re-read from the database.
        const placed = d.stop_id && setStopStatus(d.route_id, d.stop_id, STOP_STATUS_AFTER[d.driver_event_type]);
        if (!placed && p.leg_id) refreshSoon();
        break;
      }
      case "exception.updated": {
        state.exceptions.set(p.id, p);
        renderExceptions();
        feed("Exception " + escapeHtml(p.status) + ": " + escapeHtml(p.title), "warn");
        refreshSoon();
        break;
      }
      case "optimization.status":
        if (p.job_id === state.jobId) optimizationUpdate(p);
        break;
      default:
        if (/^route\./.test(message.kind)) refreshSoon();
    }
  }

  function onOther(message) {
    if (message.type === "optimization.progress" && message.job_id === state.jobId) optimizationUpdate(message);
  }

  // ---------------------------------------------------------------- optimization
  const optForm = document.getElementById("optimize-form");
  const hubSelect = document.getElementById("opt-hub");
  function filterVehicles() {
    document.querySelectorAll("#opt-vehicles .vehicle").forEach((label) => {
      const match = label.dataset.hub === hubSelect.value;
      label.hidden = !match;
      label.querySelector("input").checked = match;
    });
  }
  hubSelect.addEventListener("change", filterVehicles);
  filterVehicles();

  let pollTimer = null;
  function optimizationUpdate(job) {
    document.getElementById("opt-progress").hidden = false;
    const status = job.status;
    const progress = status === "succeeded" ? 1 : (job.progress || 0);
    document.getElementById("opt-bar").style.width = Math.round(progress * 100) + "%";
    document.getElementById("opt-bar").dataset.progress = String(progress);
    document.getElementById("opt-status").textContent = status;
    if (job.best_cost !== null && job.best_cost !== undefined) document.getElementById("opt-cost").textContent = Number(job.best_cost).toFixed(2);
    if (["succeeded", "failed", "cancelled"].includes(status) && state.jobFinished !== state.jobId) {
      state.jobFinished = state.jobId;
      clearInterval(pollTimer);
      document.getElementById("opt-progress").dataset.finished = status;
      if (status !== "failed") showProposedRoutes(state.jobId);
      else document.getElementById("opt-result").innerHTML = '<p class="error">' + escapeHtml(job.error || "failed") + "</p>";
    }
  }

  optForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const vehicles = [...optForm.querySelectorAll("input[name=vehicles]:checked")].map((i) => Number(i.value));
    const body = {
      hub: Number(hubSelect.value), service_date: document.getElementById("opt-date").value,
      mile: document.getElementById("opt-mile").value, vehicles,
      time_limit_seconds: Number(document.getElementById("opt-limit").value),
    };
    document.getElementById("opt-result").innerHTML = "";
    layers.proposed.clearLayers();
    try {
      const job = await api("POST", "/api/v1/optimizations/", body);
      state.jobId = job.id;
      live.watch({ type: "watch_optimization", job_id: job.id });
      optimizationUpdate({ status: job.status, progress: job.progress, best_cost: job.best_cost });
      clearInterval(pollTimer);
      pollTimer = setInterval(async () => {  // fallback if the socket is down
        try { const j = await api("GET", "/api/v1/optimizations/" + state.jobId + "/"); optimizationUpdate(j); } catch (e) { /* retry */ }
      }, 1000);
    } catch (e) {
      const detail = e.data ? Object.entries(e.data).map(([k, v]) => k + ": " + v).join("; ") : e.message;
      document.getElementById("opt-result").innerHTML = '<p class="error">' + escapeHtml(detail) + "</p>";
    }
  });

  async function showProposedRoutes(jobId) {
    const data = await api("GET", "/api/v1/dashboard/optimizations/" + jobId + "/routes/");
    layers.proposed.clearLayers();
    const box = document.getElementById("opt-result");
    if (!data.routes.length) { box.innerHTML = '<p class="muted">No routes proposed.</p>'; return; }
    const bounds = [];
    data.routes.forEach((route) => {
      drawRoute(route, layers.proposed, { proposed: true });
      route.stops.forEach((s) => bounds.push([s.lat, s.lng]));
    });
    if (bounds.length) map.fitBounds(bounds, { padding: [30, 30] });
    let drivers = [];
    try { drivers = (await api("GET", "/api/v1/drivers/?page_size=100")).results || []; } catch (e) { drivers = []; }
    const options = drivers.map((d) => '<option value="' + d.id + '">' + escapeHtml(d.username || d.name || ("driver " + d.id)) + "</option>").join("");
    box.innerHTML = '<table class="proposed"><thead><tr><th>Route</th><th>Stops</th><th>km</th><th>Driver</th><th></th></tr></thead><tbody>' +
      data.routes.map((r) => '<tr class="proposed-route" data-route-id="' + r.id + '"><td>#' + r.id + " " + escapeHtml(r.vehicle || "") +
        "</td><td>" + r.stops.length + "</td><td>" + (r.distance_meters / 1000).toFixed(1) + "</td><td>" +
        (r.status === "draft" ? '<select class="driver-pick">' + options + "</select>" : escapeHtml(r.driver ? r.driver.name : "")) +
        "</td><td>" + (r.status === "draft" ? '<button class="publish" data-vehicle="' + escapeHtml(r.vehicle_id || "") + '">Publish</button>' : escapeHtml(r.status)) +
        "</td></tr>").join("") + "</tbody></table>";
    document.body.dataset.proposedRoutes = String(data.routes.length);
  }

  document.getElementById("opt-result").addEventListener("click", async (event) => {
    const button = event.target.closest("button.publish");
    if (!button) return;
    const row = button.closest("tr");
    const routeId = row.dataset.routeId;
    button.disabled = true;
    try {
      const route = await api("GET", "/api/v1/routes/" + routeId + "/");
      const driverId = Number(row.querySelector(".driver-pick").value);
      const vehicleId = Number(button.dataset.vehicle) || (route.vehicle && route.vehicle.id);
      if (!route.driver) await api("POST", "/api/v1/routes/" + routeId + "/assign/", { driver_id: driverId, vehicle_id: vehicleId });
      await api("POST", "/api/v1/routes/" + routeId + "/publish/", {});
      button.replaceWith(document.createTextNode("published"));
      refreshSoon();
    } catch (e) {
      button.disabled = false;
      alert("Could not publish: " + JSON.stringify(e.data || e.message));
    }
  });

  // ---------------------------------------------------------------- start
  const stateBadge = document.getElementById("live-state");
  const live = new LiveStream({
    path: "/ws/dashboard/", catchUpUrl: "/api/v1/live/", onMessage, onOther,
    onState: (s) => { stateBadge.dataset.state = s; stateBadge.textContent = s; },
  });
  window.Allmile.dashboard = { state, live, map, layers };

  (async function start() {
    const snap = await api("GET", "/api/v1/dashboard/snapshot/");
    const bounds = drawHubs(snap.hubs);
    drawRoutes(snap.routes);
    snap.drivers.forEach((d) => moveDriver(d.id, d.name, d.lat, d.lng));
    snap.exceptions.forEach((e) => state.exceptions.set(e.id, e));
    renderExceptions();
    renderKpis(snap.kpis);
    snap.routes.forEach((r) => r.stops.forEach((s) => bounds.push([s.lat, s.lng])));
    if (bounds.length) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 13 });
    live.lastSeq = snap.last_seq;
    live.connect();
    setInterval(async () => { try { renderKpis(await api("GET", "/api/v1/kpis/")); } catch (e) { /* later */ } }, 30000);
  })();
})();
