"""Build hook for the optional C codec; the metadata lives in pyproject.toml.

cffi's setuptools integration (``cffi_modules``) generates and compiles
``rtcp._codec_c`` from rtcp/_codec_build.py.  On its own a failed compile
would fail the whole install, so the build_ext below lets it fail: without a
working C compiler, ``pip install`` warns and rtcp falls back to the
pure-Python codec (``rtcp.segment.BACKEND == "python"``).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext whose extensions may fail to build, and never go stale.

    It always recompiles (one small file), and removes the module left by an
    earlier build when this one fails: pip builds in the source tree, so an
    old build/lib or in-place .so would otherwise ship with a compiler that
    no longer works.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True
        # setuptools then skips a missing module where it copies the build
        # into the source tree (pip install -e) instead of failing the install.
        for ext in self.extensions or ():
            ext.optional = True

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # no compiler, no Python headers, a compile error...
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            self.warn(
                f"the optional C codec {ext.name} was not built ({exc}); "
                "rtcp will use its pure-Python codec"
            )


setup(
    cffi_modules=["rtcp/_codec_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
