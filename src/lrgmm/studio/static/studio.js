// lrgmm studio page: plain JavaScript over the JSON API described at /openapi.json.
"use strict";

const $ = (id) => document.getElementById(id);
const S = { models: [], model: null, grid: null, face: null, prov: null, features: {}, limits: {},
            genTimer: null, genToken: 0, mask: null };

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}
const postJSON = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

function toast(msg) {
  const t = $("toast");
  t.textContent = msg; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

// The colour lrgmm.provenance.index_colors gives a training index (golden-ratio hues).
function indexColor(i) {
  const hue = (i * 0.6180339887498949) % 1;
  const sat = 0.55 + 0.4 * (Math.floor(i / 7) % 3) / 2;
  const val = 0.7 + 0.3 * (Math.floor(i / 3) % 2);
  const h6 = hue * 6, sector = Math.floor(h6) % 6, f = h6 - Math.floor(h6);
  const p = val * (1 - sat), q = val * (1 - sat * f), t = val * (1 - sat * (1 - f));
  const rgb = [[val, t, p], [q, val, p], [p, val, t], [p, q, val], [t, p, val], [val, p, q]][sector];
  return `rgb(${rgb.map((x) => Math.round(x * 255)).join(",")})`;
}

// ------------------------------------------------------------------ status and models
async function pollStatus() {
  for (;;) {
    try {
      const s = await api("/api/status");
      S.features = s.features; S.limits = s.limits;
      const q = s.queues;
      $("queue").textContent = ["sample", "decode", "fit"].map((k) => `${k} ${q[k].running}/${q[k].waiting}`).join(" · ")
        + ` · cached faces ${s.cache.faces}`;
    } catch (e) { $("queue").textContent = "server unreachable"; }
    await sleep(1000);
  }
}

async function loadModels(select) {
  S.models = await api("/api/models");
  const sel = $("model-select");
  sel.innerHTML = S.models.length ? "" : '<option value="">(none yet: fit one)</option>';
  for (const m of S.models) {
    const o = document.createElement("option");
    o.value = m.id; o.textContent = `${m.name} (${m.n_images} faces, K=${m.n_components})`;
    sel.appendChild(o);
  }
  if (select) sel.value = select;
  if (sel.value) chooseModel(sel.value);
}

function chooseModel(id) {
  S.model = S.models.find((m) => m.id === id) || null;
  if (!S.model) return;
  const m = S.model;
  $("model-info").textContent = `${m.autoencoder}, ${m.resolution}px, q=${m.n_channels}, K=${m.n_components}, lambda=${m.temperature}`;
  const lam = $("lambda");
  lam.max = m.temperature; lam.value = m.temperature; $("lambda-out").textContent = m.temperature;
  $("iterations").value = m.nn_iterations; $("iterations-out").textContent = m.nn_iterations;
  $("nn-order").value = m.nn_order;
  // The copy budget: from the smallest share this model's clusters can meet up to 1 (off).
  const share = $("max-share");
  share.min = Math.min(1, Math.ceil(m.min_max_share * 100 - 1e-9) / 100);
  share.value = m.max_share ?? 1; showShare();
  $("empty").hidden = true;
  scheduleGenerate(0);
}

async function loadFolders() {
  const folders = await api("/api/folders");
  const sel = $("fit-folder");
  sel.innerHTML = folders.length ? "" : "<option value=''>(start the server with --data)</option>";
  for (const f of folders) { const o = document.createElement("option"); o.value = o.textContent = f.name; sel.appendChild(o); }
  $("fit-button").disabled = !folders.length;
}

// --------------------------------------------------------------------------- fitting
async function runFit(request) {
  const msg = $("fit-message"), bar = $("fit-progress");
  $("fit-button").disabled = $("upload-button").disabled = true;
  bar.hidden = false; bar.value = 0;
  try {
    let job = await postJSON("/api/fit", request);
    while (job.state !== "done" && job.state !== "error") {
      bar.max = Math.max(1, job.progress.total); bar.value = job.progress.done;
      msg.textContent = `${job.state}: ${job.progress.done}/${job.progress.total} faces. ${job.message}`;
      await sleep(300);
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.state === "error") throw new Error(job.error);
    bar.value = bar.max;
    await loadModels(job.model);  // the new model is selected before the page says "done"
    msg.textContent = `done in ${job.seconds} s: ${job.message}`;
  } catch (e) {
    msg.textContent = ""; toast(`fit failed: ${e.message}`);
  } finally {
    $("fit-button").disabled = $("upload-button").disabled = false;
  }
}

$("fit-button").onclick = () => runFit({ folder: $("fit-folder").value, n_images: +$("fit-n").value, seed: +$("fit-seed").value });
$("upload-button").onclick = async () => {
  const files = $("upload-files").files;
  if (!files.length) { toast("choose image files first"); return; }
  const form = new FormData();
  for (const f of files) form.append("files", f);
  $("fit-message").textContent = `uploading ${files.length} files...`;
  try {
    const up = await api("/api/uploads", { method: "POST", body: form });
    await runFit({ upload: up.upload, seed: +$("fit-seed").value });
  } catch (e) { $("fit-message").textContent = ""; toast(`upload refused: ${e.message}`); }
};

// -------------------------------------------------------------------------- generating
function scheduleGenerate(delay = 150) {
  clearTimeout(S.genTimer);
  S.genTimer = setTimeout(generate, delay);
}

function showShare() {
  const v = +$("max-share").value;
  $("max-share-out").textContent = v >= 1 ? "off" : `${Math.round(v * 100)} %`;
}

async function generate() {
  if (!S.model) return;
  const token = ++S.genToken;
  const nn = $("nn").checked;
  $("iterations").disabled = $("max-share").disabled = $("nn-order").disabled = !nn;
  const req = { model: S.model.id, n: +$("n-faces").value, seed: +$("seed").value, nn,
                temperature: +$("lambda").value, nn_iterations: +$("iterations").value,
                max_share: Math.max(+$("max-share").value, S.model.min_max_share),  // 1 = no budget
                nn_order: $("nn-order").value,
                replaces: S.grid ? S.grid.id : null };
  let grid;
  try { grid = await postJSON("/api/generate", req); } catch (e) { toast(e.message); return; }
  if (token !== S.genToken) return; // a newer request superseded this one
  showGrid(grid, $("grid"), true);
  S.grid = grid;
  $("download-grid").href = grid.grid_url + "?download=1"; $("download-grid").hidden = false;
  if (S.face !== null && S.face.grid.model === grid.model && S.face.index < grid.n) openFace(grid, S.face.index);
  await followDecoding(grid, token);
}

// Poll the grid's decoding state and show each face as soon as its batch is decoded (no request
// stays pending, so the page's other requests are never stuck behind the browser's connection limit).
async function followDecoding(grid, token) {
  const t0 = performance.now();
  let shown = 0;
  for (;;) {
    let info;
    try { info = await api(`/api/grids/${grid.id}`); } catch (e) { toast(e.message); return; }
    if (token !== undefined && token !== S.genToken) return;
    for (; shown < info.decoded; shown++) loadTile(grid, shown);
    $("grid-state").textContent = `${info.decoded}/${info.n} faces decoded, seed ${grid.settings.seed}`
      + (info.decoded === info.n ? ` in ${((performance.now() - t0) / 1000).toFixed(2)} s` : "");
    if (info.error) { toast(info.error); return; }
    if (info.decoded >= info.n || info.cancelled) return;
    await sleep(120);
  }
}

function showGrid(grid, container, lazy) {
  container.innerHTML = "";
  grid.faces.forEach((f) => {
    const tile = document.createElement("div");
    tile.className = "tile"; tile.dataset.index = f.index; tile.dataset.grid = grid.id;
    const img = document.createElement("img");
    img.alt = `face ${f.index}`;
    img.onload = () => tile.classList.add("loaded");
    img.onerror = () => { tile.classList.add("failed"); };
    tile.appendChild(img);
    if (f.label) { const l = document.createElement("div"); l.className = "label"; l.textContent = f.label; tile.appendChild(l); }
    tile.onclick = () => openFace(grid, f.index);
    container.appendChild(tile);
    if (!lazy) img.src = f.url;
  });
}

function loadTile(grid, i) {
  const tile = document.querySelector(`#grid .tile[data-grid="${grid.id}"][data-index="${i}"]`);
  if (tile) tile.querySelector("img").src = grid.faces[i].url;
}

for (const id of ["seed", "nn", "n-faces", "nn-order"]) $(id).addEventListener("change", () => scheduleGenerate());
$("lambda").addEventListener("input", () => { $("lambda-out").textContent = $("lambda").value; scheduleGenerate(); });
$("iterations").addEventListener("input", () => { $("iterations-out").textContent = $("iterations").value; scheduleGenerate(); });
$("max-share").addEventListener("input", () => { showShare(); scheduleGenerate(); });
$("seed").addEventListener("input", () => scheduleGenerate(250));
$("dice").onclick = () => { $("seed").value = Math.floor(Math.random() * 1e9); scheduleGenerate(0); };
$("model-select").onchange = (e) => { S.face = null; $("inspector").hidden = true; chooseModel(e.target.value); };

// -------------------------------------------------------------------------- inspector
async function openFace(grid, index) {
  S.face = { grid, index }; S.prov = null; S.mask = null;
  document.querySelectorAll(".tile.selected").forEach((t) => t.classList.remove("selected"));
  document.querySelectorAll(`.tile[data-grid="${grid.id}"][data-index="${index}"]`).forEach((t) => t.classList.add("selected"));
  $("inspector").hidden = false;
  $("inspector-error").textContent = "";
  $("face-title").textContent = `${index} (${grid.kind}, seed ${grid.settings.seed ?? "-"})`;
  const url = grid.faces[index].url;
  $("large-face").src = url;
  $("download-face").href = url + "?download=1";
  $("hover-source").hidden = true; $("hover-box").hidden = true; $("mask-box").hidden = true;
  $("complete-button").disabled = true;
  $("edit-panel").hidden = !S.features.edit;
  $("complete-panel").hidden = !S.features.complete;
  const provBase = `/api/grids/${grid.id}/faces/${index}/provenance`;
  const list = $("sources");
  list.innerHTML = "";
  showNearest(grid, index);  // in parallel with the provenance
  if (!grid.has_provenance) {
    $("large-prov").hidden = true; $("download-prov").hidden = true;
    $("sources-summary").textContent = "(no provenance: the NN step was off)";
    return;
  }
  $("large-prov").hidden = false; $("large-prov").src = provBase + ".png";
  $("download-prov").hidden = false; $("download-prov").href = provBase + ".json?download=1";
  let prov;
  try { prov = await api(provBase + ".json"); } catch (e) { $("inspector-error").textContent = e.message; return; }
  if (S.face.grid !== grid || S.face.index !== index) return;
  S.prov = prov;
  $("sources-summary").textContent = `${prov.distinct_training_images} training faces, largest share ${(100 * prov.largest_share).toFixed(1)}%`
    + (prov.component !== null ? `, component ${prov.component}` : "");
  for (const s of prov.sources) {
    const li = document.createElement("li");
    li.dataset.index = s.index;
    li.innerHTML = `<span class="swatch"></span><img loading="lazy" alt=""><div class="src-name"></div>`;
    li.querySelector(".swatch").style.background = indexColor(s.index);
    li.querySelector("img").src = s.thumbnail;
    const name = li.querySelector(".src-name");
    name.textContent = `#${s.index} ${s.name} — ${(100 * s.share).toFixed(1)}%`;
    name.title = s.file;
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = `${100 * s.share / prov.largest_share}%`;
    name.appendChild(bar);
    list.appendChild(li);
  }
}

// The face's nearest training faces in Inception space. The first request for a model starts
// computing its training faces' features (202 with progress): poll until they are ready.
async function showNearest(grid, index) {
  const list = $("nearest"), summary = $("nearest-summary");
  const current = () => S.face && S.face.grid === grid && S.face.index === index;
  list.innerHTML = ""; summary.textContent = ""; summary.title = "";
  for (;;) {
    let r;
    try { r = await api(`/api/grids/${grid.id}/faces/${index}/nearest`); } catch (e) {
      if (current()) summary.textContent = `(unavailable: ${e.message})`;
      return;
    }
    if (!current()) return;
    if (r.state !== "ready") {
      summary.textContent = `computing… ${r.done}/${r.total} training faces (once per model)`;
      summary.title = r.message;
      await sleep(1000);
      if (!current()) return;
      continue;
    }
    summary.textContent = "(Inception space" + (r.typical_distance !== null
      ? `; training faces are typically ${r.typical_distance.toFixed(2)} from their nearest other)` : ")");
    summary.title = r.training_faces;
    for (const s of r.nearest) {
      const li = document.createElement("li");
      li.dataset.index = s.index;
      li.innerHTML = `<span class="swatch"></span><img loading="lazy" alt=""><div class="src-name"></div>`;
      if (s.share !== null) li.querySelector(".swatch").style.background = indexColor(s.index);
      li.querySelector("img").src = s.thumbnail;
      const name = li.querySelector(".src-name");
      name.textContent = `#${s.index} ${s.name} — d ${s.distance.toFixed(2)}`
        + (s.share !== null ? ` (gave ${(100 * s.share).toFixed(1)}% of the copied pixels)` : "");
      name.title = s.file;
      list.appendChild(li);
    }
    return;
  }
}

$("overlay").addEventListener("input", () => { $("large-prov").style.opacity = $("overlay").value; });

function latentCell(ev) {
  const rect = $("large").getBoundingClientRect();
  const [h, w] = S.prov ? S.prov.latent_grid : [16, 16];
  const x = Math.min(w - 1, Math.max(0, Math.floor((ev.clientX - rect.left) / rect.width * w)));
  const y = Math.min(h - 1, Math.max(0, Math.floor((ev.clientY - rect.top) / rect.height * h)));
  return { x, y, h, w, rect };
}

$("large").addEventListener("mousemove", (ev) => {
  if (S.drag) { updateMask(ev); return; }
  if (!S.prov) return;
  const { x, y, h, w, rect } = latentCell(ev);
  const box = $("hover-box");
  Object.assign(box.style, { left: `${x * rect.width / w}px`, top: `${y * rect.height / h}px`, width: `${rect.width / w}px`, height: `${rect.height / h}px` });
  box.hidden = false;
  const idx = S.prov.map[y][x];
  document.querySelectorAll("#sources li.hot").forEach((li) => li.classList.remove("hot"));
  if (idx < 0) { $("hover-info").textContent = `latent pixel (${y}, ${x}): observed (kept from the input)`; $("hover-source").hidden = true; return; }
  const src = S.prov.sources.find((s) => s.index === idx);
  $("hover-info").textContent = `latent pixel (row ${y}, col ${x}) ← training face #${idx}, same position (row ${y}, col ${x})`;
  $("hover-thumb").src = `/api/models/${S.prov.model}/training/${idx}.png?size=128`;
  Object.assign($("hover-thumb-box").style, { left: `${x * 96 / w}px`, top: `${y * 96 / h}px`, width: `${96 / w}px`, height: `${96 / h}px` });
  $("hover-name").textContent = src ? `${src.name} (${(100 * src.share).toFixed(1)}% of the copied pixels)` : `#${idx}`;
  $("hover-source").hidden = false;
  const li = document.querySelector(`#sources li[data-index="${idx}"]`);
  if (li) {
    li.classList.add("hot");
    // Scroll the list itself, never the page (the face must stay under the pointer).
    const list = $("sources");
    if (li.offsetTop < list.scrollTop || li.offsetTop + li.offsetHeight > list.scrollTop + list.clientHeight) {
      list.scrollTop = li.offsetTop - (list.clientHeight - li.offsetHeight) / 2;
    }
  }
});
$("large").addEventListener("mouseleave", () => { $("hover-box").hidden = true; });

// ----------------------------------------------------------------- completion (optional)
function pixelAt(ev) {
  const rect = $("large").getBoundingClientRect();
  const r = S.model ? S.model.resolution : 128;
  return [Math.round(Math.min(1, Math.max(0, (ev.clientX - rect.left) / rect.width)) * r),
          Math.round(Math.min(1, Math.max(0, (ev.clientY - rect.top) / rect.height)) * r)];
}
function updateMask(ev) {
  const [x, y] = pixelAt(ev);
  const [x0, y0] = S.drag;
  S.mask = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  const r = S.model.resolution, rect = $("large").getBoundingClientRect(), k = rect.width / r;
  Object.assign($("mask-box").style, { left: `${S.mask[0] * k}px`, top: `${S.mask[1] * k}px`,
    width: `${(S.mask[2] - S.mask[0]) * k}px`, height: `${(S.mask[3] - S.mask[1]) * k}px` });
  $("mask-box").hidden = false;
}
$("large").addEventListener("mousedown", (ev) => { if (S.features.complete && S.face) { S.drag = pixelAt(ev); ev.preventDefault(); } });
window.addEventListener("mouseup", () => {
  if (!S.drag) return;
  S.drag = null;
  $("complete-button").disabled = !(S.mask && S.mask[2] > S.mask[0] && S.mask[3] > S.mask[1]);
});
$("complete-button").onclick = async () => {
  const { grid, index } = S.face;
  $("complete-button").disabled = true;
  $("complete-button").textContent = "Completing…";
  try {
    const out = await postJSON("/api/complete", { grid: grid.id, face: index, box: S.mask, n: +$("complete-n").value, seed: +$("seed").value });
    showGrid(out, $("complete-strip"), false);
  } catch (e) { toast(`completion failed: ${e.message}`); }
  $("complete-button").disabled = false;
  $("complete-button").textContent = "Complete the region";
};

// ---------------------------------------------------------------------- editing (optional)
// The categories of lrgmm.labels' UTKFace attributes; alpha > 0 goes from "from" towards "to".
const CATEGORIES = { gender: ["male", "female"], age: ["child", "adult", "senior"],
                     race: ["white", "black", "asian", "indian", "other"] };
const DEFAULT_PAIR = { gender: ["male", "female"], age: ["adult", "senior"], race: ["white", "black"] };
function fillCategories() {
  const attr = $("edit-attribute").value;
  for (const [id, k] of [["edit-negative", 0], ["edit-positive", 1]]) {
    const sel = $(id);
    sel.innerHTML = "";
    for (const c of CATEGORIES[attr]) { const o = document.createElement("option"); o.value = o.textContent = c; sel.appendChild(o); }
    sel.value = DEFAULT_PAIR[attr][k];
  }
}
$("edit-attribute").addEventListener("change", fillCategories);
fillCategories();
$("edit-button").onclick = async () => {
  const { grid, index } = S.face;
  $("edit-button").disabled = true;
  $("edit-button").textContent = "Editing… (the first edit of an attribute fits it)";
  try {
    const out = await postJSON("/api/edit", { grid: grid.id, face: index, attribute: $("edit-attribute").value,
      negative: $("edit-negative").value, positive: $("edit-positive").value, alphas: [-2, -1, 0, 1, 2] });
    S.edit = out;
    showGrid(out, $("edit-strip"), false);
    $("edit-alpha").max = out.n - 1; $("edit-alpha").value = Math.floor(out.n / 2);
    showAlpha();
  } catch (e) { toast(`edit failed: ${e.message}`); }
  $("edit-button").disabled = false;
  $("edit-button").textContent = "Edit this face";
};
function showAlpha() {
  if (!S.edit) return;
  const i = +$("edit-alpha").value;
  $("edit-alpha-out").textContent = S.edit.settings.alphas[i];
  $("large-face").src = S.edit.faces[i].url;
  document.querySelectorAll("#edit-strip .tile").forEach((t) => t.classList.toggle("selected", +t.dataset.index === i));
}
$("edit-alpha").addEventListener("input", showAlpha);

// ---------------------------------------------------------------------------- start
pollStatus();
(async () => {
  try {
    const s = await api("/api/status");
    S.features = s.features; S.limits = s.limits;
    $("n-faces").querySelectorAll("option").forEach((o) => { if (+o.value > s.limits.max_faces) o.remove(); });
    $("iterations").max = s.limits.max_nn_iterations;
    await loadFolders();
    await loadModels();
  } catch (e) { toast(e.message); }
})();
