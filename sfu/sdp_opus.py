"""The Opus ``a=fmtp`` line of an SDP answer, and what an offer says about Opus and RED.

aiortc answers ``a=rtpmap:96 opus/48000/2`` with no ``a=fmtp`` at all, so a
browser sending to Disco uses its defaults: no in-band FEC, no DTX. The
parameters in *our* answer tell the client how to send to us (RFC 7587 6.1):

* ``useinbandfec=1``: we decode FEC, so the client's encoder adds it;
* ``usedtx=1``: send nothing in silence (one packet per 400 ms), which the
  reorder buffer plays as silence, not loss;
* ``stereo=0``: we mix mono, stereo is wasted bits;
* ``maxaveragebitrate``: an upper bound for the client's encoder, in bps.

``set_opus_fmtp`` rewrites SDP as text: every audio section's Opus payload
types get those parameters merged into their existing ``a=fmtp`` (ours win,
others stay) or a new one right after the ``a=rtpmap``; every other line, and
the line endings, are left exactly as they were. Pure text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_MAX_AVERAGE_BITRATE_BPS = 48_000
"""Voice at 32 kbps plus 16 kbps for FEC (``fec_policy.FEC_EXTRA_BPS``): browsers take
maxaveragebitrate as their Opus target, and under loss FEC needs the bits."""

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)(?:/(\d+))?\s*$", re.IGNORECASE)
_FMTP = re.compile(r"^a=fmtp:(\d+) ?(.*)$", re.IGNORECASE)


def opus_params(max_average_bitrate_bps: int = DEFAULT_MAX_AVERAGE_BITRATE_BPS,
                ) -> dict[str, str]:
    """Disco's Opus receive parameters for an answer."""
    if not 6_000 <= max_average_bitrate_bps <= 510_000:
        raise ValueError(f"maxaveragebitrate must be 6000..510000 bps (RFC 7587), "
                         f"got {max_average_bitrate_bps}")
    return {"useinbandfec": "1", "usedtx": "1", "stereo": "0",
            "maxaveragebitrate": str(max_average_bitrate_bps)}


def parse_fmtp(value: str) -> dict[str, str]:
    """``"minptime=10;useinbandfec=1"`` -> ``{"minptime": "10", "useinbandfec": "1"}``."""
    params: dict[str, str] = {}
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition("=")
        params[key.strip()] = val.strip()
    return params


def format_fmtp(params: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" if v != "" else k for k, v in params.items())


def _split(sdp: str) -> tuple[list[str], str]:
    eol = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(eol)
    return lines, eol


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of each media section (``m=`` line to before the next)."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    return [(s, starts[k + 1] if k + 1 < len(starts) else len(lines))
            for k, s in enumerate(starts)]


def _codec_pts(lines: list[str], start: int, end: int, codec: str, clock_hz: int) -> list[int]:
    pts = []
    for line in lines[start:end]:
        m = _RTPMAP.match(line)
        if m and m.group(2).lower() == codec.lower() and int(m.group(3)) == clock_hz:
            pts.append(int(m.group(1)))
    return pts


def set_opus_fmtp(sdp: str, params: Mapping[str, str] | None = None) -> str:
    """``sdp`` with ``params`` (default ``opus_params()``) on every audio Opus payload type."""
    wanted = dict(opus_params() if params is None else params)
    lines, eol = _split(sdp)
    out = list(lines)
    # Edit from the last section backwards so earlier indices stay valid.
    for start, end in reversed(_sections(lines)):
        if not lines[start].startswith("m=audio"):
            continue
        for pt in _codec_pts(lines, start, end, "opus", 48_000):
            fmtp_at = next((i for i in range(start, end)
                            if (m := _FMTP.match(out[i])) and int(m.group(1)) == pt), None)
            if fmtp_at is not None:
                m = _FMTP.match(out[fmtp_at])
                assert m is not None
                merged = parse_fmtp(m.group(2))
                merged.update(wanted)
                out[fmtp_at] = f"a=fmtp:{pt} {format_fmtp(merged)}"
                continue
            rtpmap_at = next(i for i in range(start, end)
                             if (m := _RTPMAP.match(out[i])) and int(m.group(1)) == pt)
            out.insert(rtpmap_at + 1, f"a=fmtp:{pt} {format_fmtp(wanted)}")
    return eol.join(out)


def fmtp_of(sdp: str, codec: str, clock_hz: int = 48_000) -> dict[int, dict[str, str]]:
    """Payload type -> fmtp parameters of ``codec`` in the first audio section."""
    lines, _ = _split(sdp)
    for start, end in _sections(lines):
        if not lines[start].startswith("m=audio"):
            continue
        result: dict[int, dict[str, str]] = {}
        for pt in _codec_pts(lines, start, end, codec, clock_hz):
            result[pt] = {}
            for line in lines[start:end]:
                m = _FMTP.match(line)
                if m and int(m.group(1)) == pt:
                    result[pt] = parse_fmtp(m.group(2))
        return result
    return {}


def red_payload_type(sdp: str) -> int | None:
    """The ``red/48000/2`` payload type the first audio section offers, if any."""
    reds = fmtp_of(sdp, "red")
    return min(reds) if reds else None
