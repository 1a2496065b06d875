// Review dashboard: the inspection viewer and the queue's keyboard. One module, no build step.
//
// The viewer shows the frame untouched; every overlay is optional. Each layer (frame, heat, region
// outlines, mask) is an element of the image's own pixel size inside a "stage", and the stage is
// placed by one uniform translate + scale: the aspect ratio is exact at every zoom and the layers
// stay registered. The probability map arrives as a greyscale PNG (value / 255 = probability) and
// is colour-mapped here, so changing the view costs no request.

// viridis at 0, 1/8, ..., 1: perceptually uniform, readable by colour-blind operators and in grey.
const VIRIDIS = [
  [68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 144, 140],
  [39, 173, 129], [93, 200, 99], [170, 220, 50], [253, 231, 37],
];
const MASK_COLOUR = [0, 200, 255];
const BRUSH_MIN = 1;
const BRUSH_MAX = 80;
const MAX_SCALE = 32;
const ZOOM_STEP = 1.25;
const OUTLINE_PX = 1.5;
const PREFERENCES_KEY = "inspect.viewer";
const DEFAULT_VIEW = { heat: false, regions: true, side: false, opacity: 0.6 };

const viewer = document.getElementById("viewer");
if (viewer) initViewer(viewer);
const queue = document.getElementById("queue");
if (queue) initQueue(queue);

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

function typingInField(event) {
  const target = event.target;
  return target instanceof HTMLInputElement && target.type !== "range" && target.type !== "checkbox"
    || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
}

function plainKey(event) {
  return !(typingInField(event) || event.ctrlKey || event.metaKey || event.altKey);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${url}`));
    image.src = url;
  });
}

function pixelsOf(image, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

// A 256-entry RGB table of the colour map, linear between its stops.
function colourTable() {
  const table = new Uint8ClampedArray(256 * 3);
  const last = VIRIDIS.length - 1;
  for (let value = 0; value < 256; value++) {
    const position = (value / 255) * last;
    const low = Math.min(Math.floor(position), last - 1);
    const weight = position - low;
    for (let channel = 0; channel < 3; channel++) {
      table[value * 3 + channel] = VIRIDIS[low][channel] * (1 - weight) + VIRIDIS[low + 1][channel] * weight;
    }
  }
  return table;
}

// Write one opaque RGB pixel; no array per pixel, since a 12 MP frame has 12 million of them.
function putPixel(data, index, red, green, blue) {
  const offset = index * 4;
  data[offset] = red;
  data[offset + 1] = green;
  data[offset + 2] = blue;
  data[offset + 3] = 255;
}

function loadPreferences() {
  try {
    return { ...DEFAULT_VIEW, ...JSON.parse(localStorage.getItem(PREFERENCES_KEY) || "{}") };
  } catch {
    return { ...DEFAULT_VIEW };
  }
}

// The layers an operator chose stay chosen from one inspection to the next.
function savePreferences({ heat, regions, side, opacity }) {
  try {
    localStorage.setItem(PREFERENCES_KEY, JSON.stringify({ heat, regions, side, opacity }));
  } catch {
    // Storage may be off (private windows, policies): the view still works, it just is not remembered.
  }
}

function initViewer(root) {
  const width = Number(root.dataset.width);
  const height = Number(root.dataset.height);
  const canReview = root.dataset.canReview === "true";
  const status = document.getElementById("status");
  const view = { ...loadPreferences(), imageOnly: false, editing: false };
  const say = (message) => { status.textContent = message; };

  const zoom = initZoom(root, width, height);
  const heat = initHeat(root, width, height);

  // --- view state: which layers show ------------------------------------------------------------
  const opacityInput = document.getElementById("opacity");
  opacityInput.value = view.opacity;

  function applyView() {
    root.classList.toggle("heat-on", view.heat);
    root.classList.toggle("regions-on", view.regions);
    root.classList.toggle("image-only", view.imageOnly);
    root.classList.toggle("side-by-side", view.side);
    root.classList.toggle("editing", view.editing);
    heat.setOpacity(view.opacity);
    const pressed = {
      "toggle-image-only": view.imageOnly,
      "toggle-heat": view.heat && !view.imageOnly,
      "toggle-regions": view.regions && !view.imageOnly,
      "toggle-side": view.side,
      "toggle-edit": view.editing,
    };
    for (const [id, on] of Object.entries(pressed)) {
      document.getElementById(id)?.setAttribute("aria-pressed", String(on));
    }
    savePreferences(view);
  }

  // Showing a layer leaves "image only" (so does correcting the mask: its layer must show).
  function toggle(name) {
    if (name === "imageOnly") {
      view.imageOnly = !view.imageOnly;
    } else {
      view[name] = view.imageOnly ? true : !view[name];
      view.imageOnly = false;
    }
    applyView();
    if (name === "side") zoom.resized();
  }

  opacityInput.addEventListener("input", () => {
    view.opacity = Number(opacityInput.value);
    if (!view.heat || view.imageOnly) toggle("heat");
    applyView();
  });
  const viewButtons = {
    "toggle-image-only": "imageOnly",
    "toggle-heat": "heat",
    "toggle-regions": "regions",
    "toggle-side": "side",
  };
  for (const [id, name] of Object.entries(viewButtons)) {
    document.getElementById(id).addEventListener("click", () => toggle(name));
  }

  const viewKeys = {
    i: () => toggle("imageOnly"),
    h: () => toggle("heat"),
    o: () => toggle("regions"),
    v: () => toggle("side"),
    "+": () => zoom.step(ZOOM_STEP),
    "=": () => zoom.step(ZOOM_STEP),
    "-": () => zoom.step(1 / ZOOM_STEP),
    0: () => zoom.fit(),
    1: () => zoom.actualSize(),
  };
  const editor = canReview ? initMaskEditor(root, { width, height, view, applyView, heat, say }) : null;
  const reviewKeys = editor ? editor.keys : {};

  document.addEventListener("keydown", (event) => {
    if (!plainKey(event)) return;
    const action = reviewKeys[event.key] || viewKeys[event.key];
    if (action) {
      event.preventDefault();
      action();
      return;
    }
    navigationKeys(event);
  });

  applyView();
  heat.ready
    .then(async () => {
      if (editor) await editor.loadMask();
      root.dataset.ready = "true";
    })
    .catch((error) => say(error.message));
}

// --- zoom and pan ---------------------------------------------------------------------------------
// One transform {scale, x, y} for every viewport: side by side, both panes show the same region.
function initZoom(root, width, height) {
  const viewports = [...root.querySelectorAll(".viewport")];
  const stages = viewports.map((viewport) => viewport.querySelector(".stage"));
  const level = document.getElementById("zoom-level");
  const transform = { scale: 1, x: 0, y: 0, fitted: true };

  const box = () => ({ w: viewports[0].clientWidth, h: viewports[0].clientHeight });
  const fitScale = () => Math.min(box().w / width, box().h / height);

  // An image smaller than the viewport stays centred; a larger one cannot be dragged out of view.
  function clampAxis(offset, size, room) {
    return size <= room ? (room - size) / 2 : Math.min(0, Math.max(room - size, offset));
  }

  function render() {
    const { w, h } = box();
    transform.x = clampAxis(transform.x, width * transform.scale, w);
    transform.y = clampAxis(transform.y, height * transform.scale, h);
    if (transform.scale === 1) snapToScreenPixels();
    for (const stage of stages) {
      stage.style.transform = `translate(${transform.x}px, ${transform.y}px) scale(${transform.scale})`;
    }
    // Outlines keep one thin screen width at every zoom (the stage's CSS scale would thicken them).
    root.style.setProperty("--outline-width", `${OUTLINE_PX / transform.scale}px`);
    root.classList.toggle("magnified", transform.scale >= 2);
    root.dataset.scale = transform.scale.toFixed(4);
    level.textContent = `${Math.round(transform.scale * 100)}%`;
  }

  function fit() {
    transform.scale = fitScale();
    transform.fitted = true;
    transform.x = Number.NEGATIVE_INFINITY; // clampAxis centres the letterboxed image
    transform.y = Number.NEGATIVE_INFINITY;
    render();
  }

  // Zoom about the viewport point (px, py): the image point under it stays under it.
  function zoomTo(target, px, py) {
    const scale = Math.max(Math.min(fitScale(), 1) / 2, Math.min(MAX_SCALE, target));
    transform.x = px - ((px - transform.x) * scale) / transform.scale;
    transform.y = py - ((py - transform.y) * scale) / transform.scale;
    transform.scale = scale;
    transform.fitted = false;
    render();
  }

  // At 1:1 the frame moves by whole pixels (the browser snaps the viewport's own box to the pixel
  // grid), so the screen shows the stored frame pixel for pixel, not resampled.
  function snapToScreenPixels() {
    transform.x = Math.round(transform.x);
    transform.y = Math.round(transform.y);
  }

  function actualSize() {
    const { w, h } = box();
    zoomTo(1, w / 2, h / 2);
  }

  for (const viewport of viewports) {
    viewport.addEventListener("wheel", (event) => {
      event.preventDefault();
      const rect = viewport.getBoundingClientRect();
      const factor = Math.exp(-Math.max(-100, Math.min(100, event.deltaY)) * 0.002);
      zoomTo(transform.scale * factor, event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    let drag = null;
    viewport.addEventListener("pointerdown", (event) => {
      if (event.defaultPrevented || (event.button !== 0 && event.button !== 1)) return;
      drag = { x: event.clientX - transform.x, y: event.clientY - transform.y };
      viewport.setPointerCapture(event.pointerId);
      viewport.classList.add("panning");
    });
    viewport.addEventListener("pointermove", (event) => {
      if (!drag) return;
      transform.x = event.clientX - drag.x;
      transform.y = event.clientY - drag.y;
      transform.fitted = false;
      render();
    });
    for (const name of ["pointerup", "pointercancel"]) {
      viewport.addEventListener(name, () => { drag = null; viewport.classList.remove("panning"); });
    }
  }

  function resized() {
    if (transform.fitted) fit();
    else render();
  }
  new ResizeObserver(resized).observe(viewports[0]);
  fit();
  document.getElementById("zoom-in").addEventListener("click", () => step(ZOOM_STEP));
  document.getElementById("zoom-out").addEventListener("click", () => step(1 / ZOOM_STEP));
  document.getElementById("zoom-fit").addEventListener("click", fit);
  document.getElementById("zoom-actual").addEventListener("click", actualSize);

  function step(factor) {
    const { w, h } = box();
    zoomTo(transform.scale * factor, w / 2, h / 2);
  }
  return { fit, step, actualSize, resized };
}

// --- the heat layer and its colour scale ----------------------------------------------------------
function initHeat(root, width, height) {
  const table = colourTable();
  const overlay = document.getElementById("heat");
  const side = document.getElementById("heat-side");
  const state = { probabilities: null };

  const bar = document.getElementById("scale-bar");
  const barImage = new ImageData(256, 1);
  for (let value = 0; value < 256; value++) {
    putPixel(barImage.data, value, table[value * 3], table[value * 3 + 1], table[value * 3 + 2]);
  }
  bar.getContext("2d").putImageData(barImage, 0, 0);

  const ready = loadImage(root.dataset.mapUrl).then((image) => {
    const pixels = pixelsOf(image, width, height);
    state.probabilities = new Uint8ClampedArray(width * height);
    const coloured = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      const value = pixels[index * 4];
      state.probabilities[index] = value;
      putPixel(coloured.data, index, table[value * 3], table[value * 3 + 1], table[value * 3 + 2]);
    }
    overlay.getContext("2d").putImageData(coloured, 0, 0);
    side.getContext("2d").putImageData(coloured, 0, 0);
  });
  return {
    ready,
    state,
    setOpacity(opacity) { overlay.style.opacity = opacity; },
  };
}

// --- mask correction (reviewers only) ---------------------------------------------------------------
// The mask layer shows only while correcting. A saved correction is this reviewer's decision; the
// server keeps one decision per reviewer and inspection, so a later verdict replaces it, and a
// verdict of a defect carries the corrected mask along instead of dropping it.
function initMaskEditor(root, { width, height, view, applyView, heat, say }) {
  const mask = document.getElementById("mask");
  const maskContext = mask.getContext("2d", { willReadFrequently: true });
  const thresholdInput = document.getElementById("threshold");
  const thresholdOutput = document.getElementById("threshold-value");
  const brushInput = document.getElementById("brush-size");
  const brushOutput = document.getElementById("brush-size-value");
  const state = { tool: null, brush: 12, corrected: false, drawing: false, last: null };

  function maskFromThreshold() {
    const threshold = Number(thresholdInput.value);
    thresholdOutput.textContent = threshold.toFixed(2);
    const image = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      if (heat.state.probabilities[index] / 255 >= threshold) putPixel(image.data, index, ...MASK_COLOUR);
    }
    maskContext.putImageData(image, 0, 0);
  }

  async function loadSavedMask(url) {
    const pixels = pixelsOf(await loadImage(url), width, height);
    const image = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      if (pixels[index * 4] >= 128) putPixel(image.data, index, ...MASK_COLOUR);
    }
    maskContext.putImageData(image, 0, 0);
    state.corrected = true; // the latest review's correction is the label until someone changes it
  }

  function setEditing(on) {
    view.editing = on;
    if (on) view.imageOnly = false;
    if (!on && state.tool) setTool(state.tool);
    applyView();
  }

  function setBrush(size) {
    state.brush = Math.max(BRUSH_MIN, Math.min(BRUSH_MAX, size));
    brushInput.value = state.brush;
    brushOutput.textContent = state.brush;
  }

  function setTool(tool) {
    state.tool = state.tool === tool ? null : tool;
    if (state.tool && !view.editing) setEditing(true);
    for (const name of ["brush", "eraser"]) {
      document.getElementById(`tool-${name}`).setAttribute("aria-pressed", String(state.tool === name));
    }
    mask.classList.toggle("painting", state.tool !== null);
    say(state.tool ? `${state.tool}: drag on the image (shift-drag pans)` : "");
  }

  // The stage's box on screen is the transformed image, so this holds at any zoom and pan.
  function imagePoint(event) {
    const box = mask.getBoundingClientRect();
    return { x: (event.clientX - box.left) * (width / box.width), y: (event.clientY - box.top) * (height / box.height) };
  }

  function paintSegment(from, to) {
    maskContext.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
    maskContext.strokeStyle = maskContext.fillStyle = `rgb(${MASK_COLOUR.join(",")})`;
    maskContext.lineWidth = state.brush;
    maskContext.lineCap = "round";
    maskContext.beginPath();
    maskContext.moveTo(from.x, from.y);
    maskContext.lineTo(to.x, to.y);
    maskContext.stroke();
    state.corrected = true;
    root.dataset.saved = "false";
  }

  mask.addEventListener("pointerdown", (event) => {
    if (!state.tool || event.button !== 0 || event.shiftKey) return;
    event.preventDefault(); // tells the viewport not to pan
    mask.setPointerCapture(event.pointerId);
    state.drawing = true;
    state.last = imagePoint(event);
    paintSegment(state.last, state.last);
  });
  mask.addEventListener("pointermove", (event) => {
    if (!state.drawing) return;
    const point = imagePoint(event);
    paintSegment(state.last, point);
    state.last = point;
  });
  for (const name of ["pointerup", "pointercancel"]) {
    mask.addEventListener(name, () => { state.drawing = false; });
  }

  // The saved mask is binary greyscale at the image's own size: 255 = defect, 0 = background.
  function maskPng() {
    const painted = maskContext.getImageData(0, 0, width, height).data;
    const out = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      const value = painted[index * 4 + 3] >= 128 ? 255 : 0;
      putPixel(out.data, index, value, value, value);
    }
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").putImageData(out, 0, 0);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  async function postReview(verdict, withMask) {
    const body = new FormData(document.getElementById("review-form"));
    body.set("verdict", verdict);
    if (withMask) body.set("mask", await maskPng(), "mask.png");
    const response = await fetch(root.dataset.reviewUrl, {
      method: "POST",
      body,
      headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() },
    });
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(reply.detail || `saving failed (${response.status})`);
    return reply;
  }

  // A correction says "there is a defect, here": confirmed when the model flagged it, missed otherwise.
  async function saveCorrection() {
    const verdict = root.dataset.modelVerdict === "defect" ? "confirm" : "missed";
    say("saving the correction…");
    try {
      await postReview(verdict, true);
      state.corrected = true;
      say(`correction saved: ${verdict} with your mask (your decision on this inspection; j goes on)`);
      await refreshReviewHistory();
      root.dataset.saved = "true";
    } catch (error) {
      say(error.message);
    }
  }

  // The page's own review list, fetched again, so the saved decision shows where decisions are listed.
  async function refreshReviewHistory() {
    const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const history = fresh.getElementById("review-history");
    if (history) document.getElementById("review-history").replaceWith(history);
  }

  async function review(verdict) {
    // A corrected mask travels with a defect verdict; a false alarm has no defect to outline.
    if (state.corrected && verdict !== "reject") {
      say("saving…");
      try {
        const reply = await postReview(verdict, true);
        window.location.assign(reply.next_url);
      } catch (error) {
        say(error.message);
      }
      return;
    }
    const button = document.querySelector(`#review-form button[value="${verdict}"]`);
    document.getElementById("review-form").requestSubmit(button);
  }

  document.getElementById("toggle-edit").addEventListener("click", () => setEditing(!view.editing));
  document.getElementById("tool-brush").addEventListener("click", () => setTool("brush"));
  document.getElementById("tool-eraser").addEventListener("click", () => setTool("eraser"));
  document.getElementById("save-mask").addEventListener("click", saveCorrection);
  document.getElementById("mask-from-threshold").addEventListener("click", () => {
    maskFromThreshold();
    state.corrected = true;
  });
  thresholdInput.addEventListener("input", () => {
    thresholdOutput.textContent = Number(thresholdInput.value).toFixed(2);
  });
  brushInput.addEventListener("input", () => setBrush(Number(brushInput.value)));
  document.getElementById("review-form").addEventListener("submit", (event) => {
    const verdict = event.submitter && event.submitter.value;
    if (state.corrected && verdict && verdict !== "reject") {
      event.preventDefault();
      review(verdict);
    }
  });
  setBrush(state.brush);

  const keys = {
    a: () => review("confirm"),
    r: () => review("reject"),
    m: () => review("missed"),
    c: () => setEditing(!view.editing),
    Escape: () => setEditing(false),
    b: () => setTool("brush"),
    e: () => setTool("eraser"),
    "[": () => setBrush(state.brush - 2),
    "]": () => setBrush(state.brush + 2),
    s: saveCorrection,
  };
  async function loadMask() {
    if (root.dataset.maskUrl) await loadSavedMask(root.dataset.maskUrl);
    else maskFromThreshold();
  }
  return { keys, loadMask };
}

function navigationKeys(event) {
  if (!plainKey(event)) return;
  const link = { j: "next", k: "previous" }[event.key];
  const anchor = link && document.getElementById(link);
  if (anchor) {
    event.preventDefault();
    window.location.assign(anchor.href);
  }
}

function initQueue(table) {
  const rows = [...table.querySelectorAll("tbody tr")];
  let selected = 0;

  function select(index) {
    rows[selected]?.classList.remove("selected");
    selected = Math.max(0, Math.min(rows.length - 1, index));
    rows[selected]?.classList.add("selected");
    rows[selected]?.scrollIntoView({ block: "nearest" });
  }

  for (const [index, row] of rows.entries()) {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      select(index);
      window.location.assign(row.dataset.href);
    });
  }
  document.addEventListener("keydown", (event) => {
    if (!plainKey(event) || rows.length === 0) return;
    if (event.key === "j") select(selected + 1);
    else if (event.key === "k") select(selected - 1);
    else if (event.key === "Enter" || event.key === "o") window.location.assign(rows[selected].dataset.href);
    else return;
    event.preventDefault();
  });
  select(0);
}
