"""What the server and every client share, importing nothing of the server.

``wire`` is the WebSocket schema, ``limits`` every bound a client may send,
and ``aiortc_compat`` the one package that reaches into aiortc's and aioice's
private parts (installed once at start; it fails loudly if a patch no longer
takes), used by the server's media unit and the desktop client alike.

The voice receive path is here too, pure but for libopus, for the same
reason (the server's inbound streams and the desktop client's receiver play
out the same way): ``opus`` (ctypes libopus: run-time encoder ctls, FEC
decode, PLC), ``reorder`` (the reorder/recovery buffer), ``red`` (RFC 2198)
and ``playout`` (buffer + decoder: packets in, one 20 ms frame per tick).
"""
