"""Debian's Chromium, as the benchmarks and the browser tests start it through Playwright.

Playwright's own browser download does not work on these machines (no internet but the package
registries), so Playwright is given Debian's executable.  The machines have no GPU:
:data:`NO_GPU_ARGS` makes Chromium behave as Chrome does on such a desktop.
"""

from __future__ import annotations

import shutil
from typing import Final

CHROMIUM: Final = shutil.which("chromium") or "/usr/bin/chromium"
"""Debian's Chromium (``apt-get install chromium``; ``make system-deps`` installs it)."""

# Chromium composites and rasterises in software and renders WebGL (which the viewer's cornerstone
# needs) on SwiftShader, the fallback Chrome >= 139 keeps only under the EnableUnsafeSwiftShader
# policy.  ``--use-angle=swiftshader``, used before, is the mode of Chromium's GPU-less test bots:
# it drives the whole GPU pipeline on SwiftShader, compositing included, and headless reads every
# frame back; in that mode the GPU process's main thread was busy for nearly all of a warm
# opening of the viewer, on one of the two cores.  ``--no-sandbox``: tests run as root.
NO_GPU_ARGS: Final = ("--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader")
"""Chrome on a desktop without a GPU."""

NO_WEBGL_ARGS: Final = ("--no-sandbox", "--disable-gpu", "--disable-3d-apis")
"""Chrome >= 139 on a desktop without a GPU where no policy allows SwiftShader: no WebGL at all."""
