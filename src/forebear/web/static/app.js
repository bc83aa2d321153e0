// The run page: start compare/scan/probe jobs, upload fingerprints, poll the job and the job list.
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
  status.textContent = job.stopping ? "stopping" : job.status;
  status.className = "status " + job.status;
  $("job-cancel").classList.toggle("hidden", !["queued", "running"].includes(job.status)
                                   || job.stopping);
  $("job-params").textContent = describe(job.kind, job.params);
  const list = $("job-progress");
  list.replaceChildren(...job.progress.map((line) => el("li", line)));
  const verdict = $("job-verdict");
  verdict.classList.toggle("hidden", !job.summary);
  if (job.summary) {
    const behavioural = job.summary.evidence === "behavioural";
    verdict.replaceChildren(
      el("span", behavioural ? "behavioural evidence (not weight evidence)" : "weight evidence",
         "evidence"),
      el("strong", verdictText(job.summary)),
      el("span", pText(job.summary.log10_p), "muted"),
    );
    const settled = job.summary.derived || job.summary.verdict !== "inconclusive";
    verdict.className = "verdict " + (job.summary.derived ? "derived" : settled ? "independent" : "");
  }
  $("job-error").classList.toggle("hidden", !job.error);
  $("job-error").textContent = job.error || "";
  $("job-report").classList.toggle("hidden", !job.report);
  if (job.report) $("job-report-link").href = "/reports/" + job.report;
}

function describe(kind, p) {
  if (kind === "compare") return "A: " + p.a + "  ·  B: " + p.b + (p.fast ? "  ·  fast" : "");
  if (kind === "scan") return "model: " + p.model + "  ·  index: " + p.index + "  ·  top " + p.top;
  return "suspect: " + p.suspect + "  ·  candidates: " + p.candidates.join(", ")
    + "  ·  controls: " + (p.controls.join(", ") || "none") + "  ·  budget " + p.budget;
}

function verdictText(summary) {
  if (summary.evidence !== "behavioural") return summary.verdict;
  if (summary.derived) {
    return "behaves like a derivative of " + summary.derived_from.join(", ")
      + " (weights or distillation)";
  }
  return summary.verdict === "none" ? "not closer to any candidate than to the controls"
    : "inconclusive within the budget";
}

function splitModels(text) {
  return text.split(/[,\n]/).map((part) => part.trim()).filter((part) => part);
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
    let verdict = job.summary ? job.summary.verdict : (job.error || "");
    if (job.summary && job.summary.evidence === "behavioural") verdict = "behaviour: " + verdict;
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

$("job-cancel").addEventListener("click", async () => {
  const id = $("job-id").textContent;
  try {
    showJob(await call("DELETE", "/api/jobs/" + id));
  } catch (error) {
    $("job-error").classList.remove("hidden");
    $("job-error").textContent = error.message;
  }
});

onSubmit("compare-form", "/api/compare", () => ({
  a: $("compare-a").value, b: $("compare-b").value, fast: $("compare-fast").checked,
}));
onSubmit("scan-form", "/api/scan", () => ({
  model: $("scan-model").value, top: Number($("scan-top").value), weights: $("scan-weights").checked,
}));
onSubmit("probe-form", "/api/probe", () => ({
  suspect: $("probe-suspect").value, candidates: splitModels($("probe-candidates").value),
  controls: splitModels($("probe-controls").value), budget: Number($("probe-budget").value),
  same_data_controls: $("probe-same-data").checked,
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
