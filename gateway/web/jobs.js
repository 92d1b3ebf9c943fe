// jobs.js: the dashboard's job list (GET /v1/jobs, filtered and paged) and
// the page of one job (GET /v1/jobs/{id}), shown for #job/<id>.
"use strict";

// paged: the user loaded more than the first page, which refreshes would
// take away; queue: the loads, one after the other.
const jobsView = { next: "", paged: false, timer: null, shown: "", queue: Promise.resolve() };

function jobTime(v) {
  return v ? new Date(v).toLocaleString() : "–";
}

function jobDuration(v) {
  return v === undefined || v === null ? "–" : ms(v);
}

function jobLink(id) {
  return el("a", { href: "#job/" + encodeURIComponent(id), class: "job-link" }, el("code", {}, id));
}

// jobQuery is the query of the filter form, without cursor.
function jobQuery() {
  const q = new URLSearchParams();
  for (const name of ["algorithm", "status", "since"]) {
    const v = document.getElementById("jobs-" + name).value.trim();
    if (v) q.set(name, v);
  }
  q.set("limit", "25");
  return q;
}

// progressView shows a running job's progress: a bar and "40% message".
function progressView(p) {
  const pct = Math.round(p.fraction * 100);
  return el("span", { class: "progress", "data-role": "progress", "data-percent": pct },
    el("progress", { max: "1", value: String(p.fraction) }),
    " ", el("span", { class: "progress-text" }, pct + "%" + (p.message ? " " + p.message : "")));
}

// reasonView is the last column of a job's row: its error, or how far it got.
function reasonView(r) {
  if (r.error) return r.error.code + " " + r.error.message;
  return r.progress ? progressView(r.progress) : "";
}

function statusClass(status) {
  return "status " + (status === "failed" ? "bad" : status === "succeeded" ? "good" : "");
}

// updateJobRow shows a job event in the job's row at once, before the
// listing is reloaded.
function updateJobRow(d) {
  const tr = [...document.querySelectorAll("#jobs tbody tr")].find((tr) => tr.dataset.job === d.job_id);
  if (!tr) return;
  const status = tr.querySelector('[data-col="status"]');
  status.textContent = d.status;
  status.className = statusClass(d.status);
  tr.querySelector(".reason").replaceChildren(reasonView(d));
}

function jobRow(r) {
  return el("tr", { "data-job": r.job_id },
    el("td", {}, jobLink(r.job_id)),
    el("td", {}, r.algorithm),
    el("td", { "data-col": "status", class: statusClass(r.status) }, r.status),
    el("td", {}, r.attempts),
    el("td", {}, r.version || "–"),
    el("td", {}, jobTime(r.submitted_at)),
    el("td", {}, jobDuration(r.duration_ms)),
    el("td", { class: "reason" }, reasonView(r)));
}

// loadJobList loads the first page of the listing (more: the next page,
// appended), after the loads asked for before it.
function loadJobList(more) {
  jobsView.paged = more;
  jobsView.queue = jobsView.queue.then(() => renderJobList(more)).catch(() => {});
  return jobsView.queue;
}

async function renderJobList(more) {
  const note = document.getElementById("jobs-note");
  const q = jobQuery();
  if (more) {
    if (!jobsView.next) return;
    q.set("cursor", jobsView.next);
  }
  const r = await api("/v1/jobs?" + q.toString());
  if (!r.ok) {
    note.textContent = (r.body && r.body.message) || "cannot list jobs: " + r.status;
    note.className = "violation";
    return;
  }
  note.textContent = "";
  const rows = r.body.jobs.map(jobRow);
  if (more) document.querySelector("#jobs tbody").append(...rows);
  else fill("jobs", rows, "no jobs with a result record match");
  jobsView.next = r.body.next || "";
  document.getElementById("jobs-more").hidden = !jobsView.next;
}

// refreshJobList reloads the first page at most every second, unless the
// user is paging: then new records wait for the next filter change.
function refreshJobList() {
  if (jobsView.timer || jobsView.paged) return;
  jobsView.timer = setTimeout(() => {
    jobsView.timer = null;
    if (!jobsView.paged) loadJobList(false);
  }, 1000);
}

// valueView shows a JSON value of a record, or says why there is none.
function valueView(value, bytes, role) {
  if (value === undefined) {
    return el("div", { "data-role": role, class: "muted" }, bytes ? bytes + " bytes, not kept in the record (over 1024 bytes)" : "none");
  }
  return el("pre", { class: "schema", "data-role": role }, JSON.stringify(value, null, 2));
}

function jobField(name, value, col) {
  return [el("dt", {}, name), el("dd", { "data-col": col || name }, value === undefined || value === null || value === "" ? "–" : value)];
}

// showJob renders the page of a job: its record whole.
async function showJob(id) {
  const page = document.getElementById("job-page");
  jobsView.shown = id;
  page.hidden = false;
  const body = document.getElementById("job-body");
  const r = await api("/v1/jobs/" + encodeURIComponent(id));
  if (jobsView.shown !== id) return;
  document.getElementById("job-title").textContent = "Job " + id;
  // Without an outcome (no record yet: maybe waiting), the job can be
  // cancelled.
  const cancel = document.getElementById("cancel-job");
  cancel.hidden = r.ok ? ["succeeded", "failed", "cancelled"].includes(r.body.status) : r.status !== 404;
  cancel.disabled = false;
  if (!r.ok) {
    body.replaceChildren(el("p", { class: "violation", "data-role": "job-error" }, r.status === 404
      ? "no result record for job " + id + ": it is still waiting or running, was never submitted, or its record expired"
      : (r.body && r.body.message) || "cannot read job " + id + ": " + r.status));
    return;
  }
  const j = r.body;
  body.replaceChildren(
    el("dl", { class: "job-fields" },
      jobField("status", el("span", { class: statusClass(j.status) }, j.status), "status"),
      jobField("algorithm", j.algorithm),
      jobField("version", j.version),
      jobField("instance", j.instance),
      jobField("attempts", j.attempts),
      j.progress ? jobField("progress", progressView(j.progress), "progress") : null,
      jobField("trace id", j.trace_id ? el("code", {}, j.trace_id) : "", "trace_id"),
      jobField("submitted", jobTime(j.submitted_at), "submitted_at"),
      jobField("started", jobTime(j.started_at), "started_at"),
      jobField("finished", jobTime(j.finished_at), "finished_at"),
      jobField("duration", jobDuration(j.duration_ms), "duration_ms"),
      j.next_attempt_at ? jobField("next attempt", jobTime(j.next_attempt_at), "next_attempt_at") : null,
      j.dead_letter_seq ? jobField("dead letter", "sequence " + j.dead_letter_seq + " in DEAD", "dead_letter_seq") : null,
      jobField("controller", j.controller)),
    j.error ? el("div", { "data-role": "job-failure" },
      el("h3", {}, j.status === "retrying" ? "Last attempt's error" : "Error"),
      el("p", { class: "violation" }, j.error.code + " " + j.error.message),
      j.error.violations ? el("ul", {}, j.error.violations.map((v) => el("li", {}, el("code", {}, v.pointer || "/"), " ", v.message))) : null) : null,
    el("h3", {}, "Input"),
    valueView(j.input, j.input_bytes, "job-input"),
    el("h3", {}, "Output"),
    j.output_ref
      ? el("div", { "data-role": "job-output" }, "by reference: ", el("a", { href: "/v1/jobs/" + encodeURIComponent(j.job_id) + "/output" }, j.output_ref))
      : valueView(j.output, 0, "job-output"));
}

// cancelJob cancels the job shown (DELETE /v1/jobs/{id}) and shows it again.
async function cancelJob() {
  const id = jobsView.shown;
  if (!id) return;
  const button = document.getElementById("cancel-job");
  const note = document.getElementById("cancel-note");
  button.disabled = true;
  const r = await api("/v1/jobs/" + encodeURIComponent(id), { method: "DELETE" });
  note.textContent = r.ok ? "cancelled" : (r.body && r.body.message) || "cancel failed: " + r.status;
  note.className = r.ok ? "" : "violation";
  await showJob(id);
}

function route() {
  document.getElementById("cancel-note").textContent = "";
  const m = /^#job\/(.+)$/.exec(location.hash);
  if (m) {
    showJob(decodeURIComponent(m[1]));
    document.getElementById("job-page").scrollIntoView();
  } else {
    jobsView.shown = "";
    document.getElementById("job-page").hidden = true;
  }
}

document.getElementById("jobs-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadJobList(false); });
document.getElementById("jobs-filter").addEventListener("change", () => loadJobList(false));
document.getElementById("jobs-more").addEventListener("click", () => loadJobList(true));
document.getElementById("cancel-job").addEventListener("click", cancelJob);
// A job's record changed (app.js passes the events of /v1/events on).
document.addEventListener("pnp:job", (ev) => {
  if (ev.detail) updateJobRow(ev.detail);
  refreshJobList();
  if (ev.detail && ev.detail.job_id === jobsView.shown) showJob(jobsView.shown);
});
document.getElementById("login").addEventListener("submit", () => setTimeout(() => { loadJobList(false); route(); }, 0));
window.addEventListener("hashchange", route);
loadJobList(false);
route();
