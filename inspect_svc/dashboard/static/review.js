// Review dashboard: heatmap overlay, mask brush and keyboard shortcuts. One module, no build step.
//
// The probability map arrives as a greyscale PNG (value / 255 = probability); thresholding happens
// here, so moving the slider costs no request. The editable mask lives in its own canvas: painted
// pixels are opaque, and the canvas's CSS opacity makes them translucent on screen.

const MASK_COLOUR = [0, 200, 255];
const BRUSH_MIN = 1;
const BRUSH_MAX = 80;

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

// Probability 0..1 -> a yellow-to-red ramp, so stronger evidence reads hotter.
function heatColour(probability) {
  return [255, Math.round(230 * (1 - probability)), 0];
}

function initViewer(root) {
  const width = Number(root.dataset.width);
  const height = Number(root.dataset.height);
  const heat = document.getElementById("heat");
  const mask = document.getElementById("mask");
  const maskContext = mask.getContext("2d", { willReadFrequently: true });
  const thresholdInput = document.getElementById("threshold");
  const thresholdOutput = document.getElementById("threshold-value");
  const opacityInput = document.getElementById("opacity");
  const status = document.getElementById("status");
  const canReview = root.dataset.canReview === "true";
  const state = { probabilities: null, tool: null, brush: 12, dirty: false, drawing: false, last: null };

  function say(message) {
    status.textContent = message;
  }

  function renderHeat() {
    if (!state.probabilities) return;
    const threshold = Number(thresholdInput.value);
    thresholdOutput.textContent = threshold.toFixed(2);
    const image = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      const probability = state.probabilities[index] / 255;
      if (probability < threshold) continue;
      const [red, green, blue] = heatColour(probability);
      image.data.set([red, green, blue, 255], index * 4);
    }
    heat.getContext("2d").putImageData(image, 0, 0);
  }

  function maskFromThreshold() {
    if (!state.probabilities) return;
    const threshold = Number(thresholdInput.value);
    const image = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      if (state.probabilities[index] / 255 >= threshold) image.data.set([...MASK_COLOUR, 255], index * 4);
    }
    maskContext.putImageData(image, 0, 0);
  }

  async function loadSavedMask(url) {
    const pixels = pixelsOf(await loadImage(url), width, height);
    const image = new ImageData(width, height);
    for (let index = 0; index < width * height; index++) {
      if (pixels[index * 4] >= 128) image.data.set([...MASK_COLOUR, 255], index * 4);
    }
    maskContext.putImageData(image, 0, 0);
  }

  opacityInput.addEventListener("input", () => { heat.style.opacity = opacityInput.value; });
  heat.style.opacity = opacityInput.value;
  thresholdInput.addEventListener("input", renderHeat);
  document.getElementById("show-regions").addEventListener("change", (event) => {
    document.getElementById("regions").style.display = event.target.checked ? "" : "none";
  });

  loadImage(root.dataset.mapUrl)
    .then(async (image) => {
      const pixels = pixelsOf(image, width, height);
      state.probabilities = new Uint8ClampedArray(width * height);
      for (let index = 0; index < width * height; index++) state.probabilities[index] = pixels[index * 4];
      renderHeat();
      if (root.dataset.maskUrl) await loadSavedMask(root.dataset.maskUrl);
      else maskFromThreshold();
      root.dataset.ready = "true";
    })
    .catch((error) => say(error.message));

  if (!canReview) {
    document.addEventListener("keydown", (event) => navigationKeys(event));
    return;
  }

  // --- mask editing -------------------------------------------------------------------------
  const brushInput = document.getElementById("brush-size");
  const brushOutput = document.getElementById("brush-size-value");

  function setBrush(size) {
    state.brush = Math.max(BRUSH_MIN, Math.min(BRUSH_MAX, size));
    brushInput.value = state.brush;
    brushOutput.textContent = state.brush;
  }

  function setTool(tool) {
    state.tool = state.tool === tool ? null : tool;
    for (const name of ["brush", "eraser"]) {
      document.getElementById(`tool-${name}`).setAttribute("aria-pressed", String(state.tool === name));
    }
    mask.classList.toggle("painting", state.tool !== null);
    say(state.tool ? `${state.tool}: drag on the image` : "");
  }

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
    state.dirty = true;
  }

  mask.addEventListener("pointerdown", (event) => {
    if (!state.tool) return;
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
      out.data.set([value, value, value, 255], index * 4);
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

  // A corrected mask belongs to a defect: "confirm" when the model flagged it, "missed" otherwise.
  async function saveMask() {
    const verdict = root.dataset.modelVerdict === "defect" ? "confirm" : "missed";
    say("saving mask…");
    try {
      await postReview(verdict, true);
      state.dirty = false;
      say(`mask saved (${verdict})`);
      root.dataset.saved = "true";
    } catch (error) {
      say(error.message);
    }
  }

  async function review(verdict) {
    // An edited mask travels with a defect verdict; a false alarm has no defect to outline.
    if (state.dirty && verdict !== "reject") {
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

  document.getElementById("tool-brush").addEventListener("click", () => setTool("brush"));
  document.getElementById("tool-eraser").addEventListener("click", () => setTool("eraser"));
  document.getElementById("save-mask").addEventListener("click", saveMask);
  document.getElementById("mask-from-threshold").addEventListener("click", () => { maskFromThreshold(); state.dirty = true; });
  brushInput.addEventListener("input", () => setBrush(Number(brushInput.value)));
  document.getElementById("review-form").addEventListener("submit", (event) => {
    const verdict = event.submitter && event.submitter.value;
    if (state.dirty && verdict && verdict !== "reject") {
      event.preventDefault();
      review(verdict);
    }
  });

  const actions = {
    a: () => review("confirm"),
    r: () => review("reject"),
    m: () => review("missed"),
    b: () => setTool("brush"),
    e: () => setTool("eraser"),
    "[": () => setBrush(state.brush - 2),
    "]": () => setBrush(state.brush + 2),
    s: saveMask,
  };
  document.addEventListener("keydown", (event) => {
    if (typingInField(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
      return;
    }
    navigationKeys(event);
  });
  setBrush(state.brush);
}

function navigationKeys(event) {
  if (typingInField(event) || event.ctrlKey || event.metaKey || event.altKey) return;
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
    if (typingInField(event) || event.ctrlKey || event.metaKey || event.altKey || rows.length === 0) return;
    if (event.key === "j") select(selected + 1);
    else if (event.key === "k") select(selected - 1);
    else if (event.key === "Enter" || event.key === "o") window.location.assign(rows[selected].dataset.href);
    else return;
    event.preventDefault();
  });
  select(0);
}
