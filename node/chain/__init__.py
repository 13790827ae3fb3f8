"""The consensus reactor: the shell that carries out the pure core's actions on the peer network.

- :mod:`.reactor`: drives :class:`mftp.consensus.replica.Replica` (events in, actions out),
  catch-up of lagging peers, record gossip, the ``c.*`` and ``records`` channels;
- :mod:`.codec`: consensus messages to and from their wire values;
- :mod:`.compact_proposals`: proposals that name their records by id.

Imports the foundation and :mod:`mftp.node.p2p`.
"""
