"""The client's errors, each tied to the exit code a script sees.

Hierarchy::

    ClientError            exit 1: anything else that stops the client
    ├── UsageError         exit 2: arguments that cannot work together
    ├── AuthFailed         exit 3: wrong password, rejected or expired token
    ├── ServerUnreachable  exit 4: no server at --server (refused, DNS, timeout)
    ├── RoomNotFound       exit 5: no such group, or not a member / not allowed
    ├── DeviceError        exit 6: sound device missing or cannot be opened
    └── BadInputFile       exit 7: input WAV, music file or GPX unreadable

The mapping lives here and only here, so ``--help``, the README and the tests
agree on it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH_FAILED = 3
    SERVER_UNREACHABLE = 4
    ROOM_NOT_FOUND = 5
    DEVICE_ERROR = 6
    BAD_INPUT_FILE = 7


EXIT_CODE_HELP = """\
exit codes:
  0  left normally (--duration elapsed, 'q', Ctrl-C)
  1  unexpected error
  2  usage error (bad or conflicting arguments)
  3  authentication failed (wrong password, rejected or expired token)
  4  server unreachable
  5  room not found (no such group, not a member, guest in a group room)
  6  sound device error (missing device, cannot open it)
  7  bad input file (input WAV, music file or GPX cannot be read)"""


class ClientError(Exception):
    """Stops the client with a message for the user and an exit code."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    exit_code = ExitCode.USAGE


class AuthFailed(ClientError):
    exit_code = ExitCode.AUTH_FAILED


class ServerUnreachable(ClientError):
    exit_code = ExitCode.SERVER_UNREACHABLE


class RoomNotFound(ClientError):
    exit_code = ExitCode.ROOM_NOT_FOUND


class DeviceError(ClientError):
    exit_code = ExitCode.DEVICE_ERROR


class BadInputFile(ClientError):
    exit_code = ExitCode.BAD_INPUT_FILE
