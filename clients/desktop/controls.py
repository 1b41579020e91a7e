"""Line commands typed while the client runs (pure parsing; app.py acts on them).

Line commands rather than a full-screen UI: they work over ssh, in a plain
terminal, and from a script piping commands into stdin (``--commands``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

HELP = """\
commands:
  m                 mute / unmute your microphone
  p                 push-to-talk mode on / off
  t (or Enter)      in push-to-talk mode: start / stop talking
  v WHO GAIN        volume of a participant in your mix (WHO: number, name or id; GAIN 0..2)
  music FILE        share a local audio file as music into the room
  music stop        stop sharing music
  l                 list participants (* = speaking)
  h                 this help
  q                 leave the room and quit"""


@dataclass(frozen=True)
class Command:
    kind: str
    """mute, ptt, talk, volume, music, music_stop, list, help, quit."""
    who: str = ""
    gain: float = 1.0
    path: Path | None = None


class CommandError(ValueError):
    """A line that is not a command; the message says what was expected."""


_SIMPLE = {
    "m": "mute", "mute": "mute", "unmute": "mute",
    "p": "ptt", "ptt": "ptt",
    "t": "talk", "talk": "talk", "": "talk",
    "l": "list", "list": "list", "ls": "list",
    "h": "help", "help": "help", "?": "help",
    "q": "quit", "quit": "quit", "exit": "quit", "leave": "quit",
}


def parse(line: str) -> Command:
    try:
        words = shlex.split(line.strip())
    except ValueError as exc:
        raise CommandError(f"cannot parse {line.strip()!r}: {exc}") from None
    head = words[0].lower() if words else ""
    rest = words[1:]
    if head in _SIMPLE and not rest:
        return Command(_SIMPLE[head])
    if head in ("v", "vol", "volume"):
        if len(rest) != 2:
            raise CommandError("usage: v WHO GAIN   (e.g. v 2 0.5, v alice 1.5)")
        try:
            gain = float(rest[1])
        except ValueError:
            raise CommandError(f"gain must be a number, not {rest[1]!r}") from None
        return Command("volume", who=rest[0], gain=gain)
    if head == "music":
        if len(rest) == 1 and rest[0].lower() == "stop":
            return Command("music_stop")
        if len(rest) != 1:
            raise CommandError("usage: music FILE   or   music stop")
        return Command("music", path=Path(rest[0]).expanduser())
    raise CommandError(f"unknown command {line.strip()!r}; type h for help")
