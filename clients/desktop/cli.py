"""The ``disco-client`` command: arguments, password prompt, logging, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clients.desktop import app, devices, options
from clients.desktop.errors import EXIT_CODE_HELP, ClientError, ExitCode, UsageError

log = logging.getLogger("disco_client")

DEFAULT_SERVER = "http://127.0.0.1:8080"
PASSWORD_ENV = "DISCO_PASSWORD"
TOKEN_ENV = "DISCO_TOKEN"
SERVER_ENV = "DISCO_SERVER"

EPILOG = f"""\
examples:
  disco-client --server http://127.0.0.1:8080 --username alice --group crew
  disco-client --guest Wanderer --nearby --lat 46.5 --lon 7.9 --radius 500
  disco-client --token $T --group 3 --input-file in.wav --output-file out.wav --duration 10
  disco-client --list-devices

The password comes from ${PASSWORD_ENV} or a prompt; a token from --token or ${TOKEN_ENV}.
Use headphones: on open speakers the others hear themselves back (or try --echo-guard).

{EXIT_CODE_HELP}"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="disco-client",
        description="Talk in a Disco group or nearby room from this computer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
                   help=f"server URL (default ${SERVER_ENV} or {DEFAULT_SERVER})")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--username", "-u", help="log in as this user (password prompted)")
    who.add_argument("--token", help=f"use this access token (or ${TOKEN_ENV})")
    who.add_argument("--guest", metavar="NAME", help="guest session under NAME (nearby only)")

    room = p.add_mutually_exclusive_group()
    room.add_argument("--group", "-g", metavar="NAME_OR_ID", help="join this group's room")
    room.add_argument("--nearby", action="store_true", help="join the nearby room")
    p.add_argument("--radius", type=float, default=500.0, metavar="M",
                   help="nearby: hearing radius in metres, 100..2000 (default 500)")

    loc = p.add_argument_group("location")
    loc.add_argument("--lat", type=float, help="fixed position: latitude")
    loc.add_argument("--lon", type=float, help="fixed position: longitude")
    loc.add_argument("--accuracy", type=float, default=10.0, metavar="M",
                     help="reported accuracy in metres (default 10)")
    loc.add_argument("--gpx", type=Path, metavar="FILE", help="replay this GPX track as if moving")
    loc.add_argument("--gpx-speed", type=float, default=1.0, metavar="X",
                     help="replay speed factor (default 1)")

    audio = p.add_argument_group("audio")
    audio.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    audio.add_argument("--input", metavar="DEV", help="microphone: number or name part")
    audio.add_argument("--output", metavar="DEV", help="speaker: number or name part")
    audio.add_argument("--device-rate", type=int, metavar="HZ",
                       help="open the sound devices at this rate (default: 48000 if accepted)")
    audio.add_argument("--input-file", type=Path, metavar="WAV",
                       help="send this audio file instead of the microphone (any rate/channels)")
    audio.add_argument("--output-file", type=Path, metavar="WAV",
                       help="write what you hear to this WAV (48 kHz mono) instead of the speaker")
    audio.add_argument("--loop-input", action="store_true", help="repeat --input-file")
    audio.add_argument("--no-input", action="store_true", help="listen only: no microphone")
    audio.add_argument("--no-output", action="store_true", help="talk only: no speaker")
    audio.add_argument("--music", type=Path, metavar="FILE",
                       help="share this audio file into the room as music from the start")
    audio.add_argument("--echo-guard", action="store_true",
                       help="half-duplex: turn the mic down while the room is loud (open speakers)")
    audio.add_argument("--push-to-talk", action="store_true", help="start in push-to-talk mode")
    audio.add_argument("--muted", action="store_true", help="start muted")

    run = p.add_argument_group("run")
    run.add_argument("--duration", type=float, metavar="S",
                     help="leave after S seconds of being in the room (headless runs)")
    cmds = run.add_mutually_exclusive_group()
    cmds.add_argument("--commands", dest="commands", action="store_true", default=None,
                      help="read line commands from stdin even when it is not a terminal")
    cmds.add_argument("--no-commands", dest="commands", action="store_false",
                      help="ignore stdin")
    run.add_argument("--max-backoff", type=float, default=options.BACKOFF_MAX_S, metavar="S",
                     help="longest wait between reconnect attempts (default %(default)g)")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    return p


def _password() -> str:
    if (env := os.environ.get(PASSWORD_ENV)) is not None:
        return env
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"no password: set {PASSWORD_ENV} or run in a terminal to be asked")
    return getpass.getpass("password: ")


def options_from_args(args: argparse.Namespace) -> options.Options:
    """Check the combination of arguments; everything wrong here is exit code 2."""
    token = args.token or (None if (args.username or args.guest) else os.environ.get(TOKEN_ENV))
    if not (args.username or token or args.guest):
        raise UsageError(f"say who you are: --username, --token (or ${TOKEN_ENV}) or --guest")
    if not (args.group or args.nearby):
        raise UsageError("say which room: --group NAME_OR_ID or --nearby")
    if args.guest is not None and not args.nearby:
        raise UsageError("guests can only join the nearby room: add --nearby")
    if (args.lat is None) != (args.lon is None):
        raise UsageError("--lat and --lon go together")
    if args.gpx is not None and args.lat is not None:
        raise UsageError("use a fixed position (--lat/--lon) or --gpx, not both")
    if args.nearby and args.lat is None and args.gpx is None:
        raise UsageError("the nearby room needs a position: --lat/--lon or --gpx")
    if args.lat is not None and not (-90 <= args.lat <= 90 and -180 <= args.lon <= 180):
        raise UsageError("--lat must be within -90..90 and --lon within -180..180")
    if args.accuracy <= 0:
        raise UsageError("--accuracy must be positive")
    if args.gpx_speed <= 0:
        raise UsageError("--gpx-speed must be positive")
    if args.input_file is not None and (args.input is not None or args.no_input):
        raise UsageError("--input-file replaces the microphone: drop --input/--no-input")
    if args.output_file is not None and (args.output is not None or args.no_output):
        raise UsageError("--output-file replaces the speaker: drop --output/--no-output")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if args.device_rate is not None and not 8_000 <= args.device_rate <= 192_000:
        raise UsageError("--device-rate must be within 8000..192000 Hz")
    if args.max_backoff <= 0:
        raise UsageError("--max-backoff must be positive")
    password = _password() if args.username else None
    return options.Options(
        server=args.server, username=args.username, password=password, token=token,
        guest=args.guest, group=args.group, nearby=args.nearby, lat=args.lat, lon=args.lon,
        radius_m=args.radius, accuracy_m=args.accuracy, gpx=args.gpx, gpx_speed=args.gpx_speed,
        input_device=devices.parse_spec(args.input), output_device=devices.parse_spec(args.output),
        device_rate_hz=args.device_rate,
        input_file=args.input_file, output_file=args.output_file, no_input=args.no_input,
        no_output=args.no_output, loop_input=args.loop_input, duration_s=args.duration,
        music=args.music, echo_guard=args.echo_guard, push_to_talk=args.push_to_talk,
        muted=args.muted, commands=args.commands, max_backoff_s=args.max_backoff,
    )


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if verbosity < 2:
        # aioice/aiortc log every candidate pair at INFO; that is noise for a user.
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see ``errors.ExitCode``)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.list_devices:
            print(devices.list_devices())
            return ExitCode.OK
        options = options_from_args(args)
        asyncio.run(app.run(options))
    except ClientError as exc:
        print(f"disco-client: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("disco-client: interrupted", file=sys.stderr)
        return 130
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
