"""Array kernels shared by layers, written against a given `xp` (numpy or CuPy)."""
