// The map: MapLibre GL JS (vendored, loaded only after sign-in) with the
// basemap the server names in GET /api/map: a style URL, the server's own
// .pmtiles file (range requests, via the vendored pmtiles protocol), or a
// plain background with a scale bar. Everything Disco draws on it (members,
// accuracy circles, places, trail, hearing radius, SOS) is GeoJSON polygons
// and lines plus HTML markers: no glyphs or sprites, so nothing else is fetched.
//
// `window.discoMap` is the handle; drawing is idempotent: `renderMap()` redraws
// everything from `window.disco`, and is a no-op until the map has loaded.
"use strict";

const MAPLIBRE_DIR = "vendor/maplibre-gl-5.24.1";
const PMTILES_JS = "vendor/pmtiles-4.5.0/pmtiles.js";
const CIRCLE_STEPS = 64;             // polygon vertices of a drawn circle
const FOLLOW_ZOOM = 15;
const EARTH_RADIUS_M = 6_371_000;
const M_PER_DEG = (EARTH_RADIUS_M * Math.PI) / 180; // ~111 km per degree of latitude
const STALE_FIX_S = 300;             // a fix older than this is drawn grey
const PLACE_RADIUS_MIN_M = 25;       // as the server checks (groups/location/store.py)
const PLACE_RADIUS_MAX_M = 50_000;

const discoMap = (window.discoMap = {
  map: null,       // maplibregl.Map once loaded
  ready: null,     // the promise of it
  config: null,    // GET /api/map
  markers: new Map(), // key -> maplibregl.Marker
  follow: null,    // user key the map follows, or null
  fitted: 0,       // how many points the last automatic zoom showed
  userMoved: false, // the user panned or zoomed: no more automatic zooms
  trail: null,     // GeoJSON Feature of the chosen member's history
  error: null,
});

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src });
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

function loadCss(href) {
  document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href }));
}

/** A MapLibre style for the server's .pmtiles file (raster, or Protomaps vector layers). */
function pmtilesStyle(info) {
  const url = `pmtiles://${new URL(info.url, location.href).href}`;
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#dfe4ea" } }];
  if (info.raster) {
    return { version: 8, sources: { basemap: { type: "raster", url, tileSize: 256 } },
      layers: [...layers, { id: "basemap", type: "raster", source: "basemap" }] };
  }
  const fill = (id, layer, color) => ({ id, type: "fill", source: "basemap", "source-layer": layer,
    paint: { "fill-color": color } });
  return { version: 8, sources: { basemap: { type: "vector", url } }, layers: [...layers,
    fill("earth", "earth", "#eef0e8"), fill("landuse", "landuse", "#d8e8c8"),
    fill("water", "water", "#a8c8e8"), fill("buildings", "buildings", "#d0ccc6"),
    { id: "roads", type: "line", source: "basemap", "source-layer": "roads",
      paint: { "line-color": "#ffffff", "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.5, 16, 4] } },
  ] };
}

const PLAIN_STYLE = { version: 8, sources: {},
  layers: [{ id: "background", type: "background", paint: { "background-color": "#e4e8ee" } }] };

/** Load MapLibre and build the map once (after sign-in); resolves to the map. */
function ensureMap() {
  if (discoMap.ready) return discoMap.ready;
  discoMap.ready = (async () => {
    const config = (discoMap.config = await api("GET", "/api/map"));
    loadCss(`${MAPLIBRE_DIR}/maplibre-gl.css`);
    await loadScript(`${MAPLIBRE_DIR}/maplibre-gl.js`);
    let style = PLAIN_STYLE;
    let center = [0, 20];
    let zoom = 1;
    if (config.pmtiles) {
      await loadScript(PMTILES_JS);
      const protocol = new pmtiles.Protocol();
      maplibregl.addProtocol("pmtiles", protocol.tile);
      style = pmtilesStyle(config.pmtiles);
      center = config.pmtiles.center.slice(0, 2);
      zoom = config.pmtiles.center[2];
    } else if (config.style_url) {
      style = config.style_url;
    }
    const map = new maplibregl.Map({ container: "map", style, center, zoom, maxPitch: 0,
      dragRotate: false, attributionControl: config.attribution
        ? { compact: true, customAttribution: config.attribution } : undefined });
    map.touchZoomRotate.disableRotation();
    map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
    map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
    await new Promise((resolve) => map.once("load", resolve));
    map.addSource("circles", { type: "geojson", data: emptyCollection() });
    map.addSource("trail", { type: "geojson", data: emptyCollection() });
    const color = ["match", ["get", "kind"], "place", "#f08c00", "hearing", "#2f9e44",
      "sos", "#e03131", "me", "#1c7ed6", "#5c7cfa"];
    map.addLayer({ id: "circles-fill", type: "fill", source: "circles",
      paint: { "fill-color": color, "fill-opacity": ["match", ["get", "kind"], "hearing", 0.05, 0.15] } });
    map.addLayer({ id: "circles-line", type: "line", source: "circles",
      paint: { "line-color": color, "line-width": ["match", ["get", "kind"], "place", 2, 1] } });
    map.addLayer({ id: "trail-line", type: "line", source: "trail",
      layout: { "line-join": "round", "line-cap": "round" },
      paint: { "line-color": "#d9480f", "line-width": 3, "line-opacity": 0.8 } });
    map.on("dragstart", () => { discoMap.userMoved = true; if (discoMap.follow) setFollow(null); });
    map.on("zoomstart", (e) => { if (e.originalEvent) discoMap.userMoved = true; });
    discoMap.map = map;
    renderMap();
    return map;
  })().catch((err) => {
    discoMap.error = err;
    const note = $("map-note");
    note.textContent = `The map could not load (${err.message}); positions are listed below.`;
    note.hidden = false;
    throw err;
  });
  return discoMap.ready;
}

function emptyCollection() {
  return { type: "FeatureCollection", features: [] };
}

/** A circle of `radiusM` metres around a point, as a GeoJSON polygon. */
function circlePolygon(lat, lon, radiusM, properties) {
  const ring = [];
  const dLat = radiusM / M_PER_DEG;
  const dLon = radiusM / (M_PER_DEG * Math.max(Math.cos((lat * Math.PI) / 180), 1e-6));
  for (let i = 0; i <= CIRCLE_STEPS; i += 1) {
    const a = (2 * Math.PI * i) / CIRCLE_STEPS;
    ring.push([lon + dLon * Math.cos(a), lat + dLat * Math.sin(a)]);
  }
  return { type: "Feature", properties, geometry: { type: "Polygon", coordinates: [ring] } };
}

/** An HTML marker: a dot and a label (the name, the fix age, the battery). */
function upsertMarker(key, lngLat, className, label, title, onDrag) {
  let marker = discoMap.markers.get(key);
  if (marker && Boolean(onDrag) !== marker.isDraggable()) {
    marker.remove();
    discoMap.markers.delete(key);
    marker = null;
  }
  if (!marker) {
    const node = el("div", { className: `marker ${className}` }, el("span", { className: "pin" }),
      el("span", { className: "label" }));
    node.dataset.key = key;
    marker = new maplibregl.Marker({ element: node, anchor: "left", draggable: Boolean(onDrag) })
      .setLngLat(lngLat).addTo(discoMap.map);
    if (onDrag) {
      marker.on("dragstart", () => { node.dataset.dragging = "1"; });
      marker.on("drag", () => onDrag(marker.getLngLat(), false));
      marker.on("dragend", () => { delete node.dataset.dragging; onDrag(marker.getLngLat(), true); });
    }
    discoMap.markers.set(key, marker);
  }
  if (marker.getElement().dataset.dragging) return marker; // held: it stays under the finger
  const node = marker.getElement();
  // Swap only Disco's classes: MapLibre's own (maplibregl-marker...) position the marker.
  const mine = new Set(["marker", ...className.split(" ")]);
  for (const c of [...node.classList]) if (!c.startsWith("maplibregl-") && !mine.has(c)) node.classList.remove(c);
  node.classList.add(...mine);
  node.title = title || label;
  node.querySelector(".label").textContent = label;
  marker.setLngLat(lngLat);
  return marker;
}

function ageText(ts, now) {
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return "now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Redraw what Disco shows on the map from `window.disco` (no-op before load). */
function renderMap() {
  const map = discoMap.map;
  if (!map) return;
  const now = Date.now() / 1000;
  const circles = [];
  const keep = new Set();
  if (disco.myPos) {
    const p = disco.myPos;
    circles.push(circlePolygon(p.lat, p.lon, Math.max(p.acc || 0, 1), { kind: "me" }));
    if (disco.room === "nearby") {
      circles.push(circlePolygon(p.lat, p.lon, Number($("radius").value), { kind: "hearing" }));
    }
    upsertMarker("me", [p.lon, p.lat], "me", "you");
    keep.add("me");
  }
  for (const [key, p] of disco.positions) {
    circles.push(circlePolygon(p.lat, p.lon, Math.max(p.acc || 0, 1), { kind: "accuracy" }));
    const stale = now - p.ts > STALE_FIX_S;
    const battery = Number.isFinite(p.battery) ? ` · ${p.battery}%` : "";
    upsertMarker(`m:${key}`, [p.lon, p.lat], `member${stale ? " stale" : ""}${p.approximate ? " approximate" : ""}`,
      `${p.name} · ${ageText(p.ts, now)}${battery}`,
      `${p.name}: ±${Math.round(p.acc)} m${p.approximate ? " (approximate)" : ""}`);
    keep.add(`m:${key}`);
  }
  const editable = canManage();
  for (const place of disco.places) {
    circles.push(circlePolygon(place.lat, place.lon, place.radius_m, { kind: "place" }));
    // Owners and admins drag the centre to move a place and the edge handle to resize it.
    upsertMarker(`p:${place.id}`, [place.lon, place.lat], `place${editable ? " editable" : ""}`,
      place.name, place.name, editable ? (at, done) => movePlace(place, at, done) : null);
    keep.add(`p:${place.id}`);
    if (editable) {
      // On the southern edge: the name's label sits east of the centre.
      upsertMarker(`r:${place.id}`, [place.lon, place.lat - place.radius_m / M_PER_DEG], "radius-handle", "",
        `Drag to resize ${place.name}`, (at, done) => resizePlace(place, at, done));
      keep.add(`r:${place.id}`);
    }
  }
  if (disco.sos && disco.sos.location) {
    const { lat, lon } = disco.sos.location;
    circles.push(circlePolygon(lat, lon, 30, { kind: "sos" }));
    upsertMarker("sos", [lon, lat], "sos", `SOS ${disco.sos.name}`);
    keep.add("sos");
  }
  for (const [key, marker] of discoMap.markers) {
    if (!keep.has(key)) { marker.remove(); discoMap.markers.delete(key); }
  }
  discoMap.drawn = circles.map((c) => c.properties.kind); // what is on the map, for tests
  map.getSource("circles").setData({ type: "FeatureCollection", features: circles });
  map.getSource("trail").setData(discoMap.trail || emptyCollection());
  const follow = discoMap.follow === "me" ? disco.myPos : disco.positions.get(discoMap.follow);
  if (follow) {
    map.easeTo({ center: [follow.lon, follow.lat], zoom: Math.max(map.getZoom(), FOLLOW_ZOOM), duration: 300 });
  } else if (!discoMap.userMoved && disco.positions.size + (disco.myPos ? 1 : 0) > discoMap.fitted) {
    fitAll(); // zoom out to show whoever just appeared
  }
}

/** Dragging a place's centre: redraw as it moves, save when dropped. */
function movePlace(place, at, done) {
  place.lat = at.lat;
  place.lon = at.lng;
  renderMap();
  if (done) savePlace(place);
}

/** Dragging a place's edge handle: the radius is the distance to the centre. */
function resizePlace(place, at, done) {
  const radius = distanceM(place, { lat: at.lat, lon: at.lng });
  place.radius_m = Math.round(Math.min(Math.max(radius, PLACE_RADIUS_MIN_M), PLACE_RADIUS_MAX_M));
  renderMap();
  if (done) savePlace(place);
}

function savePlace(place) {
  guarded(async () => {
    const saved = await api("PUT", `/api/groups/${disco.groupId}/places/${place.id}`,
      { name: place.name, lat: place.lat, lon: place.lon, radius_m: place.radius_m });
    Object.assign(place, saved);
    renderPlaces();
  })();
}

/** Zoom to everyone on the map. */
function fitAll() {
  const points = [...disco.positions.values()];
  if (disco.myPos) points.push(disco.myPos);
  if (!points.length || !discoMap.map) return;
  discoMap.fitted = points.length;
  const lons = points.map((p) => p.lon);
  const lats = points.map((p) => p.lat);
  discoMap.map.fitBounds([[Math.min(...lons), Math.min(...lats)], [Math.max(...lons), Math.max(...lats)]],
    { padding: 60, maxZoom: 16, duration: 0 });
}

/** Follow a member (user key), "me", or nobody (null). */
function setFollow(key) {
  discoMap.follow = key;
  for (const button of document.querySelectorAll(".follow")) {
    const on = button.dataset.key === key;
    button.classList.toggle("on", on);
    button.textContent = on ? "Following" : "Follow";
  }
  renderMap();
}

/** Centre the map on a point (an SOS, a place). */
function showOnMap(lat, lon) {
  setFollow(null);
  document.getElementById("map").scrollIntoView({ block: "center" });
  if (discoMap.map) discoMap.map.jumpTo({ center: [lon, lat], zoom: Math.max(discoMap.map.getZoom(), FOLLOW_ZOOM) });
}
