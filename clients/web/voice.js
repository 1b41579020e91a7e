// The voice room's extras: push-to-talk (hold the button or the space bar),
// the microphone picker, a level meter, "you are muted" while speaking muted,
// and shared music (upload, queue, pause/resume/skip/stop, now playing).
//
// The meter listens to a clone of the microphone track that stays enabled,
// so it still hears you while the sent track is muted.
"use strict";

const LEVEL_EVERY_MS = 100;
const SPEAKING_LEVEL = 0.04;       // RMS of the float samples that counts as talking
const METER_WINDOW = 8_192;        // samples read per tick: ~170 ms at 48 kHz, longer than a tick,
                                   // so no sound falls between two reads
const METER_BLOCK = 480;           // the level is the loudest 10 ms block in the window
const MUTED_HINT_FOR_MS = 1_500;   // the hint stays this long after the last loud moment
const MIC_KEY = "disco.mic";

const voice = (window.discoVoice = {
  ptt: false,        // push-to-talk mode
  talking: false,    // the PTT button or space is held
  audioContext: null,
  analyser: null,
  meterTrack: null,  // the clone the meter listens to
  timer: null,
  lastLoudMuted: 0, // when the microphone was last loud while muted
  level: 0,
});

// ------------------------------------------------------------ microphone --

/** getUserMedia constraints with the chosen microphone, if any. */
function micConstraints() {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const id = localStorage.getItem(MIC_KEY);
  if (id) audio.deviceId = { ideal: id };
  return { audio };
}

/** Fill the picker (device labels exist once the microphone was granted). */
async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  const current = disco.localStream && disco.localStream.getAudioTracks()[0];
  const currentId = current && current.getSettings ? current.getSettings().deviceId : null;
  $("mic-select").replaceChildren(...devices.map((d, i) =>
    el("option", { value: d.deviceId, selected: d.deviceId === currentId }, d.label || `Microphone ${i + 1}`)));
  $("mic-select").hidden = devices.length < 2;
}

/** Switch microphones without renegotiating: replace the sender's track. */
async function chooseMicrophone(deviceId) {
  localStorage.setItem(MIC_KEY, deviceId);
  if (!disco.pc) return;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { ...micConstraints().audio, deviceId: { exact: deviceId } } });
  const track = stream.getAudioTracks()[0];
  track.enabled = !disco.muted;
  const sender = disco.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
  if (sender) await sender.replaceTrack(track);
  if (disco.localStream) disco.localStream.getTracks().forEach((t) => t.stop());
  disco.localStream = stream;
  startMeter(stream);
}

// ----------------------------------------------------------------- meter --

function startMeter(stream) {
  stopMeter();
  const track = stream && stream.getAudioTracks()[0];
  if (!track || !window.AudioContext) return;
  voice.meterTrack = track.clone();
  voice.meterTrack.enabled = true;
  voice.audioContext = voice.audioContext || new AudioContext();
  voice.audioContext.resume().catch(() => {});
  const source = voice.audioContext.createMediaStreamSource(new MediaStream([voice.meterTrack]));
  voice.analyser = voice.audioContext.createAnalyser();
  voice.analyser.fftSize = METER_WINDOW;
  source.connect(voice.analyser);
  const samples = new Float32Array(voice.analyser.fftSize);
  voice.timer = setInterval(() => {
    voice.analyser.getFloatTimeDomainData(samples);
    let loudest = 0;
    for (let start = 0; start + METER_BLOCK <= samples.length; start += METER_BLOCK) {
      let sum = 0;
      for (let i = start; i < start + METER_BLOCK; i += 1) sum += samples[i] * samples[i];
      loudest = Math.max(loudest, sum / METER_BLOCK);
    }
    voice.level = Math.sqrt(loudest);
    $("level").value = Math.min(1, voice.level * 4);
    if (disco.muted && voice.level >= SPEAKING_LEVEL) voice.lastLoudMuted = Date.now();
    renderMutedHint();
  }, LEVEL_EVERY_MS);
  $("level").hidden = false;
}

/** "You are muted" while the microphone hears you talking muted (and a moment after). */
function renderMutedHint() {
  if (!disco.muted) voice.lastLoudMuted = 0;
  $("muted-hint").hidden = !(disco.muted && Date.now() - voice.lastLoudMuted < MUTED_HINT_FOR_MS);
}

function stopMeter() {
  clearInterval(voice.timer);
  voice.timer = null;
  if (voice.meterTrack) voice.meterTrack.stop();
  voice.meterTrack = null;
  voice.lastLoudMuted = 0;
  $("muted-hint").hidden = true;
  $("level").value = 0;
}

// ---------------------------------------------------------- push-to-talk --

function setPushToTalk(on) {
  voice.ptt = on;
  $("ptt-mode").checked = on;
  $("ptt").hidden = !on;
  $("mute").hidden = on;
  setMuted(on); // PTT: silent until held
  $("muted-hint").textContent = on ? "You are muted: hold Talk (or the space bar) to speak." : "You are muted.";
}

function talk(down) {
  if (!voice.ptt || voice.talking === down) return;
  voice.talking = down;
  $("ptt").classList.toggle("active", down);
  $("ptt").textContent = down ? "Talking…" : "Hold to talk";
  setMuted(!down);
}

const NOT_TYPING_INPUTS = new Set(["checkbox", "radio", "range", "button", "submit", "file"]);
/** Space in a text field types a space; anywhere else it is the talk key. */
function typingIn(target) {
  if (!target) return false;
  if (target.tagName === "INPUT") return !NOT_TYPING_INPUTS.has(target.type);
  return target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName);
}

function wireVoice() {
  $("ptt-mode").onchange = (e) => setPushToTalk(e.target.checked);
  const button = $("ptt");
  button.addEventListener("pointerdown", (e) => { e.preventDefault(); talk(true); });
  for (const end of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(end, () => talk(false));
  document.addEventListener("keydown", (e) => {
    if (e.code !== "Space" || !voice.ptt || !disco.room || typingIn(e.target)) return;
    e.preventDefault();
    talk(true);
  });
  document.addEventListener("keyup", (e) => {
    if (e.code === "Space" && voice.ptt) { e.preventDefault(); talk(false); }
  });
  $("mic-select").onchange = guarded(() => chooseMicrophone($("mic-select").value));
  $("music-form").onsubmit = guarded(uploadMusic);
  for (const action of ["pause", "resume", "skip", "stop"]) {
    $(`music-${action}`).onclick = () => send({ type: "music", action, room: disco.room });
  }
}

// ----------------------------------------------------------------- music --

function renderMusicAllowed() {
  const allowed = disco.musicAllowed;
  $("music-none").hidden = allowed;
  $("music-form").hidden = !allowed;
  $("music-controls").hidden = !allowed;
}

/** Upload the chosen file, then play it (or queue it behind what plays). */
async function uploadMusic() {
  const file = $("music-file").files[0];
  if (!file) throw new Error("Choose an audio file first.");
  $("music-upload").disabled = true;
  try {
    const response = await fetch(`/api/music/uploads?filename=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { Authorization: `Bearer ${disco.token}` }, body: file,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || `upload failed (${response.status})`);
    (disco.musicNames || (disco.musicNames = new Map())).set(data.source, file.name);
    const playing = disco.music && disco.music.current;
    send({ type: "music", action: playing ? "queue" : "play", source: data.source, room: disco.room });
    $("music-file").value = "";
  } finally {
    $("music-upload").disabled = false;
  }
}

function onMusicState(msg) {
  if (msg.room && msg.room !== disco.room) return;
  disco.music = msg;
  if (msg.allowed === false) { disco.musicAllowed = false; renderMusicAllowed(); }
  const names = disco.musicNames || (disco.musicNames = new Map());
  const label = (t) => names.get(t.source) || t.source;
  const current = msg.current;
  $("now-playing").textContent = current
    ? `${msg.status === "paused" ? "Paused" : "Now playing"}: ${label(current)}`
    : "No music playing.";
  $("music-queue").replaceChildren(...(msg.queue || []).map((t) => el("li", {}, label(t))));
  $("music-pause").hidden = msg.status !== "playing";
  $("music-resume").hidden = msg.status !== "paused";
}

// ------------------------------------------------------ connection quality --

const QUALITY_EVERY_MS = 3_000;
const QUALITY_FAIR = { rttMs: 250, lossPct: 3 };  // worse than either: fair
const QUALITY_POOR = { rttMs: 600, lossPct: 10 }; // worse than either: poor

/**
 * What the server reports about my stream (its RTCP receiver reports: round
 * trip and loss, as remote-inbound-rtp in the stats), as good / fair / poor.
 */
async function measureQuality() {
  const pc = disco.pc;
  if (!pc || pc.connectionState !== "connected") { disco.quality = null; renderQuality(); return; }
  let rttS = null;
  let lost = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "remote-inbound-rtp" && r.kind === "audio") {
      if (Number.isFinite(r.roundTripTime)) rttS = r.roundTripTime;
      if (Number.isFinite(r.fractionLost)) lost = r.fractionLost;
    }
  });
  if (rttS === null && lost === null) { disco.quality = null; renderQuality(); return; }
  const rttMs = Math.round((rttS ?? 0) * 1000);
  const lossPct = Math.round((lost ?? 0) * 100);
  const level = rttMs > QUALITY_POOR.rttMs || lossPct > QUALITY_POOR.lossPct ? "poor"
    : rttMs > QUALITY_FAIR.rttMs || lossPct > QUALITY_FAIR.lossPct ? "fair" : "good";
  disco.quality = { level, rttMs, lossPct };
  renderQuality();
}

function renderQuality() {
  const q = disco.quality;
  const out = $("quality");
  out.hidden = !q;
  if (!q) return;
  out.textContent = `connection ${q.level} (${q.rttMs} ms, ${q.lossPct}% lost)`;
  out.className = `quality small ${q.level}`;
}

setInterval(() => { measureQuality().catch(() => {}); }, QUALITY_EVERY_MS);
