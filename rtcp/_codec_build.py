"""cffi builder for the optional C codec ``rtcp._codec_c`` (API mode, out of line).

setup.py hands ``ffibuilder`` to setuptools through ``cffi_modules``, so
``pip install .`` and ``pip install -e .`` build it (the editable install in
place, next to this file).  To rebuild in place after editing csrc/, run
``python setup.py build_ext --inplace`` from the project root.  The
declarations below must match csrc/codec.h.

On CPython the module also carries csrc/fastpath.c: encode and decode written
against the CPython API, installed through the one cffi call
``rtcp_fastpath_install`` (see that file for why).  It uses the full API, so
the module is built for this interpreter version rather than the stable ABI.
"""

from __future__ import annotations

import platform
import sys

from cffi import FFI

CDEF = """
typedef struct {
    uint32_t kind, offset, length, a, b;
} rtcp_option;
typedef struct {
    uint32_t src_port, dst_port, seq, ack, flags, window, urgent;
    uint32_t header_len, n_options, error_offset;
    rtcp_option options[20];
} rtcp_segment_info;
uint16_t rtcp_checksum(const char *data, size_t len);
uint16_t rtcp_checksum_portable(const char *data, size_t len);
int64_t rtcp_decode(const char *data, size_t len);
int64_t rtcp_decode_info(const char *data, size_t len, rtcp_segment_info *info);
long rtcp_encode(char *out, size_t cap,
                 uint16_t src_port, uint16_t dst_port, uint32_t seq, uint32_t ack,
                 uint8_t flags, uint16_t window, uint16_t urgent,
                 const char *opts, size_t opts_len,
                 const char *payload, size_t payload_len);
"""
CPYTHON = platform.python_implementation() == "CPython"
FASTPATH_DECL = "int rtcp_fastpath_install(const char *module_name);\n"

# Every call does well under a microsecond of work (a 1452-byte checksum takes
# tens of nanoseconds), less than cffi's default of releasing and retaking the
# GIL around it, and none touches errno.  The wrappers cffi generates below the
# preamble use these macros, so redefining them here keeps the GIL held and skips
# the errno shuffle (measured: about 0.1 us saved per call).  The fast path's
# install call needs the GIL held, and checks that it is.
PREAMBLE = """
#include "codec.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
#undef _cffi_restore_errno
#undef _cffi_save_errno
#define _cffi_restore_errno() ((void)0)
#define _cffi_save_errno() ((void)0)
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF + FASTPATH_DECL if CPYTHON else CDEF)
# Paths are relative to the project root, where setuptools runs.  -O2 even if
# this Python was built without optimisation (the checksum loop needs it).
ffibuilder.set_source(
    "rtcp._codec_c",
    PREAMBLE + FASTPATH_DECL if CPYTHON else PREAMBLE,
    sources=["csrc/codec.c", "csrc/fastpath.c"] if CPYTHON else ["csrc/codec.c"],
    include_dirs=["csrc"],
    depends=["csrc/codec.h"],
    extra_compile_args=[] if sys.platform == "win32" else ["-O2"],
    **({"py_limited_api": False} if CPYTHON else {}),
)
