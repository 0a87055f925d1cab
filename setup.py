"""The C hot paths as an optional extension, so `pip install .` (the Docker image) builds them too.

`make` builds the same file in place (scripts/build-native.sh); both compile the source's sha256
in (`make` rebuilds when it differs; test_native checks it). Optional: without a C compiler the install
still succeeds and the pure-Python paths run (decision 016).
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "src/cashmarkets/core/_native.c"
SHA256 = hashlib.sha256(Path(SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "cashmarkets.core._native",
            [SOURCE],
            define_macros=[("NATIVE_SOURCE_SHA256", f'"{SHA256}"')],
            optional=True,
        )
    ]
)
