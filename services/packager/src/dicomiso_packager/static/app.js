// The staff page: plain JavaScript against the packager's own JSON API (same origin).
// Every value from the server is put into the page with textContent, never as markup, and
// the page's URL only ever holds a job id (?job=...), never an accession number or a name.
"use strict";

const $ = (id) => document.getElementById(id);
const JOB_ID = /^[0-9a-f]{32}$/;
const PHASES = {
  lookup: "Checking the patient", retrieve: "Fetching the images from the PACS",
  plan: "Planning the discs", build: "Building the disc image",
  upload: "Uploading the disc image", done: "Ready",
};
// A medium in words, one or several: "1 DVD", "3 DVDs", "2 USB sticks".
const MEDIA = { CD: ["CD", "CDs"], DVD: ["DVD", "DVDs"], BD: ["Blu-ray disc", "Blu-ray discs"],
                USB: ["USB stick", "USB sticks"] };
let confirmed = null;   // the accession numbers the clerk confirmed, in order
let pollTimer = null;
let forwardTimer = null;
let mailEnabled = true;   // from /v1/session
const STATES = { queued: "Waiting to start", running: "Being made", succeeded: "Ready", failed: "Failed" };
// Letters only, or a prefix with nothing after its dot: half of a number split by a space.
const FRAGMENT = /(?:^|[\s,;])([A-Za-z]+\.?)(?:[ \t]+([^\s,;]+))?(?=[\s,;]|$)/;

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function show(id, visible) { $(id).hidden = !visible; }

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "error" ? "message" : "message info";
  box.hidden = !text;
}

function mb(bytes) { return bytes == null ? "" : `${(bytes / 1e6).toFixed(1)} MB`; }

const pad = (n) => String(n).padStart(2, "0");

// 2026-12-05 01:33 (UTC+07:00): year first, 24 h, the zone said; never 12/5/2026.
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const off = -d.getTimezoneOffset();
  const zone = `UTC${off < 0 ? "-" : "+"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())} (${zone})`;
}


async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem("dicomiso-token");
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "The packager cannot be reached. Check the network and try again.");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (response.status === 401) {
    show("auth", true);
    $("token").focus();
    throw new ApiError(401, "Please sign in with the API token first.");
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`;
    throw new ApiError(response.status, detail);
  }
  return data;
}

// A number split by a space or cut short ("MR 001", "MR"): say so rather than guess.
function malformed(text) {
  const found = FRAGMENT.exec(text);
  if (!found) return null;
  const shown = found[2] ? `${found[1]} ${found[2]}` : found[1];
  return `The number "${shown}" looks malformed: an examination number has no space inside ` +
    "and contains digits (for example MR.001). Check the number on the request form.";
}

function accessionList() {
  const seen = new Set();
  return $("accessions").value.split(/[\s,;]+/).filter((a) => a && !seen.has(a) && seen.add(a));
}

function busy(button, on) { button.disabled = on; button.setAttribute("aria-busy", String(on)); }

// -- step 1 and 2: who are these studies of? ------------------------------------------------

async function checkPatient(event) {
  event.preventDefault();
  say("");
  confirmed = null;
  show("preview", false);
  const accessions = accessionList();
  if (!accessions.length) { say("Enter at least one accession number."); $("accessions").focus(); return; }
  const bad = malformed($("accessions").value);
  if (bad) { say(bad); $("accessions").focus(); return; }
  busy($("check"), true);
  try {
    const preview = await api("POST", "/v1/previews", { accession_numbers: accessions });
    renderPreview(preview);
  } catch (err) {
    say(err.status === 404 ? err.message : `Not checked: ${err.message}`);
    $("accessions").focus();
  } finally {
    busy($("check"), false);
  }
}

const SEXES = { M: "Male", F: "Female", O: "Other" };
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// 19800417 -> "17 Apr 1980": day, month name, year (no 04/05 ambiguity).
function dicomDate(value) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(value || "");
  if (!m || +m[2] < 1 || +m[2] > 12) return value || "";
  return `${+m[3]} ${MONTHS[+m[2] - 1]} ${m[1]}`;
}

function studyText(studies) {
  if (studies === null) return "Not available now: the PACS did not answer. The disc can still be made.";
  if (!studies.length) return "No images found in the PACS for this number.";
  return studies.map((s) => [dicomDate(s.date), (s.modalities || []).join("/"), s.description,
                             s.instances == null ? "" : `${s.instances} images`]
    .filter(Boolean).join(", ")).join("; ");
}

function renderPreview(preview) {
  const rows = $("preview-rows");
  rows.replaceChildren(...preview.accessions.map((a) => el("tr", {},
    el("td", { text: a.accession_number }), el("td", { text: a.patient_name }),
    el("td", { text: a.patient_id }), el("td", { text: dicomDate(a.birth_date) || "Unknown" }),
    el("td", { text: SEXES[a.sex] || a.sex || "Unknown" }), el("td", { text: studyText(a.studies) }))));
  const ok = preview.same_patient;
  $("preview-reason").textContent = ok ? "" : `Refused: ${preview.reason}`;
  show("preview-reason", !ok);
  show("confirm", ok);
  show("preview-actions", true);
  show("forward-form", false);
  show("preview", true);
  if (ok) {
    confirmed = preview.accessions.map((a) => a.accession_number);
    loadPeers();
  }
  $("preview-title").focus();
}

function changeNumbers() {
  confirmed = null;
  show("preview", false);
  $("accessions").focus();
}

// -- step 3: the disc --------------------------------------------------------------------------

async function makeDisc() {
  if (!confirmed) return;
  say("");
  const body = { accession_numbers: confirmed, profile: $("profile").value, format: $("format").value };
  const email = $("email").value.trim();
  if (email) body.email = email;
  busy($("confirm"), true);
  try {
    const job = await api("POST", "/v1/packages", body);
    history.replaceState(null, "", `/?job=${encodeURIComponent(job.id)}`);
    show("preview-actions", false);   // the choice is made: only "Next patient" starts over
    show("forward-form", false);
    follow(job.id);
  } catch (err) {
    say(`The disc was not started: ${err.message}`);
  } finally {
    busy($("confirm"), false);
  }
}

function follow(jobId) {
  clearTimeout(pollTimer);
  show("job", true);
  show("job-done", false);
  $("job-phase").textContent = "Starting";
  $("job-progress").removeAttribute("value");
  $("job-title").focus();
  poll(jobId);
}

async function poll(jobId) {
  let status;
  try {
    status = await api("GET", `/v1/packages/${encodeURIComponent(jobId)}`);
  } catch (err) {
    if (err.status === 404 || err.status === 422 || err.status === 401) {
      say(`This disc cannot be followed: ${err.message}`); show("job", false); return;
    }
    $("job-phase").textContent = `Waiting for the packager (${err.message})`;
    pollTimer = setTimeout(() => poll(jobId), 2000);
    return;
  }
  renderStatus(status);
  if (status.state === "queued" || status.state === "running") {
    pollTimer = setTimeout(() => poll(jobId), 1000);
  } else {
    loadRecent();
  }
}

function mediaText(count, medium) {
  const names = MEDIA[medium] || [medium, `${medium}s`];
  return `${count} ${count === 1 ? names[0] : names[1]}`;
}

// The plan, before the build starts: "3 DVDs: disc 1: 2 studies, 140 images, 4.5 GB; ...".
function renderPlan(plan) {
  const box = $("job-plan");
  if (!plan || !plan.discs || plan.discs.length < 2) { box.hidden = true; box.textContent = ""; return; }
  const parts = plan.discs.map((d) => `Disc ${d.number}: ${d.study_uids.length} ` +
    `${d.study_uids.length === 1 ? "study" : "studies"}, ${d.instances} images, about ${mb(d.estimated_bytes)}`);
  box.textContent = `${mediaText(plan.discs.length, plan.medium)}: the studies do not fit on one ` +
    `${(MEDIA[plan.medium] || [plan.medium])[0]}. Each disc opens on its own. ${parts.join("; ")}.`;
  box.hidden = false;
}

function renderStatus(s) {
  renderPlan(s.plan);
  const c = s.counts || {};
  const progress = $("job-progress");
  let phase = PHASES[s.phase] || (s.state === "queued" ? "Waiting to start" : "Working");
  let counts = "";
  let value = null;
  let max = 1;
  if (s.phase === "retrieve" && c.expected) {
    counts = `${c.received || 0} of ${c.expected} images received`;
    value = c.received || 0; max = c.expected;
  } else if (s.phase === "build" && c.files) {
    counts = `${c.files_written || 0} of ${c.files} files written`;
    if (c.discs > 1) counts = `Disc ${c.disc || 1} of ${c.discs}: ${counts}`;
    value = c.files_written || 0; max = c.files;
  } else if (s.phase === "upload") {
    counts = mb(c.image_bytes);
  }
  if (s.state === "failed") {
    phase = "Failed";
    say(`The disc could not be made: ${s.error || "no reason given"}`);
  }
  if (s.state === "succeeded") {
    phase = "Ready";
    value = 1; max = 1;
    const discs = s.discs || [];
    counts = discs.length > 1 ? `${discs.length} discs, ${mb(discs.reduce((t, d) => t + d.size, 0))}`
      : `${s.filename}, ${mb(s.size)}`;
    showDone(s);
  }
  $("job-phase").textContent = phase;
  $("job-counts").textContent = counts;
  progress.max = max;
  if (value === null) progress.removeAttribute("value"); else progress.value = value;
}

function showDone(s) {
  const link = $("download");
  const discs = s.discs || [];
  const set = discs.length > 1;
  $("disc-links").replaceChildren(...(set ? discs : []).map((d) => el("li", {},
    el("a", { class: "button", href: d.download_url,
              text: `Download disc ${d.number} of ${d.total}: ${d.filename} (${mb(d.size)})` }))));
  show("disc-links", set);
  link.hidden = set;
  link.href = s.download_url;
  link.textContent = `Download ${s.filename} (${mb(s.size)})`;
  const view = $("view-online");
  view.hidden = !s.view_url;
  if (s.view_url) view.href = s.view_url;
  $("job-expiry").textContent = set ? `The links work until ${when(s.expires_at)}.`
    : `The link works until ${when(s.expires_at)}.`;
  const mail = s.email || {};
  $("job-mail").textContent = mail.state === "sent" ? "The link was e-mailed to the patient."
    : mail.state === "failed" ? `The e-mail was not sent: ${mail.error}` : "";
  $("mail-form").dataset.job = s.id;
  mailSwitch("mail-to", "mail-to-off", "mail-send");
  if (!$("mail-to").value) $("mail-to").value = $("email").value.trim();
  const first = $("job-done").hidden;
  show("job-done", true);
  if (first) (set ? $("disc-links").querySelector("a") : link).focus();
}

async function mailLink(jobId, to) {
  const sent = await api("POST", `/v1/packages/${encodeURIComponent(jobId)}/email`, { email: to });
  say(`The link was sent by e-mail (valid until ${when(sent.expires_at)}).`, "info");
}

async function mailFromForm(event) {
  event.preventDefault();
  try {
    await mailLink(event.target.dataset.job, $("mail-to").value.trim());
  } catch (err) {
    say(`The e-mail was not sent: ${err.message}`);
  }
}

// -- send to PACS ------------------------------------------------------------------------------

async function loadPeers() {
  let peers;
  try {
    peers = await api("GET", "/v1/peers");
  } catch (err) {
    show("forward-form", false);
    return;   // no forwarder: the page offers discs only
  }
  if (!peers.length) return;
  $("peer").replaceChildren(...peers.map((p) => el("option", {
    value: p.name, text: `${p.name} (${p.aet})${p.reachable ? "" : " - not answering"}`,
  })));
  show("forward-form", true);
}

async function sendToPacs(event) {
  event.preventDefault();
  if (!confirmed) return;
  say("");
  busy($("forward"), true);
  try {
    const job = await api("POST", "/v1/forwards", { accession_numbers: confirmed, destination: $("peer").value });
    show("forward-job", true);
    $("forward-title").focus();
    pollForward(job.id);
  } catch (err) {
    say(`Not sent to the PACS: ${err.message}`);
  } finally {
    busy($("forward"), false);
  }
}

async function pollForward(jobId) {
  clearTimeout(forwardTimer);
  let s;
  try {
    s = await api("GET", `/v1/forwards/${encodeURIComponent(jobId)}`);
  } catch (err) {
    $("forward-phase").textContent = `Waiting for the forwarder (${err.message})`;
    forwardTimer = setTimeout(() => pollForward(jobId), 2000);
    return;
  }
  const c = s.counts || {};
  const progress = $("forward-progress");
  const done = (c.acknowledged || 0) + (c.warning || 0);
  if (c.instances) { progress.max = c.instances; progress.value = done; }
  let text = `${s.state}: ${done} of ${c.instances || "?"} images accepted by the PACS`;
  if (s.state === "succeeded") text = `Sent: ${done} of ${c.instances} images accepted by the PACS`;
  if (s.state === "failed") { text = "Failed"; say(`Sending to the PACS failed: ${s.error || "no reason given"}`); }
  $("forward-phase").textContent = text;
  if (s.state === "queued" || s.state === "running") forwardTimer = setTimeout(() => pollForward(jobId), 1000);
}

// -- recent packages ---------------------------------------------------------------------------

async function loadRecent() {
  let rows;
  try {
    rows = await api("GET", "/v1/packages");
  } catch (err) {
    if (err.status !== 401) say(`The list of packages is not available: ${err.message}`);
    return;
  }
  $("recent-rows").replaceChildren(...rows.map(recentRow));
  if (!rows.length) $("recent-rows").append(el("tr", {}, el("td", { colspan: "7", text: "No packages yet." })));
}

function nextPatient() {
  clearTimeout(pollTimer);
  clearTimeout(forwardTimer);
  confirmed = null;
  say("");
  for (const id of ["accessions", "email", "mail-to"]) $(id).value = "";
  for (const id of ["preview-rows", "preview-reason", "job-phase", "job-counts", "job-expiry",
                    "job-mail", "forward-phase"]) $(id).replaceChildren();
  $("download").removeAttribute("href");
  $("download").textContent = "Download";
  $("download").hidden = false;
  $("disc-links").replaceChildren();
  show("disc-links", false);
  renderPlan(null);
  $("view-online").removeAttribute("href");
  delete $("mail-form").dataset.job;
  for (const id of ["preview", "job", "job-done", "forward-job"]) show(id, false);
  history.replaceState(null, "", "/");
  $("accessions").focus();
}

// Mail off: the field and its button are disabled, with a sentence saying what to do instead.
function mailSwitch(input, hint, button) {
  $(input).disabled = !mailEnabled;
  if (button) $(button).disabled = !mailEnabled;
  $(hint).textContent = mailEnabled ? "" : MAIL_OFF;
  show(hint, !mailEnabled);
}

const MAIL_OFF = "Sending e-mail is not set up on this server. Give the patient the download " +
  "link or the disc instead, or ask IT to set up e-mail.";

function recentRow(p) {
  const actions = el("td");
  const status = p.state === "failed" ? `Failed: ${p.error || "no reason given"}` : (STATES[p.state] || p.state);
  if (p.state === "succeeded") {
    actions.append(
      el("button", { type: "button", class: "small secondary", text: "New link",
                     on: { click: () => resign(p, actions) } }),
      ...(mailEnabled ? [el("button", { type: "button", class: "small secondary", text: "E-mail",
                     on: { click: () => mailForm(p, actions) } })] : []));
  } else if (p.state === "queued" || p.state === "running") {
    actions.append(el("button", { type: "button", class: "small secondary", text: "Follow",
                                  on: { click: () => follow(p.id) } }));
  }
  return el("tr", {},
    el("td", { text: when(p.created_at) }),
    el("td", { text: p.patient_name || "" }),
    el("td", { text: (p.filename || (p.accession_numbers || []).join(", ")) +
                     (p.discs > 1 ? ` (${p.discs} discs)` : "") }),
    el("td", { text: status }), el("td", { text: mb(p.size) }),
    el("td", { text: when(p.link_expires_at) }), actions);
}

async function resign(p, cell) {
  try {
    const fresh = await api("POST", `/v1/packages/${encodeURIComponent(p.id)}/link`);
    const link = el("a", { href: fresh.download_url, text: `Download (until ${when(fresh.expires_at)})` });
    cell.replaceChildren(link);
    if (fresh.view_url) {
      cell.append(" ", el("a", { href: fresh.view_url, target: "_blank", rel: "noopener noreferrer",
                                 text: "View online" }));
    }
    link.focus();
  } catch (err) {
    say(`No new link: ${err.message}`);
  }
}

function mailForm(p, cell) {
  const input = el("input", { type: "email", "aria-label": `E-mail address for ${p.filename}`, inputmode: "email" });
  const form = el("form", { on: { submit: async (event) => {
    event.preventDefault();
    try { await mailLink(p.id, input.value.trim()); cell.replaceChildren(el("span", { text: "E-mailed" })); }
    catch (err) { say(`The e-mail was not sent: ${err.message}`); }
  } } }, input, el("button", { type: "submit", class: "small", text: "Send" }));
  cell.replaceChildren(form);
  input.focus();
}

// -- start -------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem("dicomiso-token", $("token").value);
  $("token").value = "";
  show("auth", false);
  say("");
  await start();
}

async function start() {
  try {
    const session = await api("GET", "/v1/session");
    $("user").textContent = `Signed in as ${session.user}`;
    mailEnabled = Boolean(session.mail);
    mailSwitch("email", "mail-off");
    $("profile").value = session.default_profile;
  } catch (err) {
    if (err.status === 401) return;
    say(err.message);
  }
  loadRecent();
  const job = new URLSearchParams(location.search).get("job");
  if (job && JOB_ID.test(job)) follow(job);
  else if (location.pathname !== "/") history.replaceState(null, "", "/");
  if (accessionList().length && !job) $("check").click();
  else if (!job) $("accessions").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("order").addEventListener("submit", checkPatient);
  $("confirm").addEventListener("click", makeDisc);
  $("change").addEventListener("click", changeNumbers);
  $("forward-form").addEventListener("submit", sendToPacs);
  $("mail-form").addEventListener("submit", mailFromForm);
  $("auth-form").addEventListener("submit", signIn);
  $("refresh").addEventListener("click", loadRecent);
  $("next-patient").addEventListener("click", nextPatient);
  start();
});
