"""Errors raised by the media plane.

Hierarchy (each also subclasses the ``common.errors`` class named in brackets,
so the edge's one error table maps them to wire codes without knowing ``sfu``)::

    SfuError                    base of everything raised by ``sfu``
    ├── BadOffer                [BadRequest] not SDP, or an offer with no audio
    ├── BadCandidate            [BadRequest] malformed ICE candidate, or one
    │                           sent before the offer
    ├── BadVolume               [BadRequest] per-listener gain outside 0..2
    ├── BadMusicRequest         [BadRequest] unknown action, missing source,
    │   │                       a path that leaves the music folder, not audio
    │   └── MusicTooLarge       [MessageTooLarge] an upload over the size limit
    ├── MusicNotFound           [NotFound] no such music file or upload
    ├── BadPipedFrame           [BadRequest] bytes on a node-to-node voice pipe
    │                           that are not a frame (``sfu.pipe``)
    └── MusicNotAllowed         [LimitExceeded] the room's plan has no music
"""

from __future__ import annotations

from common import errors


class SfuError(errors.DiscoError):
    """Base class of the media plane's errors."""


class BadOffer(SfuError, errors.BadRequest):
    code = errors.BadRequest.code


class BadCandidate(SfuError, errors.BadRequest):
    code = errors.BadRequest.code


class BadVolume(SfuError, errors.BadRequest):
    code = errors.BadRequest.code


class BadMusicRequest(SfuError, errors.BadRequest):
    code = errors.BadRequest.code


class MusicTooLarge(BadMusicRequest, errors.MessageTooLarge):
    code = errors.MessageTooLarge.code


class MusicNotFound(SfuError, errors.NotFound):
    code = errors.NotFound.code


class MusicNotAllowed(SfuError, errors.LimitExceeded):
    code = errors.LimitExceeded.code


class BadPipedFrame(SfuError, errors.BadRequest):
    code = errors.BadRequest.code
