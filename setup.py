"""Build the optional compiled modules — the relay's hot path (``broker/_hotpath_c.pyx``) and
the client's codec (``broker/client/_codec_c.pyx``); everything else is in pyproject.toml.

A failed build (no compiler, no Python headers, no Cython) never fails the install: it warns
and the broker and client run their pure-Python twins, as aiohttp and msgpack do.
``RSBROKER_NO_EXTENSIONS=1`` skips the build altogether.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = os.environ.get("RSBROKER_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no")


def _warn(message: str) -> None:
    sys.stderr.write(f"WARNING: {message}; rsbroker will use its pure-Python modules\n")


class OptionalBuildExt(build_ext):
    """build_ext whose failures are warnings: the extension is an optimisation, not a requirement."""

    failed = False

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - distutils raises a zoo of error types here
            if not self.failed:  # a failed compile already said why; the copy after it fails too
                _warn(f"building the compiled modules failed ({exc})")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self.failed = True
            _warn(f"compiling {ext.name} failed ({exc})")


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not installed")
        return []
    try:
        return cythonize(
            [
                Extension("broker._hotpath_c", ["broker/_hotpath_c.pyx"]),
                Extension("broker.client._codec_c", ["broker/client/_codec_c.pyx"]),
            ],
            compiler_directives={"language_level": "3"},
        )
    except Exception as exc:  # noqa: BLE001 - a Cython compile error must not break the install
        _warn(f"cythonizing the compiled modules failed ({exc})")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
