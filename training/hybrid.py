"""Former home of the model, run-folder I/O, fusion fitting, normalisation and the torch predictor.

Product code imports each from its own module; these names stay importable only for the research
code (studies, probes, baselines, benches) until its imports follow.
"""

from training.data.normalisation import normalise_image
from training.fusion import fit_fusion_weight
from training.models.hybrid import BackboneRecipe, InspectionModel, ModelKind, backbone_recipe, fuse_branches
from training.predictor import TorchPredictor, default_overlap
from training.runs import RunModel, load_run, load_sample_tiles, save_run

__all__ = [
    "BackboneRecipe",
    "InspectionModel",
    "ModelKind",
    "RunModel",
    "TorchPredictor",
    "backbone_recipe",
    "default_overlap",
    "fit_fusion_weight",
    "fuse_branches",
    "load_run",
    "load_sample_tiles",
    "normalise_image",
    "save_run",
]
