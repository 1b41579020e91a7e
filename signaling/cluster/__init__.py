"""How the nodes of one deployment share work.

``Cluster`` (``base``) is what the rest of the server asks: "has this
happened already anywhere?" (``once``, so a call's push fires once across
nodes). Two implementations, chosen once in the composition root as LiveKit
chooses its router: ``LocalCluster`` (one process, no Redis: the embedded
default) and ``RedisCluster`` (every node of a deployment sharing one Redis).
"""
