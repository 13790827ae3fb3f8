"""MFTP consensus: Tendermint BFT as a pure state machine, plus what runs it exactly.

* :mod:`.core` -- :class:`~.core.Consensus`, ``step(event, now_ms) -> list[action]``
  (Algorithm 1 of Buchman, Kwon, Milosevic 2018; no asyncio, I/O, disk or clock);
* :mod:`.events` -- the events it takes and the actions it returns;
* :mod:`.messages` -- the signed :class:`~.messages.Proposal` (votes and
  certificates are :mod:`mftp.ledger.block` types);
* :mod:`.mempool`, :mod:`.evidence`, :mod:`.validity`, :mod:`.votes`,
  :mod:`.catchup` -- its pure parts;
* :mod:`.wal` -- WAL framing and entries (pure), a memory WAL and a file WAL;
* :mod:`.replica` -- a core bound to its WAL: inputs logged before they are
  acted on, own votes synced before they are sent, recovery by replay;
* :mod:`.sim` -- the deterministic simulator (``scripts/sim.py``).
"""
