from setuptools import Extension, setup

NATIVE = "src/tunring/native/"
KERNELS = ["hdlc.c", "lzs.c", "inflate.c"]  # plain C, also linked by the fuzz targets (scripts/fuzz)

setup(
    ext_modules=[
        # seq_cst loads/stores for the rings' shared indices (src/tunring/_atomic.c says why pure
        # Python cannot provide them): required.
        Extension("tunring._atomic", ["src/tunring/_atomic.c"], extra_compile_args=["-O2", "-std=c11"]),
        # The native core: the hot loops in C behind the pure-Python modules.  Optional: where it
        # does not build (no liblz4/zlib headers, say) the build warns and tunring runs the pure
        # modules; tunring._impl decides which path is active and says why.
        Extension(
            "tunring._native",
            [NATIVE + "module.c"] + [NATIVE + f for f in KERNELS],
            depends=[NATIVE + f for f in ("hdlc.h", "lzs.h", "inflate.h", "bytes.h")],
            libraries=["lz4", "z"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
    ]
)
