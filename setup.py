"""Builds rnnfast's C++ (and, where a CUDA toolkit is found or FORCE_CUDA=1, CUDA) extension.

Install with torch already present: `pip install --no-build-isolation -e .` (a build-isolated
torch would be a second torch, possibly of another version than the one that imports us).

Environment:
  FORCE_CUDA=1               build the CUDA kernels even where no GPU is visible
  TORCH_CUDA_ARCH_LIST       CUDA targets (default "8.0;9.0+PTX": machine code for the A100
                             and H100 generations, and PTX that newer GPUs compile at load)
  RNNFAST_CPU_CAPABILITY     AVX512, AVX2 or DEFAULT: the SIMD level of the CPU kernels
                             (default: what torch detects on the building machine)
  RNNFAST_DEBUG=1            -O0 -g
  RNNFAST_OPENMP=0           build without -fopenmp (every at::parallel_for loop then runs on
                             the calling thread)
"""

import glob
import os
import sys
import sysconfig

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))

# The vector kernels are compiled for one SIMD level, chosen at build time (like
# -march=native, but named, so a portable build can ask for less).
CPU_CAPABILITY_FLAGS = {
    "AVX512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mavx2",
        "-mfma",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "DEFAULT": [],
}


def cpu_capability():
    wanted = os.environ.get("RNNFAST_CPU_CAPABILITY")
    if wanted is None:
        detected = torch.backends.cpu.get_cpu_capability()
        return detected if detected in CPU_CAPABILITY_FLAGS else "DEFAULT"
    if wanted not in CPU_CAPABILITY_FLAGS:
        raise ValueError(
            f"RNNFAST_CPU_CAPABILITY must be one of {sorted(CPU_CAPABILITY_FLAGS)}; got {wanted!r}"
        )
    return wanted


def cxx_standard():
    """The C++ standard torch's headers ask for: C++17 up to torch 2.13, C++20 from 2.14 on."""
    aten_h = os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "ATen.h")
    with open(aten_h) as f:
        return "c++20" if "C++20 or later" in f.read() else "c++17"


def openmp_flags():
    """-fopenmp on Linux where torch runs its parallel loops on OpenMP (its pip wheels do).

    ATen's at::parallel_for is a header template: compiled without -fopenmp, every loop of the
    extension runs on the calling thread. Linked with -fopenmp, the extension needs libgomp.so.1
    and gets the copy torch has already loaded (the same soname): one OpenMP runtime, not two.
    """
    if os.environ.get("RNNFAST_OPENMP", "1") == "0":
        return []
    if not sys.platform.startswith("linux") or not torch.backends.openmp.is_available():
        return []
    return ["-fopenmp"]


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    debug = os.environ.get("RNNFAST_DEBUG") == "1"
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    std = cxx_standard()
    cxx_flags += [f"-std={std}", "-fdiagnostics-color=always"]
    cxx_flags += CPU_CAPABILITY_FLAGS[cpu_capability()]
    openmp = openmp_flags()
    cxx_flags += openmp
    # Every backend's sources but the CUDA kernels: the schemas, the dispatch-key kernels, the
    # composite ATen path, the CPU engine, the CUDA engine's host build (for the tests), and
    # rnnfast.scan's loop engine.
    folders = ("", "dispatch/", "composite/", "python/", "cpu/", "cuda/on_host/", "scan/")
    common = [path for folder in folders for path in sources(f"csrc/{folder}*.cpp")]

    cuda_sources = sources("csrc/cuda/*.cu") + sources("csrc/cuda/*.cpp")
    use_cuda = bool(cuda_sources) and (
        os.environ.get("FORCE_CUDA") == "1" or (torch.cuda.is_available() and CUDA_HOME)
    )
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        nvcc_flags = ["-O3", f"-std={std}", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "rnnfast._C",
            common + cuda_sources,
            extra_compile_args={"cxx": cxx_flags + ["-DRNNFAST_WITH_CUDA"], "nvcc": nvcc_flags},
            define_macros=[("RNNFAST_WITH_CUDA", None)],
            extra_link_args=openmp,
        )
    return CppExtension(
        "rnnfast._C", common, extra_compile_args={"cxx": cxx_flags}, extra_link_args=openmp
    )


class BuildExtKeepingObjects(BuildExtension.with_options(use_ninja=True)):
    """torch's ninja build, its objects always in the same folder under build/.

    pip's editable and wheel builds hand build_ext a fresh temporary folder each time, so
    every reinstall compiled all of csrc/ again; in a kept folder ninja recompiles only what
    changed (its depfiles track the headers, its log the flags)."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(
            ROOT, "build", f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
        )


setup(
    packages=find_packages(include=["rnnfast", "rnnfast.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtKeepingObjects},
)
