// The scaling timeline: one Chart.js chart per process type, refreshed every few seconds
// from /timeline.json (no page reload). Dynos: a step line; queued + running: a stepped area
// on its own axis; scale events: triangles whose tooltip says who, why, outcome, Request-Id.
"use strict";
(function () {
  const root = document.getElementById("timeline");
  if (!root) return;
  // Refresh as often as a bucket of the range can change: 3 s for the hour, 30 s for longer.
  const REFRESH_MS = root.dataset.range === "hour" ? 3000 : 30000;
  const charts = new Map();

  function clock(seconds, span) {
    const d = new Date(seconds * 1000);
    const hm = d.toISOString().slice(11, span < 600 ? 19 : 16);
    return span > 86400 ? d.toISOString().slice(5, 10) + " " + hm : hm;
  }

  function eventLines(e) {
    const change = (e.from_quantity === null ? "?" : e.from_quantity) + " → " + e.to_quantity;
    return [
      change + " by " + e.actor + " at " + new Date(e.t * 1000).toISOString().slice(11, 19) + " UTC",
      "why: " + e.reason,
      "outcome: " + e.outcome,
      "Request-Id: " + (e.request_id || "–"),
    ];
  }

  // Each sample's values hold until the next sample: Chart.js's "before" steps draw the
  // horizontal run first and change value at the next point's x.
  function datasets(type) {
    const depth = type.points.map((p) => ({ x: p.t, y: p.depth }));
    const dynos = type.points.map((p) => ({ x: p.t, y: p.quantity }));
    const events = type.events.map((e) => ({ x: e.t, y: e.to_quantity, event: e }));
    return [
      { label: "dynos (formation quantity)", data: dynos, yAxisID: "dynos", stepped: "before",
        borderColor: "#4451b8", backgroundColor: "#4451b8", borderWidth: 2.5, pointRadius: 0,
        spanGaps: false, order: 1 },
      { label: "jobs ready + running", data: depth, yAxisID: "jobs", stepped: "before",
        borderColor: "#9aa3b5", backgroundColor: "rgba(154,163,181,0.25)", fill: true,
        borderWidth: 1, pointRadius: 0, spanGaps: false, order: 3 },
      { label: "scale events", type: "scatter", data: events, yAxisID: "dynos",
        pointStyle: "triangle", pointRadius: 7, pointHoverRadius: 9, order: 0,
        backgroundColor: events.map((p) => (p.event.outcome === "ok" ? "#217a3c" : "#b3261e")),
        borderColor: events.map((p) => (p.event.outcome === "ok" ? "#217a3c" : "#b3261e")) },
    ];
  }

  // The window's start: the range's, or the first sample or event when the history is
  // shorter (a fresh install, a short demo), so the chart is not a sliver at its right edge.
  function start(data, type) {
    const times = type.points.map((p) => p.t).concat(type.events.map((e) => e.t));
    const first = times.length ? Math.min(...times) : data.now;
    const pad = Math.max((data.now - first) * 0.05, 5);
    return Math.max(data.now - data.span_s, first - pad);
  }

  function options(data, type) {
    return {
      animation: false,
      maintainAspectRatio: false,
      parsing: true,
      interaction: { mode: "nearest", intersect: true },
      scales: {
        x: { type: "linear", min: start(data, type), max: data.now,
             ticks: { maxTicksLimit: 12, callback: (v, i, ticks) => clock(v,
               ticks.length > 1 ? ticks[ticks.length - 1].value - ticks[0].value : data.span_s) } },
        dynos: { position: "left", beginAtZero: true, suggestedMax: Math.max(type.max, 1),
                 ticks: { precision: 0 }, title: { display: true, text: "dynos" } },
        jobs: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                ticks: { precision: 0 }, title: { display: true, text: "jobs" } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            title: (items) => (items.length ? clock(items[0].parsed.x, 0) + " UTC" : ""),
            label: (item) => (item.raw && item.raw.event ? eventLines(item.raw.event)
              : item.dataset.label + ": " + item.parsed.y),
          },
        },
      },
    };
  }

  function eventsTable(type) {
    const rows = type.events.slice(-10).reverse();
    if (!rows.length) return "";
    const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
    const table = document.createElement("table");
    table.className = "events";
    const head = table.createTHead().insertRow();
    for (const h of ["at (UTC)", "change", "by", "why", "outcome", "Request-Id"]) {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    }
    const body = table.createTBody();
    for (const e of rows) {
      const tr = body.insertRow();
      tr.append(cell(new Date(e.t * 1000).toISOString().slice(0, 19).replace("T", " ")),
                cell((e.from_quantity === null ? "?" : e.from_quantity) + " → " + e.to_quantity),
                cell(e.actor), cell(e.reason), cell(e.outcome), cell(e.request_id || "–"));
    }
    return table;
  }

  function card(type) {
    const section = document.createElement("section");
    section.className = "chart-card";
    section.dataset.type = type.process_type;
    const title = document.createElement("h2");
    title.textContent = type.process_type + " (queues: " + type.queues.join(", ") + ")";
    const box = document.createElement("div");
    box.className = "chart-box";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "dynos and jobs of " + type.process_type + " over time");
    box.appendChild(canvas);
    const events = document.createElement("div");
    events.className = "events-list";
    section.append(title, box, events);
    root.appendChild(section);
    return { section, canvas, events };
  }

  function draw(data) {
    const loading = document.getElementById("timeline-loading");
    if (loading) loading.remove();
    if (!data.types.length && !root.querySelector(".empty")) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "No scaling rules recorded: start pgdyno dispatcher --scale QUEUE=TYPE.";
      root.appendChild(p);
    }
    for (const type of data.types) {
      let entry = charts.get(type.process_type);
      if (!entry) {
        entry = card(type);
        entry.chart = new Chart(entry.canvas, { type: "line", data: { datasets: datasets(type) },
                                                options: options(data, type) });
        charts.set(type.process_type, entry);
      } else {
        const fresh = datasets(type);
        entry.chart.data.datasets.forEach((ds, i) => {
          ds.data = fresh[i].data;
          if (fresh[i].backgroundColor instanceof Array) {
            ds.backgroundColor = fresh[i].backgroundColor;
            ds.borderColor = fresh[i].borderColor;
          }
        });
        entry.chart.options.scales.x.min = start(data, type);
        entry.chart.options.scales.x.max = data.now;
        entry.chart.update("none");
      }
      const table = eventsTable(type);
      entry.events.replaceChildren(...(table ? [table] : []));
    }
    root.dataset.updated = String(data.now);
  }

  async function refresh() {
    try {
      const response = await fetch(root.dataset.source, { headers: { Accept: "application/json" } });
      if (response.ok) draw(await response.json());
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }
  refresh();
})();
