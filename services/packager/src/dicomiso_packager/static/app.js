// The staff page: plain JavaScript against the packager's own JSON API (same origin).
// Every value from the server is put into the page with textContent, never as markup, and
// the page's URL only ever holds a job id (?job=...), never an accession number or a name.
"use strict";

const $ = (id) => document.getElementById(id);
const JOB_ID = /^[0-9a-f]{32}$/;
// The page's language and its texts: the server put them in (web.py, i18n/page.py).
const LANG = document.documentElement.lang || "en";
const LOCALE = LANG === "id" ? "id-ID" : "en-GB";   // Babel's en_GB / id on the server
let MESSAGES = {};
// T("received", {done: 3, total: 9}) -> "3 of 9 images received" in the page's language.
function T(key, values = {}) {
  const text = Object.prototype.hasOwnProperty.call(MESSAGES, key) ? MESSAGES[key] : key;
  return text.replace(/\{(\w+)\}/g, (all, name) => (name in values ? String(values[name]) : all));
}
const PHASES = ["lookup", "retrieve", "plan", "build", "upload"];
// A medium in the page's words, one or several: "1 DVD", "3 DVDs", "2 USB sticks".
const MEDIA = { CD: "cd", DVD: "dvd", BD: "bd", USB: "usb" };
let confirmed = null;   // the accession numbers the clerk confirmed, in order
let pollTimer = null;
// Each status request is a long poll: the packager holds it (up to 10 s) until the job's
// phase or state changes, so the link shows when the disc is done. An answer that changed
// nothing (another replica runs the job) is followed by the rest of a second's pause.
let lastSeen = null;
let forwardTimer = null;
let mailEnabled = true;   // from /v1/session
let ROLES = null;   // a signed-in staff member's roles (sign-in mode); null: the token's, all
// "oidc": the hospital's identity provider signs staff in (a session cookie, /login);
// "token": the access code typed into the page (labs). The server says which (web.py).
const SIGNIN = document.body ? document.body.dataset.signin : "token";
const STATES = ["queued", "running", "succeeded", "failed"];
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

const num = (n, digits = 0) => new Intl.NumberFormat(LOCALE,
  { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(n);

function mb(bytes) { return bytes == null ? "" : `${num(bytes / 1e6, 1)} MB`; }

// 5 Dec 2026, 08:33 GMT+7 / 5 Des 2026, 08.33 WIB: day month year, 24 h, the zone said;
// never 12/5/2026. The browser's CLDR data, as Babel's on the server.
const WHEN = new Intl.DateTimeFormat(LOCALE, { day: "numeric", month: "short", year: "numeric",
  hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" });
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : WHEN.format(d);
}


async function api(method, path, body) {
  // The header no cross-site form can send: the session cookie counts only with it (CSRF).
  const headers = { "Accept": "application/json", "Accept-Language": LANG,
                    "X-Requested-With": "dicom-iso" };
  const token = sessionStorage.getItem("dicomiso-token");
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, T("unreachable"));
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (response.status === 401) {
    show("auth", true);
    if (signInWithIdp()) {
      for (const id of ["order-section", "recent-section", "sign-out-row"]) show(id, false);
      $("user").textContent = "";
      $("sign-in-link").focus();
      throw new ApiError(401, T("sign_in_idp_first"));
    }
    $("token").focus();
    throw new ApiError(401, T("sign_in_first"));
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : T("http_error", { status: response.status });
    throw new ApiError(response.status, detail);
  }
  return data;
}

// A number split by a space or cut short ("MR 001", "MR"): say so rather than guess.
function malformed(text) {
  const found = FRAGMENT.exec(text);
  if (!found) return null;
  const shown = found[2] ? `${found[1]} ${found[2]}` : found[1];
  return T("malformed", { number: shown });
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
  if (!accessions.length) { say(T("enter_one")); $("accessions").focus(); return; }
  const bad = malformed($("accessions").value);
  if (bad) { say(bad); $("accessions").focus(); return; }
  busy($("check"), true);
  try {
    const preview = await api("POST", "/v1/previews", { accession_numbers: accessions });
    renderPreview(preview);
  } catch (err) {
    say(err.status === 404 ? err.message : T("not_checked", { reason: err.message }));
    $("accessions").focus();
  } finally {
    busy($("check"), false);
  }
}

const SEXES = ["M", "F", "O"];
const DAY = new Intl.DateTimeFormat(LOCALE, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });

// 19800417 -> "17 Apr 1980": day, month name, year (no 04/05 ambiguity).
function dicomDate(value) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(value || "");
  if (!m || +m[2] < 1 || +m[2] > 12) return value || "";
  return DAY.format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])));
}

function studyText(studies, samePatient) {
  if (studies === null) return T(samePatient ? "studies_unavailable" : "studies_not_asked");
  if (!studies.length) return T("no_images");
  return studies.map((s) => [dicomDate(s.date), (s.modalities || []).join("/"), s.description,
                             s.instances == null ? "" : T("images", { count: num(s.instances) })]
    .filter(Boolean).join(", ")).join("; ");
}

function renderPreview(preview) {
  const rows = $("preview-rows");
  rows.replaceChildren(...preview.accessions.map((a) => el("tr", {},
    el("td", { text: a.accession_number }), el("td", { text: a.patient_name }),
    el("td", { text: a.patient_id }), el("td", { text: dicomDate(a.birth_date) || T("unknown") }),
    el("td", { text: SEXES.includes(a.sex) ? T(`sex_${a.sex}`) : a.sex || T("unknown") }),
    el("td", { text: studyText(a.studies, preview.same_patient) }))));
  const ok = preview.same_patient;
  $("preview-reason").textContent = ok ? "" : T("refused", { reason: preview.reason });
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
    langLinks(job.id);
    show("preview-actions", false);   // the choice is made: only "Next patient" starts over
    show("forward-form", false);
    follow(job.id);
  } catch (err) {
    say(T("not_started", { reason: err.message }));
  } finally {
    busy($("confirm"), false);
  }
}

function follow(jobId) {
  clearTimeout(pollTimer);
  lastSeen = null;
  show("job", true);
  show("job-done", false);
  $("job-phase").textContent = T("starting");
  $("job-progress").removeAttribute("value");
  $("job-title").focus();
  poll(jobId);
}

async function poll(jobId) {
  let status;
  const asked = Date.now();
  try {
    status = await api("GET", `/v1/packages/${encodeURIComponent(jobId)}?wait=10`);
  } catch (err) {
    if (err.status === 404 || err.status === 422 || err.status === 401) {
      say(T("cannot_follow", { reason: err.message })); show("job", false); return;
    }
    $("job-phase").textContent = T("waiting_service", { reason: err.message });
    pollTimer = setTimeout(() => poll(jobId), 2000);
    return;
  }
  renderStatus(status);
  if (status.state === "queued" || status.state === "running") {
    const seen = `${status.state}/${status.phase}`;
    const pause = seen === lastSeen ? Math.max(0, 1000 - (Date.now() - asked)) : 0;
    lastSeen = seen;
    pollTimer = setTimeout(() => poll(jobId), pause);
  } else {
    loadRecent();
  }
}

// "DVD", "Blu-ray disc", "USB stick": the singular without its number.
function mediumName(medium) {
  return MEDIA[medium] ? T(`medium_${MEDIA[medium]}_one`, { count: "" }).trim() : medium;
}

function mediaText(count, medium) {
  const key = MEDIA[medium];
  if (!key) return `${count} ${medium}`;
  return T(count === 1 ? `medium_${key}_one` : `medium_${key}_many`, { count: num(count) });
}

// The plan, before the build starts: "3 DVDs: ... Disc 1: 2 studies, 140 images, about 4.5 GB; ...".
function renderPlan(plan) {
  const box = $("job-plan");
  if (!plan || !plan.discs || plan.discs.length < 2) { box.hidden = true; box.textContent = ""; return; }
  const parts = plan.discs.map((d) => T(d.study_uids.length === 1 ? "plan_disc_one" : "plan_disc", { number: d.number, studies: num(d.study_uids.length),
    images: num(d.instances), size: mb(d.estimated_bytes) }));
  box.textContent = T("plan", { media: mediaText(plan.discs.length, plan.medium),
                                one: mediumName(plan.medium), discs: parts.join("; ") });
  box.hidden = false;
}

// The services give their reasons in English and for IT; the known ones are said for a
// clerk first, in the page's language, with what to do; the original stays as the details.
const WHY = [[/unreachable|no answer|timed out/i, "why_pacs_down"], [/refused/i, "why_pacs_refused"],
             [/no study found|no study .* in PACS/i, "why_not_found"]];
function failure(error) {
  if (!error) return T("no_reason");
  const known = WHY.find(([pattern]) => pattern.test(error));
  return known ? `${T(known[1])} ${T("details", { reason: error })}` : T("why_other", { reason: error });
}

function renderStatus(s) {
  renderPlan(s.plan);
  const c = s.counts || {};
  const progress = $("job-progress");
  let phase = PHASES.includes(s.phase) ? T(`phase_${s.phase}`)
    : T(s.state === "queued" ? "state_queued" : "working");
  let counts = "";
  let value = null;
  let max = 1;
  if (s.phase === "retrieve" && c.expected) {
    counts = T("received", { done: num(c.received || 0), total: num(c.expected) });
    value = c.received || 0; max = c.expected;
  } else if (s.phase === "build" && c.files) {
    counts = T("written", { done: num(c.files_written || 0), total: num(c.files) });
    if (c.discs > 1) counts = T("disc_progress", { number: c.disc || 1, total: c.discs, counts });
    value = c.files_written || 0; max = c.files;
  } else if (s.phase === "upload") {
    counts = mb(c.image_bytes);
  }
  if (s.state === "failed") {
    phase = T("state_failed");
    say(T("failed_reason", { reason: failure(s.error) }));
  }
  if (s.state === "succeeded") {
    phase = T("state_succeeded");
    value = 1; max = 1;
    const discs = s.discs || [];
    counts = discs.length > 1
      ? T("discs_size", { count: num(discs.length), size: mb(discs.reduce((t, d) => t + d.size, 0)) })
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
              text: T("download_disc", { number: d.number, total: d.total, file: d.filename,
                                         size: mb(d.size) }) }))));
  show("disc-links", set);
  link.hidden = set;
  link.href = s.download_url;
  link.textContent = T("download_file", { file: s.filename, size: mb(s.size) });
  const view = $("view-online");
  view.hidden = !s.view_url;
  if (s.view_url) view.href = s.view_url;
  $("job-expiry").textContent = T(set ? "links_until" : "link_until", { when: when(s.expires_at) });
  const mail = s.email || {};
  $("job-mail").textContent = mail.state === "sent" ? T("mailed")
    : mail.state === "failed" ? T("mail_failed", { reason: mail.error }) : "";
  $("mail-form").dataset.job = s.id;
  $("handout-show").dataset.job = s.id;
  mailSwitch("mail-to", "mail-to-off", "mail-send");
  if (!$("mail-to").value) $("mail-to").value = $("email").value.trim();
  const first = $("job-done").hidden;
  show("job-done", true);
  if (first) (set ? $("disc-links").querySelector("a") : link).focus();
}

async function mailLink(jobId, to) {
  const sent = await api("POST", `/v1/packages/${encodeURIComponent(jobId)}/email`,
                         { email: to, language: LANG });
  say(T("mail_sent", { when: when(sent.expires_at) }), "info");
}

async function mailFromForm(event) {
  event.preventDefault();
  try {
    await mailLink(event.target.dataset.job, $("mail-to").value.trim());
  } catch (err) {
    say(T("mail_failed", { reason: err.message }));
  }
}

// -- send to PACS ------------------------------------------------------------------------------

async function loadPeers() {
  if (ROLES && !ROLES.includes("sender")) { show("forward-form", false); return; }
  let peers;
  try {
    peers = await api("GET", "/v1/peers");
  } catch (err) {
    show("forward-form", false);
    return;   // no forwarder: the page offers discs only
  }
  if (!peers.length) return;
  $("peer").replaceChildren(...peers.map((p) => el("option", {
    value: p.name, text: `${p.name} (${p.aet})${p.reachable ? "" : ` - ${T("not_answering")}`}`,
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
    say(T("not_sent_pacs", { reason: err.message }));
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
    $("forward-phase").textContent = T("waiting_forwarder", { reason: err.message });
    forwardTimer = setTimeout(() => pollForward(jobId), 2000);
    return;
  }
  const c = s.counts || {};
  const progress = $("forward-progress");
  const done = (c.acknowledged || 0) + (c.warning || 0);
  if (c.instances) { progress.max = c.instances; progress.value = done; }
  const numbers = { done: num(done), total: c.instances ? num(c.instances) : "?" };
  let text = T("forward_progress", numbers);
  if (s.state === "succeeded") text = T("forward_sent", numbers);
  if (s.state === "failed") {
    text = T("state_failed");
    say(T("forward_failed", { reason: s.error || T("no_reason") }));
  }
  $("forward-phase").textContent = text;
  if (s.state === "queued" || s.state === "running") forwardTimer = setTimeout(() => pollForward(jobId), 1000);
}

// -- recent packages ---------------------------------------------------------------------------

async function loadRecent() {
  let rows;
  try {
    rows = await api("GET", "/v1/packages");
  } catch (err) {
    if (err.status !== 401) say(T("recent_unavailable", { reason: err.message }));
    return;
  }
  $("recent-rows").replaceChildren(...rows.map(recentRow));
  if (!rows.length) $("recent-rows").append(el("tr", {}, el("td", { colspan: "7", text: T("no_packages") })));
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
  $("download").textContent = T("download");
  $("download").hidden = false;
  $("disc-links").replaceChildren();
  show("disc-links", false);
  renderPlan(null);
  $("view-online").removeAttribute("href");
  delete $("mail-form").dataset.job;
  delete $("handout-show").dataset.job;
  clearHandout();
  for (const id of ["preview", "job", "job-done", "forward-job", "handout"]) show(id, false);
  history.replaceState(null, "", "/");
  langLinks(null);
  $("accessions").focus();
}

// Mail off: the field and its button are disabled, with a sentence saying what to do instead.
function mailSwitch(input, hint, button) {
  $(input).disabled = !mailEnabled;
  if (button) $(button).disabled = !mailEnabled;
  $(hint).textContent = mailEnabled ? "" : T("mail_off");
  show(hint, !mailEnabled);
}

function recentRow(p) {
  const actions = el("td");
  const status = p.state === "failed" ? T("failed_with", { reason: p.error || T("no_reason") })
    : (STATES.includes(p.state) ? T(`state_${p.state}`) : p.state);
  if (p.state === "succeeded") {
    actions.append(
      el("button", { type: "button", class: "small secondary", text: T("new_link"),
                     on: { click: () => resign(p, actions) } }),
      ...(mailEnabled ? [el("button", { type: "button", class: "small secondary", text: T("email_button"),
                     on: { click: () => mailForm(p, actions) } })] : []));
  } else if (p.state === "queued" || p.state === "running") {
    actions.append(el("button", { type: "button", class: "small secondary", text: T("follow"),
                                  on: { click: () => follow(p.id) } }));
  }
  return el("tr", {},
    el("td", { text: when(p.created_at) }),
    el("td", { text: p.patient_name || "" }),
    el("td", { text: (p.filename || (p.accession_numbers || []).join(", ")) +
                     (p.discs > 1 ? ` ${T("recent_discs", { count: num(p.discs) })}` : "") }),
    el("td", { text: status }), el("td", { text: mb(p.size) }),
    el("td", { text: when(p.link_expires_at) }), actions);
}

async function resign(p, cell) {
  try {
    const fresh = await api("POST", `/v1/packages/${encodeURIComponent(p.id)}/link`);
    const link = el("a", { href: fresh.download_url, text: T("download_until", { when: when(fresh.expires_at) }) });
    cell.replaceChildren(link);
    if (fresh.view_url) {
      cell.append(" ", el("a", { href: fresh.view_url, target: "_blank", rel: "noopener noreferrer",
                                 text: $("view-online").textContent }));
    }
    link.focus();
  } catch (err) {
    say(T("no_new_link", { reason: err.message }));
  }
}

function mailForm(p, cell) {
  const input = el("input", { type: "email", "aria-label": T("mail_for", { file: p.filename }), inputmode: "email" });
  const form = el("form", { on: { submit: async (event) => {
    event.preventDefault();
    try { await mailLink(p.id, input.value.trim()); cell.replaceChildren(el("span", { text: T("emailed") })); }
    catch (err) { say(T("mail_failed", { reason: err.message })); }
  } } }, input, el("button", { type: "submit", class: "small", text: T("send") }));
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

function signInWithIdp() {
  if (SIGNIN !== "oidc" || sessionStorage.getItem("dicomiso-token")) return false;
  show("auth-idp", true);
  show("auth-form", false);
  return true;
}

// What the roles allow (the routes check them all the same): clerk makes discs, sender
// sends to a PACS; sections the caller cannot use are not shown.
function showRoles(roles) {
  const clerk = roles.includes("clerk");
  for (const id of ["order-section", "recent-section"]) show(id, clerk);
  if (!roles.includes("sender")) show("forward-form", false);
  if (!clerk) say(T("no_clerk_role"), "info");
  return clerk;
}

async function start() {
  let clerk = true;
  try {
    const session = await api("GET", "/v1/session");
    $("user").textContent = T("signed_in", { user: session.user });
    if (SIGNIN === "oidc" && !sessionStorage.getItem("dicomiso-token")) {
      show("sign-out-row", true);
      ROLES = session.roles || [];
      clerk = showRoles(ROLES);
    }
    mailEnabled = Boolean(session.mail);
    mailSwitch("email", "mail-off");
    $("profile").value = session.default_profile;
  } catch (err) {
    if (err.status === 401) return;
    say(err.message);
  }
  if (!clerk) return;
  loadRecent();
  const job = new URLSearchParams(location.search).get("job");
  if (job && JOB_ID.test(job)) { history.replaceState(null, "", `/?job=${job}`); langLinks(job); follow(job); }
  else if (location.pathname !== "/" || location.search) history.replaceState(null, "", "/");
  if (accessionList().length && !job) $("check").click();
  else if (!job) $("accessions").focus();
}

// -- the hand-out ------------------------------------------------------------------------------

// The language switch keeps the disc being followed (its job id, nothing else, in the URL).
function langLinks(jobId) {
  for (const a of document.querySelectorAll("nav.lang a[data-lang]")) {
    a.href = `/?lang=${a.dataset.lang}` + (jobId ? `&job=${encodeURIComponent(jobId)}` : "");
  }
}

function clearHandout() {
  for (const id of ["handout-org", "handout-title", "handout-intro", "handout-gives", "handout-steps",
                    "handout-link-label", "handout-link", "handout-expiry", "handout-privacy",
                    "handout-contact", "handout-qr"]) $(id).replaceChildren();
}

async function showHandout() {
  const jobId = $("handout-show").dataset.job;
  if (!jobId) return;
  let h;
  try {
    h = await api("GET", `/v1/packages/${encodeURIComponent(jobId)}/handout?lang=${LANG}`);
  } catch (err) {
    say(T("handout_failed", { reason: err.message }));
    return;
  }
  clearHandout();
  $("handout-org").textContent = h.contact[0] || "";
  $("handout-title").textContent = h.title;
  $("handout-intro").textContent = h.intro;
  $("handout-gives").textContent = h.gives;
  $("handout-steps").replaceChildren(...h.steps.map((step) => el("li", { text: step })));
  $("handout-link-label").textContent = h.link_label;
  $("handout-link").textContent = h.link;
  $("handout-expiry").textContent = h.expiry;
  $("handout-privacy").textContent = h.privacy;
  $("handout-contact").replaceChildren(...h.contact.flatMap((line, i) => (i ? [el("br"), line] : [line])));
  // The QR code: one SVG path from the server's matrix, drawn with setAttribute only.
  const svg = $("handout-qr");
  const ns = "http://www.w3.org/2000/svg";
  svg.setAttribute("viewBox", `0 0 ${h.qr.size} ${h.qr.size}`);
  svg.setAttribute("aria-label", T("qr_label"));
  svg.setAttribute("shape-rendering", "crispEdges");
  const back = document.createElementNS(ns, "rect");
  for (const [k, v] of Object.entries({ width: h.qr.size, height: h.qr.size, fill: "#fff" })) back.setAttribute(k, v);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", h.qr.path);
  path.setAttribute("fill", "#000");
  svg.replaceChildren(back, path);
  show("handout", true);
  $("handout-title").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  try { MESSAGES = JSON.parse($("messages").textContent); } catch (err) { MESSAGES = {}; }
  $("handout-show").addEventListener("click", showHandout);
  $("handout-print").addEventListener("click", () => window.print());
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
