"""Bad input to ``disco-client``: each case gets a clear message and its documented exit code.

Most cases run the client's ``main`` in a thread of this process (fast, the
same code path as the console script); one runs the installed command to
prove the exit code reaches the shell.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.desktop import cli
from clients.desktop.errors import ExitCode
from common.settings import Settings
from protocol import aiortc_compat
from tests.rtc_helpers import free_port
from tests.server_helpers import PASSWORD, LiveServer, live_server
from tests.test_client_support import crew, media_settings, run_client, write_mono_wav


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(media_settings(settings)) as s:
        await crew(s, "alice", "bob")
        await crew(s, "mallory", group="secret")
        yield s


@pytest.fixture(autouse=True)
def _keep_aioice(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process client may patch aioice for loopback; undo it after each test."""
    monkeypatch.setattr(aiortc_compat.negotiation, "chosen_host_addresses",
                        aiortc_compat.negotiation.chosen_host_addresses)


async def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = await asyncio.to_thread(cli.main, args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"this is not audio at all" * 100)
    gpx = tmp_path / "bad.gpx"
    gpx.write_text("<gpx><trk><trkseg><trkpt lat='x' lon='7'/></trkseg></trk></gpx>")
    return {
        "tone": write_mono_wav(tmp_path / "tone.wav", 440, 1.0),
        "garbage": garbage,
        "gpx": gpx,
        "missing": tmp_path / "missing.wav",
    }


async def test_wrong_password_exits_3_through_the_real_command(
    server: LiveServer, tmp_path: Path
) -> None:
    code, client = await run_client(
        ["--server", server.base_url, "--username", "alice", "--group", "crew", "--no-input",
         "--no-output"], env={"DISCO_PASSWORD": "not the password"}, timeout_s=30,
    )
    assert code == ExitCode.AUTH_FAILED == 3, client.stderr
    assert "login refused by the server (401)" in client.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--username", "nobody", "--group", "crew"], ExitCode.AUTH_FAILED, "login refused"),
    (["--token", "garbage", "--group", "crew"], ExitCode.AUTH_FAILED, "rejected the token"),
    (["--token", "garbage", "--nearby", "--lat", "46", "--lon", "7"], ExitCode.AUTH_FAILED,
     "rejected the token"),
    (["--username", "alice", "--group", "nope"], ExitCode.ROOM_NOT_FOUND,
     "no group 'nope' among your groups (yours: crew"),
    (["--username", "alice", "--group", "group:999"], ExitCode.ROOM_NOT_FOUND, "no group"),
    (["--username", "alice", "--group", "secret"], ExitCode.ROOM_NOT_FOUND, "no group 'secret'"),
])
async def test_login_and_room_errors(
    server: LiveServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    args: list[str], code: ExitCode, message: str,
) -> None:
    monkeypatch.setenv("DISCO_PASSWORD", PASSWORD)
    got, output = await run_main(["--server", server.base_url, *args, "--no-input",
                                  "--no-output", "--no-commands"], capsys)
    assert got == code, output
    assert message in output


async def test_unreachable_server_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    got, output = await run_main(["--server", f"http://127.0.0.1:{port}", "--token", "t",
                                  "--group", "crew", "--no-input", "--no-output"], capsys)
    assert got == ExitCode.SERVER_UNREACHABLE == 4, output
    assert f"cannot reach the server at http://127.0.0.1:{port}" in output


@pytest.mark.parametrize(("extra", "message"), [
    (["--input-file", "{missing}"], "audio file not found"),
    (["--input-file", "{garbage}"], "cannot read audio file"),
    (["--music", "{garbage}", "--no-input"], "cannot read audio file"),
    (["--gpx", "{gpx}", "--no-input"], "without a numeric lat/lon"),
    (["--output-file", "/nonexistent-dir/out.wav", "--input-file", "{tone}"], "cannot write"),
])
async def test_bad_files_exit_7_before_connecting(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], extra: list[str], message: str
) -> None:
    port = free_port(socket.SOCK_STREAM)  # never reached: files are checked first
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in extra]
    if "--output-file" not in args:
        args.append("--no-output")
    got, output = await run_main(["--server", f"http://127.0.0.1:{port}", "--token", "t",
                                  "--group", "crew", *args], capsys)
    assert got == ExitCode.BAD_INPUT_FILE == 7, output
    assert message in output


@pytest.mark.parametrize(("args", "message"), [
    (["--input", "no-such-microphone-xyz", "--no-output"], "no input device"),
    (["--input", "9999", "--no-output"], "no input device"),
    (["--output", "no-such-speaker-xyz", "--no-input"], "no output device"),
])
async def test_missing_devices_exit_6(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    port = free_port(socket.SOCK_STREAM)
    got, output = await run_main(["--server", f"http://127.0.0.1:{port}", "--token", "t",
                                  "--group", "crew", *args], capsys)
    assert got == ExitCode.DEVICE_ERROR == 6, output
    assert message in output or "sound devices are unavailable" in output


@pytest.mark.parametrize(("args", "message"), [
    (["--guest", "G", "--group", "crew"], "guests can only join the nearby room"),
    (["--guest", "G", "--nearby"], "needs a position"),
    (["--guest", "G", "--nearby", "--lat", "46", "--lon", "7", "--radius", "50"], "--radius"),
    (["--token", "t"], "say which room"),
    (["--group", "crew"], "say who you are"),
    (["--token", "t", "--group", "crew", "--lat", "46"], "--lat and --lon go together"),
    (["--token", "t", "--group", "crew", "--input-file", "x.wav", "--input", "1"],
     "--input-file replaces the microphone"),
    (["--token", "t", "--group", "crew", "--duration", "0"], "--duration must be positive"),
])
async def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("DISCO_TOKEN", raising=False)
    got, output = await run_main(["--server", "http://127.0.0.1:9", *args,
                                  "--no-input", "--no-output"], capsys)
    assert got == ExitCode.USAGE == 2, output
    assert message in output


async def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--radius", "wide"])
    assert exited.value.code == 2
    assert "invalid float value" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for code in ExitCode:
        assert f"  {int(code)}  " in text
    readme = Path(__file__).parents[1] / "clients" / "desktop" / "README.md"
    for code in ExitCode:
        assert f"| {int(code)} |" in readme.read_text()
