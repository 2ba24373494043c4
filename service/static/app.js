// The try-it page: record or upload a clip (POST /v1/recognize) and stream audio (WS /v1/stream).
// No framework and no build step: the service serves this file as it is.
"use strict";

const MODEL_RATE = 16000;
const CHUNK_SECONDS = 0.1;            // how much audio one binary WebSocket message carries
const MAX_RECORD_SECONDS = 9.5;       // the service refuses clips over 10 s
const $ = (id) => document.getElementById(id);

// -- API key, errors ----------------------------------------------------------------------------

const apiKeyInput = $("api-key");
apiKeyInput.value = localStorage.getItem("kws-api-key") || "";
apiKeyInput.addEventListener("change", () => {
  localStorage.setItem("kws-api-key", apiKeyInput.value.trim());
  loadModel();  // a 401 from a missing key clears once the right one is typed
});
$("api-key-form").addEventListener("submit", (event) => event.preventDefault());
const apiKey = () => apiKeyInput.value.trim();
const authHeaders = () => (apiKey() ? { "X-API-Key": apiKey() } : {});

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// The service answers errors as {"error": {"code", "message"}}; anything else is shown as it came.
async function errorText(response) {
  try {
    const { error } = await response.json();
    return `${response.status} ${error.code}: ${error.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

// -- rendering --------------------------------------------------------------------------------

let labels = [];
const labelColour = (label) => `hsl(${(Math.max(0, labels.indexOf(label)) * 47) % 360} 65% 45%)`;

function renderBars(list, topK) {
  list.replaceChildren(...topK.map(({ label, score }) => {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.innerHTML = '<span class="bar-label"></span><span class="bar"><span></span></span><span class="bar-value"></span>';
    item.children[0].textContent = label;
    item.children[1].firstChild.style.width = `${(100 * score).toFixed(1)}%`;
    item.children[1].firstChild.style.background = labelColour(label);
    item.children[2].textContent = score.toFixed(3);
    return item;
  }));
}

function renderLatency(latency) {
  $("latency").tBodies[0].replaceChildren(...Object.entries(latency).map(([stage, ms]) => {
    const row = document.createElement("tr");
    row.innerHTML = "<th scope=row></th><td></td>";
    row.cells[0].textContent = stage;
    row.cells[1].textContent = `${ms.toFixed(1)} ms`;
    return row;
  }));
}

function showRecognition(result) {
  $("result").hidden = false;
  $("result-label").textContent = result.label;
  $("result-score").textContent = `score ${result.score.toFixed(3)}, ${result.audio.duration_s} s of ${result.audio.format}`;
  renderBars($("result-bars"), result.top_k);
  renderLatency(result.latency_ms);
}

async function loadModel() {
  showError("");
  for (let attempt = 0; attempt < 30; attempt++) {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.status === 503) {  // still warming up: Retry-After is 1 s
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    if (!response.ok) {
      $("model").textContent = "Model not loaded";
      return showError(await errorText(response));
    }
    const model = await response.json();
    labels = model.labels;
    $("model").textContent = `Model ${model.name} (version ${model.version})`;
    $("labels").textContent = `Labels: ${model.labels.join(", ")}`;
    return;
  }
  showError("the service did not become ready");
}

// -- one clip: upload or record ---------------------------------------------------------------

async function recognize(blob, filename) {
  showError("");
  const form = new FormData();
  form.append("file", blob, filename);
  try {
    showRecognition(await api("/v1/recognize?top_k=5", { method: "POST", body: form }));
  } catch (error) {
    showError(error.message);
  }
}

$("clip-send").addEventListener("click", () => {
  const file = $("clip-file").files[0];
  if (!file) return showError("choose an audio file first");
  recognize(file, file.name);
});

let recorder = null;
$("record").addEventListener("click", async () => {
  showError("");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    return showError(`microphone unavailable: ${error.message}`);
  }
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((t) => MediaRecorder.isTypeSupported(t));
  recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  const started = performance.now();
  const timer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    $("record-time").textContent = `${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORD_SECONDS) stopRecording();
  }, 100);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    const blob = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    $("record").disabled = false;
    $("record-stop").disabled = true;
    recognize(blob, `recording.${blob.type.includes("mp4") ? "m4a" : blob.type.includes("ogg") ? "ogg" : "webm"}`);
  });
  recorder.start();
  $("record").disabled = true;
  $("record-stop").disabled = false;
});

function stopRecording() {
  if (recorder && recorder.state === "recording") recorder.stop();
}
$("record-stop").addEventListener("click", stopRecording);

// -- streaming --------------------------------------------------------------------------------

const timeline = { detections: [], now: 0, duration: 0 };
const escapeXml = (text) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function renderTimeline() {
  const svg = $("timeline");
  const width = svg.clientWidth || 600, height = 90, axis = 70;
  const span = Math.max(10, timeline.duration, Math.ceil(timeline.now));
  const x = (t) => (t / span) * width;
  const step = span <= 20 ? 1 : span <= 60 ? 5 : 10;
  const parts = [`<line class="axis" x1="0" y1="${axis}" x2="${width}" y2="${axis}"/>`];
  for (let t = 0; t <= span; t += step) {
    parts.push(`<line class="tick" x1="${x(t)}" y1="${axis}" x2="${x(t)}" y2="${axis + 5}"/>`,
               `<text class="tick-label" x="${x(t) + 2}" y="${height - 3}">${t}s</text>`);
  }
  for (const d of timeline.detections) {
    const label = escapeXml(d.label);
    const left = x(d.t_start), right = Math.max(x(d.t_end), left + 3);
    parts.push(`<g class="detection" data-label="${label}"><title>${label} ${d.score.toFixed(2)}, ` +
               `${d.t_start.toFixed(2)}–${d.t_end.toFixed(2)} s</title>` +
               `<rect x="${left}" y="22" width="${right - left}" height="${axis - 22}" fill="${labelColour(d.label)}"/>` +
               `<text x="${left}" y="16">${label}</text></g>`);
  }
  parts.push(`<line class="now" x1="${x(timeline.now)}" y1="0" x2="${x(timeline.now)}" y2="${axis}"/>`);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.innerHTML = parts.join("");
}

function toPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 0x7fff;
  return pcm.buffer;  // Int16Array is little-endian on every platform browsers run on
}

// Decode a file and resample it to the model rate: decodeAudioData resamples to its context's rate.
async function decodeFile(file) {
  const decoded = await new OfflineAudioContext(1, 1, MODEL_RATE).decodeAudioData(await file.arrayBuffer());
  const mono = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    decoded.getChannelData(c).forEach((v, i) => { mono[i] += v / decoded.numberOfChannels; });
  }
  return mono;
}

const CAPTURE_WORKLET = `registerProcessor("capture", class extends AudioWorkletProcessor {
  process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice()); return true; }
});`;

// The microphone through an AudioContext at 16 kHz (the browser resamples), else at its own rate
// (the service accepts 8–48 kHz and resamples itself). Calls onAudio with Float32Array chunks.
async function openMicrophone(onAudio) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false } });
  let context, source;
  try {
    context = new AudioContext({ sampleRate: MODEL_RATE });
    source = context.createMediaStreamSource(stream);
  } catch {
    context?.close();
    context = new AudioContext();
    source = context.createMediaStreamSource(stream);
  }
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" })));
  const capture = new AudioWorkletNode(context, "capture");
  capture.port.onmessage = (event) => onAudio(event.data);
  source.connect(capture);
  let open = true;
  const close = () => {  // called when the user stops and again when the socket closes
    if (open) stream.getTracks().forEach((t) => t.stop()), context.close();
    open = false;
  };
  return { rate: context.sampleRate, close };
}

let activeStream = null;

function setStreaming(on, status) {
  $("stream-start").disabled = on;
  $("stream-stop").disabled = !on;
  $("stream-status").textContent = status;
}

function streamUrl(rate) {
  const params = new URLSearchParams({ format: "pcm16", sample_rate: String(rate), top_k: "3" });
  if (apiKey()) params.set("api_key", apiKey());
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream?${params}`;
}

async function startStream() {
  showError("");
  const fromFile = document.querySelector('input[name="stream-source"]:checked').value === "file";
  const session = { stopped: false, finished: false };
  let samples = null, microphone = null, socket = null, pending = [];
  const sendMicrophone = () => {  // joins the worklet's 128-sample blocks into 100 ms messages
    const count = pending.reduce((n, c) => n + c.length, 0);
    if (socket?.readyState !== WebSocket.OPEN || session.stopped || count < CHUNK_SECONDS * microphone.rate) return;
    const joined = new Float32Array(count);
    pending.reduce((offset, c) => (joined.set(c, offset), offset + c.length), 0);
    pending = [];
    socket.send(toPcm16(joined));
  };
  try {
    if (fromFile) {
      const file = $("stream-file").files[0];
      if (!file) return showError("choose a file to stream first");
      samples = await decodeFile(file);
    } else {
      microphone = await openMicrophone((chunk) => { pending.push(chunk); sendMicrophone(); });
    }
  } catch (error) {
    return showError(`${fromFile ? "could not decode the file" : "microphone unavailable"}: ${error.message}`);
  }
  timeline.detections = [];
  timeline.now = 0;
  timeline.duration = samples ? samples.length / MODEL_RATE : 0;
  $("detections").replaceChildren();
  $("stream-bars").replaceChildren();
  renderTimeline();

  socket = new WebSocket(streamUrl(microphone ? microphone.rate : MODEL_RATE));
  session.sendEnd = () => {
    if (session.stopped) return;
    session.stopped = true;
    microphone?.close();
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
    setStreaming(true, "finishing…");
  };
  activeStream = session;
  setStreaming(true, "connecting…");

  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      setStreaming(true, "streaming");
      if (samples) sendFile(socket, samples, Number($("stream-speed").value), session);
    } else if (message.type === "scores") {
      timeline.now = message.t_end;
      // speech: false — the VAD heard no speech in this window, so the model did not score it
      renderBars($("stream-bars"), message.speech === false ? [{ label: "no speech", score: 0 }] : message.top_k);
      renderTimeline();
    } else if (message.type === "detection") {
      timeline.detections.push(message);
      renderTimeline();
      const item = document.createElement("li");
      item.dataset.label = message.label;
      item.textContent = `${message.label} (${message.score.toFixed(2)}) at ${message.t_start.toFixed(2)}–${message.t_end.toFixed(2)} s`;
      $("detections").append(item);
    } else if (message.type === "end") {
      session.finished = true;
      timeline.now = message.duration_s;
      renderTimeline();
      setStreaming(false, `finished: ${message.detections} detection(s) in ${message.duration_s.toFixed(1)} s`);
    } else if (message.type === "error") {
      showError(`stream error ${message.code}: ${message.message}`);
    }
  });
  socket.addEventListener("close", (event) => {
    session.stopped = true;
    microphone?.close();
    if (activeStream === session) activeStream = null;
    if (event.code !== 1000 && $("error").hidden) {
      // A refused handshake or a dropped connection reaches the browser only as 1006, without a reason.
      const hint = event.code === 1006 ? " (the connection was refused or dropped)" : "";
      showError(`the stream closed with code ${event.code}${event.reason ? `: ${event.reason}` : hint}`);
    }
    if (!session.finished) setStreaming(false, "closed");
  });
}

// Send the decoded file in 100 ms messages, paced at `speed` times real time (0: as fast as possible), then "end".
function sendFile(socket, samples, speed, session) {
  const chunk = Math.round(CHUNK_SECONDS * MODEL_RATE);
  const started = performance.now();
  let offset = 0;
  const next = () => {
    if (session.stopped || socket.readyState !== WebSocket.OPEN) return;
    socket.send(toPcm16(samples.subarray(offset, offset + chunk)));
    offset += chunk;
    if (offset >= samples.length) return session.sendEnd();
    const due = speed > 0 ? started + (1000 * offset) / MODEL_RATE / speed : 0;
    setTimeout(next, Math.max(0, due - performance.now()));
  };
  next();
}

$("stream-start").addEventListener("click", startStream);
$("stream-stop").addEventListener("click", () => activeStream?.sendEnd());
window.addEventListener("resize", renderTimeline);

loadModel();
renderTimeline();
