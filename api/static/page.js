// The staff page's behaviour: poll /page/live and swap in the parts the server rendered, keep
// the API token for the browser session, send actions through the API's own routes, refresh
// the camera stills. No build step; the Content-Security-Policy allows no inline script.
"use strict";

(() => {
  const TOKEN_KEY = "ezrec.apiToken";
  const REQUEST_TIMEOUT_MS = 10000;
  const body = document.body;
  const pollMs = Number(body.dataset.pollS || 2) * 1000;
  const previewMs = Number(body.dataset.previewEveryS || 5) * 1000;
  const shown = new Map(); // part name -> the HTML last swapped in
  let pollTimer = null;
  let lostSince = null;

  const byId = (id) => document.getElementById(id);
  // sessionStorage: gone when the browser session ends, and never part of a URL.
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
  const clock = (date) => date.toLocaleTimeString([], { hour12: false });

  function say(text, kind) {
    const box = byId("message");
    box.textContent = text; // textContent: an error text from the API is shown, never parsed
    box.dataset.kind = kind;
    box.hidden = false;
  }

  async function request(method, path, payload) {
    const headers = { ...authHeaders(), Accept: "application/json" };
    const init = { method, headers, cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  function refusal(what, answer) {
    const data = answer.data || {};
    const detail = data.detail || "no explanation in the answer";
    return `${what} refused (${answer.status} ${data.error || ""}): ${detail}`;
  }

  // -- connection --------------------------------------------------------------------------

  function connected(at) {
    lostSince = null;
    byId("offline").hidden = true;
    body.classList.remove("stale");
    const updated = byId("updated");
    const time = at ? new Date(at) : new Date();
    updated.dateTime = time.toISOString();
    updated.textContent = clock(time);
  }

  function lost(reason) {
    lostSince = lostSince || new Date();
    const box = byId("offline");
    const text =
      `No connection to the box since ${clock(lostSince)} (${reason}). Retrying every ` +
      `${pollMs / 1000} s; what this page shows may be out of date.`;
    if (box.textContent !== text) box.textContent = text; // an alert is read out at each change
    box.hidden = false;
    body.classList.add("stale");
  }

  // -- live parts --------------------------------------------------------------------------

  function playing(element) {
    return [...element.querySelectorAll("video")].some((v) => !v.paused && !v.ended);
  }

  function swap(name, html) {
    const element = document.querySelector(`[data-part="${name}"]`);
    if (!element || shown.get(name) === html) return;
    if (name === "videos" && playing(element)) return; // next poll, once nobody is watching
    const focused = document.activeElement && element.contains(document.activeElement)
      ? document.activeElement.id : "";
    element.innerHTML = html; // rendered and escaped by the server's templates
    shown.set(name, html);
    if (name === "bookings") paintArmed();
    if (focused && byId(focused)) byId(focused).focus(); // keyboard users keep their place
  }

  async function poll() {
    clearTimeout(pollTimer);
    if (document.hidden) return; // a tab nobody looks at costs the box nothing; see below
    try {
      const answer = await request("GET", "/page/live");
      if (!answer.ok || !answer.data) {
        throw new Error(answer.data && answer.data.detail
          ? `the box answered ${answer.status}: ${answer.data.detail}`
          : `the box answered ${answer.status}`);
      }
      for (const name of ["bookings", "health", "videos"]) swap(name, answer.data[name]);
      showTokenState(answer.data.token);
      connected(answer.data.time);
    } catch (error) {
      lost(error.name === "TimeoutError" ? "no answer in time" : error.message);
    } finally {
      pollTimer = setTimeout(poll, pollMs);
    }
  }

  // -- token -------------------------------------------------------------------------------

  const noTokenText = byId("token-status").textContent;

  function showTokenState(verdict) {
    let text = noTokenText;
    if (token() && verdict === "wrong") {
      text = "The box refused the token kept for this session: enter the right one.";
    } else if (token()) {
      text = "A token is kept for this browser session: actions and videos are on.";
    }
    const status = byId("token-status");
    if (status.textContent !== text) status.textContent = text;
    byId("token-forget").hidden = !token();
  }

  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token");
    if (!input.value.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showTokenState();
    shown.clear();
    poll();
  });

  byId("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    shown.clear();
    poll();
  });

  // -- actions -----------------------------------------------------------------------------

  const ACTIONS = {
    cancel: (id) => ["DELETE", `/bookings/${encodeURIComponent(id)}`, `Cancelling ${id}`],
    retry: (id) => ["POST", `/bookings/${encodeURIComponent(id)}/retry`, `Retrying ${id}`],
    // A replay mark now: its clip comes with the video (docs/replays.md).
    mark: (id) => ["POST", `/bookings/${encodeURIComponent(id)}/marks`, `Marking ${id}`],
  };

  // A cancel stops a recording: it takes a second, deliberate press within ARM_MS. Kept by
  // booking id, not on the button, because a poll may replace the button in between.
  const ARM_MS = 5000;
  const armedUntil = new Map();

  function paintArmed() {
    const now = Date.now();
    document.querySelectorAll('button[data-action="cancel"]').forEach((button) => {
      const id = button.dataset.id;
      const armed = (armedUntil.get(id) || 0) > now;
      button.dataset.armed = armed ? "yes" : "";
      button.textContent = armed ? "Press again to cancel" : "Cancel";
      button.setAttribute("aria-label", `${armed ? "Press again to cancel" : "Cancel"} booking ${id}`);
    });
  }

  async function act(button) {
    const id = button.dataset.id;
    const [method, path, what] = ACTIONS[button.dataset.action](id);
    if (button.dataset.action === "cancel" && !((armedUntil.get(id) || 0) > Date.now())) {
      armedUntil.set(id, Date.now() + ARM_MS);
      paintArmed();
      setTimeout(paintArmed, ARM_MS + 50);
      return;
    }
    armedUntil.delete(id);
    button.disabled = true;
    try {
      const answer = await request(method, path);
      if (answer.ok) {
        const now = answer.data.state ? `, the booking is now ${answer.data.state}` : "";
        say(`${what}: done${now}.`, "ok");
      } else {
        say(refusal(what, answer), "error");
      }
    } catch (error) {
      say(`${what}: no answer from the box (${error.message}).`, "error");
    } finally {
      button.disabled = false;
      shown.clear();
      poll();
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && ACTIONS[button.dataset.action]) act(button);
  });

  byId("new-booking").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const field = (name) => form.elements[name].value.trim();
    // datetime-local is the browser's wall clock; the API wants an offset, so send UTC.
    const start = new Date(field("start"));
    const end = new Date(field("end"));
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) {
      say("New booking: give a start and an end time.", "error");
      return;
    }
    const payload = { start_time: start.toISOString(), end_time: end.toISOString() };
    if (field("camera")) payload.camera_id = field("camera");
    if (field("user")) payload.user_id = field("user");
    try {
      const answer = await request("POST", "/bookings", payload);
      if (answer.ok) {
        say(`Booked ${answer.data.id} on ${answer.data.camera_id}.`, "ok");
        form.reset();
      } else {
        say(refusal("New booking", answer), "error");
      }
    } catch (error) {
      say(`New booking: no answer from the box (${error.message}).`, "error");
    }
    shown.clear();
    poll();
  });

  // -- camera stills -----------------------------------------------------------------------

  function watchCamera(img) {
    const status = byId(img.id.replace("preview-", "preview-status-"));
    let objectUrl = null;
    async function refresh() {
      if (document.hidden) {
        setTimeout(refresh, previewMs); // nobody is looking: spare the box's CPU
        return;
      }
      try {
        const response = await fetch(img.dataset.preview, {
          cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS * 3),
        });
        if (response.ok) {
          const next = URL.createObjectURL(await response.blob());
          img.src = next;
          if (objectUrl) URL.revokeObjectURL(objectUrl);
          objectUrl = next;
          status.textContent = `still taken ${clock(new Date())}`;
        } else {
          const data = await response.json().catch(() => ({}));
          status.textContent = `no still: ${data.detail || `the box answered ${response.status}`}`;
        }
      } catch (error) {
        status.textContent = `no still: no answer from the box (${error.message})`;
      }
      setTimeout(refresh, previewMs);
    }
    refresh();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll(); // back in view: catch up at once
  });

  showTokenState();
  document.querySelectorAll("img[data-preview]").forEach(watchCamera);
  byId("live-note").textContent = `(updates every ${pollMs / 1000} s)`;
  poll();
})();
