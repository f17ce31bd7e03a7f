// The cost page's what-if form: the simulator on a traffic pattern.
"use strict";
(() => {
  const { api, el } = coldbrew;
  const form = document.getElementById("whatif-form");
  const out = document.getElementById("whatif-result");
  const money = (v) => (v === null || v === undefined ? "-" : v.toLocaleString("en-US", { maximumFractionDigits: 4 }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [k, v] of new FormData(form)) body[k] = ["start", "end"].includes(k) ? v : Number(v);
    const button = form.querySelector("button");
    button.disabled = true;
    button.textContent = "Simulating…";
    try {
      const { status, data } = await api("POST", "/ui/api/simulate", body);
      out.hidden = false;
      if (status !== 200) {
        out.replaceChildren(el("p", { class: "error-box" }, `${data.Code}: ${data.Message}`));
        return;
      }
      const rows = data.options.map((o) => el("tr", { "data-kind": o.kind },
        el("td", {}, o.option), el("td", { class: "n", "data-value": o.cost_per_month }, money(o.cost_per_month)),
        el("td", { class: "n" }, money(o.cost_per_million)), el("td", { class: "n" }, o.p50_ms ?? "-"), el("td", { class: "n" }, o.p99_ms ?? "-")));
      const head = el("tr", {}, ...["Option", `${data.currency} / month`, "per million", "p50 ms", "p99 ms"].map((h) => el("th", {}, h)));
      const summary = `${data.served.toLocaleString("en-US")} served, ${data.throttled.toLocaleString("en-US")} throttled, ${data.cold_starts.toLocaleString("en-US")} cold starts, at most ${data.peak_environments} environments at once.`;
      const even = data.break_even_per_day === null ? "" : ` The instance is cheaper above ${Math.round(data.break_even_per_day).toLocaleString("en-US")} invocations a day.`;
      out.replaceChildren(el("table", { class: "grid", id: "whatif-table" }, el("thead", {}, head), el("tbody", {}, ...rows)), el("p", { class: "note" }, summary + even));
    } finally {
      button.disabled = false;
      button.textContent = "Simulate";
    }
  });
})();
