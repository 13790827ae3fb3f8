"""The peer network on libp2p (Noise, yamux), members only.

- :mod:`.network`: :class:`.network.PeerNetwork`, the asyncio face the rest of the node uses;
- :mod:`.trio_host`: the libp2p host in its own trio thread (dialing, streams, bans);
- :mod:`.frames`: the wire frame and the thread-safe plumbing between the two threads.

A leaf: imports only the node's foundation (errors, config, clock, lifecycle).
"""
