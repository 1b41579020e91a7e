// The open group: members and roles, invites (link + QR), places, recent
// events, location sharing (told to the server), and SOS.
//
// A group "opens" when you pick it in the list (or join its room): its
// members' last positions, places and events load over REST at once, and the
// live WebSocket events (member_location, member_sharing, place_event, place_changed, sos)
// for that group update them.
"use strict";

const QR_JS = "vendor/qrcode-generator-2.0.4/qrcode.js";
const SOS_HOLD_MS = 2_000;       // a deliberate hold, not a tap
const EVENTS_SHOWN = 20;
const INVITE_HASH = "#invite=";
const ROLE_RANK = { owner: 3, admin: 2, member: 1 };

/** Everyone's display name in the open group, by user id (a string key). */
function memberName(userId) {
  const key = String(userId);
  if (disco.me && key === String(disco.me.id)) return disco.me.display_name;
  return disco.memberNames.get(key) || `member ${key}`;
}

function myRole() {
  const group = disco.groups.find((g) => g.id === disco.groupId);
  return group ? group.role : null;
}

function canManage() {
  return ["owner", "admin"].includes(myRole());
}

/** Open a group: members, positions, places and events, from REST. */
async function openGroup(groupId) {
  if (disco.groupId !== groupId) {
    disco.positions.clear();
    disco.places = [];
    disco.events = [];
    discoMap.trail = null;
    discoMap.fitted = 0;
    discoMap.userMoved = false;
    $("trail-controls").hidden = true;
  }
  disco.groupId = groupId;
  const asked = performance.now(); // live events newer than this beat the REST answer
  $("main").classList.add("has-group"); // the map moves to the top on a phone
  const group = disco.groups.find((g) => g.id === groupId);
  $("map-group").textContent = group ? group.name : "";
  for (const li of document.querySelectorAll("#groups li.group")) {
    li.classList.toggle("open", Number(li.dataset.groupId) === groupId);
  }
  const [detail, locations, places, events] = await Promise.all([
    api("GET", `/api/groups/${groupId}`),
    api("GET", `/api/groups/${groupId}/locations`),
    api("GET", `/api/groups/${groupId}/places`),
    api("GET", `/api/groups/${groupId}/events?limit=${EVENTS_SHOWN}`),
  ]);
  if (disco.groupId !== groupId) return; // another group opened meanwhile
  disco.members = detail.members || [];
  for (const m of disco.members) disco.memberNames.set(String(m.user_id), m.display_name);
  renderMembers();
  for (const item of locations.members || []) {
    if (disco.me && String(item.user_id) === String(disco.me.id)) {
      syncSharingControl(item);
      continue;
    }
    if ((disco.liveAt.get(String(item.user_id)) || 0) > asked) continue;
    applyLocation({ ...item, group_id: groupId });
  }
  disco.places = places.places || [];
  renderPlaces();
  disco.events = (events.events || []).sort((a, b) => a.ts - b.ts); // oldest first
  renderEvents();
  $("places-box").hidden = false;
  $("events-box").hidden = false;
  drawPositions();
}

/** No group open (removed from it, signed out): nothing of it stays on screen. */
function closeGroup() {
  disco.groupId = null;
  disco.members = [];
  disco.places = [];
  disco.events = [];
  disco.positions.clear();
  discoMap.trail = null;
  $("main").classList.remove("has-group");
  $("map-group").textContent = "";
  $("places-box").hidden = $("events-box").hidden = $("trail-controls").hidden = true;
  renderMembers();
  drawPositions();
}

// ---------------------------------------------------------------- members --

function renderMembers() {
  const card = $("members-card");
  card.hidden = !disco.groupId;
  const mine = ROLE_RANK[myRole()] || 0;
  const rows = disco.members.map((m) => {
    const isMe = disco.me && m.user_id === disco.me.id;
    const li = el("li", { className: "member-row" },
      el("span", { className: "grow" }, m.display_name || m.username, isMe ? " (you)" : ""),
      el("small", { className: `role role-${m.role}` }, m.role));
    li.dataset.userId = m.user_id;
    if (!isMe && myRole() === "owner" && m.role === "member") {
      li.append(el("button", { className: "link promote", onclick: guarded(() => setRole(m, "admin")) }, "Make admin"));
    }
    if (!isMe && myRole() === "owner" && m.role === "admin") {
      li.append(el("button", { className: "link demote", onclick: guarded(() => setRole(m, "member")) }, "Make member"));
    }
    if (!isMe && mine > (ROLE_RANK[m.role] || 0) && mine >= ROLE_RANK.admin) {
      const remove = el("button", { className: "link remove" }, "Remove");
      remove.onclick = guarded(() => removeMember(m, remove));
      li.append(remove);
    }
    return li;
  });
  $("members").replaceChildren(...rows);
}

async function setRole(member, role) {
  await api("PUT", `/api/groups/${disco.groupId}/members/${member.user_id}/role`, { role });
  await openGroup(disco.groupId);
}

const CONFIRM_WINDOW_MS = 4_000;

/** Remove takes two taps: the first asks, the second (within 4 s) removes. */
async function removeMember(member, button) {
  if (!button.classList.contains("confirming")) {
    button.classList.add("confirming");
    button.textContent = `Remove ${member.display_name || member.username}?`;
    setTimeout(() => { button.classList.remove("confirming"); button.textContent = "Remove"; },
      CONFIRM_WINDOW_MS);
    return;
  }
  await api("DELETE", `/api/groups/${disco.groupId}/members/${member.user_id}`);
  await openGroup(disco.groupId);
}

// ---------------------------------------------------------------- invites --

function inviteLink(code) {
  return `${location.origin}/app/${INVITE_HASH}${encodeURIComponent(code)}`;
}

async function createInvite(group) {
  const invite = await api("POST", `/api/groups/${group.id}/invites`);
  const link = inviteLink(invite.code);
  const until = new Date(invite.expires_at * 1000).toLocaleString();
  const qrBox = el("div", { className: "qr", id: "invite-qr" });
  const copy = el("button", { className: "secondary", id: "invite-copy", type: "button" }, "Copy link");
  copy.onclick = guarded(async () => {
    if (navigator.share) await navigator.share({ title: `Join ${group.name} on Disco`, url: link });
    else { await navigator.clipboard.writeText(link); copy.textContent = "Copied"; }
  });
  $("invite-out").replaceChildren(
    el("p", {}, `Invite to ${group.name}: `, el("a", { id: "invite-link", href: link }, link)),
    el("p", { className: "small muted" }, "Code ", el("code", { id: "invite-code-out" }, invite.code),
      ` · once · until ${until}`),
    el("div", { className: "row" }, copy), qrBox);
  $("invite-out").hidden = false;
  try {
    if (!window.qrcode) await loadScript(QR_JS);
    const qr = qrcode(0, "M");
    qr.addData(link);
    qr.make();
    qrBox.innerHTML = qr.createSvgTag({ cellSize: 4, margin: 2, scalable: true });
  } catch (err) {
    qrBox.textContent = `(no QR code: ${err.message})`;
  }
}

/** The invite code in the page's address (#invite=CODE), if any. */
function pendingInvite() {
  return location.hash.startsWith(INVITE_HASH)
    ? decodeURIComponent(location.hash.slice(INVITE_HASH.length)) : null;
}

/** After sign-in: accept the invite from the link and open its group. */
async function acceptPendingInvite() {
  const code = pendingInvite();
  if (!code || !disco.me || disco.me.kind !== "user") return;
  history.replaceState(null, "", location.pathname);
  $("auth-invite").hidden = true;
  try {
    const result = await api("POST", `/api/invites/${encodeURIComponent(code)}/accept`);
    await loadGroups();
    notice(`You joined ${result.group.name}.`);
    await openGroup(result.group.id);
  } catch (err) {
    showError(`Invite: ${err.message}`);
  }
}

// ----------------------------------------------------------------- places --

function renderPlaces() {
  const manage = canManage();
  $("place-form").hidden = !manage;
  $("places").replaceChildren(...disco.places.map((p) => {
    const li = el("li", { className: "place" },
      el("span", { className: "grow" }, p.name, el("small", { className: "muted" }, ` · ${Math.round(p.radius_m)} m`)),
      el("button", { className: "link", onclick: () => showOnMap(p.lat, p.lon) }, "Show"));
    if (manage) {
      li.append(el("button", { className: "link delete-place", onclick: guarded(async () => {
        await api("DELETE", `/api/groups/${disco.groupId}/places/${p.id}`);
        disco.places = disco.places.filter((q) => q.id !== p.id);
        renderPlaces();
      }) }, "Delete"));
    }
    li.dataset.placeId = p.id;
    return li;
  }));
  if (!disco.places.length) $("places").append(el("li", { className: "muted" }, "No places yet."));
  renderMap();
}

/** A new place at the map's centre (or my position when the map is not loaded). */
async function addPlace() {
  const centre = discoMap.map ? discoMap.map.getCenter() : null;
  const at = centre ? { lat: centre.lat, lon: centre.lng } : disco.myPos;
  if (!at) throw new Error("Move the map to where the place is first.");
  const place = await api("POST", `/api/groups/${disco.groupId}/places`, {
    name: $("place-name").value.trim(), lat: at.lat, lon: at.lon, radius_m: Number($("place-radius").value),
  });
  disco.places.push(place);
  $("place-name").value = "";
  renderPlaces();
}

// ----------------------------------------------------------------- events --

function eventText(e) {
  const who = memberName(e.user_id);
  if (e.kind === "enter") return `${who} arrived at ${e.place ? e.place.name : "a place"}`;
  if (e.kind === "leave") return `${who} left ${e.place ? e.place.name : "a place"}`;
  if (e.kind === "sos") return `SOS from ${who}`;
  return `${who}: ${e.kind}`;
}

function renderEvents() {
  const rows = [...disco.events].reverse().slice(0, EVENTS_SHOWN).map((e) =>
    el("li", { className: `event event-${e.kind}` }, el("span", { className: "grow" }, eventText(e)),
      el("small", { className: "muted" }, new Date(e.ts * 1000).toLocaleTimeString())));
  $("events").replaceChildren(...rows);
  if (!rows.length) $("events").append(el("li", { className: "muted" }, "Nothing yet."));
}

/** A place alert or SOS: into the list, and as a notification. */
function addEvent(e) {
  const id = e.event_id ?? e.id;
  if (disco.events.some((x) => (x.event_id ?? x.id) === id)) return;
  disco.events.push(e);
  renderEvents();
  notify(eventText(e));
}

/** A system notification if allowed, and always a line in the page. */
function notify(text) {
  notice(text);
  if (window.Notification && Notification.permission === "granted" && document.hidden) {
    try { new Notification("Disco", { body: text, tag: "disco" }); } catch { /* Android: SW only */ }
  }
}

let noticeTimer = null;
function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").hidden = true; }, 8_000);
}

// ---------------------------------------------------------------- sharing --

/** Show the server's view of my sharing in the open group. */
function syncSharingControl(mine) {
  const mode = mine.status === "paused" ? "paused" : mine.precision;
  if (disco.watchId === null && mode !== "paused") return; // not sending: leave unselected
  const radio = document.querySelector(`input[name="sharing"][value="${mode}"]`);
  if (radio) radio.checked = true;
}

/**
 * Share precisely, approximately, or pause: the server is told for every group
 * I am in (others see the change at once), and the browser's watch follows.
 */
async function setSharingMode(mode) {
  const radio = document.querySelector(`input[name="sharing"][value="${mode}"]`);
  if (radio) radio.checked = true;
  disco.sharingMode = mode;
  setSharing(mode !== "paused");
  if (!disco.me || disco.me.kind !== "user") return;
  const body = { paused: mode === "paused", precision: mode === "approximate" ? "approximate" : "precise" };
  await Promise.all(disco.groups.map((g) => api("PUT", `/api/groups/${g.id}/sharing`, body)));
}

// -------------------------------------------------------------------- SOS --

/** The SOS button sends only after a deliberate hold (pointer or keyboard). */
function wireSos() {
  const button = $("sos");
  let timer = null;
  const cancel = () => {
    clearTimeout(timer);
    timer = null;
    button.classList.remove("holding");
  };
  const begin = (event) => {
    event.preventDefault();
    if (timer) return;
    button.classList.add("holding");
    button.style.setProperty("--hold-ms", `${SOS_HOLD_MS}ms`);
    timer = setTimeout(() => { cancel(); sendSos(); }, SOS_HOLD_MS);
  };
  button.addEventListener("pointerdown", begin);
  button.addEventListener("keydown", (e) => { if (e.key === " " || e.key === "Enter") begin(e); });
  for (const end of ["pointerup", "pointerleave", "pointercancel", "keyup", "blur"]) {
    button.addEventListener(end, cancel);
  }
  button.addEventListener("click", (e) => e.preventDefault()); // a tap does nothing
  $("sos-ack").onclick = () => {
    disco.sos = null;
    $("sos-alert").hidden = true;
    renderMap();
  };
  $("sos-show").onclick = () => disco.sos && disco.sos.location &&
    showOnMap(disco.sos.location.lat, disco.sos.location.lon);
}

function sendSos() {
  if (disco.lastFix) send(disco.lastFix); // the alert carries my latest position
  if (send({ type: "sos" })) $("sos").textContent = "Sending SOS…";
}

function onSosSent(msg) {
  const n = (msg.groups || []).length;
  $("sos").textContent = "Hold for SOS";
  notice(`SOS sent to ${n} group${n === 1 ? "" : "s"}.`);
  $("sos-help").textContent = `SOS sent at ${new Date().toLocaleTimeString()}.`;
}

/** An SOS from someone else: who, where, when, until acknowledged. */
function onSos(msg) {
  if (disco.me && String(msg.user_id) === String(disco.me.id)) return; // mine: "sent" instead
  const name = msg.display_name || memberName(msg.user_id);
  disco.sos = { ...msg, name };
  $("sos-who").textContent = `SOS from ${name}`;
  $("sos-when").textContent = ` at ${new Date((msg.ts || Date.now() / 1000) * 1000).toLocaleTimeString()}`;
  const loc = msg.location;
  let where = " · position unknown";
  if (loc) {
    const away = disco.myPos ? `, ${formatDistance(distanceM(disco.myPos, loc))} from you` : "";
    where = ` · ${loc.lat.toFixed(5)}, ${loc.lon.toFixed(5)}${away}`;
  }
  $("sos-where").textContent = where;
  $("sos-show").hidden = !loc;
  $("sos-alert").hidden = false;
  if (msg.group_id === disco.groupId) addEvent({ ...msg, kind: "sos" });
  else notify(`SOS from ${name}`);
  renderMap();
  if (loc) showOnMap(loc.lat, loc.lon);
}

// ------------------------------------------------------------- Web Push --

/** Show "Get notifications" where the browser can do Web Push and has not said no. */
function offerPush() {
  const able = "serviceWorker" in navigator && window.PushManager && window.Notification && window.isSecureContext;
  $("push-enable").hidden = !able || Notification.permission === "denied";
}

function keyBytes(base64url) {
  const raw = atob(base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/**
 * Subscribe this browser (invites, place alerts, SOS and calls arrive as
 * notifications through the service worker) and register the subscription
 * as a device: POST /api/devices {platform: "web", token: subscription JSON}.
 */
async function enablePush() {
  if (await Notification.requestPermission() !== "granted") throw new Error("Notifications are blocked for this site.");
  const { public_key: publicKey } = await api("GET", "/api/push/webpush");
  const registration = await navigator.serviceWorker.ready;
  const subscription = await registration.pushManager.getSubscription() ||
    await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(publicKey) });
  await api("POST", "/api/devices", { platform: "web", token: JSON.stringify(subscription) });
  $("push-enable").hidden = true;
  notice("Notifications are on for this device.");
}
