// Disco's service worker: the app shell works offline, and Web Push arrives
// as notifications.
//
// Shell files: network first (an update shows on the next load), the cache
// when the server cannot be reached, so the page opens offline and says so.
// Vendored libraries (versioned folders, never change): cache first.
// The API, the WebSocket and the basemap's range requests are never touched.
"use strict";

const CACHE = "disco-shell-v1";
const SHELL = [
  "./", "index.html", "style.css", "app.js", "group.js", "map.js", "voice.js",
  "manifest.webmanifest", "icons/icon-192.png", "icons/favicon-32.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const scope = new URL(self.registration.scope);
  if (event.request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) {
    return; // /api, /ws, /map/basemap.pmtiles: straight to the network
  }
  if (url.pathname.startsWith(`${scope.pathname}vendor/`)) {
    event.respondWith(caches.match(event.request).then((hit) => hit || fetch(event.request).then((response) => {
      if (response.ok) {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(event.request, copy));
      }
      return response;
    })));
    return;
  }
  event.respondWith((async () => {
    try {
      const response = await fetch(event.request);
      if (response.ok) {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(event.request, copy));
      }
      return response;
    } catch (err) {
      const hit = await caches.match(event.request, { ignoreSearch: true });
      if (hit) return hit;
      if (event.request.mode === "navigate") return caches.match("index.html");
      throw err;
    }
  })());
});

// Web Push: the server sends {"title", "body", "data": {...}} (groups/push/webpush.py).
self.addEventListener("push", (event) => {
  let message = { title: "Disco", body: "" };
  try {
    message = { ...message, ...event.data.json() };
  } catch {
    if (event.data) message.body = event.data.text();
  }
  event.waitUntil(self.registration.showNotification(message.title, {
    body: message.body, data: message.data || {}, tag: message.tag,
    icon: "icons/icon-192.png", badge: "icons/favicon-32.png",
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    if (open.length) return open[0].focus();
    return self.clients.openWindow(self.registration.scope);
  })());
});
