"""Opus fmtp in Disco's answers; Opus and RED in clients' offers."""

from __future__ import annotations

import pytest

from sfu.sdp_opus import (
    fmtp_of,
    format_fmtp,
    opus_params,
    parse_fmtp,
    red_payload_type,
    set_opus_fmtp,
)

# An answer as aiortc 1.16 writes it (candidates and fingerprints shortened).
AIORTC_ANSWER = "\r\n".join([
    "v=0",
    "o=- 4005117251 4005117251 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic:WMS *",
    "m=audio 56388 UDP/TLS/RTP/SAVPF 96 9 0 8",
    "c=IN IP4 192.0.2.2",
    "a=sendrecv",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=mid:0",
    "a=rtcp-mux",
    "a=ssrc:782152871 cname:ed3516d8",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=candidate:f957a233 1 udp 2130706431 192.0.2.2 56388 typ host",
    "a=end-of-candidates",
    "a=fingerprint:sha-256 C4:DC:0D:53",
    "a=setup:active",
    "m=video 0 UDP/TLS/RTP/SAVPF 97",
    "a=inactive",
    "a=mid:1",
    "a=rtpmap:97 VP8/90000",
    "",
])

# The audio section of a Chrome offer.
CHROME_OFFER = "\r\n".join([
    "v=0",
    "o=- 46117317 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=mid:0",
    "a=sendrecv",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "",
])


def test_answer_gets_an_opus_fmtp_after_its_rtpmap_and_nothing_else_changes() -> None:
    out = set_opus_fmtp(AIORTC_ANSWER)
    before, after = AIORTC_ANSWER.split("\r\n"), out.split("\r\n")
    i = before.index("a=rtpmap:96 opus/48000/2")
    assert after[i + 1] == ("a=fmtp:96 useinbandfec=1;usedtx=1;stereo=0;"
                            "maxaveragebitrate=48000")
    assert after[: i + 1] + after[i + 2 :] == before
    assert "\n" not in out.replace("\r\n", "")  # CRLF kept
    assert fmtp_of(out, "opus") == {96: opus_params()}


def test_existing_fmtp_is_merged_ours_win() -> None:
    sdp = AIORTC_ANSWER.replace(
        "a=rtpmap:96 opus/48000/2\r\n",
        "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=10;useinbandfec=0;cbr\r\n")
    out = set_opus_fmtp(sdp, opus_params(max_average_bitrate_bps=24_000))
    assert out.count("a=fmtp:96") == 1
    assert fmtp_of(out, "opus")[96] == {"minptime": "10", "useinbandfec": "1", "cbr": "",
                                        "usedtx": "1", "stereo": "0",
                                        "maxaveragebitrate": "24000"}
    assert "a=fmtp:96 minptime=10;useinbandfec=1;cbr;usedtx=1" in out


def test_idempotent_and_lf_only_sdp() -> None:
    once = set_opus_fmtp(AIORTC_ANSWER)
    assert set_opus_fmtp(once) == once
    lf = AIORTC_ANSWER.replace("\r\n", "\n")
    assert set_opus_fmtp(lf) == once.replace("\r\n", "\n")


def test_no_opus_no_audio_left_alone() -> None:
    no_opus = AIORTC_ANSWER.replace("a=rtpmap:96 opus/48000/2\r\n", "")
    assert set_opus_fmtp(no_opus) == no_opus
    video_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\n"
    assert set_opus_fmtp(video_only) == video_only


def test_two_audio_sections_both_get_it() -> None:
    sdp = AIORTC_ANSWER.replace("m=video 0 UDP/TLS/RTP/SAVPF 97\r\na=inactive\r\na=mid:1\r\n"
                                "a=rtpmap:97 VP8/90000",
                                "m=audio 0 UDP/TLS/RTP/SAVPF 97\r\na=mid:1\r\n"
                                "a=rtpmap:97 OPUS/48000/2")
    out = set_opus_fmtp(sdp)
    assert out.count("useinbandfec=1") == 2
    assert "a=rtpmap:97 OPUS/48000/2\r\na=fmtp:97 useinbandfec=1" in out


def test_reading_a_chrome_offer() -> None:
    assert fmtp_of(CHROME_OFFER, "opus") == {111: {"minptime": "10", "useinbandfec": "1"}}
    assert red_payload_type(CHROME_OFFER) == 63
    assert fmtp_of(CHROME_OFFER, "red") == {63: {"111/111": ""}}
    assert red_payload_type(AIORTC_ANSWER) is None


def test_fmtp_text_round_trip() -> None:
    assert parse_fmtp(" minptime=10; useinbandfec=1;;") == {"minptime": "10", "useinbandfec": "1"}
    assert format_fmtp({"a": "1", "flag": ""}) == "a=1;flag"


def test_bitrate_bounds() -> None:
    with pytest.raises(ValueError, match="maxaveragebitrate"):
        opus_params(max_average_bitrate_bps=1_000)


async def test_aiortc_accepts_the_rewritten_answer() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        answer = set_opus_fmtp(server.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert "useinbandfec=1" in client.remoteDescription.sdp
    finally:
        await client.close()
        await server.close()
