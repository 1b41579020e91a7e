// Disco web client: accounts, groups, voice rooms, location map, chat.
//
// Plain JavaScript, no build step, no network resources beyond this server.
// It speaks the same protocol as every other client (docs/protocol.md):
// REST under /api for accounts and groups, one WebSocket at /ws?token=... for
// rooms, voice signaling, location and chat. The server mixes the room's
// audio and sends back ONE track (everyone but me), so there is exactly one
// RTCPeerConnection per room.
//
// `window.disco` holds the whole client state; it is also the debug handle
// (tests read `disco.pc.connectionState`).
"use strict";

const TOKEN_KEY = "disco.token";
const PING_EVERY_MS = 25_000;           // keeps idle connections open
const LOCATION_MIN_INTERVAL_MS = 3_000; // at most one location message per 3 s
const RECONNECT_MAX_MS = 15_000;

const disco = (window.disco = {
  token: localStorage.getItem(TOKEN_KEY),
  me: null,            // welcome.user: {id, kind, display_name}
  ws: null,
  iceServers: [],
  room: null,          // the room I am in ("group:12" or "nearby")
  wantRoom: null,      // the room to rejoin after a reconnect
  participantId: null, // my participant id in that room
  participants: new Map(), // participant_id -> {info, li}
  pc: null,
  localStream: null,
  muted: false,
  positions: new Map(),    // user key -> {name, lat, lon, acc, ts}
  memberNames: new Map(),  // user id -> display name, from the group's member list
  myPos: null,
  lastFix: null,       // my latest `location` message
  watchId: null,
  lastLocationSent: 0,
  reconnectMs: 1000,
  groups: [],
});

// ---------------------------------------------------------------- helpers --

const $ = (id) => document.getElementById(id);

/** Build an element: el("li", {className: "x"}, "text", child). */
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

function setStatus(text) {
  $("status").textContent = text;
}

/** Call the REST API; throws Error(message) on a non-2xx answer. */
async function api(method, path, body) {
  const headers = {};
  if (disco.token) headers.Authorization = `Bearer ${disco.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && data.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    if (response.status === 401 && disco.token) signOut("Your session has ended: sign in again.");
    throw error;
  }
  return data;
}

/** Run an async UI action, showing any failure in the error banner. */
function guarded(action) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    try {
      hideError();
      await action(event);
    } catch (err) {
      showError(err.message || String(err));
    }
  };
}

function nameOf(participantId) {
  const p = disco.participants.get(participantId);
  return p ? p.info.display_name : "someone";
}

// ------------------------------------------------------------ sign in/out --

async function signIn(path, body) {
  const result = await api("POST", path, body);
  disco.token = result.access_token;
  localStorage.setItem(TOKEN_KEY, disco.token);
  start();
}

function signOut(reason) {
  leaveRoom();
  setSharing(false);
  disco.token = null;
  disco.me = null;
  localStorage.removeItem(TOKEN_KEY);
  const ws = disco.ws;
  disco.ws = null;
  if (ws) ws.close();
  $("main").hidden = true;
  $("auth").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  setStatus("offline");
  if (reason) showError(reason);
}

function start() {
  $("auth").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  connect();
}

// -------------------------------------------------------------- websocket --

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws?token=${encodeURIComponent(disco.token)}`);
  disco.ws = ws;
  setStatus("connecting…");
  ws.onmessage = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    const handler = handlers[message.type];
    if (handler) handler(message);
  };
  ws.onclose = (event) => {
    if (disco.ws !== ws) return; // closed on purpose
    disco.ws = null;
    endMedia();
    disco.room = null;
    renderRoom();
    if (event.code === 4401) {
      signOut("Your session has expired: sign in again.");
      return;
    }
    setStatus(`offline, retrying in ${Math.round(disco.reconnectMs / 1000)} s`);
    setTimeout(() => disco.token && !disco.ws && connect(), disco.reconnectMs);
    disco.reconnectMs = Math.min(disco.reconnectMs * 2, RECONNECT_MAX_MS);
  };
}

function send(message) {
  if (!disco.ws || disco.ws.readyState !== WebSocket.OPEN) {
    showError("Not connected to the server.");
    return false;
  }
  disco.ws.send(JSON.stringify(message));
  return true;
}

setInterval(() => disco.ws && disco.ws.readyState === WebSocket.OPEN && send({ type: "ping" }),
  PING_EVERY_MS);

// Server messages, one handler per type. Unknown types are ignored.
const handlers = {
  welcome(msg) {
    disco.me = msg.user;
    disco.iceServers = msg.ice_servers || [];
    disco.reconnectMs = 1000;
    setStatus("online");
    $("whoami").textContent = `${msg.user.display_name}${msg.user.kind === "guest" ? " (guest)" : ""}`;
    $("groups-card").hidden = msg.user.kind !== "user";
    if (msg.user.kind === "user") loadGroups().catch((err) => showError(err.message));
    if (disco.wantRoom) joinRoom(disco.wantRoom);
  },
  joined(msg) {
    disco.room = msg.room;
    disco.participantId = msg.participant_id;
    disco.participants.clear();
    $("participants").replaceChildren();
    $("chat-log").replaceChildren();
    addParticipant({ participant_id: msg.participant_id, display_name: disco.me.display_name,
      muted: disco.muted, user_id: disco.me.id }, true);
    for (const p of msg.participants || []) addParticipant(p, false);
    renderRoom();
    if (disco.muted) send({ type: "mute", muted: true, room: msg.room }); // stay muted
    startMedia(msg.room).catch((err) => showError(`Voice failed: ${err.message}`));
    if (msg.room.startsWith("group:")) loadLocations(msg.room.slice(6));
    // The server places me in the nearby room by my next fix: send the last one now.
    if (msg.room === "nearby" && disco.lastFix) send(disco.lastFix);
  },
  left(msg) {
    if (msg.room !== disco.room) return;
    endMedia();
    disco.room = disco.wantRoom = null;
    renderRoom();
    if (msg.reason === "replaced") showError("You joined this room from another device.");
    else if (msg.reason) showError(`You left the room (${msg.reason}).`);
  },
  answer(msg) {
    if (disco.pc && msg.room === disco.room) {
      disco.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp })
        .catch((err) => showError(`Voice failed: ${err.message}`));
    }
  },
  peer_state(msg) {
    if (msg.participant_id === disco.participantId) renderPcState(`server: ${msg.state}`);
  },
  quality(msg) {
    if (msg.participant_id === disco.participantId) renderPcState(`connection: ${msg.quality}`);
  },
  participant_joined(msg) {
    if (msg.room === disco.room) addParticipant(msg, false);
  },
  participant_left(msg) {
    const p = disco.participants.get(msg.participant_id);
    if (msg.room !== disco.room || !p) return;
    p.li.remove();
    disco.participants.delete(msg.participant_id);
  },
  participant_muted(msg) {
    const p = disco.participants.get(msg.participant_id);
    if (p) p.li.classList.toggle("is-muted", msg.muted);
  },
  speaking(msg) {
    const p = disco.participants.get(msg.participant_id);
    if (p) p.li.classList.add("speaking");
  },
  stopped_speaking(msg) {
    const p = disco.participants.get(msg.participant_id);
    if (p) p.li.classList.remove("speaking");
  },
  chat(msg) {
    if (msg.room !== disco.room || msg.from === disco.participantId) return; // mine: shown already
    const sender = disco.participants.get(msg.from); // `from` is a participant id
    appendChat(msg.display_name || (sender ? sender.info.display_name : "someone"), msg.text);
  },
  member_location(msg) {
    const key = String(msg.user_id ?? msg.participant_id ?? msg.from);
    if (disco.me && key === String(disco.me.id)) return;
    // The server nests the position: {location: {lat, lon, accuracy_m, ts}}; a
    // member who paused sharing (or never shared) comes with location null.
    const loc = msg.location;
    if (!loc) {
      disco.positions.delete(key);
    } else {
      disco.positions.set(key, {
        name: msg.display_name || disco.memberNames.get(key) || `member ${key}`,
        lat: loc.lat, lon: loc.lon, acc: loc.accuracy_m, ts: loc.ts || Date.now() / 1000,
        approximate: msg.precision === "approximate",
      });
    }
    drawMap();
  },
  member_sharing(msg) {
    // Paused: show nothing rather than a stale position.
    if (msg.paused) handlers.member_location({ user_id: msg.user_id, location: null });
  },
  membership() {
    if (disco.me && disco.me.kind === "user") loadGroups().catch(() => {});
  },
  sos(msg) {
    showError(`SOS from ${msg.display_name || "a member"}: ${msg.message || "needs help"}`);
  },
  // Nearby room: exactly the people I can hear, with rounded distances ("~150 m").
  nearby(msg) {
    if (disco.room !== "nearby") return;
    const ids = new Set(msg.people.map((p) => p.participant_id));
    for (const [pid, p] of disco.participants) {
      if (pid !== disco.participantId && !ids.has(pid)) handlers.participant_left({ ...msg, participant_id: pid });
    }
    for (const person of msg.people) {
      addParticipant(person, false);
      disco.participants.get(person.participant_id).li.querySelector(".distance").textContent = person.distance;
    }
  },
  participant_renamed(msg) {
    const p = disco.participants.get(msg.participant_id);
    if (!p) return;
    p.info.display_name = msg.display_name;
    p.li.querySelector(".name").textContent = msg.display_name;
  },
  error(msg) {
    showError(`${msg.message} (${msg.code})`);
  },
};

// ----------------------------------------------------------------- groups --

async function loadGroups() {
  const { groups } = await api("GET", "/api/groups");
  disco.groups = groups;
  const list = $("groups");
  list.replaceChildren(...groups.map((g) => el("li", { className: "group" },
    el("span", { className: "grow" }, g.name, " ", el("small", { className: "muted" }, g.role || "")),
    el("button", { className: "talk", onclick: guarded(() => joinRoom(g.room)) }, "Talk"),
    el("button", { className: "secondary invite-btn", onclick: guarded(() => createInvite(g)) }, "Invite"),
  )));
  if (!groups.length) list.append(el("li", { className: "muted" }, "No groups yet: create one or enter an invite code."));
}

async function createInvite(group) {
  const invite = await api("POST", `/api/groups/${group.id}/invites`);
  const until = new Date(invite.expires_at * 1000).toLocaleString();
  const out = $("invite-out");
  out.replaceChildren(`Invite code for ${group.name}: `, el("code", { id: "invite-code-out" }, invite.code),
    el("small", { className: "muted" }, ` (valid until ${until})`));
  out.hidden = false;
}

// ------------------------------------------------------------------ rooms --

function joinRoom(room) {
  if (disco.room === room) return;
  leaveRoom();
  disco.wantRoom = room;
  const message = { type: "join", room };
  if (room === "nearby") {
    message.radius_m = Number($("radius").value);
    if (disco.watchId === null) setSharing(true); // nearby is about where I am
  }
  send(message);
}

function leaveRoom() {
  if (disco.room) send({ type: "leave", room: disco.room });
  endMedia();
  disco.room = disco.wantRoom = null;
  renderRoom();
}

function renderRoom() {
  const inRoom = Boolean(disco.room);
  $("room-card").hidden = !inRoom;
  if (!inRoom) return;
  const group = disco.groups.find((g) => g.room === disco.room);
  $("room-name").textContent = disco.room === "nearby" ? "Nearby" : group ? group.name : disco.room;
  $("join-nearby").disabled = disco.room === "nearby";
  renderPcState();
}

function renderPcState(extra) {
  const state = disco.pc ? disco.pc.connectionState : "no voice";
  $("pc-state").textContent = extra ? `${state}, ${extra}` : state;
}

/** One list row per participant; its class list carries speaking/muted. */
function addParticipant(info, isMe) {
  if (disco.participants.has(info.participant_id)) return;
  const li = el("li", { className: "participant" },
    el("span", { className: "dot", title: "speaking" }),
    el("span", { className: "grow" }, el("span", { className: "name" }, info.display_name),
      isMe ? " (you)" : ""),
    el("span", { className: "distance muted small" }),
    el("span", { className: "mute-tag" }, "muted"));
  if (!isMe) {
    // Per-listener gain: how loud this person is in MY mix (0..2, 1 = as is).
    const slider = el("input", { type: "range", min: "0", max: "2", step: "0.05", value: "1",
      title: "volume", className: "volume" });
    slider.addEventListener("change", () => send({ type: "volume",
      participant_id: info.participant_id, gain: Number(slider.value) }));
    li.append(slider);
  }
  li.dataset.participantId = info.participant_id;
  li.classList.toggle("is-muted", Boolean(info.muted));
  li.classList.toggle("speaking", Boolean(info.speaking)); // if the server says so on join
  disco.participants.set(info.participant_id, { info, li });
  $("participants").append(li);
}

// ------------------------------------------------------------------ voice --

/** Microphone up, one peer connection to the server's mixer, offer sent. */
async function startMedia(room) {
  endMedia();
  let stream = null;
  try {
    if (!navigator.mediaDevices) throw new Error("the microphone needs HTTPS (or localhost)");
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    showError(`No microphone (${err.message}): you can listen but not talk.`);
  }
  if (disco.room !== room) { // left while waiting for the permission prompt
    if (stream) stream.getTracks().forEach((t) => t.stop());
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: disco.iceServers });
  disco.pc = pc;
  disco.localStream = stream;
  if (stream) {
    for (const track of stream.getAudioTracks()) {
      track.enabled = !disco.muted;
      pc.addTrack(track, stream);
    }
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  pc.ontrack = (event) => {
    const audio = $("remote-audio");
    audio.srcObject = event.streams[0] || new MediaStream([event.track]);
    audio.play().catch(() => showError("Tap anywhere to start the sound."));
  };
  pc.onconnectionstatechange = () => {
    renderPcState();
    if (pc.connectionState === "failed") showError("Voice connection lost: leave and talk again.");
  };
  // Trickle my candidates, but only after the offer: the server needs it first.
  let offerSent = false;
  const early = [];
  const trickle = (c) => send({ type: "candidate", room, candidate: c && c.candidate
    ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null });
  pc.onicecandidate = (event) => {
    if (disco.pc !== pc) return;
    if (offerSent) trickle(event.candidate);
    else early.push(event.candidate);
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (disco.pc !== pc) return;
  send({ type: "offer", room, sdp: offer.sdp });
  offerSent = true;
  early.forEach(trickle);
  renderPcState();
}

function endMedia() {
  if (disco.pc) disco.pc.close();
  disco.pc = null;
  if (disco.localStream) disco.localStream.getTracks().forEach((t) => t.stop());
  disco.localStream = null;
  $("remote-audio").srcObject = null;
}

function setMuted(muted) {
  disco.muted = muted;
  if (disco.localStream) disco.localStream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  if (disco.room) send({ type: "mute", muted, room: disco.room });
  $("mute").textContent = muted ? "Unmute" : "Mute";
  $("mute").classList.toggle("active", muted);
  const me = disco.participants.get(disco.participantId);
  if (me) me.li.classList.toggle("is-muted", muted);
}

// --------------------------------------------------------------- location --

function setSharing(on) {
  $("share-location").checked = on;
  if (!on) {
    if (disco.watchId !== null) navigator.geolocation.clearWatch(disco.watchId);
    disco.watchId = null;
    return;
  }
  if (!navigator.geolocation) {
    $("share-location").checked = false;
    showError("This browser cannot tell its location.");
    return;
  }
  if (!window.isSecureContext) showError("Most browsers give the location only over HTTPS (or localhost).");
  disco.watchId = navigator.geolocation.watchPosition(onPosition,
    (err) => showError(`Location unavailable: ${err.message}`),
    { enableHighAccuracy: true, maximumAge: 5_000, timeout: 30_000 });
}

function onPosition(position) {
  const c = position.coords;
  disco.myPos = { lat: c.latitude, lon: c.longitude, acc: c.accuracy };
  drawMap();
  const fix = { type: "location", lat: c.latitude, lon: c.longitude,
    accuracy_m: Math.min(Math.max(c.accuracy || 1, 0.1), 100_000), ts: position.timestamp / 1000 };
  if (Number.isFinite(c.speed) && c.speed >= 0) fix.speed_mps = c.speed;
  if (Number.isFinite(c.heading) && c.heading >= 0 && c.heading < 360) fix.heading_deg = c.heading;
  disco.lastFix = fix; // re-sent on joining the nearby room
  const now = Date.now();
  if (now - disco.lastLocationSent < LOCATION_MIN_INTERVAL_MS) return;
  disco.lastLocationSent = now;
  send(fix);
}

/** Last known positions of a group's members (if the server offers them). */
async function loadLocations(groupId) {
  try {
    const group = await api("GET", `/api/groups/${groupId}`);
    for (const m of group.members || []) disco.memberNames.set(String(m.user_id), m.display_name);
    const data = await api("GET", `/api/groups/${groupId}/locations`);
    const list = Array.isArray(data) ? data : (data && (data.locations || data.members)) || [];
    for (const item of list) handlers.member_location(item);
  } catch (err) {
    if (err.status !== 404) showError(`Locations: ${err.message}`);
  }
}

const EARTH_RADIUS_M = 6_371_000;
const M_PER_DEG = (EARTH_RADIUS_M * Math.PI) / 180; // ~111 km per degree of latitude

/** Great-circle distance in metres (haversine). */
function distanceM(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 +
    Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

function formatDistance(m) {
  return m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(m < 10_000 ? 1 : 0)} km`;
}

/** A round ring radius (1, 2, 5 x 10^n metres) at least `m`. */
function niceRadius(m) {
  const base = 10 ** Math.floor(Math.log10(Math.max(m, 10)));
  return [1, 2, 5, 10].map((k) => k * base).find((r) => r >= m);
}

/**
 * Draw the map: me at the centre, north up, others placed by a local flat
 * projection (fine at the scale of a group), with distance rings.
 */
function drawMap() {
  const map = $("map");
  const others = [...disco.positions.values()];
  const center = disco.myPos || others[0];
  map.replaceChildren();
  const list = $("positions");
  list.replaceChildren();
  if (!center) {
    map.append(svg("text", { x: 0, y: 0, "text-anchor": "middle", class: "hint" },
      "No positions yet"));
    return;
  }
  const cosLat = Math.cos((center.lat * Math.PI) / 180);
  const toXY = (p) => [(p.lon - center.lon) * M_PER_DEG * cosLat, -(p.lat - center.lat) * M_PER_DEG];
  const farthest = Math.max(100, ...others.map((p) => distanceM(center, p)));
  const ring = niceRadius(farthest);
  const scale = 130 / ring; // SVG units per metre; the view is -150..150
  for (const r of [ring / 2, ring]) {
    map.append(svg("circle", { cx: 0, cy: 0, r: r * scale, class: "ring" }),
      // Labels sit on the north-east diagonal, clear of the "N" and of me.
      svg("text", { x: r * scale * 0.71 + 2, y: -r * scale * 0.71 - 2, class: "ring-label" },
        formatDistance(r)));
  }
  map.append(svg("text", { x: 0, y: -140, "text-anchor": "middle", class: "north" }, "N"));
  if (disco.myPos) {
    map.append(svg("circle", { cx: 0, cy: 0, r: Math.min(disco.myPos.acc * scale, 130), class: "accuracy" }),
      svg("circle", { cx: 0, cy: 0, r: 5, class: "me" }));
  }
  const now = Date.now() / 1000;
  const rows = others.map((p) => ({ p, d: distanceM(center, p) })).sort((a, b) => a.d - b.d);
  for (const { p, d } of rows) {
    const [x, y] = toXY(p).map((v) => v * scale);
    const stale = now - p.ts > 300;
    map.append(svg("circle", { cx: x, cy: y, r: 4.5, class: stale ? "member stale" : "member" }),
      svg("text", { x: x + 7, y: y + 3, class: "member-label" }, p.name));
    const age = Math.max(0, Math.round((now - p.ts) / 60));
    list.append(el("li", {}, el("span", { className: "grow" }, p.name),
      `${disco.myPos ? formatDistance(d) : "?"}`,
      el("small", { className: "muted" }, age ? ` · ${age} min ago` : " · now")));
  }
}

// ------------------------------------------------------------------- chat --

function appendChat(who, text) {
  const log = $("chat-log");
  log.append(el("p", {}, el("b", {}, `${who}: `), text));
  log.scrollTop = log.scrollHeight;
}

// ------------------------------------------------------------------ wiring --

function credentials() {
  return { username: $("username").value.trim(), password: $("password").value };
}

function wire() {
  $("error-close").onclick = hideError;
  $("login-form").onsubmit = guarded(() => signIn("/api/auth/login", credentials()));
  $("register").onclick = guarded(() => {
    if (!$("login-form").reportValidity()) return;
    return signIn("/api/auth/register",
      { ...credentials(), display_name: $("display-name").value.trim() || null });
  });
  $("guest-form").onsubmit = guarded(() =>
    signIn("/api/auth/guest", { display_name: $("guest-name").value.trim() }));
  $("logout").onclick = () => signOut();
  $("create-group-form").onsubmit = guarded(async () => {
    await api("POST", "/api/groups", { name: $("group-name").value.trim() });
    $("group-name").value = "";
    await loadGroups();
  });
  $("accept-form").onsubmit = guarded(async () => {
    const code = $("invite-code").value.trim();
    await api("POST", `/api/invites/${encodeURIComponent(code)}/accept`);
    $("invite-code").value = "";
    await loadGroups();
  });
  $("join-nearby").onclick = guarded(() => joinRoom("nearby"));
  $("radius").oninput = () => { $("radius-out").textContent = formatDistance(Number($("radius").value)); };
  $("radius").onchange = () => {
    if (disco.room === "nearby") send({ type: "radius", radius_m: Number($("radius").value) });
  };
  $("mute").onclick = () => setMuted(!disco.muted);
  $("leave").onclick = () => leaveRoom();
  $("share-location").onchange = (event) => setSharing(event.target.checked);
  $("chat-form").onsubmit = guarded(() => {
    const text = $("chat-text").value.trim();
    if (!text || !disco.room) return;
    if (send({ type: "chat", room: disco.room, text })) appendChat("me", text);
    $("chat-text").value = "";
  });
  // Browsers may block autoplay until the page is touched: retry on any tap.
  document.addEventListener("click", () => {
    const audio = $("remote-audio");
    if (audio.srcObject && audio.paused) audio.play().catch(() => {});
  });
  drawMap();
  if (disco.token) start();
  else $("auth").hidden = false;
}

wire();
