"""Orchestration: log in, join, talk, follow the room, survive drops, leave cleanly.

The shape of a run::

    prepare local media (files, devices, GPX)   bad input fails before any network
    log in over REST, resolve the room          wrong password / no such group: exit
    loop:                                        one iteration per WebSocket connection
        connect, welcome, join, offer/answer    a new peer connection each time
        follow events, send location, act on commands, watch the media
        connection lost -> backoff and again    (server restart, network drop)
    leave, close devices and files

Decisions live in the sans-I/O modules (``protocol``, ``audio``, ``controls``,
``gpx``); this module only moves data between them and the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import websockets
from websockets.asyncio.client import ClientConnection

from clients.desktop import controls, protocol, rest
from clients.desktop.audio import (
    EchoGuard,
    MicControl,
    Pcm,
)
from clients.desktop.devices import Microphone, Speaker
from clients.desktop.errors import (
    AuthFailed,
    BadInputFile,
    ClientError,
    RoomNotFound,
    ServerUnreachable,
    UsageError,
)
from clients.desktop.files import FileSource, FileSpeaker
from clients.desktop.gpx import Replay
from clients.desktop.gpx import load as load_gpx
from clients.desktop.options import Options, backoff_s
from clients.desktop.rtc import (
    FrameSource,
    MediaLink,
    MicTrack,
    MusicTrack,
    ice_servers,
    install_rtc_patches,
    use_loopback_candidates,
)

log = logging.getLogger(__name__)

WS_OPEN_TIMEOUT_S = 10.0
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
WS_PING_INTERVAL_S = 10.0
"""Our own keepalive: a server that vanished without closing is noticed in ~20 s."""
REQUEST_TIMEOUT_S = 15.0
LOCATION_FIXED_INTERVAL_S = 30.0
LOCATION_REPLAY_INTERVAL_S = 2.0
MEDIA_CHECK_INTERVAL_S = 1.0
MEDIA_SILENT_RESTART_S = 5.0
"""The server sends the mix every 20 ms (silence too); nothing for this long: new offer."""
MEDIA_CONNECT_TIMEOUT_S = 15.0
LEAVE_TIMEOUT_S = 2.0


class ConnectionLost(Exception):
    """The WebSocket closed or failed; the loop reconnects."""


class RequestFailed(Exception):
    """The server answered a request with an ``error`` message."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class Console:
    """What the user reads: plain lines on stdout, flushed (scripts and tests read them)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@dataclass
class _Media:
    mic: FrameSource | None = None
    speaker: Speaker | FileSpeaker | None = None
    music: FileSource | None = None
    replay: Replay | None = None
    closers: list[Any] = field(default_factory=list)


class Client:
    """One run of ``disco-client``."""

    def __init__(self, options: Options, console: Console | None = None) -> None:
        self.o = options
        self.console = console or Console()
        self.control = MicControl(muted=options.muted, push_to_talk=options.push_to_talk)
        self.echo = EchoGuard() if options.echo_guard else None
        self.state = protocol.RoomState()
        self.room = ""
        self.token = ""
        self.media = _Media()
        self.stop = asyncio.Event()
        self.exit_error: ClientError | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._link: MediaLink | None = None
        self._music_track: MusicTrack | None = None
        self._servers: list[Any] = []
        self._media_restart = asyncio.Event()
        self._media_lock = asyncio.Lock()
        self._joined = False
        self._heard_on_link = False
        self._location_off = False
        self._last_music_line = ""
        self._started_at: float | None = None
        self._duration_task: asyncio.Task[None] | None = None

    # --- the run ---------------------------------------------------------------

    async def run(self) -> None:
        self._install_signal_handlers()
        try:
            install_rtc_patches()
            self._prepare_media()
            await self._log_in_and_find_room()
            self._start_devices()
            if protocol.is_loopback_server(self.o.server):
                use_loopback_candidates()
            if self._reads_commands():
                self._start_command_reader()
            await self._connection_loop()
        finally:
            await self._shutdown()
        if self.exit_error is not None:
            raise self.exit_error

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop.is_set():  # a second Ctrl-C: stop waiting for a clean goodbye
            raise KeyboardInterrupt
        self.console.say(f"{sig.name}: leaving the room")
        self.stop.set()

    # --- local media -------------------------------------------------------------

    def _prepare_media(self) -> None:
        o, m = self.o, self.media
        if o.gpx is not None:
            m.replay = Replay(load_gpx(o.gpx), o.gpx_speed)
        if o.music is not None:
            m.music = FileSource(o.music)
            m.closers.append(m.music)
            self.console.say(f"music: {m.music.description}")
        if o.input_file is not None:
            source = FileSource(o.input_file, loop=o.loop_input)
            self.console.say(f"input: {source.description}")
            m.mic = source
            m.closers.append(source)
        elif not o.no_input:
            mic = Microphone(o.input_device, o.device_rate_hz)
            self.console.say(f"microphone: {mic.name} ({mic.rate} Hz)")
            m.mic = mic
            m.closers.append(mic)
        if o.output_file is not None:
            m.speaker = FileSpeaker(o.output_file)
        elif not o.no_output:
            speaker = Speaker(o.output_device, o.device_rate_hz)
            self.console.say(f"speaker: {speaker.name} ({speaker.rate} Hz)")
            m.speaker = speaker
            m.closers.append(speaker)

    def _start_devices(self) -> None:
        if isinstance(self.media.mic, Microphone):
            self.media.mic.start()
        if isinstance(self.media.speaker, Speaker):
            self.media.speaker.start()

    # --- REST: who we are and where we go ------------------------------------------

    async def _log_in_and_find_room(self) -> None:
        self.token, self.room = await rest.log_in(self.o)
        self.state.room = self.room

    async def _relogin(self) -> bool:
        """After a 4401 on reconnect: a password login gets a fresh token; others cannot."""
        if not (self.o.username and self.o.password):
            return False
        self.token = await rest.fresh_token(self.o)
        return True

    # --- connections ---------------------------------------------------------------

    async def _connection_loop(self) -> None:
        attempt = 0
        joined_once = False
        relogged = False
        while not self.stop.is_set():
            try:
                ws = await self._open()
            except ServerUnreachable as exc:
                if not joined_once:
                    raise
                delay = backoff_s(attempt, self.o.max_backoff_s)
                attempt += 1
                self.console.say(f"server unreachable ({exc.message}); retry in {delay:.1f} s")
                await self._sleep(delay)
                continue
            except AuthFailed:
                if joined_once and not relogged and await self._relogin():
                    relogged = True
                    continue
                raise
            self._ws = ws
            self._joined = False
            try:
                await self._session(ws)
            except ConnectionLost as exc:
                if self.stop.is_set():
                    break
                self.console.say(f"connection lost ({exc}); reconnecting")
            finally:
                joined_once = joined_once or self._joined
                await self._close_link()
                self._ws = None
                self._fail_pending(ConnectionLost("connection closed"))
                with contextlib.suppress(Exception):
                    await ws.close()
            if self._joined:
                attempt, relogged = 0, False
            if not self.stop.is_set():
                delay = backoff_s(attempt, self.o.max_backoff_s)
                attempt += 1
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _open(self) -> ClientConnection:
        url = protocol.ws_url(self.o.server, self.token)
        try:
            ws = await websockets.connect(
                url, open_timeout=WS_OPEN_TIMEOUT_S, max_size=WS_MAX_MESSAGE_BYTES,
                ping_interval=WS_PING_INTERVAL_S, ping_timeout=WS_PING_INTERVAL_S,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise AuthFailed("the server rejected the token (HTTP 401)") from None
            raise ServerUnreachable(f"WebSocket refused with HTTP {status}") from None
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise ServerUnreachable(f"cannot connect to {protocol.http_base(self.o.server)}: "
                                    f"{exc or type(exc).__name__}") from None
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), WS_OPEN_TIMEOUT_S))
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == protocol.WS_CLOSE_UNAUTHORIZED:
                raise AuthFailed(f"the server rejected the token: {exc.rcvd.reason}") from None
            raise ServerUnreachable(f"the server closed the connection: {exc}") from None
        except (TimeoutError, ValueError) as exc:
            await ws.close()
            raise ServerUnreachable(f"no welcome from the server: {exc!r}") from None
        if first.get("type") == "error" and first.get("code") == "unauthorized":
            await ws.close()
            raise AuthFailed(f"the server rejected the token: {first.get('message')}")
        if first.get("type") != "welcome":
            await ws.close()
            raise ServerUnreachable(f"expected a welcome, got {str(first)[:120]}")
        self._welcome(first)
        return ws

    def _welcome(self, welcome: dict[str, Any]) -> None:
        user = welcome.get("user") or {}
        self.state.my_name = str(user.get("display_name") or "")
        self._servers = ice_servers(welcome.get("ice_servers"))

    async def _session(self, ws: ClientConnection) -> None:
        """One connection: join and talk until stopped (``self._joined`` once in the room)."""
        reader = asyncio.create_task(self._read_loop(ws), name="ws-reader")
        helpers: list[asyncio.Task[None]] = []
        try:
            await self._send_location(time.time())
            try:
                await self._request(protocol.join(
                    self.room, self.o.radius_m if self.room == protocol.NEARBY_ROOM else None
                ))
            except RequestFailed as exc:
                raise protocol.join_error(self.room, exc.error) from None
            self._joined = True
            # Again now that we are in the room: the nearby room places only its members.
            await self._send_location(time.time())
            self.console.say(f"joined {self.room} as {self.state.my_name} "
                             f"({self.state.me}); {len(self.state.participants)} other(s) here")
            self.console.say(self.state.render(self.control.muted, self.control.on_air))
            for p in self.state.participants.values():  # what an event would have said
                if p.speaking:
                    self.console.say(f"  * {p.display_name} speaking")
            if self.control.muted:
                await self._request(protocol.mute(self.room, True))
            await self._start_media()
            helpers = [asyncio.create_task(self._media_watch(), name="media-watch")]
            if self._location_source() is not None:
                helpers.append(asyncio.create_task(self._location_loop(), name="location"))
            stop = asyncio.create_task(self.stop.wait())
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self.stop.is_set():
                await self._leave()
                return
            reader.result()  # raises what ended the reader
            raise ConnectionLost("the server closed the connection")
        finally:
            for task in (*helpers, reader):
                task.cancel()
            for task in (*helpers, reader):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _leave(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._request(protocol.leave(self.room)), LEAVE_TIMEOUT_S)
        self.console.say(f"left {self.room}")

    # --- requests and events -----------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        try:
            await ws.send(json.dumps(message))
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(str(exc)) from None

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send with a fresh id; the reply (or RequestFailed for an error reply)."""
        request_id = f"r{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send({**message, "id": request_id})
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise ConnectionLost(
                f"no reply to {message['type']} in {REQUEST_TIMEOUT_S:g} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            raise RequestFailed(reply)
        return reply

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.warning("ignoring a frame that is not JSON: %r", str(raw)[:80])
                    continue
                if isinstance(message, dict):
                    await self._dispatch(message)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == protocol.WS_CLOSE_UNAUTHORIZED:
                raise AuthFailed(f"the server ended the session: {exc.rcvd.reason}") from None
            raise ConnectionLost(str(exc) or "closed") from None
        raise ConnectionLost(f"closed ({ws.close_code} {ws.close_reason or ''})".strip())

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if protocol.room_node_lost(message, self.room):
            # The node hosting the room (we were relayed to it) stopped: connect again
            # and join, and the room is placed on a live node (docs/protocol.md).
            raise ConnectionLost("the server node hosting the room went away")
        request_id = message.get("id")
        future = self._pending.get(str(request_id)) if request_id is not None else None
        if message.get("type") == "joined" and message.get("room") == self.room:
            # Applied here, in order: events that follow the reply build on it.
            self.state.joined(message)
        if future is not None and not future.done():
            future.set_result(message)
            return
        kind = message.get("type")
        if kind == "error":
            self._unsolicited_error(message)
            return
        if kind == "left" and message.get("room") == self.room:
            reason = message.get("reason")
            if reason == "replaced":
                self.exit_error = ClientError(
                    "this account joined the room from another connection; leaving here"
                )
            else:
                self.exit_error = RoomNotFound(f"removed from {self.room} ({reason})")
            self.console.say(self.exit_error.message)
            self.stop.set()
            return
        if kind == "peer_state" and message.get("participant_id") == self.state.me:
            if message.get("state") in ("failed", "closed"):
                self.console.say(f"media {message.get('state')} on the server; reconnecting audio")
                self._media_restart.set()
            return
        if kind == "quality" and message.get("participant_id") == self.state.me:
            self.console.say(protocol.quality_line(message))
            return
        if kind == "music_state":
            self._show_music_state(message)
            return
        for notice in self.state.apply(message):
            self.console.say(notice)
        if kind in ("participant_joined", "participant_left", "nearby"):
            self.console.say(self.state.render(self.control.muted, self.control.on_air))
        elif kind in ("speaking", "stopped_speaking"):
            pid = str(message.get("participant_id"))
            mark, verb = ("*", "speaking") if kind == "speaking" else (" ", "stopped speaking")
            self.console.say(f"  {mark} {self.state.name(pid)} {verb}")

    def _unsolicited_error(self, message: dict[str, Any]) -> None:
        request_id = str(message.get("id") or "")
        if request_id.startswith("loc"):
            if not self._location_off:
                self._location_off = message.get("code") in ("error", "unavailable", "forbidden")
                self.console.say(f"location not accepted: {message.get('message')}"
                                 + ("; no longer sending it" if self._location_off else ""))
            return
        self.console.say(f"server error: {message.get('code')}: {message.get('message')}")

    def _show_music_state(self, message: dict[str, Any]) -> None:
        """One line per change: the server's player and which participants share music."""
        status = message.get("status") or message.get("state") or "stopped"
        current = message.get("current")
        name = current.get("source") if isinstance(current, dict) else None
        sharing = [self.state.name(str(p)) for p in message.get("client_music") or []]
        line = f"room music: {status}" + (f" ({name})" if name else "")
        if sharing:
            line += "; shared by " + ", ".join(sharing)
        if line != self._last_music_line:
            self._last_music_line = line
            self.console.say(line)

    # --- media -----------------------------------------------------------------

    async def _start_media(self) -> None:
        """A new peer connection and offer; the old one is closed only after the answer.

        Make-before-break: the server replaces our old connection when the new
        offer arrives, so closing ours first would only make the server see a
        "closed" peer and tear down what we are about to set up. Serialised by
        a lock, since commands (music) and the media watchdog both restart.
        """
        async with self._media_lock:
            self._media_restart.clear()
            music = None
            if self.media.music is not None:
                music = MusicTrack(on_finished=self._music_finished)
                music.play(self.media.music)
            mic = MicTrack(self.media.mic, self.control, self.echo)
            link = MediaLink(self._servers, mic, music, self._on_audio, self._on_media_state)
            old = self._link
            try:
                sdp, music_mids = await link.offer()
                reply = await self._request(protocol.offer(self.room, sdp, music_mids))
                await link.accept(str(reply["sdp"]))
            except BaseException:
                await link.close()
                raise
            self._link, self._music_track = link, music
            self._heard_on_link = False
            if old is not None:
                old.detach()
                await old.close()
            self._media_restart.clear()
        if isinstance(self.media.speaker, FileSpeaker):
            self.media.speaker.start()
        if self._started_at is None:
            self._started_at = time.monotonic()
            if self.o.duration_s is not None:
                self._duration_task = asyncio.create_task(self._stop_after(self.o.duration_s))

    async def _stop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.console.say(f"{seconds:g} s elapsed")
        self.stop.set()

    async def _close_link(self) -> None:
        link, self._link, self._music_track = self._link, None, None
        if link is not None:
            await link.close()

    def _on_audio(self, pcm: Pcm) -> None:
        if not self._heard_on_link:
            self._heard_on_link = True
            self.console.say("audio: receiving the room's mix")
        if self.echo is not None:
            self.echo.note_playback(pcm, time.monotonic())
        if self.media.speaker is not None:
            self.media.speaker.write(pcm)

    def _on_media_state(self, state: str) -> None:
        log.info("peer connection %s", state)
        if state == "connected":
            self.console.say("media connected")
        elif state == "failed":
            self._media_restart.set()

    async def _media_watch(self) -> None:
        """New offer when the peer connection fails, never connects, or goes silent."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._media_restart.wait(), MEDIA_CHECK_INTERVAL_S)
            link = self._link
            now = loop.time()
            reason = None
            if self._media_restart.is_set():
                reason = "the peer connection failed"
            elif link is not None and link.state != "connected":
                if now - since > MEDIA_CONNECT_TIMEOUT_S:
                    reason = f"no media connection after {MEDIA_CONNECT_TIMEOUT_S:g} s"
            elif link is not None:
                last = link.last_audio_at or since
                if now - last > MEDIA_SILENT_RESTART_S:
                    reason = f"no audio from the server for {now - last:.0f} s"
            if reason is not None:
                self.console.say(f"{reason}; sending a new offer")
                await self._start_media()
                since = loop.time()

    def _music_finished(self) -> None:
        self.console.say("music: finished")
        music, self.media.music = self.media.music, None
        if music is not None:
            if music in self.media.closers:
                self.media.closers.remove(music)
            music.close()

    # --- location -----------------------------------------------------------------

    def _location_source(self) -> str | None:
        if self.media.replay is not None:
            return "gpx"
        if self.o.lat is not None and self.o.lon is not None:
            return "fixed"
        return None

    async def _send_location(self, now: float) -> None:
        kind = self._location_source()
        if kind is None or self._location_off:
            return
        speed = None
        if kind == "gpx":
            assert self.media.replay is not None
            elapsed = time.monotonic() - (self._started_at or time.monotonic())
            lat, lon, speed = self.media.replay.position(elapsed)
        else:
            assert self.o.lat is not None and self.o.lon is not None
            lat, lon = self.o.lat, self.o.lon
        message = protocol.location(lat, lon, self.o.accuracy_m, now, speed)
        await self._send({**message, "id": f"loc{next(self._ids)}"})

    async def _location_loop(self) -> None:
        interval = (LOCATION_REPLAY_INTERVAL_S if self._location_source() == "gpx"
                    else LOCATION_FIXED_INTERVAL_S)
        while not self._location_off:
            await asyncio.sleep(interval)
            await self._send_location(time.time())

    # --- commands -------------------------------------------------------------------

    def _reads_commands(self) -> bool:
        if self.o.commands is not None:
            return self.o.commands
        return sys.stdin is not None and sys.stdin.isatty()

    def _start_command_reader(self) -> None:
        """stdin on a daemon thread: a blocking read must never hold the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=read, name="stdin", daemon=True).start()
        self._commands_task = asyncio.create_task(self._command_loop(queue), name="commands")
        self.console.say("type h for commands")

    async def _command_loop(self, queue: asyncio.Queue[str | None]) -> None:
        while (line := await queue.get()) is not None:
            try:
                await self.command(controls.parse(line))
            except controls.CommandError as exc:
                self.console.say(str(exc))
            except (ConnectionLost, RequestFailed) as exc:
                self.console.say(f"not applied on the server: {exc}")
            except ClientError as exc:
                self.console.say(exc.message)

    async def command(self, cmd: controls.Command) -> None:
        """Act on one command (public so tests can drive the client without stdin)."""
        connected = self._ws is not None and self.state.me is not None
        if cmd.kind == "quit":
            self.stop.set()
        elif cmd.kind == "help":
            self.console.say(controls.HELP)
        elif cmd.kind == "list":
            self.console.say(self.state.render(self.control.muted, self.control.on_air))
        elif cmd.kind == "mute":
            muted = self.control.toggle_mute()
            self.console.say("microphone muted" if muted else "microphone on")
            if connected:
                await self._request(protocol.mute(self.room, muted))
        elif cmd.kind == "ptt":
            on = self.control.toggle_push_to_talk()
            self.console.say("push-to-talk on: press Enter (or t) to talk, again to stop"
                             if on else "push-to-talk off: open microphone")
        elif cmd.kind == "talk":
            if self.control.push_to_talk:
                talking = self.control.toggle_talk()
                self.console.say("talking" if talking else "off air")
        elif cmd.kind == "volume":
            await self._set_volume(cmd.who, cmd.gain)
        elif cmd.kind == "music":
            assert cmd.path is not None
            await self._play_music(cmd.path)
        elif cmd.kind == "music_stop":
            self._stop_music()

    async def _set_volume(self, who: str, gain: float) -> None:
        try:
            protocol.check_gain(gain)
            participant = self.state.find(who)
        except (ValueError, LookupError) as exc:
            self.console.say(str(exc))
            return
        await self._request(protocol.volume(participant.participant_id, gain))
        participant.gain = gain
        self.console.say(f"volume of {participant.display_name}: {gain:g}")

    async def _play_music(self, path: Path) -> None:
        try:
            source = FileSource(path)
        except BadInputFile as exc:
            self.console.say(exc.message)
            return
        old, self.media.music = self.media.music, source
        if old is not None:
            old.close()
        self.console.say(f"music: {source.description}")
        if self._music_track is not None:
            self._music_track.play(source)
        elif self._link is not None:
            await self._start_media()  # the first music: a new offer with a music track

    def _stop_music(self) -> None:
        if self._music_track is not None:
            self._music_track.play(None)
        if self.media.music is not None:
            self.media.music.close()
            self.media.music = None
            self.console.say("music: stopped")

    # --- the end -----------------------------------------------------------------

    async def _shutdown(self) -> None:
        self.stop.set()
        if self._duration_task is not None:
            self._duration_task.cancel()
        commands = getattr(self, "_commands_task", None)
        if commands is not None:
            commands.cancel()
        await self._close_link()
        if isinstance(self.media.speaker, FileSpeaker):
            await self.media.speaker.close()
        for closer in self.media.closers:
            with contextlib.suppress(Exception):
                closer.close()
        if self.media.music is not None:
            self.media.music.close()


async def run(options: Options, console: Console | None = None) -> None:
    """Run one client session to its end; raises ``ClientError`` with an exit code."""
    if options.nearby:
        protocol.check_radius(options.radius_m)
    if not options.nearby and not options.group:
        raise UsageError("say which room: --group NAME_OR_ID or --nearby")
    await Client(options, console).run()
