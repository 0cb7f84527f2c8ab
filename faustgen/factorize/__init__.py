"""Sparse multilayer factorization of dense matrices: ``W ≈ λ · S_0 @ S_1 @ … @ S_{J-1}``.

A self-contained library (numpy + scipy only) following Le Magoarou & Gribonval, "Flexible
multilayer sparse approximations of matrices and applications" (IEEE JSTSP 2016), plus the
hierarchical butterfly algorithm of Zheng, Riccietti & Gribonval (SIAM J. Math. Data Sci.
2023). Start with :func:`factorize`, which picks the method, the number of factors and the
per-factor sparsity to meet a compression (``rcg``) or accuracy (``max_error``) target.
"""

from . import projections
from .butterfly import butterfly
from .hierarchical import hierarchical
from .palm4msa import palm4msa
from .policy import factorize
from .projections import *  # noqa: F403  (the constraint constructors and projections)
from .result import BlockStructure, FactorizationError, FactorizedMatrix

DEFAULT_RCG = 4.0  # the compression target when neither an RCG nor a max error is given

__all__ = [
    "DEFAULT_RCG",
    "BlockStructure",
    "FactorizationError",
    "FactorizedMatrix",
    "butterfly",
    "factorize",
    "hierarchical",
    "palm4msa",
    *projections.__all__,
]
