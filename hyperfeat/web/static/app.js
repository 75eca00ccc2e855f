// hyperfeat page: plain JavaScript, no libraries. Points are (x, y) pixels of the image they
// belong to, pixel centres at integers: a (W, H) image covers x in [-0.5, W - 0.5].
"use strict";

const $ = (id) => document.getElementById(id);

// Every panel's outcome area, built once: <name>-progress with <name>-stage, <name>-message
// (errors, one line), <name>-result (links and numbers).
document.querySelectorAll("[data-outcome]").forEach((box) => {
  const name = box.dataset.outcome;
  box.innerHTML = `<div class="status"><progress id="${name}-progress" max="1" value="0" hidden></progress> ` +
    `<span id="${name}-stage"></span></div><div id="${name}-message" class="message" role="alert"></div>` +
    `<div id="${name}-result" class="result"></div>`;
});

// ---------------------------------------------------------------- tabs
document.querySelectorAll(".tab").forEach((button) => {
  button.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b === button));
    document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "panel-" + button.dataset.tab));
    if (button.dataset.tab === "mixing" && !$("mixing-img").src) $("mixing-img").src = "/api/mixing.png";
  });
});

// ---------------------------------------------------------------- requests
async function asJson(response) {
  let payload;
  try { payload = await response.json(); } catch (e) { throw new Error(`the server answered ${response.status} without a message`); }
  if (!response.ok || payload.error) throw new Error(payload.error || `the server answered ${response.status}`);
  return payload;
}

async function upload(kind, files) {
  const form = new FormData();
  form.append("kind", kind);
  for (const file of files) form.append("file", file, file.name);
  return asJson(await fetch("/api/upload?kind=" + kind, { method: "POST", body: form }));
}

async function post(url, body) {
  return asJson(await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }));
}

// Start a job, show its progress, resolve with its result (or throw its error line).
async function runJob(url, body, bar, stage) {
  const { job } = await post(url, body);
  bar.hidden = false;
  bar.value = 0;
  for (;;) {
    const state = await asJson(await fetch("/api/jobs/" + job));
    bar.value = state.progress;
    stage.textContent = state.state === "done" ? "" : `${Math.round(100 * state.progress)}% ${state.stage}`;
    if (state.state === "done") { bar.hidden = true; return state.result; }
    if (state.state === "error") { bar.hidden = true; stage.textContent = ""; throw new Error(state.error); }
    await new Promise((r) => setTimeout(r, 150));
  }
}

function showMessage(element, text) { element.textContent = text || ""; }

// ---------------------------------------------------------------- a canvas that shows an image letterboxed
// ``frame`` (W, H) is the size points are given in (default: the picture's own size; a video
// preview may be smaller than the original frames).
class View {
  constructor(canvas) { this.canvas = canvas; this.image = null; this.overlay = null; this.marks = []; this.frame = null; }
  get box() {  // where the picture lies on the canvas
    const c = this.canvas, w = this.image.naturalWidth, h = this.image.naturalHeight;
    const s = Math.min(c.width / w, c.height / h);
    const [fw, fh] = this.frame || [w, h];
    return { ox: (c.width - w * s) / 2, oy: (c.height - h * s) / 2, dw: w * s, dh: h * s, fw, fh };
  }
  toImage(event) {  // a click → (x, y) pixels of the frame (may lie outside it)
    const r = this.canvas.getBoundingClientRect();
    const cx = (event.clientX - r.left) * this.canvas.width / r.width;
    const cy = (event.clientY - r.top) * this.canvas.height / r.height;
    const b = this.box;
    return [(cx - b.ox) / b.dw * b.fw - 0.5, (cy - b.oy) / b.dh * b.fh - 0.5];
  }
  toCanvas(x, y) { const b = this.box; return [b.ox + (x + 0.5) / b.fw * b.dw, b.oy + (y + 0.5) / b.fh * b.dh]; }
  draw() {
    const g = this.canvas.getContext("2d");
    g.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    const b = this.box;
    g.drawImage(this.image, b.ox, b.oy, b.dw, b.dh);
    if (this.overlay) g.drawImage(this.overlay, b.ox, b.oy, b.dw, b.dh);
    for (const m of this.marks) {
      const [px, py] = this.toCanvas(m.x, m.y);
      g.beginPath(); g.arc(px, py, 6, 0, 2 * Math.PI);
      g.fillStyle = m.colour; g.fill(); g.lineWidth = 2; g.strokeStyle = "white"; g.stroke();
    }
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot show this image"));
    image.src = src;
  });
}

// ---------------------------------------------------------------- Match
const match = { src: new View($("src-canvas")), tgt: new View($("tgt-canvas")), ids: {}, busy: false };

// an uploaded file (``file``) or an example image of the server (``example``, its name)
async function pickImage(side, file, example) {
  const message = $("match-message");
  showMessage(message, "");
  $("match-result").textContent = "";
  if (!file && !example) return;
  const view = match[side];
  try {
    const info = file ? await upload("image", [file]) : await post("/api/example", { name: example });
    view.image = await loadImage(file ? URL.createObjectURL(file) : "/api/image/" + info.id);
    view.overlay = null; view.marks = [];
    match.ids[side] = info.id;
    $(side + "-caption").textContent = `${side === "src" ? "source" : "target"}: ${info.name} (${info.width}×${info.height})`;
    match.src.marks = []; match.tgt.marks = []; match.tgt.overlay = null;
    match.src.draw(); match.tgt.draw();
    $(side + "-canvas").dataset.ready = "1";
  } catch (err) {
    delete match.ids[side];
    view.image = null; view.draw();
    $(side + "-canvas").dataset.ready = "";
    showMessage(message, err.message);
  }
}
for (const side of ["src", "tgt"]) {
  $(side + "-file").addEventListener("change", (e) => { $(side + "-example").value = ""; pickImage(side, e.target.files[0], null); });
  $(side + "-example").addEventListener("change", (e) => { $(side + "-file").value = ""; pickImage(side, null, e.target.value); });
}

$("src-canvas").addEventListener("click", async (event) => {
  const message = $("match-message"), result = $("match-result");
  showMessage(message, "");
  if (!match.src.image) return showMessage(message, "upload a source image first");
  if (!match.ids.tgt) return showMessage(message, "upload a target image first");
  if (match.busy) return showMessage(message, "still matching the last point");
  const [x, y] = match.src.toImage(event);
  match.src.marks = [{ x, y, colour: "#e53935" }];
  match.src.draw();
  result.textContent = "";
  match.busy = true;
  try {
    const r = await runJob("/api/match", { source: match.ids.src, target: match.ids.tgt, x, y,
      method: $("method").value, heat_map: $("heat").checked }, $("match-progress"), $("match-stage"));
    match.tgt.overlay = r.heat_map ? await loadImage(r.heat_map) : null;
    match.tgt.marks = [{ x: r.target[0], y: r.target[1], colour: r.mutual ? "#43a047" : "#fb8c00" }];
    match.tgt.draw();
    result.dataset.source = JSON.stringify(r.source);
    result.dataset.target = JSON.stringify(r.target);
    result.dataset.mutual = String(r.mutual);
    result.textContent = `(${r.source[0].toFixed(1)}, ${r.source[1].toFixed(1)}) → (${r.target[0].toFixed(1)}, ${r.target[1].toFixed(1)})` +
      `  ${r.method}  mutual nearest neighbour: ${r.mutual ? "yes" : "no"}` +
      (r.similarity_range ? `  similarity ${r.similarity_range[0].toFixed(2)}…${r.similarity_range[1].toFixed(2)}` : "");
  } catch (err) {
    match.src.marks = []; match.src.draw();
    showMessage(message, err.message);
  } finally {
    match.busy = false;
  }
});

// ---------------------------------------------------------------- Track
const track = { view: new View($("video-canvas")), video: null, points: [] };
const COLOURS = ["#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#00acc1", "#fb8c00", "#6d4c41"];

function drawPoints() {
  track.view.marks = track.points.map((p, i) => ({ x: p[0], y: p[1], colour: COLOURS[i % COLOURS.length] }));
  track.view.draw();
  $("video-caption").textContent = track.video
    ? `${track.video.name}: ${track.video.num_frames} frames, ${track.video.width}×${track.video.height}; ${track.points.length} points`
    : "first frame";
}

$("video-file").addEventListener("change", async (event) => {
  const message = $("track-message");
  showMessage(message, "");
  $("track-result").textContent = "";
  const files = Array.from(event.target.files);
  if (!files.length) return;
  track.video = null; track.points = []; track.view.image = null;
  $("video-canvas").dataset.ready = "";
  $("video-caption").textContent = "reading the video…";
  try {
    const info = await upload("video", files);
    track.video = info;
    track.view.image = await loadImage(info.preview);
    track.view.frame = [info.width, info.height];  // points in pixels of the original frames
    $("video-canvas").dataset.ready = "1";
  } catch (err) {
    showMessage(message, err.message);
  }
  drawPoints();
});

$("video-canvas").addEventListener("click", (event) => {
  showMessage($("track-message"), "");
  if (!track.video) return showMessage($("track-message"), "upload a video or frames first");
  const [x, y] = track.view.toImage(event);
  track.points.push([x, y]);
  drawPoints();
});

$("grid-add").addEventListener("click", () => {
  showMessage($("track-message"), "");
  if (!track.video) return showMessage($("track-message"), "upload a video or frames first");
  const n = parseInt($("grid-n").value, 10);
  if (!(n >= 1 && n <= 32)) return showMessage($("track-message"), "the grid size must be between 1 and 32");
  const { width: w, height: h } = track.video;
  for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) track.points.push([(i + 0.5) * w / n - 0.5, (j + 0.5) * h / n - 0.5]);
  drawPoints();
});

$("points-clear").addEventListener("click", () => { track.points = []; drawPoints(); });

$("track-run").addEventListener("click", async () => {
  const message = $("track-message"), result = $("track-result");
  showMessage(message, "");
  result.textContent = "";
  if (!track.video) return showMessage(message, "upload a video or frames first");
  if (!track.points.length) return showMessage(message, "click points on the first frame (or add a grid) first");
  try {
    const r = await runJob("/api/track", { video: track.video.id, points: track.points,
      tail_length: parseInt($("tail").value, 10) || 0 }, $("track-progress"), $("track-stage"));
    const img = $("track-video");
    img.src = r.urls.gif + "?t=" + Date.now();
    img.hidden = false;
    $("track-caption").textContent = `${r.num_points} points over ${r.num_frames} frames, visible ${(100 * r.visible_fraction).toFixed(0)}% (dot: visible, ring: occluded)`;
    result.innerHTML = "";
    for (const [kind, label] of [["json", "tracks.json"], ["csv", "tracks.csv"], ["gif", "tracks.gif"]]) {
      const a = document.createElement("a");
      a.href = r.urls[kind]; a.textContent = label; a.download = label; a.id = "download-" + kind;
      result.appendChild(a);
    }
  } catch (err) {
    showMessage(message, err.message);
  }
});

// ---------------------------------------------------------------- start
(async () => {
  try {
    const info = await asJson(await fetch("/api/info"));
    $("info").textContent = `${info.checkpoint} · ${info.backbone} · ${info.timesteps} timesteps × ${info.layers} layers · ${info.load_size} px`;
    for (const m of info.methods) { const o = document.createElement("option"); o.value = m; o.textContent = m; $("method").appendChild(o); }
    match.src.draw(); match.tgt.draw();
    const { examples } = await asJson(await fetch("/api/examples"));
    for (const side of ["src", "tgt"]) {
      for (const name of examples) { const o = document.createElement("option"); o.value = name; o.textContent = name; $(side + "-example").appendChild(o); }
      $(side + "-example").hidden = examples.length === 0;
    }
  } catch (err) {
    $("info").textContent = "cannot reach the server: " + err.message;
  }
})();
