// coldbrew dashboard: what every page shares. No build step, no dependencies.
"use strict";
const coldbrew = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  // JSON to and from /ui/api/; a lost session sends the browser to the login form.
  async function api(method, path, body) {
    const options = { method, headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (response.status === 401) {
      window.location = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("not logged in");
    }
    const data = await response.json();
    return { status: response.status, data };
  }

  // A modal confirmation; resolves true only if the person pressed Confirm.
  function confirmAction(title, text, label) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = label || "Confirm";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  // Polls fn every interval ms while the page is visible, never two at once.
  function every(interval, fn) {
    let running = false;
    const tick = async () => {
      if (running || document.hidden) return;
      running = true;
      try { await fn(); } catch (e) { console.warn("refresh failed:", e.message); } finally { running = false; }
    };
    setInterval(tick, interval);
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "-";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function fmtMiB(bytes) {
    return bytes ? Math.round(bytes / 1048576).toLocaleString("en-US") + " MiB" : "-";
  }

  return { api, confirmAction, el, every, fmtSeconds, fmtMiB, csrf };
})();

// The endpoints page: filter by name, and the live columns refreshed every 2 s.
(() => {
  const table = document.getElementById("endpoints");
  if (!table) return;
  const rows = Array.from(table.tBodies[0].rows);
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    const needle = filter.value.trim().toLowerCase();
    for (const row of rows) row.hidden = needle !== "" && !row.dataset.endpoint.toLowerCase().includes(needle);
  });
  const byName = new Map(rows.map((row) => [row.dataset.endpoint.toLowerCase(), row]));
  coldbrew.every(2000, async () => {
    const { data } = await coldbrew.api("GET", "/ui/api/live");
    const live = new Map(Object.entries(data.Endpoints).map(([k, v]) => [k.toLowerCase(), v]));
    let total = 0;
    for (const [name, row] of byName) {
      const counts = live.get(name) || { busy: 0, idle: 0, starting: 0 };
      const cell = row.querySelector("td.live");
      const text = `${counts.busy} / ${counts.idle} / ${counts.starting}`;
      total += counts.busy + counts.idle + counts.starting;
      if (cell.textContent !== text) cell.textContent = text;
    }
    document.getElementById("total-environments").textContent = total.toLocaleString("en-US");
  });
})();
