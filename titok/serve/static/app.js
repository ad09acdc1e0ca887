// titok serve's page: the Tokenize and Generate tabs over the JSON API of titok/serve/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, upload: null, codes: [], original: [], keep: 0, selected: null, sequence: 0 };
let busy = 0;

function setBusy(change) {
  busy += change;
  document.body.dataset.busy = String(busy);
  $("status").textContent = busy ? "working…" : "";
}

// A request to the API: its JSON, or an Error carrying the server's message.
async function call(url, options) {
  setBusy(1);
  try {
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new Error("the titok server cannot be reached (is titok serve still running?)");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    }
    return body;
  } finally {
    setBusy(-1);
  }
}

function postJSON(url, data) {
  return call(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
}

function showError(id, error) {
  $(id).textContent = error ? error.message || String(error) : "";
  $(id).hidden = !error;
}

function element(tag, properties, children) {
  const node = Object.assign(document.createElement(tag), properties || {});
  node.append(...(children || []));
  return node;
}

function selectTab(name) {
  for (const button of document.querySelectorAll("[data-tab]")) {
    const chosen = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(chosen));
    $(`panel-${button.dataset.tab}`).hidden = !chosen;
  }
}

// --- Tokenize -----------------------------------------------------------------------------------------------------

function decibels(psnr) {
  return psnr === null || psnr === undefined ? "" : `PSNR ${psnr.toFixed(2)} dB`;
}

async function tokenize(file, name) {
  showError("tokenize-error", null);
  try {
    const result = await call("/api/tokenize", {
      method: "POST",
      headers: { "X-File-Name": encodeURIComponent(name) },
      body: file,
    });
    state.sequence += 1; // answers to requests about the previous image are stale now
    Object.assign(state, { upload: result, codes: result.codes.slice(), original: result.codes.slice() });
    Object.assign(state, { keep: result.codes.length, selected: null });
    $("original").src = result.original;
    $("reconstruction").src = result.reconstruction;
    $("psnr").textContent = decibels(result.psnr);
    $("file-name").textContent = `(${result.name})`;
    $("keep").max = String(result.codes.length);
    $("keep").value = String(result.codes.length);
    $("editor").hidden = true;
    $("result").hidden = false;
    drawCodes();
  } catch (error) {
    showError("tokenize-error", error);
  }
}

function drawCodes() {
  const box = $("codes");
  const count = state.codes.length;
  box.style.setProperty("--columns", String(count <= 64 ? 8 : 16));
  box.replaceChildren(
    ...state.codes.map((code, position) => {
      const button = element("button", { type: "button", className: "code", textContent: String(code) });
      button.dataset.position = String(position);
      button.title = `token ${position}` + (code !== state.original[position] ? ` (was ${state.original[position]})` : "");
      button.classList.toggle("dropped", position >= state.keep);
      button.classList.toggle("edited", code !== state.original[position]);
      button.classList.toggle("selected", position === state.selected);
      button.addEventListener("click", () => selectToken(position));
      return button;
    }),
  );
  $("token-count").textContent = String(count);
  $("kept-count").textContent = state.keep === count ? `all ${count}` : `the first ${state.keep} of ${count}`;
  $("keep-value").textContent = String(state.keep);
}

function selectToken(position) {
  state.selected = position;
  $("edit-position").textContent = String(position);
  $("edit-code").value = String(state.codes[position]);
  $("editor").hidden = false;
  drawCodes();
  $("edit-code").focus();
}

function setCode(position, code) {
  const size = state.info.tokenizer.codebook_size;
  if (!Number.isInteger(code) || code < 0 || code >= size) {
    showError("tokenize-error", new Error(`a code is a whole number from 0 to ${size - 1}`));
    return;
  }
  showError("tokenize-error", null);
  state.codes[position] = code;
  $("edit-code").value = String(code);
  drawCodes();
  redecode();
}

function randomCode(position) {
  const size = state.info.tokenizer.codebook_size;
  let code = state.codes[position];
  while (size > 1 && code === state.codes[position]) {
    code = Math.floor(Math.random() * size);
  }
  setCode(position, code);
}

// Decode the current codes; only the answer to the latest request is drawn.
async function redecode() {
  const sequence = ++state.sequence;
  const request = { codes: state.codes, keep: state.keep, image: state.upload.id };
  try {
    const result = await postJSON("/api/detokenize", request);
    if (sequence === state.sequence) {
      $("reconstruction").src = result.image;
      $("psnr").textContent = decibels(result.psnr);
    }
  } catch (error) {
    if (sequence === state.sequence) {
      showError("tokenize-error", error);
    }
  }
}

async function pickExample(example) {
  try {
    const response = await fetch(`/api/examples/${example.index}.png`);
    await tokenize(await response.blob(), `example ${example.index}: ${example.name}`);
  } catch (error) {
    showError("tokenize-error", error);
  }
}

function setUpTokenize() {
  const tokenizer = state.info.tokenizer;
  $("codebook-size").textContent = String(tokenizer.codebook_size);
  $("keep-box").hidden = !tokenizer.ordered;
  $("unordered").hidden = tokenizer.ordered;
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (file) {
      tokenize(file, file.name);
    }
    $("upload").value = "";
  });
  $("examples").replaceChildren(
    ...state.info.examples.map((example) => {
      const image = element("img", { src: `/api/examples/${example.index}.png`, alt: example.name });
      const button = element("button", { type: "button", className: "example", title: example.name }, [image]);
      button.dataset.index = String(example.index);
      button.addEventListener("click", () => pickExample(example));
      return button;
    }),
  );
  $("keep").addEventListener("input", () => {
    state.keep = Number($("keep").value);
    drawCodes();
    redecode();
  });
  $("edit-set").addEventListener("click", () => setCode(state.selected, Number($("edit-code").value)));
  $("edit-code").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      setCode(state.selected, Number($("edit-code").value));
    }
  });
  $("edit-random").addEventListener("click", () => randomCode(state.selected));
  $("edit-reset").addEventListener("click", () => {
    state.codes = state.original.slice();
    $("edit-code").value = String(state.codes[state.selected]);
    drawCodes();
    redecode();
  });
}

// --- Generate -----------------------------------------------------------------------------------------------------

function number(id, what) {
  const text = $(id).value.trim();
  if (text === "" || !Number.isFinite(Number(text))) {
    throw new Error(`${what}: enter a number`);
  }
  return Number(text);
}

function generateRequest() {
  const label = $("label").value;
  return {
    label: label === "" ? null : Number(label),
    num_samples: number("num-samples", "samples"),
    seed: number("seed", "seed"),
    show_steps: $("show-steps").checked,
    sampling: {
      num_sample_steps: number("steps", "steps"),
      guidance_scale: number("guidance", "guidance"),
      randomize_temperature: number("temperature", "temperature"),
      mask_schedule: $("schedule").value,
    },
  };
}

async function generate(event) {
  event.preventDefault();
  showError("generate-error", null);
  $("generate").disabled = true;
  try {
    drawSamples(await postJSON("/api/generate", generateRequest()));
  } catch (error) {
    showError("generate-error", error);
  } finally {
    $("generate").disabled = false;
  }
}

function className(label) {
  return label === null ? "no class" : state.info.generator.classes[label];
}

function drawSamples(result) {
  $("samples").replaceChildren(
    ...result.images.map((source, i) => {
      const image = element("img", { src: source, className: "pixels sample", alt: className(result.labels[i]) });
      image.dataset.codes = result.codes[i].join(" ");
      image.title = `codes: ${image.dataset.codes}`;
      return element("figure", {}, [image, element("figcaption", { textContent: className(result.labels[i]) })]);
    }),
  );
  $("steps-view").replaceChildren(...result.steps.map(drawStep));
}

function drawStep(step) {
  const count = step.kept[0].length;
  const kept = [...step.kept[0]].filter((flag) => flag === "1").length;
  const title = element("h3", { textContent: `step ${step.step}: ${kept} of ${count} tokens kept` });
  const cells = step.images.map((source, i) => {
    const strip = element(
      "div",
      { className: "strip", title: "kept tokens (dark) and masked ones" },
      [...step.kept[i]].map((flag) => element("span", { className: flag === "1" ? "kept" : "" })),
    );
    return element("figure", {}, [element("img", { src: source, className: "pixels", alt: "" }), strip]);
  });
  const row = element("div", { className: "step" }, [title, element("div", { className: "samples" }, cells)]);
  row.dataset.step = String(step.step);
  return row;
}

function setUpGenerate() {
  const generator = state.info.generator;
  if (!generator) {
    $("no-generator").hidden = false;
    $("generate-form").hidden = true;
    return;
  }
  const options = generator.classes.map((name, i) => element("option", { value: String(i), textContent: name }));
  $("label").replaceChildren(...options, element("option", { value: "", textContent: "none (unconditional)" }));
  const schedules = generator.mask_schedules.map((name) => element("option", { value: name, textContent: name }));
  $("schedule").replaceChildren(...schedules);
  const sampling = generator.sampling;
  $("steps").value = String(sampling.num_sample_steps);
  $("guidance").value = String(sampling.guidance_scale);
  $("temperature").value = String(sampling.randomize_temperature);
  $("schedule").value = sampling.mask_schedule;
  $("num-samples").max = String(state.info.limits.max_samples);
  $("steps").max = String(state.info.limits.max_steps);
  $("generate-form").addEventListener("submit", generate);
}

async function start() {
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
  try {
    state.info = await call("/api/info");
  } catch (error) {
    showError("tokenize-error", error);
    return;
  }
  const { tokenizer, generator, precision } = state.info;
  const generatorName = generator ? generator.name : "none";
  $("models").textContent = `tokenizer: ${tokenizer.name} · generator: ${generatorName} · precision: ${precision}`;
  setUpTokenize();
  setUpGenerate();
  document.body.dataset.ready = "1";
}

start();
