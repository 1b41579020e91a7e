"""What the server and every client share, importing nothing of the server.

``wire`` is the WebSocket schema, ``limits`` every bound a client may send,
and ``aiortc_compat`` the one module that reaches into aiortc's and aioice's
private parts (installed once at start; it fails loudly if a patch no longer
takes), used by the server's media unit and the desktop client alike.
"""
