"""A whole consortium on loopback, for the demo, the benchmarks, the tests and ``mftp-node devnet``.

- :mod:`.consortium`: create a devnet's keys, genesis and configs; start and stop its node
  processes;
- :mod:`.client`: talk to a running devnet as an operator would (its API and CLI), sample
  records and a sample study;
- :mod:`.throttle`: a TCP proxy that limits bandwidth, to see transfers over a slower link;
- :mod:`.browser`: Debian's Chromium as the benchmarks and browser tests start it.

Shared by ``scripts/`` and ``tests/`` through the package, never through path tricks.  Imports
the node's foundation only; what it runs, it runs as separate processes.
"""
