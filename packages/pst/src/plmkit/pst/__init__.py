"""PST: Parameter-efficient Sparse Training (Li, Luo et al., IJCAI 2022, arXiv 2205.11005).

    from plmkit.pst import PSTConfig, PSTMethod
    trainer = plmkit.core.training.Trainer(model, args, method=PSTMethod(PSTConfig(sparsity=0.9)), ...)
"""

from plmkit.pst.config import PSTConfig
from plmkit.pst.layers import PSTLinear, pst_layers
from plmkit.pst.method import PST_TARGETS, PSTMethod, head_parameter_names
from plmkit.pst.params import format_parameter_counts, pst_factor_count, pst_parameter_counts

__all__ = [
    "PSTConfig",
    "PSTLinear",
    "PSTMethod",
    "PST_TARGETS",
    "format_parameter_counts",
    "head_parameter_names",
    "pst_factor_count",
    "pst_layers",
    "pst_parameter_counts",
]
