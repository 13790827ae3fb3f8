"""Membership: the member directory read from the chain, and joining and leaving by proposal and vote.

* :mod:`.directory`: who the members are, how to reach them and where their data lives, as the
  chain says (``MEMBER_ENTRY`` records and join requests), with ``[[p2p.peers]]`` as bootstrap
  addresses and the fallback for members that published no entry yet.
* :mod:`.service`: builds and submits this node's proposals, votes and directory entry (each
  checked against the chain's rules first, so a refusal is an answer, not a silently dropped
  record), and follows each proposal's lifecycle (a :class:`~mftp.node.lifecycle.Lifecycle`).
* :mod:`.routes`: the ``/membership`` routes.

May import the foundation, ``api`` (request helpers) and ``people`` (route rules).
"""
