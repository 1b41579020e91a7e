// Disco web client: accounts, groups, voice rooms, location, chat.
// map.js (MapLibre, loaded after sign-in) and group.js (members, invites,
// places, events, sharing, SOS) are loaded before this file and share its globals.
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
const REJOIN_DELAY_MS = 500;             // after the call's node went away, then join again
// `left` reasons after which the call goes on elsewhere: join again (docs/protocol.md)
const REJOIN_REASONS = new Set(["host_lost", "moved"]);

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
  groupId: null,       // the open group (map, members, places, events)
  members: [],         // its members: {user_id, username, display_name, role}
  places: [],
  events: [],          // place_event / sos of the open group, oldest first
  sos: null,           // the SOS alert shown, until acknowledged
  sharingMode: null,   // "precise" | "approximate" | "paused" | null (never chosen)
  battery: null,       // BatteryManager, where the browser has one
  liveAt: new Map(),   // user id -> when its last live location/sharing event came
  musicAllowed: true,
});

// ---------------------------------------------------------------- helpers --

const $ = (id) => document.getElementById(id);

/** Build an element: el("li", {className: "x"}, "text", child). */
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
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
  closeGroup();
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
  ensureMap().catch(() => {}); // MapLibre only now, after sign-in
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
    $("offline").hidden = false;
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

/** A member's position (live or from REST) into the open group's map; null removes it. */
function applyLocation(msg) {
  if (msg.group_id !== undefined && msg.group_id !== disco.groupId) return; // another group
  const key = String(msg.user_id ?? msg.participant_id ?? msg.from);
  if (disco.me && key === String(disco.me.id)) return;
  // The server nests the position: {location: {lat, lon, accuracy_m, ts}}; a
  // member who paused sharing (or never shared) comes with location null.
  const loc = msg.location;
  if (!loc) {
    disco.positions.delete(key);
  } else {
    disco.positions.set(key, {
      name: msg.display_name || memberName(key),
      lat: loc.lat, lon: loc.lon, acc: loc.accuracy_m, ts: loc.ts || Date.now() / 1000,
      battery: loc.battery_pct, approximate: msg.precision === "approximate",
    });
  }
  drawPositions();
}

// Server messages, one handler per type. Unknown types are ignored.
const handlers = {
  welcome(msg) {
    disco.me = msg.user;
    disco.iceServers = msg.ice_servers || [];
    disco.reconnectMs = 1000;
    setStatus("online");
    $("offline").hidden = true;
    $("whoami").textContent = `${msg.user.display_name}${msg.user.kind === "guest" ? " (guest)" : ""}`;
    $("groups-card").hidden = msg.user.kind !== "user";
    $("sharing").hidden = msg.user.kind !== "user";
    $("sos").hidden = $("sos-help").hidden = msg.user.kind !== "user";
    if (msg.user.kind === "user") {
      offerPush();
      loadGroups()
        .then(() => (pendingInvite() ? acceptPendingInvite() : disco.groupId && openGroup(disco.groupId)))
        .catch((err) => showError(err.message));
    }
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
    disco.musicAllowed = msg.music_allowed !== false;
    disco.music = null;
    renderMusicAllowed();
    onMusicState({ room: msg.room, status: "stopped", current: null, queue: [] });
    if (msg.room.startsWith("group:")) openGroup(Number(msg.room.slice(6))).catch((err) => showError(err.message));
    // The server places me in the nearby room by my next fix: send the last one now.
    if (msg.room === "nearby" && disco.lastFix) send(disco.lastFix);
  },
  left(msg) {
    if (msg.room !== disco.room) return;
    endMedia();
    disco.room = null;
    renderRoom();
    if (REJOIN_REASONS.has(msg.reason)) {
      // The node hosting the call went away (or the call moved): join again and
      // the deployment places the room on a live node.
      rejoinSoon(msg.room);
      return;
    }
    disco.wantRoom = null;
    if (msg.reason === "replaced") showError("You joined this room from another device.");
    else if (msg.reason) showError(`You left the room (${msg.reason}).`);
  },
  reconnect() {
    // The server is draining: reconnect (through the load balancer, to another node)
    // and rejoin the room we were in.
    disco.wantRoom = disco.wantRoom || disco.room;
    const ws = disco.ws;
    disco.ws = null;
    endMedia();
    disco.room = null;
    renderRoom();
    if (ws) ws.close();
    setStatus("reconnecting…");
    connect();
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
    disco.liveAt.set(String(msg.user_id), performance.now());
    applyLocation(msg);
  },
  member_sharing(msg) {
    disco.liveAt.set(String(msg.user_id), performance.now());
    // Paused: show nothing rather than a stale position.
    if (msg.paused) applyLocation({ group_id: msg.group_id, user_id: msg.user_id, location: null });
    else {
      const p = disco.positions.get(String(msg.user_id));
      if (p && msg.group_id === disco.groupId) { p.approximate = msg.precision === "approximate"; drawPositions(); }
    }
  },
  membership(msg) {
    if (!disco.me || disco.me.kind !== "user") return;
    if (msg.change === "joined" && msg.group_id === disco.groupId && msg.user_id !== disco.me.id) {
      const group = disco.groups.find((g) => g.id === msg.group_id);
      api("GET", `/api/groups/${msg.group_id}`).then((detail) => {
        const who = (detail.members || []).find((m) => m.user_id === msg.user_id);
        notify(`${who ? who.display_name || who.username : "Someone"} joined ${group ? group.name : "the group"}.`);
      }).catch(() => {});
    }
    loadGroups().then(() => {
      const stillIn = disco.groups.some((g) => g.id === disco.groupId);
      if (!stillIn) { closeGroup(); return null; }
      return msg.group_id === disco.groupId ? openGroup(disco.groupId) : null;
    }).catch(() => {});
  },
  place_event(msg) {
    if (msg.group_id === disco.groupId) addEvent(msg);
    else notify(eventText(msg));
  },
  // Another admin added, moved or deleted a place: the list and the map follow at once.
  place_changed(msg) {
    if (msg.group_id !== disco.groupId) return;
    const others = disco.places.filter((p) => p.id !== msg.place.id);
    disco.places = msg.change === "deleted" ? others : [...others, msg.place].sort((a, b) => a.id - b.id);
    renderPlaces();
  },
  sos: (msg) => onSos(msg),
  music_state: (msg) => onMusicState(msg),
  sos_sent: (msg) => onSosSent(msg),
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
    if (msg.code === "moved" && disco.room) {
      // A message for a call whose node has gone: join again, placed on a live node.
      const room = disco.room;
      endMedia();
      disco.room = null;
      renderRoom();
      rejoinSoon(room);
      return;
    }
    showError(`${msg.message} (${msg.code})`);
  },
};

// ----------------------------------------------------------------- groups --

async function loadGroups() {
  const { groups } = await api("GET", "/api/groups");
  disco.groups = groups;
  const list = $("groups");
  list.replaceChildren(...groups.map((g) => {
    const li = el("li", { className: `group${g.id === disco.groupId ? " open" : ""}` },
      el("button", { className: "link grow open-group", onclick: guarded(() => openGroup(g.id)) },
        g.name, " ", el("small", { className: "muted" }, g.role || "")),
      el("button", { className: "talk", onclick: guarded(() => joinRoom(g.room)) }, "Talk"));
    if (g.role === "owner" || g.role === "admin") {
      li.append(el("button", { className: "secondary invite-btn", onclick: guarded(() => createInvite(g)) }, "Invite"));
    }
    li.dataset.groupId = g.id;
    return li;
  }));
  if (!groups.length) list.append(el("li", { className: "muted" }, "No groups yet: create one or open an invite link."));
  if (!disco.groupId && groups.length === 1) await openGroup(groups[0].id);
}

// ------------------------------------------------------------------ rooms --

/** Join ``room`` again after a moment (its node went away; the server places it anew). */
function rejoinSoon(room) {
  disco.wantRoom = room;
  setStatus("rejoining the call…");
  setTimeout(() => disco.wantRoom === room && !disco.room && send(joinMessage(room)),
    REJOIN_DELAY_MS);
}

function joinMessage(room) {
  const message = { type: "join", room };
  if (room === "nearby") message.radius_m = Number($("radius").value);
  return message;
}

function joinRoom(room) {
  if (disco.room === room) return;
  leaveRoom();
  disco.wantRoom = room;
  if (room === "nearby" && disco.watchId === null) setSharing(true); // nearby is about where I am
  send(joinMessage(room));
}

function leaveRoom() {
  if (disco.room) send({ type: "leave", room: disco.room });
  endMedia();
  disco.room = disco.wantRoom = null;
  renderRoom();
}

function renderRoom() {
  renderMap(); // the hearing radius shows in the nearby room
  const inRoom = Boolean(disco.room);
  $("room-card").hidden = !inRoom;
  if (!inRoom) return;
  const group = disco.groups.find((g) => g.room === disco.room);
  $("room-name").textContent = disco.room === "nearby" ? "Talking nearby" : group ? group.name : disco.room;
  $("join-nearby").disabled = disco.room === "nearby";
  renderPcState();
}

function renderPcState(extra) {
  const state = disco.pc ? disco.pc.connectionState : "no voice";
  $("pc-state").textContent = extra ? `${state}, ${extra}` : state;
  renderQuality();
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
    stream = await navigator.mediaDevices.getUserMedia(micConstraints());
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
    startMeter(stream);
    listMicrophones().catch(() => {});
  }
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
  stopMeter();
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
  renderMutedHint();
}

// --------------------------------------------------------------- location --

const GEO_ERRORS = { 1: "permission denied", 2: "position unavailable", 3: "timed out" };
let locationErrorShown = false;

/** The browser's position watch: on while sharing (the server is told by setSharingMode). */
function setSharing(on) {
  if (!on) {
    if (disco.watchId !== null) navigator.geolocation.clearWatch(disco.watchId);
    disco.watchId = null;
    return;
  }
  if (disco.watchId !== null) return;
  if (!navigator.geolocation) {
    showError("This browser cannot tell its location.");
    return;
  }
  if (!window.isSecureContext) showError("Most browsers give the location only over HTTPS (or localhost).");
  if (navigator.getBattery && !disco.battery) navigator.getBattery().then((b) => { disco.battery = b; }).catch(() => {});
  disco.watchId = navigator.geolocation.watchPosition(onPosition, (err) => {
    const reason = err.message || GEO_ERRORS[err.code] || "no reason given";
    if (err.code === 1) { // denied: nothing will come until the user changes it
      locationErrorShown = true;
      showError(`Location unavailable: ${reason}. Allow this site to use your location.`);
    } else { // no fix yet or a timeout: the watch keeps trying
      $("map-note").textContent = `Waiting for your position (${reason})…`;
      $("map-note").hidden = false;
    }
  }, { enableHighAccuracy: true, maximumAge: 5_000, timeout: 30_000 });
}

function onPosition(position) {
  if (locationErrorShown) { locationErrorShown = false; hideError(); }
  if (!discoMap.error) $("map-note").hidden = true;
  const c = position.coords;
  disco.myPos = { lat: c.latitude, lon: c.longitude, acc: c.accuracy };
  drawPositions();
  const fix = { type: "location", lat: c.latitude, lon: c.longitude,
    accuracy_m: Math.min(Math.max(c.accuracy || 1, 0.1), 100_000), ts: position.timestamp / 1000 };
  if (Number.isFinite(c.speed) && c.speed >= 0) fix.speed_mps = c.speed;
  if (Number.isFinite(c.heading) && c.heading >= 0 && c.heading < 360) fix.heading_deg = c.heading;
  if (disco.battery) fix.battery_pct = Math.round(disco.battery.level * 100);
  disco.lastFix = fix; // re-sent on joining the nearby room
  sendFixSoon();
}

let fixTimer = null;
/** At most one fix per LOCATION_MIN_INTERVAL_MS, and the latest one always goes out. */
function sendFixSoon() {
  const wait = disco.lastLocationSent + LOCATION_MIN_INTERVAL_MS - Date.now();
  if (wait > 0) {
    if (!fixTimer) fixTimer = setTimeout(() => { fixTimer = null; sendFixSoon(); }, wait);
    return;
  }
  if (disco.watchId === null || !disco.lastFix) return; // stopped sharing meanwhile
  disco.lastLocationSent = Date.now();
  send(disco.lastFix);
}

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

/**
 * The open group's members, nearest first, with the fix's age, accuracy and
 * battery, a Follow and a Trail button each; then the map redraws.
 */
function drawPositions() {
  const now = Date.now() / 1000;
  const center = disco.myPos;
  const rows = [...disco.positions.entries()]
    .map(([key, p]) => ({ key, p, d: center ? distanceM(center, p) : null }))
    .sort((a, b) => (a.d ?? 0) - (b.d ?? 0));
  $("positions").replaceChildren(...rows.map(({ key, p, d }) => {
    const facts = [ageText(p.ts, now), `±${Math.round(p.acc)} m`];
    if (p.approximate) facts.push("approximate");
    if (Number.isFinite(p.battery)) facts.push(`battery ${p.battery}%`);
    const follow = el("button", { className: "link follow" }, discoMap.follow === key ? "Following" : "Follow");
    follow.dataset.key = key;
    follow.onclick = () => setFollow(discoMap.follow === key ? null : key);
    const li = el("li", { className: "position" },
      el("span", { className: "grow" }, el("b", { className: "name" }, p.name), " ",
        el("small", { className: "muted" }, facts.join(" · "))),
      el("span", { className: "distance" }, d === null ? "?" : formatDistance(d)),
      follow,
      el("button", { className: "link trail", onclick: guarded(() => showTrail(key)) }, "Trail"));
    li.dataset.userId = key;
    return li;
  }));
  if (!rows.length) {
    $("positions").append(el("li", { className: "muted" },
      disco.groupId ? "Nobody in this group shares a position right now." : "Open a group to see its members."));
  }
  renderMap();
}

/** A member's history trail for the chosen range (GeoJSON from the server). */
async function showTrail(userKey) {
  const range = Number($("trail-range").value);
  const to = Date.now() / 1000;
  const feature = await api("GET",
    `/api/groups/${disco.groupId}/members/${userKey}/history?from=${to - range}&to=${to}`);
  discoMap.trail = feature;
  disco.trailUser = userKey;
  const points = feature.geometry ? feature.geometry.coordinates.length : 0;
  $("trail-who").textContent = `${memberName(userKey)} (${points} point${points === 1 ? "" : "s"})`;
  $("trail-controls").hidden = false;
  renderMap();
  if (points && discoMap.map) {
    const lons = feature.geometry.coordinates.map((c) => c[0]);
    const lats = feature.geometry.coordinates.map((c) => c[1]);
    discoMap.map.fitBounds([[Math.min(...lons), Math.min(...lats)], [Math.max(...lons), Math.max(...lats)]],
      { padding: 50, maxZoom: 16, duration: 0 });
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
    renderMap(); // the hearing radius
  };
  $("mute").onclick = () => setMuted(!disco.muted);
  $("leave").onclick = () => leaveRoom();
  for (const radio of document.querySelectorAll('input[name="sharing"]')) {
    radio.onchange = guarded(() => setSharingMode(radio.value));
  }
  $("place-form").onsubmit = guarded(addPlace);
  $("trail-range").onchange = guarded(() => disco.trailUser && showTrail(disco.trailUser));
  $("trail-clear").onclick = () => {
    discoMap.trail = null;
    disco.trailUser = null;
    $("trail-controls").hidden = true;
    renderMap();
  };
  wireSos();
  $("push-enable").onclick = guarded(enablePush);
  wireVoice();
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
  drawPositions();
  window.addEventListener("offline", () => { $("offline").hidden = false; });
  if (!navigator.onLine) $("offline").hidden = false;
  // Opened from the service worker's cache with the server down: say so.
  fetch("/healthz", { cache: "no-store" }).catch(() => { $("offline").hidden = false; });
  if ("serviceWorker" in navigator && window.isSecureContext) {
    navigator.serviceWorker.register("sw.js").catch((err) => console.warn("service worker:", err.message));
  }
  if (disco.token) start();
  else {
    $("auth").hidden = false;
    $("auth-invite").hidden = !pendingInvite();
  }
}

wire();
