// The viewer's page: choosing the folder (or the study from the page in online mode), the
// list of series with thumbnails, and one series as a stack on a canvas. Every DICOM value
// reaches the page through textContent, never as markup.
import { decodeFrame, SYNTAXES, Unsupported } from "./codecs.js";
import { describe, frameBytes, imageInfo, parse, personName } from "./dicom.js";
import { defaultWindow, isColor, paint, storedRange, windowValue } from "./render.js";
import { fromDrop, fromFileList, scan } from "./scan.js";

const $ = (id) => document.getElementById(id);
const PRESETS = {
  soft: { width: 400, center: 40 },
  lung: { width: 1500, center: -600 },
  bone: { width: 2000, center: 300 },
  brain: { width: 80, center: 40 },
};
const stats = { paints: 0, lastPaint: 0, chosenAt: 0, firstImageAt: 0 };
const state = { patient: null, studies: [], series: null, stack: [], index: 0, win: null, view: null, frame: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const date = (d) => (/^\d{8}$/.test(d || "") ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || "");

// -- loading instances, with a small cache ------------------------------------------------

const CACHE = 48;
const parsed = new Map(); // instance -> Promise<{ds, image, meta}>
const decoded = new Map(); // "i:frame" key -> Promise<{decoded, range}>

function remember(map, key, make) {
  if (map.has(key)) {
    const v = map.get(key);
    map.delete(key);
    map.set(key, v);
    return v;
  }
  const v = make();
  map.set(key, v);
  v.catch(() => {});
  while (map.size > CACHE) map.delete(map.keys().next().value);
  return v;
}

async function bytesOf(instance) {
  if (instance.file) return new Uint8Array(await instance.file.arrayBuffer());
  const response = await fetch(instance.url, { credentials: "same-origin", cache: "force-cache" });
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function load(instance) {
  return remember(parsed, instance, async () => {
    const ds = await parse(await bytesOf(instance));
    const meta = describe(ds);
    if (!meta.hasPixels) throw new Unsupported("it holds no image (a report, key object or presentation state)");
    const image = imageInfo(ds);
    if (!SYNTAXES[image.transferSyntax]) {
      throw new Unsupported(`its transfer syntax ${image.transferSyntax} is not one this viewer can decode`);
    }
    if (image.photometric.startsWith("YBR_") && image.photometric !== "YBR_FULL" && SYNTAXES[image.transferSyntax].kind === "native") {
      throw new Unsupported(`its colour model ${image.photometric} is not one this viewer can show`);
    }
    return { ds, image, meta };
  });
}

function frame(instance, index) {
  return remember(decoded, `${instance.key}:${index}`, async () => {
    const { ds, image } = await load(instance);
    const d = await decodeFrame(frameBytes(ds, image, index), image);
    return { decoded: d, range: isColor(image) ? [0, 255] : storedRange(d.pixels), image };
  });
}

/** "cannot be shown: <why>" for what the viewer does not support, "cannot be read (...)"
 * for a damaged file. dicom-parser throws strings or {exception} objects, not Errors. */
function problem(err) {
  if (err instanceof Unsupported) return `cannot be shown: ${err.message}`;
  const why = (err && (err.message || err.exception)) || String(err);
  return `cannot be read (the file is damaged or incomplete: ${String(why).slice(0, 120)})`;
}

// -- the list ------------------------------------------------------------------------------

function seriesLabel(s) {
  const n = s.instances.length;
  return [s.modality, s.number != null ? `#${s.number}` : "", s.description].filter(Boolean).join(" ")
    + ` \u2014 ${n} file${n === 1 ? "" : "s"}`;
}

function showList() {
  const nav = $("list");
  nav.replaceChildren();
  nav.hidden = false;
  let key = 0;
  for (const study of state.studies) {
    nav.append(el("h3", {}, [date(study.date), study.description].filter(Boolean).join(" ") || "Study"));
    for (const series of study.series) {
      series.study = study;
      for (const inst of series.instances) inst.key = `k${key++}`;
      const thumb = el("div", { class: "nothumb" }, "\u2026");
      const text = el("span", { class: "text" }, seriesLabel(series));
      const button = el("button", { class: "series", "data-series": series.uid }, thumb, text);
      button.addEventListener("click", () => openSeries(series));
      series.button = button;
      series.thumb = thumb;
      series.text = text;
      for (const note of series.notes || []) text.append(el("span", { class: "problem" }, note));
      nav.append(button);
    }
  }
  if (state.unreadable && state.unreadable.length) {
    nav.append(el("p", { class: "unreadable" }, `${state.unreadable.length} file(s) are not DICOM or cannot be read: ${state.unreadable.slice(0, 5).join(", ")}${state.unreadable.length > 5 ? ", \u2026" : ""}`));
  }
  const p = state.patient;
  $("patient").textContent = p ? [p.name, p.id ? `(${p.id})` : ""].filter(Boolean).join(" ") : "";
  thumbnails();
}

async function thumbnails() {
  stats.thumbnails = false;
  for (const study of state.studies) {
    for (const series of study.series) await thumbnail(series);
  }
  stats.thumbnails = true;
}

async function thumbnail(series) {
  const images = series.instances.filter((i) => i.image !== false);
  if (!images.length) {
    series.thumb.textContent = "no image";
    series.problem = "This series holds no images (a report, key object or presentation state).";
    series.text.append(el("span", { class: "problem" }, "no images to show"));
    return;
  }
  // The middle image, else the first or the last: one damaged file does not cost the preview.
  const picks = [...new Set([images[Math.floor(images.length / 2)], images[0], images[images.length - 1]])];
  let failure = null;
  let failures = 0;
  for (const inst of picks) {
    try {
      await thumbnailOf(series, inst);
      break;
    } catch (err) {
      failure ||= err;
      failures++;
    }
  }
  if (!failure) return;
  if (failures === picks.length) series.thumb.textContent = "no preview";
  if (failures === picks.length && images.length === series.instances.length && failure instanceof Unsupported) {
    series.problem = `This series ${problem(failure)}.`;
  }
  series.text.append(el("span", { class: "problem" }, series.problem || `One image ${problem(failure)}.`));
}

async function thumbnailOf(series, inst) {
  const { meta, image } = await load(inst);
  if (!series.description && meta.seriesDescription) {
    series.description = meta.seriesDescription;
    series.text.firstChild.textContent = seriesLabel(series);
  }
  const f = await frame(inst, Math.floor(image.frames / 2));
  const canvas = el("canvas", { width: image.columns, height: image.rows });
  const data = canvas.getContext("2d").createImageData(image.columns, image.rows);
  paint(data, image, f.decoded, f.range, defaultWindow(image, f.range));
  canvas.getContext("2d").putImageData(data, 0, 0);
  series.thumb.replaceWith(canvas);
  series.thumb = canvas;
}

// -- the stack -------------------------------------------------------------------------------

function openSeries(series) {
  state.series = series;
  for (const s of state.studies.flatMap((st) => st.series)) s.button?.classList.toggle("current", s === series);
  $("viewer").hidden = false;
  $("start").hidden = true;
  state.stack = series.instances.filter((i) => i.image !== false)
    .flatMap((inst) => Array.from({ length: inst.frames || 1 }, (_, f) => ({ inst, f })));
  state.index = Math.floor(0);
  state.win = null;
  state.view = null;
  state.frame = null;
  $("preset").value = "default";
  resize();
  if (series.problem || !state.stack.length) {
    clearCanvas();
    message(series.problem || "This series holds no images.");
    banners(null);
    return;
  }
  show(0);
  $("stage").focus();
}

let showing = 0;
async function show(index) {
  if (!state.stack.length) return;
  index = Math.max(0, Math.min(state.stack.length - 1, index));
  state.index = index;
  const ticket = ++showing;
  const { inst, f } = state.stack[index];
  try {
    const { image, meta } = await load(inst);
    if (image.frames > 1 && (inst.frames || 1) !== image.frames) {
      inst.frames = image.frames; // the DICOMDIR did not say: expand this instance's frames
      const at = state.stack.findIndex((e) => e.inst === inst);
      const rest = state.stack.filter((e) => e.inst !== inst);
      rest.splice(at, 0, ...Array.from({ length: image.frames }, (_, k) => ({ inst, f: k })));
      state.stack = rest;
    }
    const fr = await frame(inst, f);
    if (ticket !== showing) return;
    state.frame = { ...fr, meta };
    if (!state.win) state.win = isColor(image) ? null : defaultWindow(image, fr.range);
    draw();
    message(null);
    prefetch(index);
  } catch (err) {
    if (ticket !== showing) return;
    state.frame = null;
    clearCanvas();
    message(`Image ${index + 1} of ${state.stack.length} ${problem(err)}. The other images of this series can still be shown.`);
    banners(null);
  }
}

function prefetch(index) {
  for (const k of [index + 1, index + 2, index - 1]) {
    const e = state.stack[k];
    if (e) frame(e.inst, e.f).catch(() => {});
  }
}

function message(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

function resize() {
  const stage = $("stage");
  const view = $("view");
  const ratio = window.devicePixelRatio || 1;
  view.width = Math.max(1, Math.round(stage.clientWidth * ratio));
  view.height = Math.max(1, Math.round(stage.clientHeight * ratio));
  if (state.frame) render();
}

function fitView(image) {
  const view = $("view");
  const scale = Math.min(view.width / image.columns, view.height / image.rows);
  return { scale, x: (view.width - image.columns * scale) / 2, y: (view.height - image.rows * scale) / 2 };
}

function clearCanvas() {
  const view = $("view");
  view.getContext("2d").clearRect(0, 0, view.width, view.height);
}

/** Paint the current frame into the native-size #image canvas, then onto the view. */
function draw() {
  const { image, decoded: d, range } = state.frame;
  const canvas = $("image");
  if (canvas.width !== image.columns || canvas.height !== image.rows) {
    canvas.width = image.columns;
    canvas.height = image.rows;
  }
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const data = ctx.createImageData(image.columns, image.rows);
  paint(data, image, d, range, state.win || { center: 128, width: 256 });
  ctx.putImageData(data, 0, 0);
  if (!state.view) state.view = fitView(image);
  render();
}

function render() {
  const view = $("view");
  const ctx = view.getContext("2d");
  const { image } = state.frame;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, view.width, view.height);
  ctx.imageSmoothingEnabled = state.view.scale < 4;
  ctx.setTransform(state.view.scale, 0, 0, state.view.scale, state.view.x, state.view.y);
  ctx.drawImage($("image"), 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  banners(state.frame);
  stats.paints++;
  stats.lastPaint = performance.now();
  if (!stats.firstImageAt) stats.firstImageAt = stats.lastPaint;
}

function banners(fr) {
  const s = state.series;
  const study = s && s.study;
  const meta = fr ? fr.meta : null;
  $("banner-patient").textContent = [
    meta?.patientName || state.patient?.name || "",
    meta?.patientId || state.patient?.id || "",
  ].filter(Boolean).join("\n");
  $("banner-study").textContent = [
    date(meta?.studyDate || study?.date), meta?.studyDescription || study?.description || "",
  ].filter(Boolean).join("\n");
  const e = state.stack[state.index];
  const number = meta?.instanceNumber;
  $("banner-series").textContent = s ? [
    `Series ${s.number ?? ""} ${s.modality} ${meta?.seriesDescription || s.description || ""}`.replace(/\s+/g, " ").trim(),
    `Image ${state.index + 1} / ${state.stack.length}` + (number != null ? ` (no. ${number}${e && e.inst.frames > 1 ? `, frame ${e.f + 1}` : ""})` : ""),
  ].join("\n") : "";
  const w = state.win;
  $("ww").value = w ? String(round(w.width)) : "";
  $("wc").value = w ? String(round(w.center)) : "";
  $("banner-value").textContent = [pointerText, w ? `W ${round(w.width)} L ${round(w.center)}` : "", state.view ? `Zoom ${Math.round(state.view.scale * 100)}%` : ""].filter(Boolean).join("\n");
}

const round = (v) => Math.round(v * 100) / 100;

// -- interaction -----------------------------------------------------------------------------

let pointerText = "";

function imagePoint(ev) {
  const view = $("view");
  const rect = view.getBoundingClientRect();
  const ratio = view.width / rect.width;
  const x = ((ev.clientX - rect.left) * ratio - state.view.x) / state.view.scale;
  const y = ((ev.clientY - rect.top) * ratio - state.view.y) / state.view.scale;
  return [Math.floor(x), Math.floor(y)];
}

function updatePointer(ev) {
  if (!state.frame) return;
  const { image, decoded: d } = state.frame;
  const [x, y] = imagePoint(ev);
  if (x < 0 || y < 0 || x >= image.columns || y >= image.rows) {
    pointerText = "";
  } else if (isColor(image)) {
    const i = y * image.columns + x;
    const px = d.pixels;
    const v = d.planar ? [px[i], px[i + px.length / 3], px[i + (2 * px.length) / 3]] : [px[3 * i], px[3 * i + 1], px[3 * i + 2]];
    pointerText = `x ${x} y ${y}: ${image.photometric === "PALETTE COLOR" ? px[i] : v.join(" ")}`;
  } else {
    const value = d.pixels[y * image.columns + x] * image.slope + image.intercept;
    pointerText = `x ${x} y ${y}: ${round(value)}${image.modality === "CT" ? " HU" : ""}`;
  }
  banners(state.frame);
}

function setWindow(win) {
  if (!state.frame || isColor(state.frame.image)) return;
  state.win = { center: win.center, width: Math.max(1, win.width) };
  draw();
}

function zoomAt(factor, cx, cy) {
  if (!state.view) return;
  const v = state.view;
  const view = $("view");
  cx ??= view.width / 2;
  cy ??= view.height / 2;
  const scale = Math.min(64, Math.max(0.05, v.scale * factor));
  state.view = { scale, x: cx - ((cx - v.x) * scale) / v.scale, y: cy - ((cy - v.y) * scale) / v.scale };
  render();
}

function reset() {
  if (!state.frame) return;
  const { image, range } = state.frame;
  state.win = isColor(image) ? null : defaultWindow(image, range);
  state.view = fitView(image);
  $("preset").value = "default";
  draw();
}

function bindViewer() {
  const stage = $("stage");
  const view = $("view");
  window.addEventListener("resize", () => {
    resize();
    if (state.frame) {
      state.view = fitView(state.frame.image);
      render();
    }
  });
  stage.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    if (ev.ctrlKey) zoomAt(ev.deltaY < 0 ? 1.1 : 1 / 1.1);
    else show(state.index + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  stage.addEventListener("keydown", (ev) => {
    const step = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 }[ev.key];
    if (step) show(state.index + step);
    else if (ev.key === "Home") show(0);
    else if (ev.key === "End") show(state.stack.length - 1);
    else if (ev.key === "+" || ev.key === "=") zoomAt(1.25);
    else if (ev.key === "-") zoomAt(0.8);
    else if (ev.key === "f" || ev.key === "F") fit();
    else if (ev.key === "r" || ev.key === "R") reset();
    else return;
    ev.preventDefault();
  });
  let drag = null;
  view.addEventListener("contextmenu", (ev) => ev.preventDefault());
  view.addEventListener("pointerdown", (ev) => {
    if (!state.frame) return;
    stage.focus();
    const mode = ev.button === 2 || ev.button === 1 ? "pan" : document.querySelector("input[name=drag]:checked").value;
    drag = { mode, x: ev.clientX, y: ev.clientY, win: state.win, view: state.view };
    view.setPointerCapture(ev.pointerId);
  });
  view.addEventListener("pointermove", (ev) => {
    updatePointer(ev);
    if (!drag || !state.frame) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (drag.mode === "window" && drag.win) {
      const k = Math.max(drag.win.width, 1) / 256;
      $("preset").value = "default";
      setWindow({ width: drag.win.width + dx * k, center: drag.win.center + dy * k });
    } else if (drag.mode === "pan") {
      const ratio = view.width / view.getBoundingClientRect().width;
      state.view = { ...drag.view, x: drag.view.x + dx * ratio, y: drag.view.y + dy * ratio };
      render();
    } else if (drag.mode === "zoom") {
      state.view = drag.view;
      zoomAt(Math.exp(-dy / 200));
    }
  });
  view.addEventListener("pointerup", () => { drag = null; });
  view.addEventListener("pointerleave", () => { pointerText = ""; if (state.frame) banners(state.frame); });
  $("preset").addEventListener("change", (ev) => {
    const p = PRESETS[ev.target.value];
    if (p) setWindow(p);
    else reset();
  });
  const typed = () => {
    const width = parseFloat($("ww").value);
    const center = parseFloat($("wc").value);
    if (Number.isFinite(width) && Number.isFinite(center)) setWindow({ width, center });
  };
  $("ww").addEventListener("change", typed);
  $("wc").addEventListener("change", typed);
  $("zoom-in").addEventListener("click", () => zoomAt(1.25));
  $("zoom-out").addEventListener("click", () => zoomAt(0.8));
  $("fit").addEventListener("click", fit);
  $("reset").addEventListener("click", reset);
  $("prev").addEventListener("click", () => show(state.index - 1));
  $("next").addEventListener("click", () => show(state.index + 1));
}

function fit() {
  if (!state.frame) return;
  state.view = fitView(state.frame.image);
  render();
}

// -- folder mode -------------------------------------------------------------------------------

async function opened(files) {
  stats.chosenAt = performance.now();
  stats.firstImageAt = 0;
  parsed.clear();
  decoded.clear();
  $("start").querySelector("h2").textContent = `Reading ${files.length} files\u2026`;
  try {
    const found = await scan(files, (done, all) => {
      $("start").querySelector("h2").textContent = `Reading file ${done} of ${all}\u2026`;
    });
    state.patient = found.patient;
    state.studies = found.studies;
    state.unreadable = found.unreadable || [];
  } catch (err) {
    $("start").querySelector("h2").textContent = `These files cannot be read: ${problem(err)}`;
    return;
  }
  if (!state.studies.length) {
    $("start").querySelector("h2").textContent = "No DICOM images were found in this folder. Choose the disc itself, or the folder you unzipped.";
    return;
  }
  showList();
  const first = state.studies.flatMap((s) => s.series).find((s) => s.instances.some((i) => i.image !== false));
  if (first) openSeries(first);
}

function bindFolder() {
  $("folder").addEventListener("change", (ev) => {
    if (ev.target.files.length) opened(fromFileList(ev.target.files));
  });
  document.addEventListener("dragover", (ev) => { ev.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    document.body.classList.remove("dragging");
    const files = await fromDrop(ev.dataTransfer.items);
    if (files.length) opened(files);
  });
}

// -- online mode: the study is described in the page ---------------------------------------

function safeHref(url) {
  try {
    const u = new URL(url, location.href);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

function online(study) {
  const page = study.page || {};
  if (typeof page.lang === "string" && /^[a-z]{2}$/.test(page.lang)) document.documentElement.lang = page.lang;
  document.title = page.title || "Images";
  $("title").textContent = page.title || "Images";
  $("choose-label").hidden = true;
  $("start").hidden = true;
  const info = $("online-page");
  info.hidden = false;
  if (page.institution) info.append(el("h2", {}, page.institution));
  for (const line of page.instructions || []) info.append(el("p", {}, line));
  // The packager says the expiry in the page's language and time zone (expires_text).
  if (page.expires_text) info.append(el("p", { class: "note" }, page.expires_text));
  else if (page.expires_at) info.append(el("p", { class: "note" }, `This page works until ${new Date(page.expires_at).toLocaleString()}.`));
  const downloads = (page.downloads || []).map((d) => [d, safeHref(d.url)]).filter(([, href]) => href);
  if (downloads.length) {
    const ul = el("ul");
    for (const [d, href] of downloads) ul.append(el("li", {}, el("a", { href, rel: "noopener noreferrer" }, d.label || href)));
    info.append(ul);
  }
  if (page.contact_text) info.append(el("p", { class: "note" }, page.contact_text));
  else if (page.contact) info.append(el("p", { class: "note" }, `Contact: ${page.contact}`));
  state.patient = null;
  let key = 0;
  state.studies = (study.studies || []).map((s) => ({
    uid: s.study_uid, date: s.date || "", description: s.description || "",
    series: (s.series || []).map((r) => ({
      uid: r.series_uid, modality: r.modality || "", description: r.description || "", number: r.number ?? null, notes: [],
      instances: (r.instances || []).map((i) => ({ url: i.url, number: i.number ?? null, path: i.sop_uid, key: `u${key++}`, image: true, frames: null })),
    })),
  }));
  stats.chosenAt = performance.now();
  showList();
  const all = state.studies.flatMap((s) => s.series);
  const first = all.find((s) => s.instances.length && !["SR", "KO", "PR"].includes(s.modality)) || all[0];
  if (first) openSeries(first);
}

// -- start -------------------------------------------------------------------------------------

function start() {
  bindViewer();
  let study = null;
  try {
    study = JSON.parse($("dicomiso-study").textContent);
  } catch {
    study = null;
  }
  if (study && typeof study === "object") online(study);
  else bindFolder();
  // For the tests and the benchmark: numbers only, nothing of the patient.
  window.dicomisoViewer = {
    stats,
    state: () => ({
      series: state.studies.flatMap((s) => s.series).map((s) => ({ uid: s.uid, modality: s.modality, files: s.instances.length, problem: s.problem || null })),
      current: state.series ? state.series.uid : null,
      thumbnails: stats.thumbnails,
      index: state.index,
      length: state.stack.length,
      window: state.win,
      zoom: state.view ? state.view.scale : null,
      shown: !!state.frame,
      message: $("message").hidden ? null : $("message").textContent,
    }),
    show,
    setWindow,
    windowValue,
  };
}

start();
export { personName };
