"""Build hook for the C reference decoder's Python binding (everything else is in pyproject.toml).

setuptools compiles `pvqcodec._pvqc_c` from ref_decoder_c/pvqc.c through cffi during
`pip install .` and `pip install -e .`; it needs only a C compiler.
"""

from setuptools import setup

setup(cffi_modules=["ref_decoder_c/build_cffi.py:ffibuilder"])
