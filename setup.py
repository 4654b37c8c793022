from setuptools import Extension, setup

# The only C in tunring: seq_cst loads/stores for the rings' shared indices
# (see src/tunring/_atomic.c for why pure Python cannot provide them).
setup(ext_modules=[Extension("tunring._atomic", ["src/tunring/_atomic.c"], extra_compile_args=["-O2", "-std=c11"])])
