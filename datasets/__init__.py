"""Datasets and SR sample wrappers, all built from `{'name', 'args'}` specs through one registry."""
from .registry import datasets, make, register, UnknownDatasetError  # noqa: F401
from .image_folder import DatasetError, ImageFolder, PairedImageFolders, UnreadableImageWarning  # noqa: F401
from .wrappers import SampleKey, SRImplicitDownsampled, SRImplicitPaired  # noqa: F401
from .samplers import ScaleBatchSampler  # noqa: F401
