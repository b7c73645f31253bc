// Locoserve Studio: key → account, upload → job → result (mixer, downloads), recent jobs.
import { ApiError, key, request, save, upload } from "./api.js";
import { Mixer } from "./player.js";
import { draw } from "./waveform.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 700;
const COLORS = ["#e4572e", "#29a3d6", "#76b041", "#f2a541", "#9c6ade", "#e86fa6"];
const TASKS = { "separate": "stem_split", "clean": "audio_clean", "enhance": "audio_enhance" };

const state = { me: null, file: null, job: null, polling: null, mixer: null, nextCursor: null };

// -- messages ------------------------------------------------------------------------------
function say(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.className = `message ${kind}`;
  m.hidden = !text;
}

function sayError(e) {
  if (!(e instanceof ApiError)) {
    console.error(e);
    say("Something went wrong in this page; reload it and try again.");
    return;
  }
  let text = e.detail ? `${e.title}: ${e.detail}` : e.title;
  if (e.retryAfter) text += ` (retry in ${duration(Number(e.retryAfter))})`;
  say(text);
}

function duration(s) {
  if (!Number.isFinite(s)) return "?";
  const parts = [[Math.floor(s / 3600), "h"], [Math.floor((s % 3600) / 60), "min"], [Math.round(s % 60), "s"]];
  return parts.filter(([n]) => n).map(([n, unit]) => `${n} ${unit}`).join(" ") || `${s.toFixed(1)} s`;
}

function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function el(tag, { dataset = {}, ...props } = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  Object.assign(e.dataset, dataset);
  e.append(...children);
  return e;
}

// -- account -------------------------------------------------------------------------------
async function loadMe() {
  if (!key.get()) {
    state.me = null;
    renderMe();
    return;
  }
  try {
    state.me = await request("/api/me");
  } catch (e) {
    state.me = null;
    sayError(e);
  }
  renderMe();
}

function renderMe() {
  const me = state.me;
  $("account").textContent = me ? `${me.user} · ${me.plan_name} plan (${me.priority} priority)` : "No key";
  const q = $("quotas");
  q.replaceChildren();
  if (me) {
    for (const [code, c] of Object.entries(me.capabilities)) {
      const left = c.kind === "quota"
        ? (c.limit === null ? "unlimited" : `${c.remaining} of ${c.limit} left this ${c.period}`)
        : `${c.balance} credits`;
      q.append(el("div", { className: "quota", dataset: { capability: code } },
        el("span", { textContent: label(code) }), el("strong", { textContent: left })));
    }
    for (const [code, n] of Object.entries(me.credits)) {
      if (!(code in me.capabilities)) q.append(el("div", { className: "quota" },
        el("span", { textContent: label(code) }), el("strong", { textContent: `${n} credits` })));
    }
  }
  renderLimits();
}

function label(code) {
  return { stem_split: "Stem splits", stem_split_single: "Single splits", audio_clean: "Clean",
           audio_enhance: "Enhance" }[code] || code;
}

function chosen() {
  const [task, stems] = $("task").value.split(":");
  return { task, stems, capability: TASKS[task] };
}

// The plan's and the service's limits for what is chosen, shown before anything is uploaded.
function limits() {
  const me = state.me;
  if (!me) return null;
  const { capability, stems } = chosen();
  const cap = me.capabilities[capability] || me.capabilities[`${capability}_single`];
  const svc = me.limits || {};
  if (!cap) return { allowed: false, why: `${label(capability)} is not in the ${me.plan_name} plan` };
  if (stems && cap.variants && !cap.variants.includes(`${stems}stem`)) {
    return { allowed: false, why: `${stems} stems are not in the ${me.plan_name} plan` };
  }
  const seconds = Math.min(cap.max_input_seconds ?? Infinity, svc.max_input_seconds ?? Infinity);
  return { allowed: true, seconds, mb: svc.max_upload_mb };
}

function renderLimits() {
  const l = limits();
  const p = $("limits");
  if (!l) p.textContent = "Enter an API key to see your plan's limits.";
  else if (!l.allowed) p.textContent = l.why;
  else p.textContent = `Up to ${l.mb} MB and ${duration(l.seconds)} of audio per file.`;
  checkFile();
}

// -- the file --------------------------------------------------------------------------------
function setFile(file) {
  state.file = file;
  state.fileSeconds = null;
  checkFile();
  if (!file) return;
  // the duration, where the browser can read it, to refuse a too-long file before uploading it
  const probe = new Audio();
  const src = URL.createObjectURL(file);
  probe.preload = "metadata";
  probe.onloadedmetadata = () => {
    if (state.file === file && Number.isFinite(probe.duration)) {
      state.fileSeconds = probe.duration;
      checkFile();
    }
    URL.revokeObjectURL(src);
  };
  probe.onerror = () => URL.revokeObjectURL(src);
  probe.src = src;
}

function checkFile() {
  const f = state.file;
  const l = limits();
  let problem = null;
  let info = "";
  if (f) {
    info = `${f.name} · ${(f.size / 2 ** 20).toFixed(1)} MB` + (state.fileSeconds ? ` · ${duration(state.fileSeconds)}` : "");
    if (l && l.allowed && f.size > l.mb * 2 ** 20) problem = `the file is larger than ${l.mb} MB`;
    if (l && l.allowed && state.fileSeconds > l.seconds) problem = `the file is longer than ${duration(l.seconds)}`;
  }
  $("file-info").textContent = problem ? `${info} — ${problem}` : info;
  $("file-info").classList.toggle("bad", Boolean(problem));
  $("submit").disabled = !f || !l || !l.allowed || Boolean(problem) || Boolean(state.uploading);
}

// -- a job -----------------------------------------------------------------------------------
async function submit() {
  const { task, stems } = chosen();
  const form = new FormData();
  form.append("audio", state.file, state.file.name);
  if (stems) form.append("stems", stems);
  form.append("format", $("format").value);
  if ($("normalize").value) form.append("normalize", $("normalize").value);
  form.append("wait", "false");
  say("");
  state.uploading = true;
  checkFile();
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  $("upload-text").textContent = "Uploading…";
  try {
    const job = await upload(`/api/audio/${task}`, form, (f) => {
      bar.value = f;
      $("upload-text").textContent = f < 1 ? `Uploading… ${Math.round(f * 100)} %` : "Checking the audio…";
    });
    $("upload-text").textContent = "Uploaded";
    follow(job);
  } catch (e) {
    $("upload-text").textContent = "";
    sayError(e);
    loadMe();
  } finally {
    state.uploading = false;
    bar.hidden = true;
    checkFile();
  }
}

function follow(job) {
  clearTimeout(state.polling);
  closeResult();
  state.job = job;
  renderJob(job);
  if (["queued", "running"].includes(job.status)) {
    state.polling = setTimeout(poll, POLL_MS);
  } else {
    ended(job);
  }
}

async function poll() {
  const id = state.job.job_id;
  try {
    const job = await request(`/api/jobs/${id}`);
    if (state.job?.job_id !== id) return; // another job was opened meanwhile
    state.job = job;
    renderJob(job);
    if (["queued", "running"].includes(job.status)) state.polling = setTimeout(poll, POLL_MS);
    else ended(job);
  } catch (e) {
    sayError(e);
    if (e.status === 0 || e.status >= 500) state.polling = setTimeout(poll, POLL_MS * 3);
  }
}

function renderJob(job) {
  $("job-panel").hidden = false;
  $("job-title").textContent = `Job: ${job.source_name || job.job_id} (${job.task}, ${job.variant})`;
  const status = {
    queued: `Queued${job.queue_position != null ? `, position ${job.queue_position + 1}` : ""}`,
    running: `Running on ${job.device || "…"}: ${Math.round(job.progress * 100)} %`,
    done: `Done${job.device ? ` on ${job.device}` : ""}${job.fallback ? " (CPU fallback)" : ""}`,
    failed: `Failed: ${job.error || "the job failed"} (refunded)`,
    cancelled: `Cancelled (refunded)`,
  }[job.status];
  $("job-status").textContent = status;
  $("job-status").dataset.status = job.status;
  $("job-progress").value = job.progress;
  $("cancel").hidden = !["queued", "running"].includes(job.status);
}

async function cancel() {
  try {
    const job = await request(`/api/jobs/${state.job.job_id}`, { method: "DELETE" });
    state.job = job;
    renderJob(job);
  } catch (e) {
    sayError(e);
  }
}

function ended(job) {
  loadMe();
  loadRecent();
  if (job.status === "done") showResult(job);
  else if (job.status === "failed") say(`Job failed: ${job.error || "the job failed"}; it was refunded.`);
}

// -- the result ------------------------------------------------------------------------------
function closeResult() {
  state.mixer?.close();
  state.mixer = null;
  $("result").hidden = true;
  $("stems").replaceChildren();
}

async function showResult(summary) {
  closeResult();
  let job = summary;
  try {
    job = await request(`/api/jobs/${summary.job_id}?debug=1`); // metadata, where the service allows it
  } catch (e) {
    sayError(e);
  }
  if (!job.stems) {
    say(job.results_deleted_at ? "This job's results have been deleted (retention period passed)." : "No stems.", "info");
    return;
  }
  const mixer = new Mixer();
  state.mixer = mixer;
  mixer.onended = () => renderTransport();
  $("result").hidden = false;
  $("result-warning").hidden = !job.warning;
  $("result-warning").textContent = job.warning || "";
  $("download-all").onclick = () => save(job.job_id, (fresh) => fresh.archive_link).catch(sayError);
  renderDetails(job);
  const names = Object.keys(job.stems);
  const rows = new Map(names.map((name, i) => [name, stemRow(job, name, COLORS[i % COLORS.length])]));
  $("stems").replaceChildren(...[...rows.values()].map((r) => r.row));
  for (const r of rows.values()) r.row.addEventListener("redraw", () => r.peaks && draw(r.canvas, r.peaks, r.color));
  if (job.peaks) {
    request(job.peaks).then((peaks) => {
      for (const [name, r] of rows) {
        r.peaks = peaks.stems[name];
        if (r.peaks) draw(r.canvas, r.peaks, r.color);
        r.canvas.dataset.drawn = "true";
      }
    }).catch(sayError);
  }
  if (!job.previews) {
    $("audio-state").textContent = "No previews for this job (made by an older version): download the stems to listen.";
    return;
  }
  $("audio-state").textContent = "Loading audio…";
  try {
    await Promise.all(names.map(async (name) => mixer.add(name, await request(job.previews[name], { as: "bytes" }))));
  } catch (e) {
    if (state.mixer === mixer) sayError(e);
    return;
  }
  if (state.mixer !== mixer) return; // another result was opened meanwhile
  for (const [name, r] of rows) { // what was set on the rows while the audio loaded
    mixer.set(name, { muted: r.row.querySelector(".muted").getAttribute("aria-pressed") === "true",
                      solo: r.row.querySelector(".solo").getAttribute("aria-pressed") === "true",
                      volume: Number(r.row.querySelector(".volume").value) });
  }
  $("audio-state").textContent = "";
  $("play").disabled = false;
  renderTransport();
  requestAnimationFrame(tick);
}

function stemRow(job, name, color) {
  const canvas = el("canvas", { className: "wave", title: "Click to seek" });
  const head = el("div", { className: "playhead" });
  const wave = el("div", { className: "wave-box" }, canvas, head);
  const toggle = (text, prop) => {
    const b = el("button", { type: "button", className: `toggle ${prop}`, textContent: text });
    b.setAttribute("aria-pressed", "false");
    b.setAttribute("aria-label", `${prop === "muted" ? "Mute" : "Solo"} ${name}`);
    b.onclick = () => {
      const on = b.getAttribute("aria-pressed") !== "true";
      b.setAttribute("aria-pressed", String(on));
      state.mixer?.tracks.has(name) && state.mixer.set(name, { [prop]: on });
    };
    return b;
  };
  const volume = el("input", { type: "range", min: "0", max: "1.5", step: "0.01", value: "1", className: "volume" });
  volume.setAttribute("aria-label", `Volume of ${name}`);
  volume.oninput = () => state.mixer?.tracks.has(name) && state.mixer.set(name, { volume: Number(volume.value) });
  const get = el("button", { type: "button", className: "download", textContent: `⤓ ${job.format}` });
  get.setAttribute("aria-label", `Download ${name}`);
  get.onclick = () => save(job.job_id, (fresh) => fresh.links?.[name]).catch(sayError);
  const title = el("span", { className: "stem-name", textContent: name });
  title.style.borderColor = color;
  const row = el("div", { className: "stem", dataset: { stem: name } },
    el("div", { className: "controls" }, title, toggle("M", "muted"), toggle("S", "solo"), volume, get), wave);
  canvas.onclick = (e) => {
    const box = canvas.getBoundingClientRect();
    state.mixer?.seek(((e.clientX - box.left) / box.width) * state.mixer.duration).then(renderTransport);
  };
  return { row, canvas, head, color, peaks: null };
}

function renderDetails(job) {
  const list = $("details-list");
  const m = job.metadata || {};
  const items = [
    ["Device", job.device + (m.device_name ? ` (${m.device_name})` : "")],
    ["CPU fallback", job.fallback ? `yes: ${job.fallback_reason}` : "no"],
    ["Task", `${job.task}, ${job.variant}`],
    ["Input", `${duration(job.duration_s)}${job.source_name ? `, ${job.source_name}` : ""}`],
    ["Output", `${job.format}${job.bitrate_kbps ? ` ${job.bitrate_kbps} kbps` : ""}${job.normalize ? `, normalized (${job.normalize})` : ""}`],
    ["Queued", job.timings.queued_s != null ? `${job.timings.queued_s} s` : "—"],
    ["Ran", job.timings.run_s != null ? `${job.timings.run_s} s` : "—"],
  ];
  if (m.model) items.push(["Model", `${m.model} (${m.size}), weights ${String(m.weights_sha256).slice(0, 12)}`]);
  if (m.timings) items.push(["Engine timings", Object.entries(m.timings).map(([k, v]) => `${k} ${v}`).join(", ")]);
  if (m.chunks) items.push(["Chunks", String(m.chunks)]);
  if (job.entitlement) items.push(["Paid from", job.entitlement.source || "—"]);
  list.replaceChildren(...items.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

function renderTransport() {
  const mixer = state.mixer;
  if (!mixer) return;
  $("play").textContent = mixer.playing ? "❚❚ Pause" : "▶ Play";
  $("play").setAttribute("aria-label", mixer.playing ? "Pause" : "Play");
  $("time").textContent = `${clock(mixer.time)} / ${clock(mixer.duration)}`;
  const at = mixer.duration ? (mixer.time / mixer.duration) * 100 : 0;
  for (const head of document.querySelectorAll(".playhead")) head.style.left = `${at}%`;
}

function tick() {
  if (!state.mixer) return;
  renderTransport();
  requestAnimationFrame(tick);
}

async function togglePlay() {
  if (!state.mixer || $("play").disabled) return;
  await state.mixer.toggle();
  renderTransport();
}

// -- recent jobs -----------------------------------------------------------------------------
async function loadRecent(more = false) {
  const list = $("recent");
  if (!key.get()) {
    list.replaceChildren();
    return;
  }
  try {
    const page = await request(`/api/jobs?limit=10${more && state.nextCursor ? `&cursor=${state.nextCursor}` : ""}`);
    const items = page.jobs.map((job) => {
      const when = new Date(job.created_at).toLocaleString();
      const open = el("button", { type: "button", className: "link", textContent: job.source_name || job.job_id });
      open.onclick = () => follow(job);
      return el("li", { dataset: { job: job.job_id, status: job.status } }, open,
        el("span", { className: "hint", textContent: ` ${job.task} ${job.variant} · ${job.status}` +
          `${job.status === "done" && !job.stems ? " (deleted)" : ""} · ${when}` }));
    });
    if (more) list.append(...items);
    else list.replaceChildren(...items);
    state.nextCursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
  } catch (e) {
    sayError(e);
  }
}

// -- wiring ----------------------------------------------------------------------------------
function init() {
  $("key").value = key.get();
  $("demo-hint").hidden = !["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  $("key-form").onsubmit = (e) => {
    e.preventDefault();
    key.set($("key").value.trim());
    say("");
    loadMe();
    loadRecent();
  };
  $("forget-key").onclick = () => {
    key.forget();
    $("key").value = "";
    loadMe();
    loadRecent();
  };
  const drop = $("drop");
  drop.ondragover = (e) => {
    e.preventDefault();
    drop.classList.add("over");
  };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  };
  drop.onkeydown = (e) => {
    if (e.target === drop && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      $("file").click();
    }
  };
  $("file").onchange = () => setFile($("file").files[0] || null);
  $("task").onchange = renderLimits;
  $("submit").onclick = submit;
  $("cancel").onclick = cancel;
  $("play").onclick = togglePlay;
  $("more").onclick = () => loadRecent(true);
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    // space types in fields and presses focused buttons; elsewhere it is the transport's
    if (e.key !== " " || ["INPUT", "SELECT", "TEXTAREA", "BUTTON", "SUMMARY"].includes(t.tagName) && t.type !== "range") return;
    if (t === $("drop")) return;
    e.preventDefault();
    togglePlay();
  });
  window.addEventListener("resize", () => {
    for (const row of document.querySelectorAll(".stem")) row.dispatchEvent(new Event("redraw"));
  });
  loadMe();
  loadRecent();
}

init();

// Read-only view of the audio graph, for the browser test and for a curious console: what
// each stem's gain node is set to and where the transport is.
window.locoserveStudio = Object.freeze({
  gain: (name) => state.mixer?.tracks.get(name)?.gain.gain.value ?? null,
  time: () => state.mixer?.time ?? null,
  playing: () => Boolean(state.mixer?.playing),
});
