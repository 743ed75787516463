// P6OS console pages: every action is a call of the JSON API with the session cookie and the
// CSRF token; regions marked data-live are refreshed from the server every few seconds.
// No framework, no inline script (the Content-Security-Policy forbids it).
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="p6os-csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const POLL_MS = 3000;

  // "k=v,k=v" -> {k: v}
  function labels(text) {
    const out = {};
    for (const part of text.split(",")) {
      const t = part.trim();
      if (!t) continue;
      const i = t.indexOf("=");
      if (i < 1) throw new Error("“" + t + "” is not k=v");
      out[t.slice(0, i).trim()] = t.slice(i + 1).trim();
    }
    return out;
  }

  // "1,10%,100%" -> [{count: 1}, {percent: 10}, {percent: 100}]
  function waves(text) {
    return text.split(",").map((w) => w.trim()).filter((w) => w).map((w) => {
      const n = parseInt(w, 10);
      if (Number.isNaN(n)) throw new Error("“" + w + "” is not a count or a percentage");
      return w.endsWith("%") ? { percent: n } : { count: n };
    });
  }

  function bodyOf(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "submit" || el.type === "file") continue;
      const kind = el.dataset.kind || "text";
      const raw = el.value;
      if (el.hasAttribute("data-optional") && raw.trim() === "") continue;
      let value;
      switch (kind) {
        case "labels": value = labels(raw); break;
        case "waves": value = waves(raw); break;
        case "number": value = Number(raw); break;
        case "bool": value = raw === "true"; break;
        default: value = raw;
      }
      body[el.name] = value;
    }
    return body;
  }

  function describe(status, text) {
    try {
      const e = JSON.parse(text);
      let msg = (e.field ? e.field + ": " : "") + (e.error || "refused");
      if (Array.isArray(e.problems)) {
        msg += "\n" + e.problems.map((p) =>
          typeof p === "string" ? p : (p.line ? "line " + p.line + ":" + p.column + " " : "") +
            (p.field ? p.field + ": " : "") + (p.message || JSON.stringify(p))).join("\n");
      }
      return msg;
    } catch (_) {
      return "the console answered " + status;
    }
  }

  async function call(method, path, body, contentType) {
    const headers = { "X-CSRF-Token": csrf };
    if (contentType) headers["Content-Type"] = contentType;
    const r = await fetch(path, { method, headers, body, credentials: "same-origin" });
    const text = await r.text();
    if (r.status === 401) {
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("your session has ended");
    }
    if (!r.ok) throw new Error(describe(r.status, text));
    return text ? JSON.parse(text) : null;
  }

  async function submit(form) {
    const errorEl = form.querySelector(".error");
    const output = form.querySelector("output.result");
    const button = form.querySelector('button[type="submit"]');
    if (errorEl) errorEl.textContent = "";
    if (button) button.disabled = true;
    try {
      const method = form.dataset.method || "POST";
      let answer;
      if (form.dataset.kind === "file") {
        const file = form.querySelector('input[type="file"]').files[0];
        answer = await call(method, form.dataset.api, file, "application/octet-stream");
      } else if (method === "DELETE") {
        answer = await call(method, form.dataset.api, undefined, undefined);
      } else {
        answer = await call(method, form.dataset.api, JSON.stringify(bodyOf(form)), "application/json");
      }
      switch (form.dataset.then) {
        case "show":
          if (output) output.textContent = JSON.stringify(answer, null, 2);
          break;
        case "follow":
          if (answer && answer.id !== undefined) location.href = location.pathname.replace(/\/$/, "") + "/" + answer.id;
          else location.reload();
          break;
        case "login":
          location.href = "/ui/login";
          break;
        default:
          location.reload();
      }
    } catch (e) {
      if (errorEl) errorEl.textContent = e.message;
    } finally {
      if (button) button.disabled = false;
    }
  }

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (form instanceof HTMLFormElement && form.dataset.api) {
      ev.preventDefault();
      submit(form);
    }
  });

  document.addEventListener("click", async (ev) => {
    const t = ev.target;
    if (t instanceof HTMLElement && t.hasAttribute("data-logout")) {
      try { await call("POST", "/api/v1/logout"); } catch (_) { /* gone already */ }
      location.href = "/ui/login";
    }
  });

  // Live regions: the same page from the server, its data-live regions swapped in.
  async function refresh() {
    if (document.visibilityState !== "visible") return;
    const live = document.querySelectorAll("[data-live][id]");
    if (live.length === 0) return;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", headers: { "X-P6OS-Live": "1" } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      for (const el of live) {
        const fresh = doc.getElementById(el.id);
        if (fresh && fresh.innerHTML !== el.innerHTML && !el.contains(document.activeElement)) {
          el.innerHTML = fresh.innerHTML;
        }
      }
      document.documentElement.dataset.refreshed = String(Date.now());
    } catch (_) { /* the next round tries again */ }
  }
  setInterval(refresh, POLL_MS);
})();
