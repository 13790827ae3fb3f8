"""The main job of `make demo`.

Until the node exists this runs the ledger demo: keys, signed records, a verified
chain and proofs. Later issues replace it with a devnet sharing a real study.
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("demo_ledger.py")), run_name="__main__")
