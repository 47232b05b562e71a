"""Loss terms as pure functions of tensors, one idea per file: each takes plain tensors and
returns a scalar loss; none reads a config or a module, so each can be checked against a
hand computation. Every one runs in float32 under bf16 autocast (precision.py).

- byol.py: BYOL's instance concordance (spec 2)
- neighborhood.py: CoNR's group-aware concordance over ConAff neighbourhoods (spec 4d)
- simsiam.py, moco.py: the SimSiam and MoCo v2 baselines and their ConNR* variants (spec 5)
- hsd.py, prototype.py: HaDis' self-distillation and prototypical contrast (spec 6)
"""
from .byol import byol_loss
from .hsd import hsd_loss, hsd_mining
from .moco import moco_infonce, moco_neighborhood_infonce
from .neighborhood import masked_slot_mean, neighborhood_loss
from .precision import at_least_float32, full_precision
from .prototype import cluster_centers, prototype_contrast_loss, prototype_loss
from .simsiam import simsiam_loss, simsiam_neighborhood_loss

__all__ = ["byol_loss", "neighborhood_loss", "full_precision", "simsiam_loss", "simsiam_neighborhood_loss",
           "moco_infonce", "moco_neighborhood_infonce", "hsd_mining", "hsd_loss", "cluster_centers",
           "prototype_contrast_loss", "prototype_loss", "masked_slot_mean", "at_least_float32"]
