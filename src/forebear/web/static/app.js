// The run page: start compare/scan jobs, upload fingerprints, poll the job and the job list.
"use strict";

const $ = (id) => document.getElementById(id);
let watched = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function pText(log10p) {
  if (log10p === null || log10p === undefined) return "";
  if (log10p > -4) return "p = " + Math.pow(10, log10p).toPrecision(3);
  return "p < 1e" + Math.trunc(log10p) + " (log10 p = " + log10p.toFixed(1) + ")";
}

async function call(method, url, body, raw) {
  const init = { method, headers: {} };
  if (raw) {
    init.body = body;
    init.headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showJob(job) {
  $("job").classList.remove("hidden");
  $("job-id").textContent = job.id;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = "status " + job.status;
  const p = job.params;
  $("job-params").textContent = job.kind === "compare"
    ? "A: " + p.a + "  ·  B: " + p.b + (p.fast ? "  ·  fast" : "")
    : "model: " + p.model + "  ·  index: " + p.index + "  ·  top " + p.top;
  const list = $("job-progress");
  list.replaceChildren(...job.progress.map((line) => el("li", line)));
  const verdict = $("job-verdict");
  verdict.classList.toggle("hidden", !job.summary);
  if (job.summary) {
    verdict.replaceChildren(
      el("strong", job.summary.verdict),
      el("span", pText(job.summary.log10_p), "muted"),
    );
    verdict.className = "verdict " + (job.summary.derived ? "derived" : "independent");
  }
  $("job-error").classList.toggle("hidden", !job.error);
  $("job-error").textContent = job.error || "";
  $("job-report").classList.toggle("hidden", !job.report);
  if (job.report) $("job-report-link").href = "/reports/" + job.report;
}

async function watch(id) {
  watched = id;
  while (watched === id) {
    let job;
    try {
      job = await call("GET", "/api/jobs/" + id);
    } catch (error) {
      $("job-error").textContent = error.message;
      return;
    }
    showJob(job);
    if (!["queued", "running"].includes(job.status)) break;
    await new Promise((done) => setTimeout(done, 400));
  }
  refreshJobs();
}

async function refreshJobs() {
  let data;
  try {
    data = await call("GET", "/api/jobs");
  } catch (error) {
    return;
  }
  $("jobs-empty").classList.toggle("hidden", data.jobs.length > 0);
  const rows = data.jobs.map((job) => {
    const row = el("tr");
    const id = el("td");
    const open = el("a", job.id);
    open.href = "#" + job.id;
    open.addEventListener("click", (event) => { event.preventDefault(); watch(job.id); });
    id.append(open);
    const report = el("td");
    if (job.report) {
      const link = el("a", "report");
      link.href = "/reports/" + job.report;
      report.append(link);
    }
    const verdict = job.summary ? job.summary.verdict : (job.error || "");
    row.append(id, el("td", job.kind), el("td", job.status, "status " + job.status),
               el("td", verdict), report);
    return row;
  });
  document.querySelector("#jobs tbody").replaceChildren(...rows);
}

function onSubmit(form, url, body) {
  $(form).addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("button");
    button.disabled = true;
    try {
      const job = await call("POST", url, body());
      showJob(job);
      watch(job.id);
    } catch (error) {
      $("job").classList.remove("hidden");
      $("job-status").textContent = "refused";
      $("job-status").className = "status failed";
      $("job-error").classList.remove("hidden");
      $("job-error").textContent = error.message;
    } finally {
      button.disabled = false;
      refreshJobs();
    }
  });
}

onSubmit("compare-form", "/api/compare", () => ({
  a: $("compare-a").value, b: $("compare-b").value, fast: $("compare-fast").checked,
}));
onSubmit("scan-form", "/api/scan", () => ({
  model: $("scan-model").value, top: Number($("scan-top").value), weights: $("scan-weights").checked,
}));

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  try {
    const stored = await call("POST", "/api/fingerprints", file, true);
    $("upload-result").replaceChildren("Stored as ", el("code", stored.path));
  } catch (error) {
    $("upload-result").replaceChildren(el("span", error.message, "error"));
  }
});

refreshJobs();
setInterval(refreshJobs, 3000);
