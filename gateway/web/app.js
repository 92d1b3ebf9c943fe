// app.js: the dashboard. Everything comes from the gateway's API; live
// changes arrive on /v1/events.
"use strict";

const state = { formsKey: "", timer: null };

function ms(v) {
  if (!v) return "–";
  return v < 1 ? v.toFixed(2) + " ms" : v < 1000 ? v.toFixed(1) + " ms" : (v / 1000).toFixed(2) + " s";
}

function age(msAgo) {
  return msAgo < 1000 ? "now" : Math.round(msAgo / 1000) + " s";
}

function fill(id, rows, empty) {
  const tbody = document.querySelector("#" + id + " tbody");
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: 10 }, empty))]));
}

async function loadAlgorithms() {
  const r = await api("/v1/algorithms?stats=1");
  if (!r.ok) return;
  const algs = r.body || [];
  fill("algorithms", algs.map((a) => {
    const s = a.stats || {};
    const oldest = Math.max(...a.instances.map((i) => i.heartbeat_age_ms));
    return el("tr", { "data-algorithm": a.name },
      el("td", {}, el("strong", {}, a.name), a.description ? el("div", { class: "muted small" }, a.description) : null),
      el("td", {}, a.versions.join(", ")),
      el("td", { "data-col": "instances" }, a.instances.length),
      el("td", {}, age(oldest)),
      el("td", {}, s.in_flight ?? "–"),
      el("td", { "data-col": "served" }, s.served ?? "–"),
      el("td", {}, s.errors ?? "–"),
      el("td", { "data-col": "p50" }, ms(s.gateway_p50_ms)),
      el("td", {}, ms(s.gateway_p99_ms)),
      el("td", {}, ms(s.avg_run_ms)));
  }), "no algorithm is served right now");
  renderForms(algs);
}

// renderForms rebuilds the try-it forms only when the algorithms or their
// versions change, so what a user typed survives the refreshes.
function renderForms(algs) {
  const key = algs.map((a) => a.name + "@" + a.version).join(",");
  if (key === state.formsKey) return;
  state.formsKey = key;
  const box = document.getElementById("tryit");
  box.replaceChildren(...algs.map((a) => el("details", { class: "algo", "data-algorithm": a.name, open: algs.length === 1 },
    el("summary", {}, a.name, " ", el("span", { class: "muted small" }, a.version)),
    schemaForm(a.name, a.input_schema, (body) => api("/v1/algorithms/" + a.name + "/run", {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    })))));
}

// loadRoutes shows each route and its shadow's agreement; one load at a
// time.
async function loadRoutes() {
  if (state.routesBusy) return;
  state.routesBusy = true;
  try {
    await renderRoutes();
  } finally {
    state.routesBusy = false;
  }
}

async function renderRoutes() {
  const r = await api("/v1/routes");
  if (!r.ok) return;
  const routes = r.body || [];
  const reports = await Promise.all(routes.map((rt) => rt.shadow
    ? api("/v1/algorithms/" + encodeURIComponent(rt.algorithm) + "/comparisons?last=500&candidate=" + encodeURIComponent(rt.shadow))
      .then((x) => (x.ok ? x.body : null))
    : null));
  fill("routes", routes.map((rt, i) => {
    const rep = reports[i];
    let agreement = "–", differs = "–";
    if (rep && rep.total > 0) {
      agreement = (100 * rep.agreement).toFixed(1) + " % of " + rep.total;
      if (rep.fields.length) differs = rep.fields[0].pointer + " (" + rep.fields[0].count + ")";
    } else if (rep && rep.not_compared > 0) {
      agreement = rep.not_compared + " without a verdict";
    } else if (rep) {
      agreement = "no comparison yet";
    }
    return el("tr", { "data-algorithm": rt.algorithm },
      el("td", {}, rt.algorithm),
      el("td", { "data-col": "stable" }, rt.stable),
      el("td", {}, rt.canary ? rt.canary + " (" + rt.percent + " %)" : "–"),
      el("td", {}, rt.shadow || "–"),
      el("td", { "data-col": "agreement" }, agreement),
      el("td", {}, differs));
  }), "no routes: every live version of an algorithm serves run.<algorithm>");
}

async function loadQueues() {
  const r = await api("/v1/queues");
  if (!r.ok) return;
  fill("queues", (r.body || []).map((q) => el("tr", { "data-algorithm": q.algorithm },
    el("td", {}, q.algorithm), el("td", {}, q.waiting), el("td", {}, q.in_flight), el("td", {}, q.dead), el("td", {}, q.runners))),
  "no jobs");
}

async function loadDead() {
  const r = await api("/v1/dead");
  if (!r.ok) return;
  fill("dead", (r.body || []).map((d) => el("tr", { "data-job": d.job_id },
    el("td", {}, el("code", {}, d.job_id)),
    el("td", {}, d.algorithm),
    el("td", {}, d.code),
    el("td", { class: "reason" }, d.reason),
    el("td", {}, d.attempts),
    el("td", {}, new Date(d.dead_at).toLocaleString()),
    el("td", {}, el("button", { class: "replay", "data-job": d.job_id, onclick: (ev) => replay(ev.target, d.job_id) }, "Replay")))),
  "no dead letters");
}

async function loadSchedules() {
  const r = await api("/v1/schedules");
  if (!r.ok) return;
  fill("schedules", (r.body || []).map((s) => el("tr", { "data-schedule": s.name },
    el("td", {}, el("code", {}, s.name)),
    el("td", {}, s.algorithm),
    el("td", { "data-col": "spec" }, s.every ? "every " + s.every : s.cron),
    el("td", { "data-col": "next" }, new Date(s.next_run).toLocaleString()),
    el("td", { class: "reason" }, el("code", {}, JSON.stringify(s.input))))),
  "no schedules");
}

async function replay(button, id) {
  button.disabled = true;
  const r = await api("/v1/dead/" + encodeURIComponent(id) + "/replay", { method: "POST" });
  logEvent(r.ok ? "replayed " + id : "replay of " + id + " failed: " + (r.body && r.body.message), r.ok ? "" : "bad");
  refreshJobs();
}

function logEvent(text, cls) {
  const list = document.getElementById("events");
  list.prepend(el("li", { class: cls || "" }, el("time", {}, new Date().toLocaleTimeString()), " ", text));
  while (list.children.length > 30) list.lastChild.remove();
}

// refreshJobs reloads queues and dead letters, at most every 300 ms.
function refreshJobs() {
  if (state.timer) return;
  state.timer = setTimeout(() => { state.timer = null; loadQueues(); loadDead(); }, 300);
}

function connect() {
  const live = document.getElementById("live");
  if (state.es) state.es.close();
  clearTimeout(state.retry);
  const es = new EventSource("/v1/events");
  state.es = es;
  es.onopen = () => { live.textContent = "live"; live.className = "badge on"; logEvent("connected to /v1/events"); loadAll(); };
  es.onerror = () => {
    live.textContent = "reconnecting"; live.className = "badge off";
    // A refused stream (503, 401) closes for good; try again later.
    if (es.readyState === EventSource.CLOSED && state.es === es) state.retry = setTimeout(connect, 3000);
  };
  es.addEventListener("registered", (ev) => {
    const d = JSON.parse(ev.data);
    logEvent(d.algorithm + " " + d.version + " registered (" + d.instance + ")");
    loadAlgorithms();
  });
  es.addEventListener("departed", (ev) => {
    const d = JSON.parse(ev.data);
    logEvent(d.algorithm + " departed (" + d.instance + ")", "bad");
    loadAlgorithms();
  });
  es.addEventListener("job", (ev) => {
    const d = JSON.parse(ev.data);
    const how = d.error ? ", " + d.error.code + " " + d.error.message : d.progress ? ", " + Math.round(d.progress.fraction * 100) + "%" : "";
    const li = d.status + " " + d.job_id + " (" + d.algorithm + how + ")";
    logEvent(li, d.status === "failed" ? "bad" : "");
    refreshJobs();
    document.dispatchEvent(new CustomEvent("pnp:job", { detail: d }));
  });
}

function loadAll() { loadAlgorithms(); loadRoutes(); loadQueues(); loadDead(); loadSchedules(); }

setupLogin(() => { loadAll(); connect(); });
loadAll();
connect();
// Stats and heartbeat ages change without events.
setInterval(loadAlgorithms, 2000);
// Routes and comparisons change without events too, and so do the
// schedules' next runs.
setInterval(loadRoutes, 5000);
setInterval(loadSchedules, 5000);
