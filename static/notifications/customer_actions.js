/* Customer actions on the tracking page: instructions for the driver, another
 * delivery day, redelivery or pickup at the hub after a missed delivery, and a
 * rating. The server says what is allowed (delivery-options); every answer's
 * message is shown as is. Each submit carries a fresh Idempotency-Key, so a
 * retry of the same submit never acts twice. */
(function () {
  "use strict";
  const root = document.getElementById("customer-actions");
  if (!root) return;
  const api = root.dataset.api;
  const $ = (id) => document.getElementById(id);
  let options = null;

  function key() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function say(message, kind) {
    const box = $("ca-status");
    box.textContent = message;
    box.dataset.kind = kind || "ok";
    box.hidden = !message;
  }

  function errorText(body) {
    if (!body || typeof body !== "object") return "Something went wrong; please try again.";
    if (body.detail && typeof body.detail === "string") return body.detail;
    const parts = [];
    Object.keys(body).forEach((field) => {
      if (field === "code") return;
      const value = body[field];
      parts.push(Array.isArray(value) ? value.join(" ") : String(value));
    });
    return parts.join(" ") || "Something went wrong; please try again.";
  }

  async function post(action, payload) {
    let response;
    try {
      response = await fetch(api + action + "/", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", "Idempotency-Key": key() },
        body: JSON.stringify(payload),
      });
    } catch (e) {
      say("No connection; please try again.", "error");
      return null;
    }
    let body = null;
    try { body = await response.json(); } catch (e) { /* empty answer */ }
    if (!response.ok) { say(errorText(body), "error"); return null; }
    say(body.detail || "Done.");
    await refresh();
    return body;
  }

  function renderWindows(day) {
    const list = $("ca-windows");
    // A refresh must not undo the customer's choice while it is still offered.
    const previous = list.querySelector("input[name=window_start]:checked");
    const keep = previous && day && day.windows.some((w) => w.label.slice(0, 5) === previous.value) ? previous.value : null;
    list.innerHTML = "";
    if (!day) return;
    day.windows.forEach((w, index) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "window_start";
      input.value = w.label.slice(0, 5);
      input.checked = keep ? input.value === keep : index === 0;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + w.label.replace("-", "–")));
      list.appendChild(label);
    });
  }

  function render(o) {
    options = o;
    root.hidden = !(o.can_leave_instructions || o.can_reschedule || o.can_rate || o.can_pick_up_at_hub || o.reschedule_refusal);
    $("ca-instructions-box").hidden = !o.can_leave_instructions;
    const form = $("ca-instructions");
    if (o.instructions && !form.dataset.touched) {
      form.safe_place.value = o.instructions.safe_place || "";
      form.note.value = o.instructions.note || "";
    }
    $("ca-door-code-saved").hidden = !(o.instructions && o.instructions.has_door_code);

    const canMove = o.can_reschedule && o.days.length > 0;
    $("ca-reschedule-box").hidden = !canMove;
    $("ca-reschedule-title").textContent = o.can_request_redelivery ? "Choose the day of the next delivery" : "Choose another delivery day";
    $("ca-reschedule-submit").textContent = o.can_request_redelivery ? "Deliver again then" : "Move my delivery";
    const refusal = $("ca-reschedule-refusal");
    refusal.textContent = o.reschedule_refusal || "";
    refusal.hidden = !o.reschedule_refusal || !o.can_leave_instructions;
    const current = $("ca-current-window");
    if (o.current_window) {
      const start = new Date(o.current_window.start);
      current.textContent = "Now planned: " + start.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" }) + ", " + o.current_window.label.replace("-", "–");
    }
    current.hidden = !o.current_window;
    const select = $("ca-day");
    const chosen = select.value;
    select.innerHTML = "";
    o.days.forEach((day) => {
      const option = document.createElement("option");
      option.value = day.date;
      option.textContent = day.label;
      select.appendChild(option);
    });
    if (chosen && o.days.some((d) => d.date === chosen)) select.value = chosen;
    renderWindows(o.days.find((d) => d.date === select.value));

    $("ca-pickup-box").hidden = !(o.can_pick_up_at_hub && !o.pickup_requested);
    $("ca-pickup-text").textContent = o.pickup_hub ? "Or collect your parcel at " + o.pickup_hub + "." : "";
    $("ca-rating-box").hidden = !o.can_rate;
  }

  async function refresh() {
    try {
      const response = await fetch(api + "delivery-options/", { headers: { Accept: "application/json" } });
      if (response.ok) render(await response.json());
    } catch (e) { /* the next refresh will do */ }
  }

  $("ca-day").addEventListener("change", () => {
    renderWindows(options && options.days.find((d) => d.date === $("ca-day").value));
  });
  $("ca-instructions").addEventListener("input", (event) => { event.currentTarget.dataset.touched = "1"; });
  $("ca-instructions").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const payload = { safe_place: form.safe_place.value.trim(), note: form.note.value.trim() };
    // The saved code is never sent back: an empty field leaves it as it is.
    if (form.door_code.value.trim()) payload.door_code = form.door_code.value.trim();
    if (await post("instructions", payload)) { delete form.dataset.touched; form.door_code.value = ""; }
  });
  $("ca-reschedule").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const slot = form.querySelector("input[name=window_start]:checked");
    if (!slot) { say("Choose a time slot.", "error"); return; }
    const payload = { date: form.date.value, window_start: slot.value };
    if (options && options.can_request_redelivery) await post("redelivery", Object.assign({ option: "redelivery" }, payload));
    else await post("reschedule", payload);
  });
  $("ca-pickup").addEventListener("click", () => post("redelivery", { option: "hub_pickup" }));
  $("ca-opt-out").addEventListener("click", () => post("opt-out", { channels: ["email", "sms"] }));
  $("ca-rating").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const stars = form.querySelector("input[name=stars]:checked");
    if (!stars) { say("Choose from 1 to 5 stars.", "error"); return; }
    await post("rating", { stars: Number(stars.value), comment: form.comment.value.trim() });
  });

  // The tracking page re-renders on live updates: a new status may open or close actions.
  const track = document.getElementById("track");
  if (track && window.MutationObserver) {
    new MutationObserver(() => refresh()).observe(track, { attributes: true, attributeFilter: ["data-status"] });
  }
  refresh();
})();
