"""The build backend: setuptools, behind a check that the Python building ccmitm is 3.12 or newer.

pip, pipx and uv build a wheel from a source tree with the Python it is meant for. pip (23.x at
least) resolves the dependencies before it applies the project's own ``requires-python`` to a
source tree, so an old Python used to end with "No matching distribution found for mitmproxy".
Checking here, in the first hook any installer calls, turns that into one line that says what to do.
"""

from __future__ import annotations

import sys

MINIMUM = (3, 12)

if sys.version_info < MINIMUM:
    raise SystemExit(
        f"ccmitm needs Python {MINIMUM[0]}.{MINIMUM[1]}+ (mitmproxy 12 does), and this is Python "
        f"{sys.version.split()[0]} ({sys.executable}). Install with a newer one, e.g. "
        "`pipx install --python python3.13 <repo>`, `uv tool install --python 3.13 <repo>`, or "
        "`python3.13 -m pip install <repo>` (pyenv install 3.13 if you have none)."
    )

from setuptools.build_meta import *  # noqa: E402, F403 - the hooks, re-exported unchanged
