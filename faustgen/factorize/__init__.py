"""Sparse multilayer factorization of dense matrices: ``W ≈ λ · S_0 @ S_1 @ … @ S_{J-1}``.

A self-contained library (numpy + scipy only) following Le Magoarou & Gribonval, "Flexible
multilayer sparse approximations of matrices and applications" (IEEE JSTSP 2016), plus the
hierarchical butterfly algorithm of Zheng, Riccietti & Gribonval (SIAM J. Math. Data Sci.
2023). Start with :func:`factorize`, which picks the method, the number of factors and the
per-factor sparsity to meet a compression (``rcg``) or accuracy (``max_error``) target.
"""

from .butterfly import butterfly
from .hierarchical import hierarchical
from .palm4msa import palm4msa
from .policy import factorize
from .projections import (
    Constraint,
    block_energy,
    dense,
    normalize_fro,
    proj_sp,
    proj_spblock,
    proj_spcol,
    proj_splin,
    proj_splinblock,
    proj_splincol,
    proj_support,
    sp,
    spblock,
    spcol,
    splin,
    splinblock,
    splincol,
    support,
)
from .result import BlockStructure, FactorizationError, FactorizedMatrix

DEFAULT_RCG = 4.0  # the compression target when neither an RCG nor a max error is given

__all__ = [
    "DEFAULT_RCG",
    "BlockStructure",
    "Constraint",
    "FactorizationError",
    "FactorizedMatrix",
    "block_energy",
    "butterfly",
    "dense",
    "factorize",
    "hierarchical",
    "normalize_fro",
    "palm4msa",
    "proj_sp",
    "proj_spblock",
    "proj_spcol",
    "proj_splin",
    "proj_splinblock",
    "proj_splincol",
    "proj_support",
    "sp",
    "spblock",
    "spcol",
    "splin",
    "splinblock",
    "splincol",
    "support",
]
