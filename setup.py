"""Build the fastcore extension modules from their Cython sources.

Every ``fastcore/_*_c.pyx`` becomes one extension module. Directives that a
module needs (libraries to link, for instance) live in the .pyx header, so
``cythonize -i fastcore/_x_c.pyx`` during development builds the same thing.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent

extensions = [
    Extension(f"fastcore.{pyx.stem}", [str(pyx.relative_to(HERE))])
    for pyx in sorted((HERE / "fastcore").glob("_*_c.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
    ),
)
