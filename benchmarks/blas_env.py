"""Run a benchmark's child process with the environment as given, and again with the
OpenBLAS overrides this machine may set (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE: they force
slower BLAS kernels) unset for the benchmark's own processes only, saying which is which."""
import os
import subprocess

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_as_given_and_unset(cmd):
    given = ", ".join("%s=%s" % (v, os.environ[v]) for v in BLAS_VARS if v in os.environ)
    print("environment as given (%s):" % (given or "no OpenBLAS overrides"), flush=True)
    subprocess.run(cmd, check=True)
    if given:
        env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
        print("with %s unset (this benchmark's processes only):" % " and ".join(BLAS_VARS),
              flush=True)
        subprocess.run(cmd, check=True, env=env)
