// The endpoint page: charts (uPlot), live environments every second, log lines, actions.
"use strict";
(() => {
  const { api, confirmAction, el, every, fmtSeconds, fmtMiB } = coldbrew;
  const name = document.getElementById("endpoint-name").textContent;
  const base = "/ui/api/endpoints/" + encodeURIComponent(name);
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

  // --- charts -----------------------------------------------------------------------------
  const charts = document.getElementById("charts");
  async function drawCharts() {
    const { status, data } = await api("GET", `${base}/metrics?range=${charts.dataset.range}`);
    if (status !== 200) {
      charts.append(el("p", { class: "error-box" }, data.Message));
      return;
    }
    charts.replaceChildren();
    for (const chart of data.charts) {
      const box = el("figure", { class: "chart", "data-chart": chart.key });
      const totals = chart.series.filter((s) => s.total !== null).map((s) => `${s.label}: ${s.total.toLocaleString("en-US")}`);
      box.append(el("figcaption", {}, chart.title + " ", el("small", { class: "muted" }, `(${chart.unit})`)));
      charts.append(box);
      const width = Math.max(280, box.clientWidth - 8);
      const options = {
        width,
        height: 170,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{ stroke: "#555", grid: { stroke: "#eee" } }, { stroke: "#555", grid: { stroke: "#eee" }, size: 56 }],
        series: [{}].concat(chart.series.map((s, i) => ({
          label: s.label,
          stroke: palette[i % palette.length],
          width: 1.5,
          fill: chart.series.length === 1 ? palette[0] + "22" : undefined,
          points: { show: data.x.length <= 90 },
        }))),
      };
      const plot = new uPlot(options, [data.x].concat(chart.series.map((s) => s.values)), box);
      box.dataset.points = data.x.length;
      if (totals.length) box.append(el("div", { class: "totals" }, totals.join(" · ")));
      const counts = totals.length > 0;
      const empty = chart.series.every((s) => s.values.every((v) => v === null || (counts && v === 0)));
      if (empty) box.append(el("div", { class: "totals" }, counts ? "None in this range." : "No datapoints in this range."));
      box.plot = plot;
    }
    charts.dataset.drawn = "true";
  }
  if (charts) {
    drawCharts().catch((e) => console.error("charts:", e.message));
    let resize;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        for (const box of charts.querySelectorAll("figure.chart")) box.plot.setSize({ width: Math.max(280, box.clientWidth - 8), height: 170 });
      }, 150);
    });
  }

  // --- live environments --------------------------------------------------------------------
  const envs = document.getElementById("environments");
  const stamp = document.getElementById("live-stamp");
  function envTable(variant) {
    const head = el("tr", {}, ...["Environment", "State", "Started for", "Memory", "Resident", "Age", "Requests served", "In flight"].map((h) => el("th", {}, h)));
    const body = el("tbody");
    for (const e of variant.environments) {
      body.append(el("tr", { "data-env": e.id, "data-state": e.state },
        el("td", {}, String(e.id), e.pid ? el("small", { class: "muted" }, ` pid ${e.pid}`) : ""),
        el("td", { class: "state-" + e.state }, e.state),
        el("td", {}, e.purpose),
        el("td", { class: "n" }, `${e.memory_mb} MB`),
        el("td", { class: "n" }, fmtMiB(e.rss_bytes)),
        el("td", { class: "n" }, fmtSeconds(e.age_s)),
        el("td", { class: "n" }, String(e.served)),
        el("td", { class: "n" }, String(e.in_flight))));
    }
    if (!variant.environments.length) body.append(el("tr", { class: "none" }, el("td", { colspan: 8 }, "No environment: scaled to zero.")));
    return el("table", { class: "grid envs" }, el("thead", {}, head), body);
  }
  every(1000, async () => {
    const { status, data } = await api("GET", `${base}/environments`);
    if (status !== 200) return;
    const parts = [];
    for (const v of data.Variants) {
      const what = v.serverless ? `serverless, ${v.memory_mb} MB, max ${v.max_concurrency}` : `${v.min_environments} instance(s), ${v.memory_mb} MB each`;
      parts.push(el("h3", {}, v.variant + " ", el("small", { class: "muted" }, what)), envTable(v));
    }
    if (!parts.length) parts.push(el("p", { class: "empty" }, "Not running."));
    envs.replaceChildren(...parts);
    envs.dataset.updated = data.TakenAt;
    stamp.textContent = "updated " + new Date(data.TakenAt * 1000).toLocaleTimeString();
  });

  // --- log lines ----------------------------------------------------------------------------
  const logs = document.getElementById("logs");
  if (logs) {
    every(3000, async () => {
      const { status, data } = await api("GET", `${base}/logs?limit=50`);
      if (status !== 200) return;
      const lines = data.Events.map((e) => [
        el("span", { class: "t" }, new Date(e.timestamp_ms).toISOString().slice(11, 23)), " ",
        el("span", { class: "s" }, e.stream), " " + e.message + "\n"]).flat();
      logs.replaceChildren(...(lines.length ? lines : ["(no log lines yet)\n"]));
    });
  }

  // --- actions ------------------------------------------------------------------------------
  function show(node, text, ok) {
    node.hidden = false;
    node.textContent = text;
    node.classList.toggle("error-box", !ok);
  }

  const invoke = document.getElementById("invoke-form");
  const invokeResult = document.getElementById("invoke-result");
  if (invokeResult) {
    invoke.addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = new FormData(invoke);
      const payload = form.get("Body");
      const ok = await confirmAction(`Invoke ${name}?`, `POST ${payload.length.toLocaleString("en-US")} bytes of ${form.get("ContentType")} to /endpoints/${name}/invocations. It is metered and billed like any invocation.`, "Invoke");
      if (!ok) return;
      const { data } = await api("POST", `${base}/invoke`, { Body: payload, ContentType: form.get("ContentType"), Accept: form.get("Accept") || null });
      if (data.code) show(invokeResult, `${data.status} ${data.code}: ${data.message}`, false);
      else show(invokeResult, `${data.status} ${data.content_type || ""}\n${data.base64 ? "(base64) " : ""}${data.body}`, true);
      invokeResult.dataset.status = data.status;
    });
  }

  const update = document.getElementById("update-form");
  const updateResult = document.getElementById("update-result");
  if (update && updateResult) {
    update.addEventListener("submit", async (event) => {
      event.preventDefault();
      const variants = {};
      const lines = [];
      for (const set of update.querySelectorAll("fieldset")) {
        const fields = {};
        for (const input of set.querySelectorAll("input, select")) fields[input.name] = Number(input.value);
        variants[set.dataset.variant] = fields;
        lines.push(`${set.dataset.variant}: ${fields.MemorySizeInMB} MB, max concurrency ${fields.MaxConcurrency}, provisioned ${fields.ProvisionedConcurrency}`);
      }
      const ok = await confirmAction(`Update ${name}?`, `A new endpoint config is created and the endpoint is updated to it (CreateEndpointConfig, UpdateEndpoint): ${lines.join("; ")}.`, "Update");
      if (!ok) return;
      const { data } = await api("POST", `${base}/serverless-config`, { Variants: variants });
      show(updateResult, data.Ok ? `Updating to endpoint config ${data.EndpointConfigName}.` : `${data.Code}: ${data.Message}`, data.Ok);
      updateResult.dataset.ok = data.Ok;
    });
  }

  const remove = document.getElementById("delete-button");
  if (remove) {
    remove.addEventListener("click", async () => {
      const ok = await confirmAction(`Delete ${name}?`, `DeleteEndpoint ${name}: its environments stop and clients get ValidationError. Its endpoint config and models are kept.`, "Delete");
      if (!ok) return;
      const { data } = await api("DELETE", base);
      const result = document.getElementById("delete-result");
      show(result, data.Ok ? `Deleting ${name}.` : `${data.Code}: ${data.Message}`, data.Ok);
      result.dataset.ok = data.Ok;
    });
  }
})();
